"""Long-document retrieval: does a paraphrase find the document that hides its sentence?

    python benchmarks/bench_documents.py                     # 100 documents, the shared books and STS-dev
    python benchmarks/bench_documents.py --docs 300 --seed 2 --books DIR --sts FILE

Documents are 12-30 consecutive paragraphs of one of the books (one paragraph per line), joined
by blank lines, with one STS-dev sentence put between two sentences of a random paragraph (a
random depth); the query is that sentence's STS partner from a pair scored 4 or more, so query
and target share meaning more than words. Each document has exactly one relevant query.

Three systems, the same model (all-MiniLM-L6-v2, fp32, CPU), scored with pytrec_eval as
`sbert eval` scores (R@10, MRR@10):
  sbert          `sbert encode` defaults: chunks of 256 tokens, 32 overlapping; a document's
                 score is its best chunk's cosine (max-sim over the store's chunk vectors,
                 grouped by `line`: exact, in numpy)
  sbert-trunc    `sbert encode --truncate`: one vector per document, its first 256 tokens
  st-paragraph   sentence-transformers encoding every paragraph as its own passage, max-sim per
                 document: the oracle (it knows where paragraphs are, and no paragraph of these
                 books needs chunking to be seen whole... nearly: ST truncates long ones)
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import re
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
# ../shared/data beside the checkout (or beside its worktree folder)
SHARED = next(
    (p / "shared" / "data" for p in (ROOT.parent, ROOT.parent.parent) if (p / "shared").is_dir()),
    ROOT.parent / "shared" / "data",
)
THREADS: int | None = None
SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def load_inputs(books: Path, sts: Path) -> tuple[list[list[str]], list[tuple[str, str]]]:
    for path in (books, sts):
        if not path.exists():
            raise SystemExit(f"{path}: not found; point --books and --sts at the shared data")
    novels = [
        [ln.strip() for ln in p.read_text(encoding="utf-8").splitlines() if ln.strip()]
        for p in sorted(books.glob("*.txt"))
    ]
    pairs = []
    with sts.open(encoding="utf-8") as fh:
        for row in csv.reader(fh, delimiter="\t", quoting=csv.QUOTE_NONE):
            if len(row) >= 7 and float(row[4]) >= 4.0:
                pairs.append((row[5].strip(), row[6].strip()))
    return novels, pairs


def make_documents(novels, pairs, count: int, seed: int, low: int, high: int):
    """(documents as lists of paragraphs, queries): document i hides pair i's first sentence."""
    rng = random.Random(seed)
    chosen = rng.sample(pairs, count)
    documents, queries = [], []
    for hidden, query in chosen:
        novel = rng.choice(novels)
        size = rng.randint(low, high)
        start = rng.randrange(0, len(novel) - size)
        paragraphs = novel[start : start + size]
        depth = rng.randrange(size)
        sentences = SENTENCE_END.split(paragraphs[depth])
        at = rng.randint(0, len(sentences))
        paragraphs[depth] = " ".join(sentences[:at] + [hidden] + sentences[at:])
        documents.append(paragraphs)
        queries.append(query)
    return documents, queries


def max_sim(queries: np.ndarray, vectors: np.ndarray, owner: np.ndarray, count: int) -> np.ndarray:
    """(queries, documents) best cosine of each document's vectors: exact, the library's cosine."""
    from sbert_cli.analysis.similarity import cosine_matrix

    scores = cosine_matrix(queries, vectors)
    best = np.full((len(queries), count), -np.inf, dtype=np.float32)
    for doc in range(count):
        best[:, doc] = scores[:, owner == doc].max(axis=1)
    return best


def metrics(scores: np.ndarray) -> dict[str, float]:
    from sbert_cli.evaluation.retrieval import retrieval_metrics, run_from_hits

    order = np.argsort(-scores, axis=1, kind="stable")[:, :10]
    qids = [f"q{i}" for i in range(len(scores))]
    hits = [[(f"d{d}", float(scores[q, d])) for d in order[q]] for q in range(len(scores))]
    qrels = {f"q{i}": {f"d{i}": 1} for i in range(len(scores))}
    found = retrieval_metrics(qrels, run_from_hits(qids, hits))
    return {"R@10": 100 * found["recall@10"], "MRR@10": 100 * found["mrr@10"]}


