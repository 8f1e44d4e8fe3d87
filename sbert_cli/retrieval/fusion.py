"""Search modes and hybrid fusion: one ranking from a dense and a keyword (BM25) ranking.

Modes: `dense` (vectors), `keyword` (BM25 over the texts), `hybrid` (both, fused). Each list
taking part in a fusion is that search's top `depth` (FUSION_DEPTH, or more when k or the
record grouping needs more); a document missing from a list adds nothing from it. Two ways:

* convex combination (the default, `alpha`): score(d) = alpha * dense'(d) + (1 - alpha) *
  keyword'(d), each list's scores mapped to [0, 1] per query and 0 for a document not in that
  list (Bruch, Gai & Ingber, "An Analysis of Fusion Functions for Hybrid Retrieval", 2023).
  The default normalization, `mm+tmm`, is min-max for the dense list, (cos - min) / (max - min),
  and theoretical-min-max for BM25, whose least score is 0: bm25 / max bm25. BM25's theoretical
  floor keeps a real term match at its weight (plain min-max, `minmax`, maps the weaker of two
  real matches of a rare word to 0, the same as no match); the dense list's observed floor keeps
  the spread of its 100 cosines (with the theoretical -1, `tmm`, cosines between 0.2 and 0.6
  all land above 0.6 and paraphrases lose to word overlap). Measured per query kind in
  benchmarks/bench_hybrid.py: on sts-train, where the choice was made, `mm+tmm` at alpha 0.4
  had the best nDCG@10 over all queries of every convex variant and alpha tried, and is the
  only one within 1 point of MRR@10 of dense on paraphrases and of keyword on rare words.
* reciprocal rank fusion (`rrf_k`): score(d) = sum over the lists of 1 / (rrf_k + rank(d)),
  ranks from 1 (Cormack, Clarke & Buettcher 2009; rrf_k = 60 as there). Ranks only: it throws
  the scores' information away, which is why it is no longer the default.

DEFAULT_ALPHA and the normalization were chosen on sts-train (plus book paragraphs) and are
reported on sts-dev (benchmarks/bench_hybrid.py, figures in benchmarks/README.md). Ties go to the better of the
document's two ranks, then to the smaller row id. Every fused hit carries its dense and keyword
rank and score (None where that list did not hold it).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sbert_cli.errors import InputError

MODES = ("dense", "keyword", "hybrid")
FUSIONS = ("convex", "rrf")
NORMS = ("mm+tmm", "tmm", "minmax")
# Chosen by measurement (benchmarks/bench_hybrid.py; benchmarks/README.md): used whenever the
# store has a keyword index, else dense.
DEFAULT_MODE = "hybrid"
DEFAULT_FUSION = "convex"
DEFAULT_ALPHA = 0.4
DEFAULT_NORM = "mm+tmm"
DEFAULT_RRF_K = 60
FUSION_DEPTH = 100  # candidates taken from each list for a fusion
# Theoretical least scores for "tmm": cosine (ip on unit vectors) and BM25.
DENSE_FLOOR = -1.0
KEYWORD_FLOOR = 0.0


@dataclass(frozen=True)
class Ranked:
    """One result of any mode before its row is fetched."""

    id: int
    score: float
    dense_rank: int | None = None
    dense_score: float | None = None
    keyword_rank: int | None = None
    keyword_score: float | None = None


@dataclass(frozen=True)
class Fusion:
    """How hybrid mode fuses: `convex` (alpha, norm) or `rrf` (rrf_k)."""

    method: str = DEFAULT_FUSION
    alpha: float = DEFAULT_ALPHA
    rrf_k: float = DEFAULT_RRF_K
    norm: str = DEFAULT_NORM

    def describe(self) -> str:
        if self.method == "rrf":
            return f"rrf k={self.rrf_k:g}"
        return f"convex alpha={self.alpha:g} ({self.norm})"


def check_fusion(mode: str, rrf_k: float | None, alpha: float | None, fusion: str | None = None) -> Fusion:
    """The fusion a search's arguments ask for, refusing contradictions (exit 2)."""
    if mode not in MODES:
        raise InputError(f"--mode {mode}: choose from {', '.join(MODES)}")
    given = [
        name for name, value in (("--fusion", fusion), ("--alpha", alpha), ("--rrf-k", rrf_k)) if value is not None
    ]
    if mode != "hybrid" and given:
        raise InputError(f"{given[0]} applies to --mode hybrid only")
    if fusion is not None and fusion not in FUSIONS:
        raise InputError(f"--fusion {fusion}: choose from {', '.join(FUSIONS)}")
    if rrf_k is not None and (alpha is not None or fusion == "convex"):
        raise InputError("--rrf-k goes with --fusion rrf, --alpha with --fusion convex: give one of them")
    if alpha is not None and fusion == "rrf":
        raise InputError("--alpha goes with --fusion convex, not --fusion rrf")
    if rrf_k is not None and not (np.isfinite(rrf_k) and rrf_k >= 0):
        raise InputError(f"--rrf-k {rrf_k}: must be 0 or more")
    if alpha is not None and not (np.isfinite(alpha) and 0.0 <= alpha <= 1.0):
        raise InputError(f"--alpha {alpha}: must be from 0 to 1")
    method = fusion or ("rrf" if rrf_k is not None else DEFAULT_FUSION)
    return Fusion(method, DEFAULT_ALPHA if alpha is None else alpha, DEFAULT_RRF_K if rrf_k is None else rrf_k)


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


