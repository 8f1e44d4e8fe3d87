"""Search modes and hybrid fusion: one ranking from a dense and a keyword (BM25) ranking.

Modes: `dense` (vectors), `keyword` (BM25 over the texts), `hybrid` (both, fused). Each list
taking part in a fusion is that search's top `depth` (FUSION_DEPTH, or more when k or the
record grouping needs more); a document missing from a list scores that list's floor. Two ways:

* convex combination (the default): score(d) = alpha * dense'(d) + (1 - alpha) * keyword'(d),
  each list's scores normalized per query (Bruch, Gai & Ingber, "An Analysis of Fusion Functions
  for Hybrid Retrieval", 2023). The default normalization is `dbsf`, distribution-based score
  fusion as Qdrant has it: (s - mean + 3 sd) / (6 sd) over the list, clipped to [0, 1]. BM25's
  list is padded to the dense list's length with the 0 that every text without a query term
  scores, so a rare word's one or two matches stand far above its mean and reach 1. Also
  measured: `mm+tmm` (dense min-max, BM25 / its max), `minmax`, `tmm` (cosine from -1, BM25 from
  0), `z` (z-scores, Montague & Aslam 2001) and `mm+best` (BM25 / the query's best possible
  score, KeywordIndex.best_scores).
  The default alpha is per query (`alpha` None): each list's peakedness, (best - mean) / (best -
  floor) over its places (floor 0 for cosines and BM25), is its confidence, and alpha = dense /
  (dense + keyword). A single name or rare word matches a few texts, so BM25 peaks while its
  cosines with sentences are flat and low; a sentence's cosines peak at its paraphrase while BM25
  spreads over every text that shares a common word. No parameter is fitted. A fixed `--alpha`
  replaces it.
* reciprocal rank fusion (`rrf_k`): score(d) = sum over the lists of 1 / (rrf_k + rank(d)),
  ranks from 1 (Cormack, Clarke & Buettcher 2009; rrf_k = 60 as there). Ranks only: it throws
  the scores' information away.

The default (dbsf, adaptive alpha) was chosen on sts-train by a rule fixed beforehand (of the
fusions meeting every target, the best nDCG@10 over all queries) and is reported unchanged on
sts-dev and on a set of book paragraphs the choice never saw (benchmarks/bench_fusion.py, figures
in benchmarks/README.md). Ties go to the better of the document's two ranks, then to the smaller
row id. Every fused hit carries its dense and keyword rank and score (None where that list did
not hold it).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sbert_cli.errors import InputError

MODES = ("dense", "keyword", "hybrid")
FUSIONS = ("convex", "rrf")
NORMS = ("mm+tmm", "tmm", "minmax", "z", "dbsf", "mm+best")
# Chosen by measurement (benchmarks/bench_fusion.py; benchmarks/README.md): used whenever the
# store has a keyword index, else dense.
DEFAULT_MODE = "hybrid"
DEFAULT_FUSION = "convex"
DEFAULT_ALPHA: float | None = None  # None: each query's own weight, from its lists' peakedness
DEFAULT_NORM = "dbsf"
DEFAULT_RRF_K = 60
FUSION_DEPTH = 100  # candidates taken from each list for a fusion
# Theoretical least scores: cosine (ip on unit vectors; "tmm" only) and BM25.
DENSE_FLOOR = -1.0
KEYWORD_FLOOR = 0.0
# The floor from which the adaptive weight measures a dense list's peakedness: a cosine of 0 is
# an unrelated text (None: the list's least score, for l2 distances, which have no such floor).
PEAK_FLOOR = 0.0


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
class Fused:
    """One query's ranking as arrays, best first: a row's score and its rank and score in each
    list (rank 0 and score NaN where that list did not hold it). `Ranked` objects are made only
    for the rows a search keeps (`ranked`), not for every candidate."""

    ids: np.ndarray
    scores: np.ndarray
    dense_rank: np.ndarray
    dense_score: np.ndarray
    keyword_rank: np.ndarray
    keyword_score: np.ndarray

    def __len__(self) -> int:
        return len(self.ids)

    @classmethod
    def single(cls, ids: np.ndarray, scores: np.ndarray, which: str) -> Fused:
        """One list as a ranking: dense or keyword mode."""
        ids, scores = _valid(ids, scores)
        ranks, absent = np.arange(1, len(ids) + 1), np.zeros(len(ids), dtype=np.int64)
        missing = np.full(len(ids), np.nan)
        if which == "dense":
            return cls(ids, scores, ranks, scores, absent, missing)
        return cls(ids, scores, absent, missing, ranks, scores)

    def ranked(self, positions) -> list[Ranked]:
        """The rows at `positions` (a range or a list of places in the ranking) as `Ranked`."""
        return [
            Ranked(
                int(self.ids[j]),
                float(self.scores[j]),
                int(self.dense_rank[j]) or None,
                None if self.dense_rank[j] == 0 else float(self.dense_score[j]),
                int(self.keyword_rank[j]) or None,
                None if self.keyword_rank[j] == 0 else float(self.keyword_score[j]),
            )
            for j in positions
        ]

    def top(self, k: int) -> list[Ranked]:
        return self.ranked(range(min(k, len(self))))


@dataclass(frozen=True)
class Fusion:
    """How hybrid mode fuses: `convex` (alpha, None for the adaptive weight; norm) or `rrf` (rrf_k)."""

    method: str = DEFAULT_FUSION
    alpha: float | None = DEFAULT_ALPHA
    rrf_k: float = DEFAULT_RRF_K
    norm: str = DEFAULT_NORM

    def describe(self) -> str:
        if self.method == "rrf":
            return f"rrf k={self.rrf_k:g}"
        weight = "adaptive" if self.alpha is None else f"{self.alpha:g}"
        return f"convex alpha={weight} ({self.norm})"


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


def _valid(ids: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A search's row for one query as (ids, float64 scores), best first, padding dropped."""
    ids = np.asarray(ids, dtype=np.int64)
    scores = np.asarray(scores, dtype=np.float64)
    keep = (ids >= 0) & np.isfinite(scores)
    return ids[keep], scores[keep]