def sbert_scores(
    documents, query_vectors, mode: str | None, workdir: Path, size: int | None = None
) -> tuple[np.ndarray, float, int]:
    from sbert_cli.encoding.runner import EncodeOptions, encode_corpus
    from sbert_cli.store.store import Store

    source = workdir / "documents.jsonl"
    source.write_text("".join(json.dumps({"text": "\n\n".join(d)}) + "\n" for d in documents), encoding="utf-8")
    store_path = workdir / f"store-{mode or 'chunk'}-{size}"
    started = time.perf_counter()
    options = EncodeOptions(device="cpu", dtype="fp32", chunk_mode=mode, chunk_size=size, threads=THREADS)
    encode_corpus([str(source)], store_path, options)
    elapsed = time.perf_counter() - started
    store = Store.open(store_path)
    lines = np.concatenate([store.read_shard(s, ["line"]).column("line").to_numpy() for s in store.shards])
    _, vectors = store.load_embeddings()
    return max_sim(query_vectors, vectors, lines - 1, len(documents)), elapsed, len(vectors)


def oracle_scores(documents, queries, model_path: str) -> tuple[np.ndarray, float, int]:
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(model_path, device="cpu")
    passages = [p for d in documents for p in d]
    owner = np.array([i for i, d in enumerate(documents) for _ in d])
    started = time.perf_counter()
    vectors = model.encode(passages, batch_size=64, normalize_embeddings=True, convert_to_numpy=True)
    elapsed = time.perf_counter() - started
    q = model.encode(queries, normalize_embeddings=True, convert_to_numpy=True)
    return max_sim(q, vectors, owner, len(documents)), elapsed, len(vectors)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--books", type=Path, default=SHARED / "books")
    parser.add_argument("--sts", type=Path, default=SHARED / "stsb" / "sts-dev.csv")
    parser.add_argument("--docs", type=int, default=100)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--min-paragraphs", type=int, default=12)
    parser.add_argument("--max-paragraphs", type=int, default=30)
    parser.add_argument("--chunk-sizes", default="", help="also sbert with these --chunk-size values, e.g. 128,192")
    parser.add_argument("--threads", type=int, default=None, help="torch threads [default: torch's own]")
    parser.add_argument("--no-oracle", action="store_true", help="skip sentence-transformers")
    args = parser.parse_args()
    from _data import require_file

    require_file(args.sts, "STS-benchmark pairs (--sts FILE)")
    if not any(args.books.glob("*.txt")):
        require_file(args.books / "*.txt", "book paragraphs, one per line (--books DIR)")

    import torch

    from sbert_cli.encoding.loader import cached_encoder

    global THREADS
    THREADS = args.threads or torch.get_num_threads()
    torch.set_num_threads(THREADS)
    novels, pairs = load_inputs(args.books, args.sts)
    documents, queries = make_documents(novels, pairs, args.docs, args.seed, args.min_paragraphs, args.max_paragraphs)
    encoder = cached_encoder(None, device="cpu", dtype="fp32")
    query_vectors = encoder.encode(queries)
    paragraphs = sum(len(d) for d in documents)
    chars = sum(len("\n\n".join(d)) for d in documents)
    print(
        f"{len(documents)} documents, {paragraphs} paragraphs, {chars / len(documents):,.0f} characters each on average"
    )
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        results["sbert (chunks, max-sim)"] = sbert_scores(documents, query_vectors, None, Path(tmp))
        for size in filter(None, args.chunk_sizes.split(",")):
            results[f"sbert --chunk-size {size}"] = sbert_scores(documents, query_vectors, None, Path(tmp), int(size))
        results["sbert --truncate"] = sbert_scores(documents, query_vectors, "truncate", Path(tmp))
    if not args.no_oracle:
        results["ST per paragraph (oracle)"] = oracle_scores(documents, queries, str(encoder.spec.path))
    print(f"{'system':28} {'R@10':>6} {'MRR@10':>7} {'vectors':>8} {'encode s':>9}")
    for name, (scores, seconds, vectors) in results.items():
        m = metrics(scores)
        print(f"{name:28} {m['R@10']:6.1f} {m['MRR@10']:7.1f} {vectors:8d} {seconds:9.1f}")


if __name__ == "__main__":
    main()
