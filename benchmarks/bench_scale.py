"""Memory flat in corpus size: peak RSS of `sbert encode` at 100k and at 1M lines.

    python benchmarks/bench_scale.py                       # one 1M-line run, RSS at 100k and 1M
    python benchmarks/bench_scale.py --lines 20000 200000 --max-seq-length 32

The corpus is the books in DATA/books (--data, default ../shared/data) repeated until it has the asked number of lines.
`--max-seq-length` (default 8) keeps the 1M-line run to minutes on a 2-core CPU: memory that
depends on corpus size (windows, shards, manifest, id bookkeeping) is what this measures, and
that does not change with the token count of each text. Also times `sbert --help`.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _data import BOOKS, add_data_option, require

ROOT = Path(__file__).resolve().parent.parent


def make_corpus(path: Path, lines: int, books: Path) -> None:
    paragraphs = [
        line.rstrip("\n")
        for book in sorted(books.glob("*.txt"))
        for line in book.read_text(encoding="utf-8").splitlines()
        if line.strip()
    ]
    with open(path, "w", encoding="utf-8") as fh:
        for i in range(lines):
            fh.write(paragraphs[i % len(paragraphs)] + "\n")


def run(
    cmd: list[str], store: Path | None = None, marks: tuple[int, ...] = ()
) -> tuple[float, float, dict[int, float]]:
    """Wall seconds, peak RSS (MiB), and the peak RSS seen by the time the store held each mark's rows."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    at_mark: dict[int, float] = {}
    while proc.poll() is None:
        time.sleep(0.5)
        rows = committed_rows(store) if store else 0
        for mark in marks:
            if mark not in at_mark and rows >= mark:
                at_mark[mark] = peak_rss(proc.pid)
    _, status, usage = os.wait4(proc.pid, 0) if proc.returncode is None else (0, 0, None)
    code = proc.returncode if proc.returncode is not None else os.waitstatus_to_exitcode(status)
    if code != 0:
        raise SystemExit(proc.stderr.read().decode() if proc.stderr else "failed")
    final = usage.ru_maxrss / 1024 if usage else max(at_mark.values(), default=0.0)
    return time.perf_counter() - start, final, at_mark


def committed_rows(store: Path) -> int:
    try:
        return sum(s["rows"] for s in json.loads((store / "manifest.json").read_text())["shards"])
    except (OSError, ValueError, KeyError):
        return 0


def peak_rss(pid: int) -> float:
    """VmHWM: the process's peak resident set so far, in MiB."""
    try:
        for line in open(f"/proc/{pid}/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lines", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--max-seq-length", type=int, default=8)
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--work", type=Path, default=None)
    add_data_option(parser)
    args = parser.parse_args()
    require(args.data, BOOKS)  # before anything runs: no corpus, no division by zero paragraphs
    work = args.work or Path(tempfile.mkdtemp(prefix="sbert-scale-"))
    work.mkdir(parents=True, exist_ok=True)

    helps = []
    for _ in range(5):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "sbert_cli", "--help"], check=True, stdout=subprocess.DEVNULL)
        helps.append(time.perf_counter() - start)
    print(f"sbert --help: best {min(helps):.3f} s, median {sorted(helps)[2]:.3f} s (5 runs)")

    lines = max(args.lines)
    corpus = work / f"corpus-{lines}.txt"
    make_corpus(corpus, lines, args.data / "books")
    store = work / f"store-{lines}"
    cmd = [sys.executable, "-m", "sbert_cli", "encode", str(corpus), "-o", str(store), "-q"]
    cmd += ["--dtype", args.dtype, "--max-seq-length", str(args.max_seq_length)]
    secs, rss, at_mark = run(cmd, store, tuple(args.lines))
    print(f"encoded {lines:,} lines in {secs:.0f} s ({lines / secs:,.0f} texts/s); peak RSS over the run {rss:.0f} MiB")
    for mark in sorted(at_mark):
        print(f"  peak RSS by {mark:>10,} rows committed: {at_mark[mark]:7.0f} MiB")


if __name__ == "__main__":
    main()
