"""Benchmark `sbert index --quantize none|int8|binary`: index bytes, build time, queries/s and
recall@10 against exact search, for each representation, with a sweep of --rescore.

    python benchmarks/bench_quantized.py --work /tmp/bench_quantized --real-store /tmp/bench_hybrid/corpus.store

Vectors: encoding 100k texts takes ~20 minutes on this 2-core machine, so the 100k set is built
from real all-MiniLM-L6-v2 vectors: the --real-store's rows (bench_hybrid.py's store: STS-train
sentences and book paragraphs, 12,036 rows; made here if missing) plus blends of two of them,
normalize(a x u + (1 - a) x v), a uniform in [0.5, 1]. With mean pooling, a blend approximates
the vector of the two texts written as one, so the set keeps a real model's anisotropy and
neighbourhoods. Queries of two kinds, encoded by the same model: STS-dev sentences (paraphrase
queries) and single words of STS-dev (6+ letters: the names and rare words of hybrid search),
recall reported per kind. The same measurement runs on the real rows alone (--rows 0 skips the
100k set).
"""

from __future__ import annotations

import argparse
import random
import shutil
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from _data import BOOKS, DEFAULT_DATA, STS_DEV, STS_TRAIN, require  # noqa: E402
from bench_hybrid import WORD, read_paragraphs, read_sts  # noqa: E402

from sbert_cli.encoding.runner import EncodeOptions, encode_corpus  # noqa: E402
from sbert_cli.inputs.reader import Record  # noqa: E402
from sbert_cli.retrieval import Index, build_index, exact_search  # noqa: E402
from sbert_cli.retrieval.quantized import DEFAULT_RESCORE  # noqa: E402
from sbert_cli.store.manifest import IndexManifest, InputEntry, StoreManifest  # noqa: E402
from sbert_cli.store.store import Store  # noqa: E402
from sbert_cli.store.writer import ShardCommitter  # noqa: E402

DATA = DEFAULT_DATA  # --data DIR sets it
RESCORES = {"none": (None,), "int8": (1, 2, 4), "binary": (10, 20, 30, 50, 80, 120, 200)}


def real_store(path: Path, data: Path) -> Store:
    if not Store.exists(path):
        pairs = read_sts(data / "stsb" / "sts-train.csv")
        texts = list(dict.fromkeys(s for _, s1, s2 in pairs for s in (s1, s2) if s))
        texts += read_paragraphs(data / "books")[:1500]
        path.mkdir(parents=True, exist_ok=True)
        (path.parent / "real.txt").write_text("\n".join(t.replace("\n", " ") for t in texts) + "\n", encoding="utf-8")
        encode_corpus([str(path.parent / "real.txt")], path, EncodeOptions(device="cpu", dtype="fp32"))
    return Store.open(path)


def blended_store(path: Path, real: Store, rows: int, seed: int = 0) -> Store:
    """`rows` vectors: the real ones, then blends of two of them, written as a store (no texts)."""
    if Store.exists(path) and Store.open(path).rows == rows:
        return Store.open(path)
    shutil.rmtree(path, ignore_errors=True)
    _, vectors = real.load_embeddings()
    rng = np.random.default_rng(seed)
    manifest = StoreManifest(model=real.model, has_text=False)
    entry = InputEntry(index=0, source="blends", path=None, size=None, mtime_ns=None, format="synthetic")
    manifest.inputs.append(entry)
    committer = ShardCommitter(path, manifest, entry, 20_000)
    for start in range(0, rows, 10_000):
        n = min(10_000, rows - start)
        if start + n <= len(vectors):
            block = vectors[start : start + n]
        else:
            a = rng.uniform(0.5, 1.0, (n, 1)).astype(np.float32)
            block = (
                a * vectors[rng.integers(len(vectors), size=n)] + (1 - a) * vectors[rng.integers(len(vectors), size=n)]
            )
            block /= np.linalg.norm(block, axis=1, keepdims=True)
        committer.add([Record(start + i + 1, "") for i in range(n)], block)
    committer.commit()
    entry.complete = True
    manifest.save(path)
    return Store.open(path)


def measure(base: Store, work: Path, queries: dict[str, np.ndarray], label: str, kinds: list[str]) -> None:
    truth = {kind: exact_search(base, q, 10)[0] for kind, q in queries.items()}
    everything = np.concatenate(list(queries.values()))
    raw = base.rows * base.dim * 4  # the float32 vectors themselves
    counts = ", ".join(f"{kind} {len(q):,}" for kind, q in queries.items())
    print(f"\n## {label}: {base.rows:,} x {base.dim} vectors, queries: {counts}, k=10")
    print(
        "| index | in memory (MB) | float32 vectors / this | build s | --rescore | queries/s | ms/query (one at a time) | "
        + " | ".join(f"recall@10 {kind}" for kind in queries)
        + " |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|" + "---:|" * len(queries))
    for quantize in kinds:
        store = work / f"{base.path.name}-{quantize}"
        shutil.rmtree(store, ignore_errors=True)
        shutil.copytree(base.path, store)
        started = time.perf_counter()
        build_index(store, quantize=quantize, bm25=False, rebuild=True)
        build_s = time.perf_counter() - started
        manifest = IndexManifest.load(store)
        ids_bytes = sum(p.bytes for p in manifest.parts if p.name.endswith(".ids.npy"))
        memory = manifest.bytes + ids_bytes
        index = Index.open(store)
        for rescore in RESCORES[quantize]:
            qps, latency = _time(index, everything, rescore)
            recalls = [_recall(index, q, truth[kind], rescore) for kind, q in queries.items()]
            shown = (
                "-"
                if rescore is None
                else (f"**{rescore}** (default)" if rescore == DEFAULT_RESCORE[quantize] else rescore)
            )
            print(
                f"| {quantize} | {memory / 1e6:,.1f} | {raw / memory:.2f}x | {build_s:.1f} | {shown} | {qps:,.0f} "
                f"| {latency:.2f} | " + " | ".join(f"{r:.4f}" for r in recalls) + " |"
            )
        shutil.rmtree(store, ignore_errors=True)


