"""Long-document retrieval: does a paraphrase find the document that hides its sentence?

    python benchmarks/bench_documents.py --part test --seeds 1,2        # the figure to report
    python benchmarks/bench_documents.py --part dev --seeds 1 --docs 200  # where choices are made

Documents are 12-30 consecutive paragraphs of a novel (one paragraph per line), joined by blank
lines, with one STS sentence put between two sentences of a random paragraph (a random depth);
the query is that sentence's partner from a pair scored 4 or more, so query and target share
meaning more than words. Each document has exactly one relevant query, and every query is
ranked against all documents of its seed.

The data is split in two, so that what is chosen is not what is reported:
  dev    pairs from sts-train.csv, documents from the first half of each novel
  test   pairs from sts-dev.csv (as issue 18 asks), documents from the second half of each novel
Chunking choices (boundaries, overlap, default size) were made on `dev` only; `test` reports.

Systems, one model (all-MiniLM-L6-v2, fp32, CPU), R@10 and MRR@10 per query:
  sbert          the rows `sbert encode` makes by default (its own chunking stage, the store's
                 default settings), a document scored by its best chunk (max-sim, exact)
  sbert-trunc    `--truncate`: one vector per document, its first 256 tokens
  st-paragraph   sentence-transformers encoding every paragraph as its own passage, max-sim per
                 document: the oracle (it knows where the paragraphs are)
Figures come with 95% confidence intervals (scipy.stats.bootstrap, BCa) over STS pairs: a pair's
per-query values are averaged over the seeds first, so a pair seen under several seeds counts
once. The difference to the oracle is paired (the same queries and documents).

Vectors are cached on disk by text (--cache, default under /tmp), so a rerun encodes only what
changed; --no-cache encodes everything.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import random
import re
import sqlite3
import sys
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
SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
PARTS = {"dev": ("sts-train.csv", 0), "test": ("sts-dev.csv", 1)}  # STS file, half of each novel


def load_part(data: Path, part: str) -> tuple[list[list[str]], list[tuple[str, str]]]:
    """The novels' halves (paragraphs) and the STS pairs (score >= 4) of one part."""
    from _data import BOOKS, STS_DEV, STS_TRAIN, require

    sts_name, half = PARTS[part]
    require(data, BOOKS, STS_TRAIN if sts_name == "sts-train.csv" else STS_DEV)
    books, sts = data / "books", data / "stsb" / sts_name
    novels = []
    for path in sorted(books.glob("*.txt")):
        paragraphs = [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
        middle = len(paragraphs) // 2
        novels.append(paragraphs[:middle] if half == 0 else paragraphs[middle:])
    pairs = []
    with sts.open(encoding="utf-8") as fh:
        for row in csv.reader(fh, delimiter="\t", quoting=csv.QUOTE_NONE):
            if len(row) >= 7 and float(row[4]) >= 4.0 and row[5].strip() != row[6].strip():
                pairs.append((row[5].strip(), row[6].strip()))
    return novels, sorted(set(pairs))


def make_documents(novels, pairs, count: int, seed: int, low: int = 12, high: int = 30):
    """(documents as lists of paragraphs, queries, pair numbers): document i hides its pair's first
    sentence, query i is the second."""
    rng = random.Random(seed)
    chosen = rng.sample(range(len(pairs)), count)
    documents, queries = [], []
    for number in chosen:
        hidden, query = pairs[number]
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
    return documents, queries, chosen


class VectorCache:
    """Vectors by (encoder name, text), in SQLite: a rerun encodes only new texts."""

    def __init__(self, path: Path | None) -> None:
        self.db = sqlite3.connect(path if path else ":memory:", timeout=300)
        self.db.execute("CREATE TABLE IF NOT EXISTS v (k TEXT PRIMARY KEY, vec BLOB)")

    @staticmethod
    def _key(name: str, text: str) -> str:
        return hashlib.sha1(f"{name}\0{text}".encode()).hexdigest()

    def encode(self, name: str, texts: list[str], encode) -> np.ndarray:
        keys = [self._key(name, t) for t in texts]
        found: dict[str, np.ndarray] = {}
        for i in range(0, len(keys), 500):
            part = keys[i : i + 500]
            rows = self.db.execute(f"SELECT k, vec FROM v WHERE k IN ({','.join('?' * len(part))})", part)
            found.update((k, np.frombuffer(v, dtype=np.float32)) for k, v in rows)
        missing = sorted({k: t for k, t in zip(keys, texts, strict=True) if k not in found}.items())
        if missing:
            vectors = np.asarray(encode([t for _, t in missing]), dtype=np.float32)
            self.db.executemany(
                "INSERT OR REPLACE INTO v VALUES (?, ?)",
                [(k, v.tobytes()) for (k, _), v in zip(missing, vectors, strict=True)],
            )
            self.db.commit()
            found.update((k, v) for (k, _), v in zip(missing, vectors, strict=True))
        return np.stack([found[k] for k in keys])


def max_sim(queries: np.ndarray, vectors: np.ndarray, owner: np.ndarray, count: int) -> np.ndarray:
    """(queries, documents): each document's best cosine over its vectors (unit vectors)."""
    scores = queries @ vectors.T
    best = np.full((len(queries), count), -np.inf, dtype=np.float32)
    np.maximum.at(best.T, owner, scores.T)
    return best


def per_query(scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Hit@10 and reciprocal rank@10 of each query's own document (query i's is document i); a
    tie ranks the relevant document after the others, as a pessimistic evaluator would."""
    own = scores[np.arange(len(scores)), np.arange(len(scores))]
    rank = (scores >= own[:, None]).sum(axis=1)
    hit = (rank <= 10).astype(float)
    return hit, np.where(rank <= 10, 1.0 / rank, 0.0)


def sbert_rows(encoder, documents, mode: str | None, size: int | None):
    """The chunk texts and their documents, as `sbert encode` makes them with these settings."""
    from sbert_cli.chunking import ChunkStats
    from sbert_cli.encoding.chunk_settings import chunker_for, resolve_chunking
    from sbert_cli.inputs.reader import Record

    chunking = resolve_chunking(mode, size, None, encoder.describe(), None)
    chunker = chunker_for(encoder, chunking, ChunkStats())
    records = (Record(i + 1, "\n\n".join(d)) for i, d in enumerate(documents))
    texts, owner = [], []
    for row in chunker.rows(records):
        texts.append(row.text)
        owner.append(row.line - 1)
    return texts, np.array(owner), chunking


def run_seed(args, encoder, st_model, cache, novels, pairs, seed: int) -> dict[str, tuple]:
    """Per-query (hit, rr) of every system on one seed's documents, and the pair numbers."""
    count = min(args.docs or len(pairs), len(pairs))
    documents, queries, chosen = make_documents(novels, pairs, count, seed)
    query_vectors = cache.encode("sbert", queries, encoder.encode)
    results, sizes = {}, [None] + [int(s) for s in filter(None, args.chunk_sizes.split(","))]
    for size in sizes if not args.oracle_only else ():
        texts, owner, chunking = sbert_rows(encoder, documents, None, size)
        name = "sbert default" if size is None else f"sbert --chunk-size {size}"
        vectors = cache.encode("sbert", texts, encoder.encode)
        results[f"{name} ({chunking.size}/{chunking.overlap})"] = per_query(
            max_sim(query_vectors, vectors, owner, count)
        ) + (len(texts),)
    if not args.oracle_only:
        texts, owner, _ = sbert_rows(encoder, documents, "truncate", None)
        vectors = cache.encode("sbert", texts, encoder.encode)
        results["sbert --truncate"] = per_query(max_sim(query_vectors, vectors, owner, count)) + (len(texts),)
    if st_model is not None:
        st = lambda texts: st_model.encode(texts, batch_size=64, normalize_embeddings=True, convert_to_numpy=True)  # noqa: E731
        passages = [p for d in documents for p in d]
        owner = np.array([i for i, d in enumerate(documents) for _ in d])
        vectors, qv = cache.encode("st", passages, st), cache.encode("st", queries, st)
        results[ORACLE] = per_query(max_sim(qv, vectors, owner, count)) + (len(passages),)
    return results, np.array(chosen)


ORACLE = "ST per paragraph (oracle)"


def interval(values_by_pair: np.ndarray) -> tuple[float, float, float]:
    from scipy.stats import bootstrap

    if np.ptp(values_by_pair) == 0:
        return (100 * values_by_pair[0],) * 3
    ci = bootstrap((values_by_pair,), np.mean, confidence_level=0.95, method="BCa", n_resamples=5000, random_state=0)
    return 100 * values_by_pair.mean(), 100 * ci.confidence_interval.low, 100 * ci.confidence_interval.high


def by_pair(values: list[np.ndarray], chosen: list[np.ndarray]) -> np.ndarray:
    """A value per STS pair: its mean over the seeds that drew it."""
    pairs, values = np.concatenate(chosen), np.concatenate(values)
    order = np.unique(pairs, return_inverse=True)[1]
    return np.bincount(order, weights=values) / np.bincount(order)


def report(runs: list[tuple[dict, np.ndarray]]) -> None:
    names = list(runs[0][0])
    chosen = [c for _, c in runs]
    fmt = lambda m, lo, hi: f"{m:5.1f} [{lo:5.1f}, {hi:5.1f}]"  # noqa: E731
    print(
        f"{'system':30} {'R@10 [95% CI]':>21} {'MRR@10 [95% CI]':>21} {'vectors':>8}  vs oracle: ΔR@10, ΔMRR@10 [95% CI]"
    )
    for name in names:
        cols = []
        for metric in (0, 1):
            cols.append(fmt(*interval(by_pair([r[name][metric] for r, _ in runs], chosen))))
        line = f"{name:30} {cols[0]:>21} {cols[1]:>21} {sum(r[name][2] for r, _ in runs):8d}"
        if ORACLE in names and name != ORACLE:
            deltas = [fmt(*interval(by_pair([r[name][m] - r[ORACLE][m] for r, _ in runs], chosen))) for m in (0, 1)]
            line += f"  {deltas[0]}, {deltas[1]}"
        print(line)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=SHARED, help="books/*.txt and stsb/ [default: ../shared/data]")
    parser.add_argument("--part", choices=sorted(PARTS), default="test")
    parser.add_argument("--docs", type=int, default=0, help="documents (= queries) per seed [default: every pair]")
    parser.add_argument("--seeds", default="1,2")
    parser.add_argument("--chunk-sizes", default="", help="also sbert with these --chunk-size values, e.g. 128,192")
    parser.add_argument("--threads", type=int, default=None, help="torch threads [default: torch's own]")
    parser.add_argument("--no-oracle", action="store_true", help="skip sentence-transformers")
    parser.add_argument(
        "--oracle-only",
        action="store_true",
        help="only sentence-transformers (fills the cache beside a --no-oracle run)",
    )
    parser.add_argument("--cache", type=Path, default=Path("/tmp/sbert-bench-documents.sqlite"))
    parser.add_argument("--no-cache", action="store_true")
    args = parser.parse_args()
    import torch

    from sbert_cli.encoding.loader import cached_encoder

    if args.threads:
        torch.set_num_threads(args.threads)
    novels, pairs = load_part(args.data, args.part)
    encoder = cached_encoder(None, device="cpu", dtype="fp32")
    st_model = None
    if not args.no_oracle:
        from sentence_transformers import SentenceTransformer

        st_model = SentenceTransformer(str(encoder.spec.path), device="cpu")
    cache = VectorCache(None if args.no_cache else args.cache)
    started, cpu = time.perf_counter(), time.process_time()
    runs = [run_seed(args, encoder, st_model, cache, novels, pairs, int(s)) for s in args.seeds.split(",")]
    print(
        f"part {args.part}: {len(runs)} seed(s) x {len(runs[0][1])} documents (12-30 paragraphs), "
        f"{len(pairs)} STS pairs; {time.perf_counter() - started:.0f} s wall, {time.process_time() - cpu:.0f} s CPU"
    )
    report(runs)


if __name__ == "__main__":
    main()
