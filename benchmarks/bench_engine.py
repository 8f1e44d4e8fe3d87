"""The CPU engine per backend and dtype against sentence-transformers' own CPU paths, same run.

    python benchmarks/bench_engine.py                       # 2,100 Moby-Dick paragraphs, 2 rounds
    python benchmarks/bench_engine.py --texts 2100 --runs fp32 ov-bf16 auto --rounds 3 --sts

Every contender is a fresh process that reads the corpus, encodes it and writes the vectors
(start-up, model load, calibration and writing included), on held-out text: book paragraphs the
engine was never tuned on (Moby-Dick by default; `--corpus` takes any one-paragraph-a-line file).
Peers: sentence-transformers fp32 (batch 32), bf16 weights through `model_kwargs`, and its
`backend="openvino"` / `backend="onnx"` (optimum-intel / optimum-onnx, whose pins replace this
project's transformers: they run from a venv of their own, `--peer-python`; the model is exported
and saved for them before the rounds, as their docs advise, so no export is timed).
The fastest peer of the run is the "best peer".
The contenders run in rounds in a rotating order (load from other processes falls on all of them);
the table gives median and best wall seconds, median CPU seconds (user + system), the ratios to
each peer, peak RSS, the minimum cosine to the fp32 peer, and the roofline: the model stage's
GFLOP/s (sbert's own stage clock) against the GEMM rate this run measures for the dtype in use.
The default 2,100 texts is just over one window (2,048): below it `--dtype auto` does not measure.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from bench_encode import machine_line, store_vectors

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared" / "data"
PEER_SCRIPT = """
import sys, numpy as np, torch
from sentence_transformers import SentenceTransformer
variant, path = sys.argv[3], sys.argv[4]
if variant in ("openvino", "onnx"):
    model = SentenceTransformer(path, device="cpu", backend=variant)
else:
    kwargs = {"dtype": torch.bfloat16} if variant == "bf16" else {}
    model = SentenceTransformer(path, device="cpu", model_kwargs=kwargs)
texts = [line.rstrip("\\n") for line in open(sys.argv[1], encoding="utf-8") if line.strip()]
vectors = model.encode(texts, batch_size=32, normalize_embeddings=True, convert_to_numpy=True)
np.save(sys.argv[2], vectors.astype(np.float32))
"""
PEERS = {
    "st-fp32": "sentence-transformers fp32",
    "st-bf16": "sentence-transformers bf16",
    "st-openvino": "sentence-transformers openvino",
    "st-onnx": "sentence-transformers onnx",
}
BACKEND_PEERS = ("st-openvino", "st-onnx")  # need --peer-python with optimum-intel / optimum-onnx
EXPORT_SCRIPT = """
import sys
from sentence_transformers import SentenceTransformer
SentenceTransformer(sys.argv[1], device="cpu", backend=sys.argv[2]).save_pretrained(sys.argv[3])
"""
RUNS = {
    "fp32": ["--dtype", "fp32", "--backend", "torch"],
    "bf16": ["--dtype", "bf16", "--backend", "torch"],
    "ov-fp32": ["--dtype", "fp32", "--backend", "openvino"],
    "ov-bf16": ["--dtype", "bf16", "--backend", "openvino"],
    "onnx-fp32": ["--dtype", "fp32", "--backend", "onnx"],
    "int8": ["--dtype", "int8"],
    "fp32-auto": ["--dtype", "fp32"],  # --backend auto: the fastest fp32 engine, measured
    "auto": ["--dtype", "auto"],  # warm: a full verdict cached (measured before the rounds)
    "auto-cold": ["--dtype", "auto"],  # cold: no verdict cached, measured in the timed run
}
DEFAULT_RUNS = ["fp32", "bf16", "ov-fp32", "ov-bf16", "int8", "fp32-auto", "auto", "auto-cold"]
FIXED = ("fp32", "bf16", "ov-fp32", "ov-bf16")  # the engines `auto` chooses between
COLD = ("auto-cold",)
PRIME_SCRIPT = """
import sys
from sbert_cli.encoding import calibrate
texts = [line.rstrip("\\n") for line in open(sys.argv[1], encoding="utf-8") if line.strip()]
for dtype in ("auto", "fp32"):  # a job big enough to measure every engine
    calibrate.auto_engine(calibrate.ModelSettings(device="cpu", dtype=dtype), 10**9, lambda n: texts[:n], print)