def single(ids: np.ndarray, scores: np.ndarray, k: int, which: str) -> list[Ranked]:
    """One list as results: dense or keyword mode."""
    return Fused.single(ids, scores, which).top(k)


def normalized(values: np.ndarray, floor: float | None) -> np.ndarray:
    """A list's scores mapped to [0, 1]: from `floor` (None: the list's least score; a score
    under the floor lowers it) to the list's best."""
    if not len(values):
        return values
    low = values.min() if floor is None else min(floor, values.min())
    span = values.max() - low
    return np.ones_like(values) if span <= 0 else (values - low) / span


def standardized(values: np.ndarray, slots: int, zero_floor: bool, dbsf: bool) -> tuple[np.ndarray, float]:
    """z-scores (Montague & Aslam 2001) or, with `dbsf`, Qdrant's distribution-based score fusion
    scale ((s - mean + 3 sd) / 6 sd, clipped to [0, 1]) of a list's scores, and the value of a
    document missing from it. With `zero_floor` (BM25) a list shorter than `slots` is padded with
    the 0 that every text without a query term scores, and a missing document scores that 0."""
    if not len(values):
        return values, 0.0
    short = zero_floor and len(values) < slots
    stats = np.concatenate([values, np.zeros(slots - len(values))]) if short else values
    mean, sd = float(stats.mean()), float(stats.std())
    sd = sd if sd > 0 else 1.0
    missing = np.array([0.0 if short else float(values.min())])

    def scale(x: np.ndarray) -> np.ndarray:
        return np.minimum(1.0, np.maximum(0.0, (x - mean + 3 * sd) / (6 * sd))) if dbsf else (x - mean) / sd

    return scale(values), float(scale(missing)[0])


def peakedness(values: np.ndarray, slots: int, floor: float | None) -> float:
    """How far a list's best score stands above its mean over `slots` places (missing places
    count as `floor`), as a share of best - floor: 0 for a flat list, towards 1 when one or a few
    documents stand out. `floor` None: the list's least score."""
    if not len(values):
        return 0.0
    low = float(values.min()) if floor is None else floor
    padded = np.concatenate([values, np.full(max(0, slots - len(values)), low)])
    span = float(values.max()) - low
    return 0.0 if span <= 0 else max(0.0, (float(values.max()) - float(padded.mean())) / span)


def adaptive_alpha(dense: np.ndarray, keyword: np.ndarray, dense_floor: float | None) -> float:
    """The dense weight for one query, from its lists' scores: each list's peakedness as its
    confidence, alpha = dense / (dense + keyword). A rare word matches a few texts and BM25 peaks
    (its other places score 0) while a lone word's cosines are flat; a sentence's cosines peak at
    its paraphrase while BM25 spreads over every text sharing a common word. 0.5 when both lists
    are flat."""
    slots = max(len(dense), len(keyword))
    d = peakedness(np.asarray(dense, dtype=np.float64), slots, dense_floor)
    k = peakedness(np.asarray(keyword, dtype=np.float64), slots, KEYWORD_FLOOR)
    return 0.5 if d + k <= 0 else d / (d + k)


