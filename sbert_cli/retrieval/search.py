"""Searching a store: its dense index (HNSW graph or compressed codes), merged with exact search
over shards added since the build, and its keyword index, alone or fused (retrieval/fusion.py)."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from sbert_cli.errors import InputError, SbertError
from sbert_cli.retrieval.exact import exact_over, exact_search, merge_results, prepare_queries
from sbert_cli.retrieval.filter import RowFilter, filter_rows, matching_vectors
from sbert_cli.retrieval.fusion import DEFAULT_MODE, Ranked, check_fusion
from sbert_cli.retrieval.graph import (
    DEFAULT_EF,
    check_graph_file,
    default_space,
    gone_inputs,
    load_graph,
    staleness,
    uncovered_shards,
)
from sbert_cli.retrieval.keyword import KeywordIndex
from sbert_cli.retrieval.live import reopening, without_gone
from sbert_cli.retrieval.quantized import QuantizedIndex
from sbert_cli.retrieval.ranking import Request, rank_records
from sbert_cli.retrieval.records import FUSION_COLUMNS, HIT_COLUMNS, Hit, Layout, cosines, fetch_rows, plain
from sbert_cli.store.integrity import DamagedFileError
from sbert_cli.store.manifest import IndexManifest, KeywordManifest
from sbert_cli.store.store import Store

log = logging.getLogger("sbert")
__all__ = ["FUSION_COLUMNS", "HIT_COLUMNS", "Hit", "Index"]


class Index:
    """A store opened for search: its HNSW graph, or exact search on request (`exact=True`).

    Example::

        for hit in Index.open("corpus.store").search(["a whale of a time"], k=5)[0]:
            print(hit.rank, f"{hit.score:.3f}", hit.source, hit.line, hit.text)
    """

    def __init__(self, store: Store, manifest: IndexManifest | None, graph, device: str = "auto") -> None:
        self.store = store
        self.manifest = manifest
        self.graph = graph
        self.device = device
        self.space = manifest.space if manifest else default_space(store)
        self.default_ef = DEFAULT_EF
        # Shards encoded after the last `sbert index`: searched exactly, merged with the graph's hits.
        self.pending = uncovered_shards(store, manifest) if manifest else list(store.shards)
        # Inputs removed or rewritten since the build: their rows in the index are not returned.
        self.gone = gone_inputs(store, manifest.shards) if manifest else set()
        self._encoder = None
        self._keyword: KeywordIndex | None = None
        self._has_keyword: bool | None = None  # as at the first search: an Index is one state
        self.reopens_itself = True  # on a shard gone under it (live.reopening); a server's do not
        self._layout: Layout | None = None

    @classmethod
    def open(cls, store_path: str | Path, *, exact: bool = False, device: str = "auto") -> Index:
        """Open a store's index; `exact=True` opens the store alone, for brute-force search."""
        store_path = Path(store_path)
        store = Store.open(store_path)
        store.check_shard_files()  # a missing or cut shard is an error before any result
        if exact:
            # Exact search needs no graph, only the index's space (so both rank alike) when the
            # index is current; a missing, stale or damaged index is no reason to refuse.
            try:
                manifest = IndexManifest.load(store_path)
            except InputError:
                manifest = None
            if manifest is not None and staleness(store, manifest, removed_ok=True) is not None:
                manifest = None
            return cls(store, manifest, None, device)
        manifest = IndexManifest.load(store_path)
        if manifest is None:
            raise InputError(
                f"{store_path}: has no index yet; build one with: sbert index {store_path} "
                "(or search without one with --exact)"
            )
        reason = staleness(store, manifest, removed_ok=True)
        if reason is not None:
            raise InputError(
                f"{store_path}: the index is stale: {reason}; bring it up to date with: sbert index {store_path} "
                "(or search with --exact)"
            )
        try:
            path = check_graph_file(store_path, manifest)
        except (InputError, DamagedFileError):
            # A build may have committed between our reads of index.json and of the file.
            fresh = IndexManifest.load(store_path)
            if fresh is None or fresh.file == manifest.file:
                raise
            manifest = fresh
            path = check_graph_file(store_path, manifest)
        graph = _load_dense(store_path, path, manifest)
        index = cls(store, manifest, graph, device)
        if index.pending:
            rows = sum(s.rows for s in index.pending)
            log.warning(
                "%s: %d shard(s) (%s rows) were encoded after the index was built; searching them exactly "
                "(run `sbert index %s` to add them)",
                store_path,
                len(index.pending),
                f"{rows:,}",
                store_path,
            )
        return index

    @property
    def rows(self) -> int:
        return self.store.rows

    @property
    def exact(self) -> bool:
        return self.graph is None

    def encoder(self):
        if self._encoder is None:
            from sbert_cli.encoding.loader import query_encoder_for_store

            self._encoder = query_encoder_for_store(self.store.model, self.device)
        return self._encoder

    def encode(self, queries: Sequence[str]) -> np.ndarray:
        return self.encoder().encode(list(queries))

    def keyword_index(self) -> KeywordIndex:
        """The store's BM25 index, opened on first use (dense search never needs it)."""
        if self._keyword is None:
            self._keyword = KeywordIndex.open(self.store)
            if self._keyword.pending:
                # New inputs, and the rows of inputs --sync changed (their old rows are dropped).
                where, pending = self.store.path, self._keyword.pending
                log.warning(
                    "%s: the keyword index is stale by %s rows: %d shard(s) were written after it was built "
                    "(new or changed inputs) and are not searched by keyword (run `sbert index %s` to add them)",
                    where,
                    f"{sum(s.rows for s in pending):,}",
                    len(pending),
                    where,
                )
        return self._keyword

    def resolve_mode(self, mode: str | None) -> str:
        """The mode a search runs in: `mode`, or by default DEFAULT_MODE where the store has a
        keyword index and dense where it has none (a --no-text store, or `sbert index --no-bm25`)."""
        if mode is not None:
            return mode
        if self._has_keyword is None:
            self._has_keyword = self.store.has_text and KeywordManifest.path_in(self.store.path).is_file()
        return DEFAULT_MODE if self._has_keyword else "dense"

    @property
    def layout(self) -> Layout:
        """Which optional columns (chunk, start, end, kept fields) the store's shards have."""
        if self._layout is None:
            self._layout = Layout.of(self.store) if self.store.shards else Layout(False, ())
        return self._layout

    def columns(self, mode: str | None = None) -> tuple[str, ...]:
        """The keys of `Hit.as_dict()` for a search in `mode` (the CLI's column order)."""
        return self.layout.columns(self.resolve_mode(mode))

    def row_filter(self, where: str) -> RowFilter:
        """The store rows a `--where` expression keeps (retrieval/filter.py)."""
        return filter_rows(self.store, where)

    def search_vectors(
        self,
        vectors: np.ndarray,
        k: int = 10,
        ef: int | None = None,
        rescore: int | None = None,
        *,
        where: RowFilter | str | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """(ids, scores), each (queries, k'), best first, for query vectors made like the store's;
        k' = min(k, rows searched). `ef` tunes an HNSW graph, `rescore` a compressed index
        (candidates = rescore x k); `where` keeps only the rows a filter matches (filter first)."""
        _check_k(k)
        vectors = np.atleast_2d(np.asarray(vectors, dtype=np.float32))
        if vectors.shape[1] != self.store.dim:
            raise InputError(f"query vectors have dimension {vectors.shape[1]}, the store {self.store.dim}")
        row_filter = self.row_filter(where) if isinstance(where, str) else where
        k = min(k, self.rows if row_filter is None else len(row_filter.ids))
        if k == 0:
            return np.empty((len(vectors), 0), np.int64), np.empty((len(vectors), 0), np.float32)
        if row_filter is not None and (self.graph is None or row_filter.narrow):
            return self._search_matching(vectors, k, row_filter)
        if self.graph is None:
            return exact_search(self.store, vectors, k, self.space)
        if ef is not None and ef < 1:
            raise InputError(f"--ef {ef}: must be at least 1")
        if rescore is not None and rescore < 1:
            raise InputError(f"--rescore {rescore}: must be at least 1")
        allowed = None if row_filter is None else row_filter.ids
        count, gone = self.manifest.count, self.gone  # rows of removed inputs are dropped as they come
        if isinstance(self.graph, QuantizedIndex):
            ids, scores = without_gone(
                lambda n: self.graph.search(vectors, n, rescore, allowed=allowed), k, count, gone
            )
        else:
            try:
                ids, scores = without_gone(lambda n: self._search_graph(vectors, n, ef, row_filter), k, count, gone)
            except _TooFew:  # fewer matching rows reachable in the graph than asked for
                return self._search_matching(vectors, k, row_filter)
        if self.pending:
            pending = exact_search(self.store, vectors, k, self.space, self.pending, allowed=allowed)
            return merge_results((ids, scores), pending, k)
        return ids, scores

    def _search_matching(self, vectors: np.ndarray, k: int, row_filter: RowFilter) -> tuple[np.ndarray, np.ndarray]:
        """Exact search over a filter's matching rows: their vectors read by id when they are
        few, every shard scanned (matching rows kept) when they are many."""
        if row_filter.narrow:
            ids, matching = self._matching_vectors(row_filter)
            return exact_over(ids, matching, vectors, k, self.space)
        return exact_search(self.store, vectors, k, self.space, allowed=row_filter.ids)

    def _matching_vectors(self, row_filter: RowFilter) -> tuple[np.ndarray, np.ndarray]:
        """A narrow filter's rows and vectors: from the index, which holds them in memory (or
        memory-mapped), where it covers them; from the shards otherwise (--exact, new shards)."""
        get_items = getattr(self.graph, "get_items", None)
        if get_items is None and not isinstance(self.graph, QuantizedIndex):
            return matching_vectors(self.store, row_filter.ids)
        pending = np.zeros(len(row_filter.ids), dtype=bool)
        for shard in self.pending:
            pending |= (row_filter.ids >= shard.id_min) & (row_filter.ids <= shard.id_max)
        indexed = row_filter.ids[~pending]
        if isinstance(self.graph, QuantizedIndex):
            found = self.graph.vectors_of(indexed)
        else:
            found = np.asarray(get_items(indexed, return_type="numpy"), dtype=np.float32).reshape(-1, self.store.dim)
        if not pending.any():
            return indexed, found
        more_ids, more = matching_vectors(self.store, row_filter.ids[pending], self.pending)
        return np.concatenate([indexed, more_ids]), np.concatenate([found, more])

    def vectors_of(self, ids: Sequence[int]) -> dict[int, np.ndarray]:
        """Rows' vectors by id: from the index, which holds them in memory (or memory-mapped),
        where it covers them; read from the shards otherwise."""
        wanted = np.unique(np.asarray(ids, dtype=np.int64))
        found, vectors = self._matching_vectors(RowFilter("", wanted, self.rows)) if len(wanted) else ([], [])
        return dict(zip(np.asarray(found).tolist(), vectors, strict=True))

    def _search_graph(
        self, vectors: np.ndarray, k: int, ef: int | None, row_filter: RowFilter | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        self.graph.set_ef(max(ef or self.default_ef, k))
        # hnswlib calls the filter from its search threads; a Python callable needs the GIL anyway.
        options = {} if row_filter is None else {"filter": row_filter.contains, "num_threads": 1}
        try:
            labels, distances = self.graph.knn_query(prepare_queries(vectors, self.space), k=k, **options)
        except RuntimeError as exc:  # hnswlib: fewer than k reachable (tiny ef on a sparse graph)
            if row_filter is not None:
                raise _TooFew from exc
            raise SbertError(f"index search failed ({exc}); try a larger --ef or --exact") from exc
        scores = -np.sqrt(np.maximum(distances, 0.0)) if self.space == "l2" else 1.0 - distances
        return labels.astype(np.int64), scores.astype(np.float32)

    def _reopen(self) -> None:
        fresh = Index.open(self.store.path, exact=self.graph is None, device=self.device)
        fresh._encoder = self._encoder
        self.__dict__.update(fresh.__dict__)

    @reopening
    def search(
        self,
        queries: Sequence[str],
        k: int = 10,
        ef: int | None = None,
        min_score: float | None = None,
        *,
        mode: str | None = None,
        rrf_k: float | None = None,
        alpha: float | None = None,
        rescore: int | None = None,
        where: str | None = None,
        chunks: bool = False,
        min_cosine: float | None = None,
        fusion: str | None = None,
    ) -> list[list[Hit]]:
        """The k best records per query (`chunks=True`: chunk rows), best first.

        `mode`: dense, keyword or hybrid (None: see `resolve_mode`); hybrid fuses by a convex combination of
        normalized scores (`alpha`, None: per query) or by reciprocal rank (`fusion="rrf"`, `rrf_k`): fusion.py.
        `where`: a SQL boolean expression over the stored columns (filter.py), which every hit satisfies.
        `min_score` drops hits under the mode's score (cosine, BM25, fused: 0 to 1 for convex), `min_cosine`
        under their cosine. Fewer than k hits come back only when fewer records match or thresholds drop them."""
        queries = _check_queries(queries)
        _check_k(k)
        _check_threshold("--min-score", min_score)
        _check_threshold("--min-cosine", min_cosine)
        mode = self.resolve_mode(mode)
        how = check_fusion(mode, rrf_k, alpha, fusion)
        # Keyword first: a missing or stale keyword index is refused before the model loads.
        keyword = self.keyword_index() if mode != "dense" else None
        row_filter = self.row_filter(where) if where is not None else None
        if row_filter is not None and len(row_filter.ids) == 0:
            return [[] for _ in queries]
        vectors = self.encode(queries)  # dense mode ranks by them; every mode reports the cosine
        request = Request(queries, vectors, k, mode, how, ef, rescore, row_filter, not chunks and self.layout.chunked)
        ranked = rank_records(self, keyword, request)
        return self._hits(queries, vectors, ranked, mode, min_score, min_cosine)

    def _hits(
        self,
        queries: list[str],
        query_vectors: np.ndarray,
        ranked: list[list[Ranked]],
        mode: str,
        min_score: float | None,
        min_cosine: float | None,
    ) -> list[list[Hit]]:
        """Hits with their rows and cosines, dropping those under the thresholds (ranks stay)."""
        columns = ("text", "source", "line", "key", *self.layout.extra)
        rows = fetch_rows(self.store, [r.id for per in ranked for r in per], columns)
        vectors = self.vectors_of([r.id for per in ranked for r in per])  # for the cosines
        missing = [r.id for per in ranked for r in per if r.id not in rows]
        if missing:
            raise SbertError(
                f"{self.store.path}: row {missing[0]} found by the index is not in the store; "
                f"rebuild with: sbert index {self.store.path} --rebuild"
            )
        results = []
        for query, query_vector, per in zip(queries, query_vectors, ranked, strict=True):
            found = [rows[r.id] for r in per]
            near = cosines(query_vector, [vectors.get(r.id) for r in per], self.store.dim)
            hits = [
                self._hit(query, rank, r, row, cos, mode)
                for rank, (r, row, cos) in enumerate(zip(per, found, near, strict=True), 1)
                if (min_score is None or r.score >= min_score) and (min_cosine is None or cos >= min_cosine)
            ]
            results.append(hits)
        return results

    def _hit(self, query: str, rank: int, r: Ranked, row: dict, cosine: float, mode: str) -> Hit:
        return Hit(
            query,
            rank,
            r.id,
            r.score,
            row.get("text"),
            row.get("source"),
            row.get("line"),
            *(r.dense_rank, r.dense_score, r.keyword_rank, r.keyword_score),  # how it was fused
            cosine=cosine,
            key=row.get("key"),
            extra={c: plain(row.get(c)) for c in self.layout.extra},
            mode=mode,
        )


class _TooFew(Exception):
    """A filtered graph search found fewer matching rows than asked for."""


def _check_k(k: int) -> None:
    if k < 1:
        raise InputError(f"-k {k}: must be at least 1")


def _check_threshold(name: str, value: float | None) -> None:
    if value is not None and not math.isfinite(value):
        raise InputError(f"{name} {value}: must be a finite number")


def _check_queries(queries: Sequence[str] | str) -> list[str]:
    queries = [queries] if isinstance(queries, str) else list(queries)
    if not queries:
        raise InputError("no query given")
    for n, query in enumerate(queries, start=1):
        if not query.strip():
            raise InputError(f"query {n} is empty" if len(queries) > 1 else "the query is empty")
    return queries


def _load_dense(store_path: Path, path: Path, manifest: IndexManifest):
    """The index's dense structure: an hnswlib graph, or a compressed faiss index."""
    if manifest.quantize != "none":
        return QuantizedIndex.load(store_path, manifest)
    if manifest.partitions:  # several graphs, searched together (fan-out and merge: retrieval/partitions.py)
        from sbert_cli.retrieval.partitions import open_partitions

        return open_partitions(store_path, manifest)
    total = manifest.count + manifest.deleted  # hnswlib counts rows marked deleted too
    graph = load_graph(path, manifest.space, manifest.dim, total)
    if graph.get_current_count() != total:
        raise InputError(
            f"{path}: holds {graph.get_current_count():,} rows, index.json says {total:,}; "
            f"rebuild it with: sbert index {store_path} --rebuild"
        )
    return graph
