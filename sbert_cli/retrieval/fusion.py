"""Search modes and hybrid fusion: one ranking from a dense and a keyword (BM25) ranking.

Modes: `dense` (vectors), `keyword` (BM25 over the texts), `hybrid` (both, fused). Each list
taking part in a fusion is that search's top `depth` (FUSION_DEPTH, or k if larger); a document
missing from a list adds nothing from it. Two ways to fuse, per query:

* reciprocal rank fusion (the default): score(d) = sum over the lists of 1 / (rrf_k + rank(d)),
  ranks starting at 1 (Cormack, Clarke & Buettcher 2009; rrf_k = 60 as there). Ranks only, so
  it needs no care about score scales (cosine in [-1, 1], BM25 unbounded).
* weighted sum (`alpha`): score(d) = alpha * dense'(d) + (1 - alpha) * keyword'(d), where x' is x
  min-max normalized over that list, (x - min) / (max - min) (1 when all are equal), and 0 for
  a document not in the list. alpha = 1 is dense order, 0 keyword order.

Ties go to the better of the document's two ranks, then to the smaller row id. Every fused hit
carries its dense and keyword rank and score (None where that list did not hold it).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sbert_cli.errors import InputError

MODES = ("dense", "keyword", "hybrid")
# Chosen by measurement (benchmarks/bench_hybrid.py; benchmarks/README.md): used whenever the
# store has a keyword index, else dense.
DEFAULT_MODE = "hybrid"
DEFAULT_RRF_K = 60
FUSION_DEPTH = 100  # candidates taken from each list for a fusion


@dataclass(frozen=True)
class Ranked:
    """One result of any mode before its row is fetched."""

    id: int
    score: float
    dense_rank: int | None = None
    dense_score: float | None = None
    keyword_rank: int | None = None
    keyword_score: float | None = None


def check_fusion(mode: str, rrf_k: float | None, alpha: float | None) -> None:
    if mode not in MODES:
        raise InputError(f"--mode {mode}: choose from {', '.join(MODES)}")
    if mode != "hybrid" and (rrf_k is not None or alpha is not None):
        raise InputError(f"--{'alpha' if alpha is not None else 'rrf-k'} applies to --mode hybrid only")
    if rrf_k is not None and alpha is not None:
        raise InputError("give --rrf-k (rank fusion) or --alpha (weighted scores), not both")
    if rrf_k is not None and rrf_k < 0:
        raise InputError(f"--rrf-k {rrf_k}: must be 0 or more")
    if alpha is not None and not 0.0 <= alpha <= 1.0:
        raise InputError(f"--alpha {alpha}: must be from 0 to 1")


def _valid(ids: np.ndarray, scores: np.ndarray) -> list[tuple[int, float]]:
    """A search's row for one query as (id, score) pairs, best first, padding dropped."""
    return [(int(i), float(s)) for i, s in zip(ids, scores, strict=True) if i >= 0 and np.isfinite(s)]


def single(ids: np.ndarray, scores: np.ndarray, k: int, which: str) -> list[Ranked]:
    """One list as results: dense or keyword mode."""
    field = "dense" if which == "dense" else "keyword"
    return [
        Ranked(i, s, **{f"{field}_rank": rank, f"{field}_score": s})
        for rank, (i, s) in enumerate(_valid(ids, scores)[:k], start=1)
    ]


def _normalized(pairs: list[tuple[int, float]]) -> dict[int, float]:
    if not pairs:
        return {}
    values = np.array([s for _, s in pairs], dtype=np.float64)
    low, span = values.min(), values.max() - values.min()
    return {i: (1.0 if span == 0 else float((s - low) / span)) for i, s in pairs}


def fuse(
    dense: tuple[np.ndarray, np.ndarray],
    keyword: tuple[np.ndarray, np.ndarray],
    k: int,
    rrf_k: float | None = None,
    alpha: float | None = None,
) -> list[Ranked]:
    """The k best documents of one query's dense and keyword lists, fused as the module says."""
    lists = {"dense": _valid(*dense), "keyword": _valid(*keyword)}
    ranks = {name: {i: r for r, (i, _) in enumerate(pairs, start=1)} for name, pairs in lists.items()}
    raw = {name: dict(pairs) for name, pairs in lists.items()}
    docs = set(ranks["dense"]) | set(ranks["keyword"])
    if alpha is None:
        c = DEFAULT_RRF_K if rrf_k is None else rrf_k
        fused = {d: sum(1.0 / (c + r[d]) for r in ranks.values() if d in r) for d in docs}
    else:
        norm = {name: _normalized(pairs) for name, pairs in lists.items()}
        fused = {d: alpha * norm["dense"].get(d, 0.0) + (1 - alpha) * norm["keyword"].get(d, 0.0) for d in docs}
    best_rank = {d: min(r.get(d, np.inf) for r in ranks.values()) for d in docs}
    order = sorted(docs, key=lambda d: (-fused[d], best_rank[d], d))[:k]
    return [
        Ranked(
            d,
            fused[d],
            ranks["dense"].get(d),
            raw["dense"].get(d),
            ranks["keyword"].get(d),
            raw["keyword"].get(d),
        )
        for d in order
    ]