@dataclass(frozen=True)
class _Lists:
    """One query's two lists over the union of their documents (`docs`, sorted ids): each list's
    scores best first, and where each of its documents sits in `docs`."""

    docs: np.ndarray
    dense: np.ndarray
    keyword: np.ndarray
    dense_at: np.ndarray
    keyword_at: np.ndarray

    @classmethod
    def of(cls, dense: tuple[np.ndarray, np.ndarray], keyword: tuple[np.ndarray, np.ndarray]) -> _Lists:
        (dense_ids, dense_scores), (keyword_ids, keyword_scores) = _valid(*dense), _valid(*keyword)
        docs = np.union1d(dense_ids, keyword_ids)
        at = (np.searchsorted(docs, dense_ids), np.searchsorted(docs, keyword_ids))
        return cls(docs, dense_scores, keyword_scores, *at)

    def spread(self, values: np.ndarray, at: np.ndarray, missing: float) -> np.ndarray:
        """A list's per-document values over `docs`, `missing` where the list lacks a document."""
        out = np.full(len(self.docs), missing, dtype=np.float64)
        out[at] = values
        return out

    def ranks(self, at: np.ndarray) -> np.ndarray:
        """Each document's 1-based rank in a list over `docs` (0 where the list lacks it)."""
        return self.spread(np.arange(1, len(at) + 1, dtype=np.float64), at, 0.0).astype(np.int64)


def _convex(lists: _Lists, fusion: Fusion, dense_floor: float | None, keyword_best: float | None) -> np.ndarray:
    """Each document's convex score: alpha x dense' + (1 - alpha) x keyword'."""
    dense, keyword = lists.dense, lists.keyword
    a = adaptive_alpha(dense, keyword, dense_floor) if fusion.alpha is None else fusion.alpha
    dense_missing = keyword_missing = 0.0
    if fusion.norm in ("z", "dbsf"):
        slots = max(len(dense), len(keyword))
        dbsf = fusion.norm == "dbsf"
        dense_n, dense_missing = standardized(dense, slots, False, dbsf)
        keyword_n, keyword_missing = standardized(keyword, slots, True, dbsf)
    else:
        dense_n = normalized(dense, DENSE_FLOOR if fusion.norm == "tmm" else None)
        keyword_n = normalized(keyword, None if fusion.norm == "minmax" else KEYWORD_FLOOR)
        if fusion.norm == "mm+best" and keyword_best:  # BM25 / the query's best possible score
            keyword_n = keyword / keyword_best
    dense_all = lists.spread(dense_n, lists.dense_at, dense_missing)
    keyword_all = lists.spread(keyword_n, lists.keyword_at, keyword_missing)
    return a * dense_all + (1 - a) * keyword_all


def fused(
    dense: tuple[np.ndarray, np.ndarray],
    keyword: tuple[np.ndarray, np.ndarray],
    *,
    fusion: Fusion,
    dense_floor: float | None = PEAK_FLOOR,
    keyword_best: float | None = None,
) -> Fused:
    """One query's dense and keyword lists fused as the module says, every document of either list
    in order. `dense_floor`: the dense scores' floor for the adaptive weight (None for l2
    distances); `keyword_best`: the query's best possible BM25 score (KeywordIndex.best_scores),
    for mm+best."""
    lists = _Lists.of(dense, keyword)
    dense_rank, keyword_rank = lists.ranks(lists.dense_at), lists.ranks(lists.keyword_at)
    if fusion.method == "rrf":
        c = fusion.rrf_k
        scores = np.zeros(len(lists.docs))
        for ranks in (dense_rank, keyword_rank):  # in this order, as a sum over the lists
            held = ranks > 0
            scores[held] += 1.0 / (c + ranks[held])
    else:
        scores = _convex(lists, fusion, dense_floor, keyword_best)
    missing = len(lists.docs) + 1  # a rank past every list's end
    best_rank = np.minimum(
        np.where(dense_rank > 0, dense_rank, missing), np.where(keyword_rank > 0, keyword_rank, missing)
    )
    order = np.lexsort((lists.docs, best_rank, -scores))  # by score, then the better rank, then id
    dense_score = lists.spread(lists.dense, lists.dense_at, np.nan)
    keyword_score = lists.spread(lists.keyword, lists.keyword_at, np.nan)
    return Fused(
        lists.docs[order],
        scores[order],
        dense_rank[order],
        dense_score[order],
        keyword_rank[order],
        keyword_score[order],
    )


def fuse(
    dense: tuple[np.ndarray, np.ndarray],
    keyword: tuple[np.ndarray, np.ndarray],
    k: int,
    rrf_k: float | None = None,
    alpha: float | None = None,
    *,
    fusion: Fusion | None = None,
    dense_floor: float | None = PEAK_FLOOR,
    keyword_best: float | None = None,
) -> list[Ranked]:
    """The k best documents of `fused` (`fusion`, or the older keywords: `rrf_k` alone fuses by
    rank, `alpha` by score)."""
    if fusion is None:
        fusion = check_fusion("hybrid", rrf_k, alpha)
    return fused(dense, keyword, fusion=fusion, dense_floor=dense_floor, keyword_best=keyword_best).top(k)
