"""Does the chunking stage slow down short-sentence corpora? An interleaved A/B against the code
before chunking existed, on the same texts, in the same run.

    python benchmarks/bench_chunk_overhead.py                      # 4000 STS sentences, 5 rounds
    python benchmarks/bench_chunk_overhead.py --texts 8000 --rounds 7 --baseline-ref <commit>

The baseline is the sbert_cli package at `--baseline-ref` (default: the commit before
sbert_cli/chunking/ was added), unpacked with `git archive` into a temp folder. Each round runs
both versions, in alternating order, as fresh processes (torch on `--threads`, 1 by default):
the model is loaded first, then
`encode_corpus` (fp32, CPU, a new store) is timed in CPU seconds of the process (all threads;
robust to other jobs on the machine) and in wall seconds. The ratio new/baseline is reported per
round and as the median; chunking passes short texts straight through, tokenized once, so the
target is a ratio within 3% of 1.

On a machine shared with other jobs the end-to-end ratios swing by 10-20% from round to round,
so `--stages` also measures, in one process, only what chunking changed: the CPU side of a
window (tokenize, sort, pad) done today's way (`prepare` tokenizes) and the chunking stage's way
(the chunker tokenizes, `prepare` reuses its ids), interleaved, against the model's own time on
the same windows. The extra CPU seconds over the model's are the share chunking adds.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHARED = next(
    (p / "shared" / "data" for p in (ROOT.parent, ROOT.parent.parent) if (p / "shared").is_dir()),
    ROOT.parent / "shared" / "data",
)

RUN = """
import json, sys, time
from sbert_cli.encoding.loader import cached_encoder
from sbert_cli.encoding.runner import EncodeOptions, encode_corpus
cached_encoder(None, device="cpu", dtype="fp32")  # the model load is not what is measured
cpu, wall = time.process_time(), time.perf_counter()
options = EncodeOptions(device="cpu", dtype="fp32", threads=int(sys.argv[3]))
summary = encode_corpus([sys.argv[1]], sys.argv[2], options)
print(json.dumps({"cpu": time.process_time() - cpu, "wall": time.perf_counter() - wall, "rows": summary.rows}))
"""


def sentences(path: Path, count: int) -> list[str]:
    if not path.is_file():
        raise SystemExit(f"{path}: not found; point --sts at an STS-benchmark file")
    seen: dict[str, None] = {}
    with path.open(encoding="utf-8") as fh:
        for row in csv.reader(fh, delimiter="\t", quoting=csv.QUOTE_NONE):
            for text in row[5:7]:
                seen.setdefault(text.strip())
    texts = [t for t in seen if t]
    if len(texts) < count:
        raise SystemExit(f"{path}: has {len(texts)} distinct sentences, fewer than --texts {count}")
    return texts[:count]


def baseline_ref() -> str:
    out = subprocess.run(
        ["git", "log", "--diff-filter=A", "--format=%H", "--", "sbert_cli/chunking/__init__.py"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    if not out:
        raise SystemExit("no commit adds sbert_cli/chunking/; give --baseline-ref")
    return out[-1] + "^"


def unpack(ref: str, into: Path) -> Path:
    into.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(["git", "archive", ref, "sbert_cli"], cwd=ROOT, capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def run(code: Path, corpus: Path, store: Path, threads: int) -> dict:
    env = {**os.environ, "PYTHONPATH": str(code)}
    cmd = [sys.executable, "-c", RUN, str(corpus), str(store), str(threads)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"run failed in {code}:\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def stage_costs(texts: list[str], rounds: int, threads: int) -> None:
    """CPU seconds per window side: today's prepare, chunker + prepare(ids), and the model."""
    import time

    import torch

    from sbert_cli.chunking import Chunker, ChunkPlan
    from sbert_cli.encoding.loader import cached_encoder
    from sbert_cli.inputs.reader import Record

    torch.set_num_threads(threads)
    encoder = cached_encoder(None, device="cpu", dtype="fp32")
    windows = [texts[i : i + 2048] for i in range(0, len(texts), 2048)]
    chunker = Chunker(encoder.token_counter(), ChunkPlan("chunk", encoder.spec.max_seq_length // 2, 32))

    def today() -> list:
        return [encoder.prepare(w) for w in windows]

    def chunked() -> list:
        out = []
        for w in windows:
            rows = list(chunker.rows(Record(i + 1, t) for i, t in enumerate(w)))
            out.append(encoder.prepare([r.text for r in rows], None, [r.ids for r in rows]))
        return out

    def model() -> None:
        for prepared in today():
            encoder.run(prepared)

    spent = {"today": [], "chunking": [], "model": []}
    for round_ in range(rounds):
        order = [("today", today), ("chunking", chunked)]
        for name, work in order if round_ % 2 == 0 else order[::-1]:
            start = time.process_time()
            work()
            spent[name].append(time.process_time() - start)
        if round_ < 2:
            start = time.process_time()
            model()
            spent["model"].append(time.process_time() - start - spent["today"][-1])
    med = {k: statistics.median(v) for k, v in spent.items()}
    extra = med["chunking"] - med["today"]
    print(
        f"CPU s per pass over {len(texts)} texts (median of {rounds}): prepare today {med['today']:.3f}, "
        f"chunker + prepare {med['chunking']:.3f}, model {med['model']:.3f}; chunking adds "
        f"{extra:+.3f} s = {100 * extra / (med['today'] + med['model']):+.2f}% of today's CPU work"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sts", type=Path, default=SHARED / "stsb" / "sts-train.csv")
    parser.add_argument("--texts", type=int, default=4000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--baseline-ref", default=None)
    parser.add_argument("--stages", action="store_true", help="only the in-process per-stage CPU comparison")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: steadier on a shared machine)")
    args = parser.parse_args()
    from _data import require_file

    require_file(args.sts, "STS-benchmark sentences (--sts FILE)")
    if args.stages:
        stage_costs(sentences(args.sts, args.texts), args.rounds, args.threads)
        return
    ref = args.baseline_ref or baseline_ref()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        corpus = work / "sentences.txt"
        corpus.write_text("\n".join(sentences(args.sts, args.texts)) + "\n", encoding="utf-8")
        codes = {"baseline": unpack(ref, work / "baseline"), "chunking": ROOT}
        ratios: dict[str, list[float]] = {"cpu": [], "wall": []}
        print(f"{args.texts} sentences; baseline {ref}; load {os.getloadavg()[0]:.1f}")
        for round_ in range(args.rounds):
            order = ["baseline", "chunking"] if round_ % 2 == 0 else ["chunking", "baseline"]
            got = {name: run(codes[name], corpus, work / f"store-{round_}-{name}", args.threads) for name in order}
            assert got["baseline"]["rows"] == got["chunking"]["rows"] == args.texts
            for key in ratios:
                ratios[key].append(got["chunking"][key] / got["baseline"][key])
            print(
                f"round {round_ + 1}: baseline {got['baseline']['cpu']:.2f} cpu-s {got['baseline']['wall']:.2f} s, "
                f"chunking {got['chunking']['cpu']:.2f} cpu-s {got['chunking']['wall']:.2f} s; "
                f"ratio cpu {ratios['cpu'][-1]:.3f} wall {ratios['wall'][-1]:.3f}"
            )
        print(
            f"median ratio chunking/baseline: cpu {statistics.median(ratios['cpu']):.3f}, "
            f"wall {statistics.median(ratios['wall']):.3f}; load {os.getloadavg()[0]:.1f}"
        )


if __name__ == "__main__":
    main()
