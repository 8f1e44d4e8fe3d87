"""Searching a store: its dense index (HNSW graph or compressed codes), merged with exact search
over shards added since the build, and its keyword index, alone or fused (retrieval/fusion.py)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from sbert_cli.errors import InputError, SbertError
from sbert_cli.retrieval.exact import exact_search, merge_results, prepare_queries
from sbert_cli.retrieval.fusion import DEFAULT_MODE, FUSION_DEPTH, Ranked, check_fusion, fuse, single
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
from sbert_cli.retrieval.live import without_gone
from sbert_cli.retrieval.quantized import QuantizedIndex
from sbert_cli.store.manifest import IndexManifest, KeywordManifest
from sbert_cli.store.store import ShardGone, Store

log = logging.getLogger("sbert")
READ_RETRIES = 10  # reopenings when a writer deletes a shard this search was reading


@dataclass(frozen=True)
class Hit:
    """One search result: the stored row and how close it is to the query (higher is closer)."""

    query: str
    rank: int  # 1-based
    id: int
    score: float  # cosine similarity for cosine/ip spaces on normalized vectors; -L2 distance for l2
    text: str | None
    source: str | None
    line: int | None
    # Where the hit stood in each ranking (None: not in that list's top); in hybrid mode `score`
    # is the fused score, in keyword mode the BM25 score.
    dense_rank: int | None = None
    dense_score: float | None = None
    keyword_rank: int | None = None
    keyword_score: float | None = None

    def as_dict(self) -> dict:
        return asdict(self)


HIT_COLUMNS = ("query", "rank", "id", "score", "text", "source", "line")
FUSION_COLUMNS = ("dense_rank", "dense_score", "keyword_rank", "keyword_score")


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

    @classmethod
    def open(cls, store_path: str | Path, *, exact: bool = False, device: str = "auto") -> Index:
        """Open a store's index; `exact=True` opens the store alone, for brute-force search."""
        store_path = Path(store_path)
        store = Store.open(store_path)
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
            path = check_graph_file(store_path, manifest, verify_checksum=False)
        except InputError:
            # A build may have committed between our reads of index.json and of the file.
            fresh = IndexManifest.load(store_path)
            if fresh is None or fresh.file == manifest.file:
                raise
            manifest = fresh
            path = check_graph_file(store_path, manifest, verify_checksum=False)
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

    def check_k(self, k: int) -> None:
        if k < 1:
            raise InputError(f"-k {k}: must be at least 1")
        if k > self.rows:
            raise InputError(f"-k {k} is larger than the store ({self.rows:,} rows); ask for at most {self.rows:,}")

    def keyword_index(self) -> KeywordIndex:
        """The store's BM25 index, opened on first use (dense search never needs it)."""
        if self._keyword is None:
            self._keyword = KeywordIndex.open(self.store)
            if self._keyword.pending:
                where = self.store.path
                log.warning(
                    "%s: %d shard(s) were encoded after the keyword index was built and are not searched by "
                    "keyword (run `sbert index %s` to add them)",
                    where,
                    len(self._keyword.pending),
                    where,
                )
        return self._keyword

    def resolve_mode(self, mode: str | None) -> str:
        """The mode a search runs in: `mode`, or by default DEFAULT_MODE where the store has a
        keyword index and dense where it has none (a --no-text store, or `sbert index --no-bm25`)."""
        if mode is not None:
            return mode
        has_keyword = self.store.has_text and KeywordManifest.path_in(self.store.path).is_file()
        return DEFAULT_MODE if has_keyword else "dense"

    def search_vectors(
        self, vectors: np.ndarray, k: int = 10, ef: int | None = None, rescore: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(ids, scores), each (queries, k), best first, for query vectors made like the store's.
        `ef` tunes an HNSW graph, `rescore` a compressed index (candidates = rescore x k)."""
        self.check_k(k)
        vectors = np.atleast_2d(np.asarray(vectors, dtype=np.float32))
        if vectors.shape[1] != self.store.dim:
            raise InputError(f"query vectors have dimension {vectors.shape[1]}, the store {self.store.dim}")
        if self.graph is None:
            return exact_search(self.store, vectors, k, self.space)
        if ef is not None and ef < 1:
            raise InputError(f"--ef {ef}: must be at least 1")
        if rescore is not None and rescore < 1:
            raise InputError(f"--rescore {rescore}: must be at least 1")
        if isinstance(self.graph, QuantizedIndex):
            ids, scores = without_gone(
                lambda n: self.graph.search(vectors, n, rescore), k, self.manifest.count, self.gone
            )
        else:
            ids, scores = without_gone(lambda n: self._search_graph(vectors, n, ef), k, self.manifest.count, self.gone)
        if self.pending:
            return merge_results((ids, scores), exact_search(self.store, vectors, k, self.space, self.pending), k)
        return ids, scores

    def _search_graph(self, vectors: np.ndarray, k: int, ef: int | None) -> tuple[np.ndarray, np.ndarray]:
        self.graph.set_ef(max(ef or self.default_ef, k))
        try:
            labels, distances = self.graph.knn_query(prepare_queries(vectors, self.space), k=k)
        except RuntimeError as exc:  # hnswlib: fewer than k reachable (tiny ef on a sparse graph)
            raise SbertError(f"index search failed ({exc}); try a larger --ef or --exact") from exc
        scores = -np.sqrt(np.maximum(distances, 0.0)) if self.space == "l2" else 1.0 - distances
        return labels.astype(np.int64), scores.astype(np.float32)

    def search(self, queries: Sequence[str] | str, *args, **kwargs) -> list[list[Hit]]:
        """Top-k stored rows per query (see `_search`). A writer may delete a shard this search
        was reading (after committing the store without it): then the store is opened afresh
        and the search runs again on the new committed state (a few times, for writers that
        commit back to back)."""
        for _ in range(READ_RETRIES):
            try:
                return self._search(queries, *args, **kwargs)
            except ShardGone:
                self._reopen()
        return self._search(queries, *args, **kwargs)

    def _reopen(self) -> None:
        fresh = Index.open(self.store.path, exact=self.graph is None, device=self.device)
        fresh._encoder = self._encoder
        self.__dict__.update(fresh.__dict__)

    def _search(
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
    ) -> list[list[Hit]]:
        """Top-k stored rows per query, best first, texts fetched by id.

        `mode`: dense, keyword or hybrid (None: see `resolve_mode`); hybrid fuses by reciprocal
        rank (`rrf_k`, default 60) or, given `alpha`, by weighted normalized scores (see
        retrieval/fusion.py). `min_score` applies to the mode's score (cosine, BM25 or fused)."""
        queries = _check_queries(queries)
        self.check_k(k)
        mode = self.resolve_mode(mode)
        check_fusion(mode, rrf_k, alpha)
        depth = min(self.rows, max(k, FUSION_DEPTH)) if mode == "hybrid" else k
        # Keyword first: a missing or stale keyword index is refused before the model loads.
        keyword = self.keyword_index().search(queries, depth) if mode != "dense" else None
        dense = self.search_vectors(self.encode(queries), depth, ef, rescore) if mode != "keyword" else None
        if dense is None or keyword is None:
            name, (ids, scores) = ("dense", dense) if keyword is None else ("keyword", keyword)
            ranked = [single(ids[q], scores[q], k, name) for q in range(len(queries))]
        else:
            rows = range(len(queries))
            ranked = [fuse((dense[0][q], dense[1][q]), (keyword[0][q], keyword[1][q]), k, rrf_k, alpha) for q in rows]
        return self._hits(queries, ranked, min_score)

    def _hits(self, queries: list[str], ranked: list[list[Ranked]], min_score: float | None) -> list[list[Hit]]:
        """Hits with their rows, dropping those under `min_score` (ranks stay as ranked)."""
        kept = [[(n, r) for n, r in enumerate(per, 1) if min_score is None or r.score >= min_score] for per in ranked]
        rows = self.store.fetch([r.id for per in kept for _, r in per])
        results = []
        for query, per in zip(queries, kept, strict=True):
            hits = []
            for rank, r in per:
                row = rows.get(r.id)
                if row is None:
                    raise SbertError(
                        f"{self.store.path}: row {r.id} found by the index is not in the store; "
                        f"rebuild with: sbert index {self.store.path} --rebuild"
                    )
                extra = (r.dense_rank, r.dense_score, r.keyword_rank, r.keyword_score)
                hits.append(
                    Hit(query, rank, r.id, r.score, row.get("text"), row.get("source"), row.get("line"), *extra)
                )
            results.append(hits)
        return results


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