def _recall(index: Index, queries: np.ndarray, truth: np.ndarray, rescore: int | None) -> float:
    found = index.search_vectors(queries, 10, rescore=rescore)[0]
    return float(np.mean([len(set(f) & set(t)) / 10 for f, t in zip(found, truth, strict=True)]))


def _time(index: Index, queries: np.ndarray, rescore: int | None) -> tuple[float, float]:
    index.search_vectors(queries[:8], 10, rescore=rescore)  # warm up: page in what a search touches
    started = time.perf_counter()
    index.search_vectors(queries, 10, rescore=rescore)
    qps = len(queries) / (time.perf_counter() - started)
    times = []
    for q in queries[:: max(1, len(queries) // 100)][:100]:
        t = time.perf_counter()
        index.search_vectors(q[None], 10, rescore=rescore)
        times.append(time.perf_counter() - t)
    return qps, 1000 * statistics.median(times)


def depth_study(store: Store, queries: dict[str, np.ndarray], k: int = 10) -> None:
    """How deep in the Hamming order (sign bits, as the binary index) each query's exact top k
    lie, per kind, and whether the first 30 x k candidates' rescored scores foretell it: the
    spread (best - kth) a per-query rescoring depth would read, and the kth score itself."""
    _, vectors = store.load_embeddings()
    vectors = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    codes = np.packbits(vectors > 0, axis=1).view(np.uint64)
    print(f"\nDepth study, {len(vectors):,} vectors: Hamming depth (x k) holding all of the exact top {k}")
    print("| kind | median | 90% | 95% | 99% | found in 30 x k | 120 x k | 400 x k | corr spread | corr kth |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for kind, batch in queries.items():
        need, spread, kth = [], [], []
        for q in batch / np.linalg.norm(batch, axis=1, keepdims=True):
            code = np.packbits(q > 0).view(np.uint64)
            order = np.argsort(np.bitwise_count(codes ^ code).sum(1), kind="stable")
            rank = np.empty(len(order), np.int64)
            rank[order] = np.arange(len(order))
            cos = vectors @ q
            need.append((rank[np.argpartition(-cos, k)[:k]].max() + 1) / k)
            first = np.sort(cos[order[: 30 * k]])[::-1]
            spread.append(first[0] - first[k - 1])
            kth.append(first[k - 1])
        need = np.array(need)
        pct = " | ".join(f"{v:.0f}" for v in np.percentile(need, [50, 90, 95, 99]))
        found = " | ".join(f"{np.mean(need <= m):.3f}" for m in (30, 120, 400))
        corr = [np.corrcoef(np.log(need), x)[0, 1] for x in (spread, kth)]
        print(f"| {kind} | {pct} | {found} | {corr[0]:.2f} | {corr[1]:.2f} |")


def query_texts(data: Path, count: int) -> dict[str, list[str]]:
    """Two kinds: STS-dev sentences (sentence1, as paraphrase queries) and single words of STS-dev
    (names and rare words: the kind whose neighbours a sign-bit code separates worst)."""
    pairs = read_sts(data / "stsb" / "sts-dev.csv")
    sentences = list(dict.fromkeys(s1 for _, s1, _ in pairs if s1))
    words = sorted({w for _, s1, s2 in pairs for w in WORD.findall(s1 + " " + s2) if len(w) >= 6})
    rng = random.Random(3)
    return {"paraphrase": sentences[:count], "single word": rng.sample(words, min(count, len(words)))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--data", type=Path, default=DATA, help="The shared data folder (stsb/, books/).")
    parser.add_argument(
        "--real-store", type=Path, default=None, help="Store of real vectors [default: WORK/real.store]."
    )
    parser.add_argument("--rows", type=int, default=100_000, help="Size of the blended set (0: skip it).")
    parser.add_argument("--queries", type=int, default=500, help="Queries of each kind.")
    parser.add_argument("--only", default="none,int8,binary", help="Indexes to measure (none takes minutes at 100k).")
    parser.add_argument("--depth-study", action="store_true", help="Only the binary rescoring depth study.")
    args = parser.parse_args()
    require(args.data, BOOKS, STS_TRAIN, STS_DEV)

    args.work.mkdir(parents=True, exist_ok=True)
    kinds = args.only.split(",")
    real = real_store(args.real_store or args.work / "real.store", args.data)
    started = time.perf_counter()
    encoder = Index.open(real.path, exact=True, device="cpu")
    queries = {kind: encoder.encode(texts) for kind, texts in query_texts(args.data, args.queries).items()}
    print(f"encoded {sum(len(q) for q in queries.values()):,} queries in {time.perf_counter() - started:.1f} s")
    if args.depth_study:
        depth_study(
            blended_store(args.work / f"blended-{args.rows}.store", real, args.rows) if args.rows else real, queries
        )
        return
    if args.rows:
        blended = blended_store(args.work / f"blended-{args.rows}.store", real, args.rows)
        measure(blended, args.work, queries, f"{args.rows:,} vectors (real + blends of real all-MiniLM-L6-v2)", kinds)
    measure(real, args.work, queries, f"{real.rows:,} real all-MiniLM-L6-v2 vectors", kinds)


if __name__ == "__main__":
    main()
