"""One search's ranking: the dense and keyword candidate lists, fused or alone, grouped into
records, fetched deeper until k distinct records (or every candidate) are in hand.

Chunk rows of one record compete for the same slots, so a list k deep may hold fewer than k
records: the lists are searched again GROW times deeper, only for the queries still short,
until each has k records or its lists ran out (a keyword list runs out when fewer texts than
asked share a term with the query; a dense one when it holds every row the filter allows).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from sbert_cli.retrieval.filter import RowFilter
from sbert_cli.retrieval.fusion import FUSION_DEPTH, PEAK_FLOOR, Fused, Fusion, Ranked, fused
from sbert_cli.retrieval.keyword import KeywordIndex
from sbert_cli.retrieval.records import Layout, first_per_record
from sbert_cli.store.store import Store

GROW = 4  # each deeper search asks for this many times the candidates of the one before
CHUNKS_PER_RECORD = 4  # a record-level search's first depth: at most k x this many chunk rows


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


def _first_depth(request: Request, total: int, rows_per_record: float) -> int:
    """Candidate rows a list holds at first: k (or FUSION_DEPTH for a fusion) records' worth, by
    the store's rows per record, at most CHUNKS_PER_RECORD times that (deeper searches follow
    for queries whose records' rows crowd each other out)."""
    depth = max(request.k, FUSION_DEPTH) if request.mode == "hybrid" else request.k
    if request.grouped:
        depth = math.ceil(depth * min(CHUNKS_PER_RECORD, rows_per_record))
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


def _combine(request: Request, dense, kw, floor: float | None, best) -> Fused:
    """One query's ranking: its lists fused, or the one list its mode uses."""
    if dense is not None and kw is not None:
        return fused(dense, kw, fusion=request.fusion, dense_floor=floor, keyword_best=best)
    return Fused.single(*dense, "dense") if dense is not None else Fused.single(*kw, "keyword")


def rank_records(index: DenseIndex, keyword: KeywordIndex | None, request: Request) -> list[list[Ranked]]:
    """Each query's k best rows, or with `request.grouped` the best row of each of its k best
    records (max-sim: a record ranks by its best chunk), best first."""
    total = index.rows if request.row_filter is None else len(request.row_filter.ids)
    depth = _first_depth(request, total, index.layout.rows_per_record)
    out: list[list[Ranked]] = [[] for _ in request.queries]
    todo = list(range(len(request.queries)))
    floor = None if index.space == "l2" else PEAK_FLOOR
    while todo:
        dense, kw, best = _lists(index, keyword, request, todo, depth)
        short = []
        for j, q in enumerate(todo):
            lists = [None if found is None else (found[0][j], found[1][j]) for found in (dense, kw)]
            ranking = _combine(request, *lists, floor, None if best is None else float(best[j]))
            if request.grouped:  # max-sim: a record ranks by its best chunk
                picks = first_per_record(index.store, index.layout, ranking.ids, request.k)
            else:
                picks = range(min(request.k, len(ranking)))
            out[q] = ranking.ranked(picks)
            exhausted = all(_count(pair) < depth for pair in lists if pair is not None)
            if len(picks) < request.k and not exhausted and depth < total:
                short.append(q)
        todo, depth = short, min(total, depth * GROW)
    return out
