"""One search's ranking: the dense and keyword candidate lists, fused or alone, grouped into
records, fetched deeper until k distinct records (or every candidate) are in hand.

Chunk rows of one record compete for the same slots, so a list k deep may hold fewer than k
records: the lists are searched again GROW times deeper, only for the queries still short,
until each has k records or its lists ran out (a keyword list runs out when fewer texts than
asked share a term with the query; a dense one when it holds every row the filter allows).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from sbert_cli.retrieval.filter import RowFilter
from sbert_cli.retrieval.fusion import FUSION_DEPTH, PEAK_FLOOR, Fusion, Ranked, fuse, single
from sbert_cli.retrieval.keyword import KeywordIndex
from sbert_cli.retrieval.records import Layout, best_per_record, record_keys
from sbert_cli.store.store import Store

GROW = 4  # each deeper search asks for this many times the candidates of the one before
CHUNKS_PER_RECORD = 4  # a record-level search's first depth: k x this many chunk rows


class DenseIndex(Protocol):
    """What ranking needs of a dense index (search.Index is one): declared here so that ranking,
    which search imports, never imports search back."""

    store: Store
    space: str  # "cosine", "ip" or "l2" (scores are then negative distances)

    @property
    def rows(self) -> int: ...

    @property
    def layout(self) -> Layout: ...

    def search_vectors(
        self,
        vectors: np.ndarray,
        k: int = 10,
        ef: int | None = None,
        rescore: int | None = None,
        *,
        where: RowFilter | str | None = None,
    ) -> tuple[np.ndarray, np.ndarray]: ...


@dataclass(frozen=True)
class Request:
    """What one `Index.search` call asks for, once its arguments are checked."""

    queries: list[str]
    vectors: np.ndarray
    k: int
    mode: str
    fusion: Fusion
    ef: int | None
    rescore: int | None
    row_filter: RowFilter | None
    grouped: bool  # rank records (the store has chunk rows and `chunks` was not asked)


def _first_depth(request: Request, total: int) -> int:
    depth = max(request.k, FUSION_DEPTH) if request.mode == "hybrid" else request.k
    if request.grouped:
        depth *= CHUNKS_PER_RECORD
    return min(total, depth)


def _lists(index: DenseIndex, keyword: KeywordIndex | None, request: Request, todo: list[int], depth: int):
    """The dense and keyword (ids, scores) arrays of the queries in `todo` (None: not used)."""
    dense = kw = best = None
    allowed = None if request.row_filter is None else request.row_filter.ids
    if request.mode != "keyword":
        dense = index.search_vectors(
            request.vectors[todo], depth, request.ef, request.rescore, where=request.row_filter
        )
    if request.mode != "dense":
        texts = [request.queries[q] for q in todo]
        kw = keyword.search(texts, depth, allowed=allowed)
        if request.fusion.norm == "mm+best":
            best = keyword.best_scores(texts)
    return dense, kw, best


def _count(pair: tuple[np.ndarray, np.ndarray]) -> int:
    ids, scores = pair
    return int(np.count_nonzero((ids >= 0) & np.isfinite(scores)))


def _combine(request: Request, dense, kw, depth: int, floor: float | None, best) -> tuple[list[Ranked], bool]:
    """One query's ranked rows, and whether its lists ran out before `depth`."""
    if dense is not None and kw is not None:
        # k rows are kept, or every fused row when records are ranked by their best chunk
        wanted = 2 * depth if request.grouped else request.k
        ranked = fuse(dense, kw, wanted, fusion=request.fusion, dense_floor=floor, keyword_best=best)
    elif dense is not None:
        ranked = single(*dense, depth, "dense")
    else:
        ranked = single(*kw, depth, "keyword")
    exhausted = all(_count(pair) < depth for pair in (dense, kw) if pair is not None)
    return ranked, exhausted


def rank_records(index: DenseIndex, keyword: KeywordIndex | None, request: Request) -> list[list[Ranked]]:
    """Each query's k best rows, or with `request.grouped` the best row of each of its k best
    records (max-sim: a record ranks by its best chunk), best first."""
    total = index.rows if request.row_filter is None else len(request.row_filter.ids)
    depth = _first_depth(request, total)
    out: list[list[Ranked]] = [[] for _ in request.queries]
    todo = list(range(len(request.queries)))
    floor = None if index.space == "l2" else PEAK_FLOOR
    while todo:
        dense, kw, best = _lists(index, keyword, request, todo, depth)
        short = []
        for j, q in enumerate(todo):
            ranked, exhausted = _combine(
                request,
                None if dense is None else (dense[0][j], dense[1][j]),
                None if kw is None else (kw[0][j], kw[1][j]),
                depth,
                floor,
                None if best is None else float(best[j]),
            )
            if request.grouped:
                ranked = best_per_record(ranked, record_keys(index.store, index.layout, [r.id for r in ranked]))
            out[q] = ranked[: request.k]
            if len(ranked) < request.k and not exhausted and depth < total:
                short.append(q)
        todo, depth = short, min(total, depth * GROW)
    return out