"""
STAGES = re.compile(r"stages: .*?model ([0-9.]+) s")


def gemm_rates(threads: int) -> dict[str, float]:
    """GFLOP/s of one (4096 x 384) @ (384 x 1536) product in fp32 and bf16 (torch, oneDNN/MKL):
    the FFN's shape at a 2,048-token batch, best of 10."""
    import torch

    torch.set_num_threads(threads)
    rates = {}
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        a, b = torch.randn(4096, 384, dtype=dtype), torch.randn(384, 1536, dtype=dtype)
        best = float("inf")
        for _ in range(10):
            started = time.perf_counter()
            a @ b
            best = min(best, time.perf_counter() - started)
        rates[name] = 2 * 4096 * 384 * 1536 / best / 1e9
    return rates


def model_flops(lengths: list[int], layers: int = 6, hidden: int = 384) -> float:
    """Matrix products of a BERT encoder per text: 24 H^2 per token and layer (QKV, output, FFN)
    plus 4 H L^2 per text and layer for attention (padding not counted)."""
    return float(sum(layers * (24 * hidden * hidden * n + 4 * hidden * n * n) for n in lengths))


def command(name: str, corpus: Path, work: Path, store: str = "store") -> list[str]:
    if name in PEERS:
        variant = name.split("-")[1]
        model = work / name if name in BACKEND_PEERS else model_path()
        python = PEER_PYTHON if name in BACKEND_PEERS else sys.executable
        return [python, "-c", PEER_SCRIPT, str(corpus), str(work / f"{name}.npy"), variant, str(model)]
    # --truncate: one vector per paragraph, cut at max_seq_length as sentence-transformers cuts it,
    # so every contender does the same work (chunking would encode every long paragraph whole).
    out = str(work / f"{store}-{name}")
    return [sys.executable, "-m", "sbert_cli", "encode", str(corpus), "-o", out, "--truncate", *RUNS[name]]


def timed(cmd: list[str], env: dict[str, str], log: Path) -> tuple[float, float, float]:
    """Wall seconds, CPU seconds (user + system) and peak RSS (MiB) of one child; stderr to `log`."""
    with open(log, "wb") as err:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        elapsed = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{log.read_text(errors='replace')[-2000:]}")
    return elapsed, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024


def run_once(name: str, corpus: Path, work: Path, env: dict[str, str]) -> dict:
    if name not in PEERS:
        shutil.rmtree(work / f"store-{name}", ignore_errors=True)  # a new store: auto decides afresh
    if name in COLD:  # the cold cache: graphs and compiled models kept, no engine verdict
        env = {**env, "SBERT_CACHE": str(work / "cold-cache")}
        (work / "cold-cache" / "calibration.json").unlink(missing_ok=True)
    log = work / f"{name}.log"
    wall, cpu, rss = timed(command(name, corpus, work), env, log)
    found = STAGES.findall(log.read_text(encoding="utf-8", errors="replace"))
    return {"wall": wall, "cpu": cpu, "rss": rss, "model_s": float(found[-1]) if found else None}


def run_rounds(names: list[str], rounds: int, corpus: Path, work: Path, env: dict[str, str]):
    """Every contender once per round in a rotating order; the GEMM rates are measured at the start
    of each round and after the last (their median is the roofline: the load moves them too)."""
    results: dict[str, list] = {n: [] for n in names}
    gemm: list[dict[str, float]] = []
    for rnd in range(rounds):
        gemm.append(gemm_rates(os.cpu_count() or 1))
        shift = rnd % len(names)
        for name in names[shift:] + names[:shift]:
            got = run_once(name, corpus, work, env)
            results[name].append(got)
            load = os.getloadavg()[0]
            print(
                f"round {rnd + 1}: {name:10} {got['wall']:7.1f} s wall {got['cpu']:7.1f} s CPU (load {load:.1f})",
                flush=True,
            )
    gemm.append(gemm_rates(os.cpu_count() or 1))
    return results, {d: statistics.median(g[d] for g in gemm) for d in gemm[0]}


def vectors(name: str, work: Path) -> np.ndarray:
    return np.load(work / f"{name}.npy") if name in PEERS else store_vectors(work / f"store-{name}")


