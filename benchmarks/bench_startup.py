"""Benchmark start-up: whole-process wall times from the shell, as a user or a script meets them.

    python benchmarks/bench_startup.py                 # 7 runs each, stores in a temp directory
    python benchmarks/bench_startup.py --runs 11 --work /tmp/bench_startup

1. `sbert --help` and `sbert --version` (target: under 0.5 s).
2. `sbert search STORE "a storm at sea" -k 3` on the indexed sample store (sample_corpus/, 500
   paragraphs): seconds until the first result line reaches the pipe, and until the process
   exits (target: first result under 3 s on 2 cores). Twice: with the query encoder `sbert index`
   caches (ONNX Runtime, no torch import), and without it (an empty cache: the full model, as
   before this path existed). Stores made with `--dtype auto` (fp32 on a CPU) and `--dtype bf16`
   (whose queries the cached path encodes in fp32).
3. Agreement of the two query paths: cosine of their query vectors and top-10 overlap, over the
   queries below, for each store.

The CPU is shared with other jobs: each figure is the median of --runs, with the minimum beside
it, and the load average is printed with the machine.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
SBERT = str(Path(sys.executable).parent / "sbert")
QUERIES = ["a storm at sea", "who is the captain?", "a ball in Moscow", "a murder and a guilty conscience"]


def machine() -> str:
    model = "unknown CPU"
    flags: set[str] = set()
    with open("/proc/cpuinfo", encoding="utf-8") as fh:
        for line in fh:
            if line.startswith("model name") and model == "unknown CPU":
                model = line.split(":", 1)[1].strip()
            elif line.startswith("flags") and not flags:
                flags = set(line.split(":", 1)[1].split())
    simd = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f in flags]
    cores = len(os.sched_getaffinity(0))
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return f"{model}, {cores} cores ({' '.join(simd)}), Python {platform.python_version()}, load average {load}"


def timed(args: list[str], env: dict, first_line: bool = False) -> tuple[float, float, float]:
    """(seconds to the first stdout line, seconds to exit, CPU seconds) of one process. The CPU
    seconds (user + system, all threads) do not grow when other jobs share the cores; wall time does."""
    started = time.perf_counter()
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline() if first_line else ""
    first = time.perf_counter() - started
    proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0 or (first_line and not line):
        raise SystemExit(f"failed: {' '.join(args)}")
    done = time.perf_counter() - started
    return (first if first_line else done), done, usage.ru_utime + usage.ru_stime


def measure(args: list[str], env: dict, runs: int, first_line: bool = False) -> dict[str, float]:
    timed(args, env, first_line)  # warm the page cache: the figures are for a machine in use, not a cold boot
    times = [timed(args, env, first_line) for _ in range(runs)]
    return {
        "first": statistics.median(t[0] for t in times),
        "first_min": min(t[0] for t in times),
        "exit": statistics.median(t[1] for t in times),
        "exit_min": min(t[1] for t in times),
        "cpu": statistics.median(t[2] for t in times),
    }


def make_store(work: Path, dtype: str, env: dict) -> Path:
    store = work / f"sample_store_{dtype}"
    if not (store / "manifest.json").is_file():
        subprocess.run(
            [SBERT, "encode", str(ROOT / "sample_corpus"), "-o", str(store), "--dtype", dtype, "-q"],
            env=env,
            check=True,
        )
    subprocess.run([SBERT, "index", str(store), "-q"], env=env, check=True)  # also caches the query graph
    return store


def agreement(store: Path) -> str:
    """Fast (ONNX) query vectors against the full model's, and their top-10s, for this store."""
    from sbert_cli.encoding.loader import encoder_for_store
    from sbert_cli.encoding.query import fast_query_encoder
    from sbert_cli.retrieval import Index

    index = Index.open(store, exact=True)
    fast = fast_query_encoder(index.store.model, "cpu")
    if fast is None:
        return "fast path not available"
    a, b = fast.encode(QUERIES), encoder_for_store(index.store.model, "cpu").encode(QUERIES)
    cosine = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    ids_a, scores_a = index.search_vectors(a, 10)
    ids_b, scores_b = index.search_vectors(b, 10)
    overlap = np.mean([len(set(x) & set(y)) / 10 for x, y in zip(ids_a, ids_b, strict=True)])
    return (
        f"min cosine {cosine.min():.6f}, top-10 overlap {overlap:.2f}, "
        f"max score difference {np.abs(scores_a - scores_b).max():.4f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--work", type=Path, default=None, help="where the stores go (kept between runs)")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="bench_startup-"))
    work.mkdir(parents=True, exist_ok=True)
    cache, empty = work / "cache", work / "empty-cache"
    os.environ["SBERT_CACHE"] = str(cache)  # this process's agreement check reads the same cache
    env = {**os.environ}
    print(f"machine: {machine()}")
    rows = [(f"`sbert {a}`", measure([SBERT, a], env, args.runs)) for a in ("--help", "--version")]
    for dtype in ("auto", "bf16"):
        store = make_store(work, dtype, env)
        search = [SBERT, "search", str(store), QUERIES[0], "-k", "3", "--format", "jsonl"]
        fast = measure(search, env, args.runs, first_line=True)
        rows.append((f"`sbert search` ({dtype} store), cached query encoder", fast))
        full = measure(search, {**env, "SBERT_CACHE": str(empty)}, args.runs, first_line=True)
        rows.append((f"`sbert search` ({dtype} store), full model (no cache)", full))
        print(f"{dtype} store: fast vs full query path: {agreement(store)}")
    print(f"machine after: {machine()}")
    print("\n| command | first result s (median / min) | exit s (median / min) | CPU s (median) |")
    print("| --- | ---: | ---: | ---: |")
    for name, t in rows:
        first = f"{t['first']:.2f} / {t['first_min']:.2f}" if t["first"] != t["exit"] else "-"
        print(f"| {name} | {first} | {t['exit']:.2f} / {t['exit_min']:.2f} | {t['cpu']:.2f} |")


if __name__ == "__main__":
    main()
