"""Exact (brute-force) search over a store's shards: the reference the graph is measured against,
and what searches shards the graph does not cover yet."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from sbert_cli.retrieval.graph import EXACT_CHUNK_ROWS, default_space, iter_shard_vectors
from sbert_cli.store.manifest import ShardInfo
from sbert_cli.store.store import Store


def prepare_queries(vectors: np.ndarray, space: str) -> np.ndarray:
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    if space == "cosine":
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        vectors = vectors / np.maximum(norms, 1e-12)
    return vectors


def _scores(queries: np.ndarray, block: np.ndarray, space: str) -> np.ndarray:
    """Higher is closer, on the same scale the graph search reports."""
    if space == "cosine":
        block = block / np.maximum(np.linalg.norm(block, axis=1, keepdims=True), 1e-12)
    dots = queries @ block.T
    if space == "l2":
        sq = (queries * queries).sum(1)[:, None] - 2 * dots + (block * block).sum(1)[None, :]
        return -np.sqrt(np.maximum(sq, 0.0))
    return dots


def exact_search(
    store: Store,
    query_vectors: np.ndarray,
    k: int,
    space: str | None = None,
    shards: Sequence[ShardInfo] | None = None,
    chunk_rows: int = EXACT_CHUNK_ROWS,
    allowed: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Brute-force top-k over the store's shards (or the given ones), one chunk at a time; with
    `allowed` (sorted row ids: a `--where` filter's) over those rows only.

    Returns (ids, scores), each (queries, k') with k' = min(k, rows searched), best first; ties
    go to the smaller id so the order is reproducible. Memory is one shard plus queries x chunk.
    """
    space = space or default_space(store)
    queries = prepare_queries(query_vectors, space)
    nq = len(queries)
    best_ids = np.empty((nq, 0), dtype=np.int64)
    best_scores = np.empty((nq, 0), dtype=np.float32)
    for _, ids, vectors in iter_shard_vectors(store, store.shards if shards is None else shards):
        if allowed is not None:
            keep = np.isin(ids, allowed)
            ids, vectors = ids[keep], vectors[keep]
        for start in range(0, len(ids), chunk_rows):
            block_ids = ids[start : start + chunk_rows]
            scores = _scores(queries, vectors[start : start + chunk_rows], space).astype(np.float32)
            cand_ids = np.concatenate([best_ids, np.broadcast_to(block_ids, (nq, len(block_ids)))], axis=1)
            cand_scores = np.concatenate([best_scores, scores], axis=1)
            best_ids, best_scores = _top_k(cand_ids, cand_scores, k)
    return best_ids, best_scores


def exact_over(
    ids: np.ndarray, vectors: np.ndarray, query_vectors: np.ndarray, k: int, space: str
) -> tuple[np.ndarray, np.ndarray]:
    """Brute-force top-k over rows already in memory (a narrow filter's matching rows)."""
    queries = prepare_queries(query_vectors, space)
    if len(ids) == 0:
        return np.empty((len(queries), 0), np.int64), np.empty((len(queries), 0), np.float32)
    scores = _scores(queries, vectors, space).astype(np.float32)
    return _top_k(np.broadcast_to(ids, scores.shape), scores, k)


def _top_k(ids: np.ndarray, scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per row, the k best (score desc, id asc) of the candidates."""
    if ids.shape[1] > k:
        # Keep everything tied with the k-th score so the tie-break below sees all of them.
        kth = -np.partition(-scores, k - 1, axis=1)[:, k - 1 : k]
        keep = scores >= kth
        width = int(keep.sum(1).max())
        order = np.argsort(~keep, axis=1, kind="stable")[:, :width]
        ids = np.take_along_axis(ids, order, 1)
        scores = np.take_along_axis(scores, order, 1)
        valid = np.take_along_axis(keep, order, 1)
        scores = np.where(valid, scores, -np.inf)
    order = np.lexsort((ids, -scores), axis=1)[:, :k]
    return np.take_along_axis(ids, order, 1), np.take_along_axis(scores, order, 1)


def merge_results(
    a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray], k: int
) -> tuple[np.ndarray, np.ndarray]:
    return _top_k(np.concatenate([a[0], b[0]], axis=1), np.concatenate([a[1], b[1]], axis=1), k)