def model_path() -> Path:
    from sbert_cli.encoding.model import resolve_model_path

    return resolve_model_path(None)[1]


def export_backend_peers(peers: list[str], work: Path) -> None:
    """Untimed, once: the model exported and saved for sentence-transformers' own backends."""
    for name in (p for p in peers if p in BACKEND_PEERS and not (work / p).is_dir()):
        cmd = [PEER_PYTHON, "-c", EXPORT_SCRIPT, str(model_path()), name.split("-")[1], str(work / name)]
        done = subprocess.run(cmd, capture_output=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
        if done.returncode != 0:
            raise SystemExit(
                f"{name}: the export failed (--peer-python {PEER_PYTHON}):\n{done.stderr.decode()[-1500:]}"
            )


def engine_of(name: str, work: Path) -> tuple[str, str]:
    if name in BACKEND_PEERS:
        return name.split("-")[1], "(its own)"
    if name in PEERS:
        return "torch", name.split("-")[1]
    from sbert_cli.store.store import Store

    model = Store.open(work / f"store-{name}").manifest.model
    return model.backend, model.dtype


def print_table(results: dict[str, list], work: Path, flops: float, gemm: dict[str, float]) -> list[dict]:
    reference = vectors("st-fp32", work)
    peer = {p: statistics.median(r["wall"] for r in results[p]) for p in PEERS if p in results}
    peer_cpu = {p: statistics.median(r["cpu"] for r in results[p]) for p in PEERS if p in results}
    best_peer = min(peer, key=peer.__getitem__)
    print(
        f"\nfastest peer: {PEERS[best_peer]}; GEMM rates this run: fp32 {gemm['fp32']:.0f}, bf16 {gemm['bf16']:.0f} GFLOP/s"
    )
    head = (
        f"{'run':31} {'engine':14} {'wall med':>8} {'best':>6} {'CPU med':>7} {'x fp32 peer':>11} {'x best peer':>11}"
    )
    print(f"{head} {'x CPU':>6} {'RSS MiB':>7} {'min cos':>8} {'model s':>7} {'GFLOP/s':>7} {'of GEMM':>7}")
    rows = []
    for name, runs in results.items():
        backend, dtype = engine_of(name, work)
        wall, cpu = statistics.median(r["wall"] for r in runs), statistics.median(r["cpu"] for r in runs)
        cos = float((vectors(name, work) * reference).sum(1).min())
        model_s = statistics.median(r["model_s"] for r in runs) if runs[0]["model_s"] else None
        rate = flops / model_s / 1e9 if model_s else None
        roof = rate / gemm.get(dtype, gemm["fp32"]) if rate else None
        row = dict(name=name, backend=backend, dtype=dtype, wall=wall, best=min(r["wall"] for r in runs), cpu=cpu)
        row.update(x_fp32=peer["st-fp32"] / wall, x_best=peer[best_peer] / wall, x_cpu=peer_cpu["st-fp32"] / cpu)
        row.update(rss=max(r["rss"] for r in runs), cos=cos, model_s=model_s, gflops=rate, roofline=roof)
        rows.append(row)
        label = PEERS.get(name, f"sbert {name}")
        print(
            f"{label:31} {backend + ' ' + dtype:14} {wall:8.1f} {row['best']:6.1f} {cpu:7.1f} {row['x_fp32']:11.2f} "
            f"{row['x_best']:11.2f} {row['x_cpu']:6.2f} {row['rss']:7.0f} {cos:8.6f} "
            f"{model_s or 0:7.1f} {rate or 0:7.0f} {(roof or 0):7.0%}"
        )
    return rows


def sts_scores(engines: list[tuple[str, str]], data: Path) -> dict[str, tuple[float, float]]:
    """STS-benchmark dev Spearman x100 and the minimum cosine to fp32 per engine."""
    from scipy.stats import spearmanr

    from sbert_cli.encoding.loader import cached_encoder

    rows = [line.rstrip("\n").split("\t") for line in open(data / "stsb" / "sts-dev.csv", encoding="utf-8")]
    gold = np.array([float(r[4]) for r in rows])
    texts = [r[5] for r in rows] + [r[6] for r in rows]
    out, base = {}, None
    for backend, dtype in engines:
        v = cached_encoder(None, device="cpu", dtype=dtype, backend=backend).encode(texts)
        base = v if base is None else base
        a, b = v[: len(rows)], v[len(rows) :]
        out[f"{backend} {dtype}"] = (100 * spearmanr((a * b).sum(1), gold).statistic, float((v * base).sum(1).min()))
    return out


def prepare_caches(args, corpus: Path, work: Path, env: dict[str, str]) -> None:
    """Untimed: the ONNX export (once per model), OpenVINO's compiled models and the OS file
    cache, by a 20-text run of each fixed contender; the warm cache's full engine verdicts (what a
    big job leaves); the cold cache, a copy without verdicts."""
    warm = work / "warm.txt"
    warm.write_text("".join(corpus.read_text(encoding="utf-8").splitlines(True)[:20]), encoding="utf-8")
    for name in [n for n in args.runs if not n.startswith("auto")]:
        subprocess.run(command(name, warm, work, "warm"), env=env, check=True, capture_output=True)
    if "auto" in args.runs or "fp32-auto" in args.runs:
        done = subprocess.run([sys.executable, "-c", PRIME_SCRIPT, str(corpus)], env=env, capture_output=True)
        if done.returncode != 0:
            raise SystemExit(f"measuring the engines failed:\n{done.stderr.decode(errors='replace')[-2000:]}")
    cache = Path(env["SBERT_CACHE"])
    for folder in ("onnx", "openvino"):
        if (cache / folder).is_dir():
            shutil.copytree(cache / folder, work / "cold-cache" / folder, dirs_exist_ok=True)


def print_verdicts(work: Path) -> None:
    for label, folder in (("warm", "cache"), ("cold", "cold-cache")):
        path = work / folder / "calibration.json"
        entries = json.loads(path.read_text()).values() if path.is_file() else []
        for entry in entries:
            seconds = ", ".join(f"{k} {v:.2f}" for k, v in sorted(entry["seconds"].items(), key=lambda kv: kv[1]))
            print(
                f"engine verdict ({label} cache): {entry['backend']} {entry['dtype']}; sample seconds {seconds}; "
                f"workers {entry['workers']}; {'complete' if entry.get('complete', True) else 'partial'}, "
                f"measuring took {entry.get('cost_s', 0):.1f} s"
            )


def print_auto(rows: list[dict]) -> None:
    """`auto` (warm and cold cache) against the fastest fixed engine of the same run."""
    by = {r["name"]: r for r in rows}
    fixed = [by[n] for n in FIXED if n in by]
    if not fixed:
        return
    best = min(fixed, key=lambda r: r["wall"])
    for name, words in (("auto", "warm cache"), ("auto-cold", "cold cache"), ("fp32-auto", "--dtype fp32")):
        if name in by:
            row = by[name]
            against = (
                best
                if name != "fp32-auto"
                else min((r for r in fixed if r["dtype"] == "fp32"), key=lambda r: r["wall"], default=best)
            )
            print(
                f"{name} ({words}): {row['backend']} {row['dtype']}, {row['wall']:.1f} s wall, {row['cpu']:.1f} CPU s; "
                f"fastest fixed choice sbert {against['name']} {against['wall']:.1f} s, {against['cpu']:.1f} CPU s: "
                f"{row['wall'] / against['wall'] - 1:+.1%} wall, {row['cpu'] / against['cpu'] - 1:+.1%} CPU (target: at most +5%)"
            )


def print_int8(rows: list[dict], scores: dict[str, tuple[float, float]]) -> None:
    by = {r["name"]: r for r in rows}
    bf16 = [r for r in rows if r["dtype"] == "bf16" and r["name"] in FIXED]
    if "int8" not in by or not bf16:
        return
    int8, fastest = by["int8"], min(bf16, key=lambda r: r["wall"])
    line = (
        f"int8 (ONNX Runtime): {int8['wall']:.1f} s wall, {int8['cpu']:.1f} CPU s; fastest bf16 (sbert "
        f"{fastest['name']}) {fastest['wall']:.1f} s: int8 takes {int8['wall'] / fastest['wall']:.2f}x its time"
    )
    fp32 = next((v for k, v in scores.items() if k.endswith("fp32")), None)
    if fp32 and "onnx int8" in scores:
        rho, cos = scores["onnx int8"]
        line += f"; STS dev Spearman x100 {rho:.2f} vs fp32 {fp32[0]:.2f} ({rho - fp32[0]:+.2f}), min cosine {cos:.4f}"
    print(line)


PEER_PYTHON = sys.executable


def default_peers() -> list[str]:
    """st-fp32 and st-bf16, and the backend peers where --peer-python can run them (else a line)."""
    probe = "import optimum.intel, optimum.onnxruntime, sentence_transformers"
    if subprocess.run([PEER_PYTHON, "-c", probe], capture_output=True).returncode == 0:
        return list(PEERS)
    print(
        f"sentence-transformers' openvino/onnx backends: not measured ({PEER_PYTHON} lacks optimum-intel / "
        "optimum-onnx; give --peer-python a venv with sentence-transformers[openvino,onnx])"
    )
    return ["st-fp32", "st-bf16"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--texts", type=int, default=2100)
    parser.add_argument("--data", type=Path, default=SHARED, help="the shared data folder [default: ../shared/data]")
    parser.add_argument("--corpus", type=Path, default=None, help="[default: DATA/books/moby_dick.txt]")
    parser.add_argument("--runs", nargs="+", default=DEFAULT_RUNS, choices=list(RUNS))
    parser.add_argument(
        "--peers",
        nargs="+",
        default=None,
        choices=list(PEERS),
        help="[default: st-fp32, st-bf16, and st-openvino, "
        "st-onnx when --peer-python has optimum-intel / optimum-onnx]",
    )
    parser.add_argument(
        "--peer-python",
        default=sys.executable,
        help="Python of a venv with sentence-transformers[openvino,onnx] for the backend peers [default: this one]",
    )
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--no-sts", dest="sts", action="store_false", help="skip STS-benchmark dev per engine")
    parser.add_argument("--work", type=Path, default=None)
    args = parser.parse_args()
    args.corpus = args.corpus or args.data / "books" / "moby_dick.txt"
    from _data import require_file

    require_file(args.corpus, "a corpus, one text a line (--corpus FILE or --data DIR)")
    global PEER_PYTHON
    PEER_PYTHON = args.peer_python
    args.peers = args.peers or default_peers()
    if "st-fp32" not in args.peers:
        raise SystemExit("bench_engine: the fp32 peer is the reference; keep st-fp32 in --peers")
    sys.path.insert(0, str(ROOT))
    work = args.work or Path(tempfile.mkdtemp(prefix="sbert-engine-"))
    work.mkdir(parents=True, exist_ok=True)
    texts = [line.rstrip("\n") for line in open(args.corpus, encoding="utf-8") if line.strip()][: args.texts]
    corpus = work / "corpus.txt"
    corpus.write_text("\n".join(texts) + "\n", encoding="utf-8")
    from sbert_cli.encoding.loader import cached_encoder

    lengths = [len(ids) for ids in cached_encoder(None, device="cpu", dtype="fp32").tokenize(texts)[0]]
    env = {**os.environ, "SBERT_CACHE": str(work / "cache")}  # auto measures once, in its first run
    print(f"corpus: {len(texts)} paragraphs of {args.corpus.name}, {sum(lengths)} tokens; machine: {machine_line()}")
    export_backend_peers(args.peers, work)
    prepare_caches(args, corpus, work, env)
    print(f"load average before: {os.getloadavg()}")
    results, gemm = run_rounds([*args.peers, *args.runs], args.rounds, corpus, work, env)
    print(f"load average after: {os.getloadavg()}")
    rows = print_table(results, work, model_flops(lengths), gemm)
    print_verdicts(work)
    print_auto(rows)
    scores = (
        sts_scores(
            sorted(
                {(r["backend"], r["dtype"]) for r in rows if r["name"] not in PEERS},
                key=lambda e: (e[1] != "fp32", e[0] != "torch"),
            ),
            args.data,
        )
        if args.sts
        else {}
    )
    for engine, (rho, cos) in scores.items():
        print(f"STS dev Spearman x100 {engine:14} {rho:.2f}  min cosine to the first fp32 engine {cos:.6f}")
    print_int8(rows, scores)
    (work / "results.json").write_text(json.dumps({"rows": rows, "gemm": gemm, "sts": scores}, indent=1))


if __name__ == "__main__":
    main()
