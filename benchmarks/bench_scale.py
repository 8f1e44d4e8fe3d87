"""Memory flat in corpus size: peak RSS of `sbert encode` at 100k and at 1M lines.

    python benchmarks/bench_scale.py                       # 100k and 1M lines
    python benchmarks/bench_scale.py --lines 20000 200000 --max-seq-length 32

The corpus is the books in ../shared/data/books repeated until it has the asked number of lines.
`--max-seq-length` (default 8) keeps the 1M-line run to minutes on a 2-core CPU: memory that
depends on corpus size (windows, shards, manifest, id bookkeeping) is what this measures, and
that does not change with the token count of each text. Also times `sbert --help`.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BOOKS = ROOT.parent / "shared" / "data" / "books"


def make_corpus(path: Path, lines: int) -> None:
    paragraphs = [
        line.rstrip("\n")
        for book in sorted(BOOKS.glob("*.txt"))
        for line in book.read_text(encoding="utf-8").splitlines()
        if line.strip()
    ]
    with open(path, "w", encoding="utf-8") as fh:
        for i in range(lines):
            fh.write(paragraphs[i % len(paragraphs)] + "\n")


def run(cmd: list[str]) -> tuple[float, float]:
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(proc.stderr.read().decode() if proc.stderr else "failed")
    return time.perf_counter() - start, usage.ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lines", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--max-seq-length", type=int, default=8)
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--work", type=Path, default=None)
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="sbert-scale-"))
    work.mkdir(parents=True, exist_ok=True)

    helps = [run([sys.executable, "-m", "sbert_cli", "--help"])[0] for _ in range(5)]
    print(f"sbert --help: best {min(helps):.3f} s, median {sorted(helps)[2]:.3f} s (5 runs)")

    print(f"{'lines':>10} {'seconds':>8} {'texts/s':>8} {'peak RSS MiB':>13}")
    for lines in args.lines:
        corpus = work / f"corpus-{lines}.txt"
        make_corpus(corpus, lines)
        store = work / f"store-{lines}"
        cmd = [sys.executable, "-m", "sbert_cli", "encode", str(corpus), "-o", str(store), "-q"]
        cmd += ["--dtype", args.dtype, "--max-seq-length", str(args.max_seq_length)]
        secs, rss = run(cmd)
        print(f"{lines:>10} {secs:8.1f} {lines / secs:8.1f} {rss:13.0f}", flush=True)


if __name__ == "__main__":
    main()
