"""Several models (or dtypes) measured the same way, one row each: quality and encode speed.

Each variant is a (model, dtype) pair; its row names the model and the dtype and backend that
actually ran, the scores, and `texts_per_s`: distinct texts encoded per second of encoding on
this machine (model loading excluded), so speed and accuracy sit side by side.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

from sbert_cli.analysis.pairs import PairSet
from sbert_cli.errors import InputError
from sbert_cli.evaluation.retrieval import DEPTH, Judged, retrieval_metrics, run_from_hits, top_k
from sbert_cli.progress import NullReporter, Reporter

STS_COLUMNS = ["model", "dtype", "spearman", "pearson", "pairs", "texts_per_s"]
RETRIEVAL_COLUMNS = [
    "model",
    "dtype",
    "search",
    "ndcg@10",
    "mrr@10",
    "recall@1",
    "recall@10",
    "recall@100",
    "map@100",
    "queries",
    "texts_per_s",
]


@dataclass(frozen=True)
class Variant:
    model: str | None  # None: the bundled default
    dtype: str = "auto"


def variants(models: Sequence[str] | None, dtypes: Sequence[str] | None) -> list[Variant]:
    """Every model with every dtype, in the order given."""
    from sbert_cli.encoding.devices import DTYPES

    for dtype in dtypes or []:
        if dtype not in DTYPES:
            raise InputError(f"--dtype {dtype}: choose from {', '.join(DTYPES)}")
    return [Variant(m, d) for m in (models or [None]) for d in (dtypes or ["auto"])]


def _encoder(variant: Variant, device: str):
    from sbert_cli.encoding.loader import cached_encoder

    return cached_encoder(variant.model, device=device, dtype=variant.dtype)


def _label(encoder) -> dict:
    record = encoder.describe()
    return {"model": record.name, "dtype": f"{record.dtype} ({record.backend})"}


def _timed_encode(encoder, texts: Sequence[str]):
    started = time.perf_counter()
    vectors = encoder.encode(list(texts))
    return vectors, time.perf_counter() - started


def compare_sts(
    pairs: PairSet, chosen: Sequence[Variant], device: str = "auto", reporter: Reporter | None = None
) -> list[dict]:
    """Spearman and Pearson of cosine vs gold: `sbert similarity --pairs`'s own functions."""
    from sbert_cli.analysis.similarity import correlate, score_pairs

    if pairs.gold is None:
        raise InputError(f"{pairs.source}: no gold scores (give --gold-column)")
    reporter = reporter or NullReporter()
    distinct = len(set(pairs.sentence1) | set(pairs.sentence2))  # score_pairs embeds each text once
    rows = []
    for variant in chosen:
        encoder = _encoder(variant, device)
        started = time.perf_counter()
        scores = score_pairs(encoder, pairs)
        seconds = time.perf_counter() - started
        result = correlate(scores, pairs.gold).as_dict()
        row = {**_label(encoder), **result, "texts_per_s": round(distinct / max(seconds, 1e-9))}
        reporter.message(f"{row['model']} {row['dtype']}: Spearman {_x100(row['spearman'])}")
        rows.append(row)
    return rows


def _x100(value: float | None) -> str:
    return "undefined" if value is None else f"{value * 100:.2f}"


def compare_retrieval(
    corpus: tuple[list[str], list[str]],
    judged: Judged,
    chosen: Sequence[Variant],
    device: str = "auto",
    reporter: Reporter | None = None,
) -> list[dict]:
    """Each model encodes corpus and queries; exact cosine search; BEIR's metrics."""
    reporter = reporter or NullReporter()
    corpus_ids, corpus_texts = corpus
    rows = []
    for variant in chosen:
        encoder = _encoder(variant, device)
        reporter.message(f"encoding {len(corpus_texts):,} documents and {len(judged.query_ids):,} queries")
        corpus_vectors, corpus_seconds = _timed_encode(encoder, corpus_texts)
        query_vectors, query_seconds = _timed_encode(encoder, judged.query_texts)
        indexes, scores = top_k(query_vectors, corpus_vectors, DEPTH)
        hits = [
            [(corpus_ids[i], float(s)) for i, s in zip(ix, sc, strict=True)]
            for ix, sc in zip(indexes, scores, strict=True)
        ]
        metrics = retrieval_metrics(judged.qrels, run_from_hits(judged.query_ids, hits))
        encoded = len(corpus_texts) + len(judged.query_texts)
        speed = round(encoded / max(corpus_seconds + query_seconds, 1e-9))
        rows.append(
            {**_label(encoder), "search": "exact", **metrics, "queries": len(judged.query_ids), "texts_per_s": speed}
        )
        reporter.message(f"{rows[-1]['model']} {rows[-1]['dtype']}: nDCG@10 {metrics['ndcg@10'] * 100:.2f}")
    return rows


def retrieval_on_store(store_path: str, judged: Judged, use_index: bool, device: str = "auto") -> dict:
    """The store's own vectors and model (queries encoded like its rows): exact search, or its
    HNSW index with `use_index`. Documents are matched to qrels by the store's key column, the
    `_id` given to `sbert encode --id-field _id`."""
    from sbert_cli.retrieval import Index

    index = Index.open(store_path, exact=not use_index, device=device)
    if not index.store.manifest.has_key:
        raise InputError(f"{store_path}: rows have no key to match qrels with; encode with --id-field _id")
    query_vectors, seconds = _timed_encode(index.encoder(), judged.query_texts)
    ids, scores = index.search_vectors(query_vectors, min(DEPTH, index.rows))
    keys = {row_id: row["key"] for row_id, row in index.store.fetch(ids.ravel(), columns=("key",)).items()}
    hits = [[(keys[int(i)], float(s)) for i, s in zip(ix, sc, strict=True)] for ix, sc in zip(ids, scores, strict=True)]
    metrics = retrieval_metrics(judged.qrels, run_from_hits(judged.query_ids, hits))
    record = index.store.model
    return {
        "model": record.name,
        "dtype": f"{record.dtype} ({record.backend})",
        "search": "hnsw" if use_index else "exact",
        **metrics,
        "queries": len(judged.query_ids),
        "texts_per_s": round(len(judged.query_texts) / max(seconds, 1e-9)),
    }