def normalized(pairs: list[tuple[int, float]], floor: float | None) -> dict[int, float]:
    """Each document's score mapped to [0, 1] within its list: from `floor` (None: the list's
    least score; a score under the floor lowers it) to the list's best."""
    if not pairs:
        return {}
    values = np.array([s for _, s in pairs], dtype=np.float64)
    low = values.min() if floor is None else min(floor, values.min())
    span = values.max() - low
    return {i: (1.0 if span <= 0 else float((s - low) / span)) for i, s in pairs}


def fuse(
    dense: tuple[np.ndarray, np.ndarray],
    keyword: tuple[np.ndarray, np.ndarray],
    k: int,
    rrf_k: float | None = None,
    alpha: float | None = None,
    *,
    fusion: Fusion | None = None,
) -> list[Ranked]:
    """The k best documents of one query's dense and keyword lists, fused as the module says
    (`fusion`, or the older keywords: `rrf_k` alone fuses by rank, `alpha` by score)."""
    if fusion is None:
        fusion = check_fusion("hybrid", rrf_k, alpha)
    lists = {"dense": _valid(*dense), "keyword": _valid(*keyword)}
    ranks = {name: {i: r for r, (i, _) in enumerate(pairs, start=1)} for name, pairs in lists.items()}
    raw = {name: dict(pairs) for name, pairs in lists.items()}
    docs = set(ranks["dense"]) | set(ranks["keyword"])
    if fusion.method == "rrf":
        c = fusion.rrf_k
        fused = {d: sum(1.0 / (c + r[d]) for r in ranks.values() if d in r) for d in docs}
    else:
        a = fusion.alpha
        dense_n = normalized(lists["dense"], DENSE_FLOOR if fusion.norm == "tmm" else None)
        keyword_n = normalized(lists["keyword"], None if fusion.norm == "minmax" else KEYWORD_FLOOR)
        fused = {d: a * dense_n.get(d, 0.0) + (1 - a) * keyword_n.get(d, 0.0) for d in docs}
    best_rank = {d: min(r.get(d, np.inf) for r in ranks.values()) for d in docs}
    order = sorted(docs, key=lambda d: (-fused[d], best_rank[d], d))[:k]
    return [
        Ranked(d, fused[d], ranks["dense"].get(d), raw["dense"].get(d), ranks["keyword"].get(d), raw["keyword"].get(d))
        for d in order
    ]
