"""Searching a store: its HNSW graph, merged with exact search over shards added since the build."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from sbert_cli.errors import InputError, SbertError
from sbert_cli.retrieval.exact import exact_search, merge_results, prepare_queries
from sbert_cli.retrieval.graph import (
    DEFAULT_EF,
    check_graph_file,
    default_space,
    load_graph,
    staleness,
    uncovered_shards,
)
from sbert_cli.store.manifest import IndexManifest
from sbert_cli.store.store import Store

log = logging.getLogger("sbert")


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

    def as_dict(self) -> dict:
        return asdict(self)


HIT_COLUMNS = ("query", "rank", "id", "score", "text", "source", "line")


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
        self._encoder = None

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
            if manifest is not None and staleness(store, manifest) is not None:
                manifest = None
            return cls(store, manifest, None, device)
        manifest = IndexManifest.load(store_path)
        if manifest is None:
            raise InputError(
                f"{store_path}: has no index yet; build one with: sbert index {store_path} "
                "(or search without one with --exact)"
            )
        reason = staleness(store, manifest)
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
        graph = load_graph(path, manifest.space, manifest.dim, manifest.count)
        if graph.get_current_count() != manifest.count:
            raise InputError(
                f"{path}: holds {graph.get_current_count():,} rows, index.json says {manifest.count:,}; "
                f"rebuild it with: sbert index {store_path} --rebuild"
            )
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
            from sbert_cli.encoding.loader import encoder_for_store

            self._encoder = encoder_for_store(self.store.model, self.device)
        return self._encoder

    def encode(self, queries: Sequence[str]) -> np.ndarray:
        return self.encoder().encode(list(queries))

    def check_k(self, k: int) -> None:
        if k < 1:
            raise InputError(f"-k {k}: must be at least 1")
        if k > self.rows:
            raise InputError(f"-k {k} is larger than the store ({self.rows:,} rows); ask for at most {self.rows:,}")

    def search_vectors(self, vectors: np.ndarray, k: int = 10, ef: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(ids, scores), each (queries, k), best first, for query vectors made like the store's."""
        self.check_k(k)
        vectors = np.atleast_2d(np.asarray(vectors, dtype=np.float32))
        if vectors.shape[1] != self.store.dim:
            raise InputError(f"query vectors have dimension {vectors.shape[1]}, the store {self.store.dim}")
        if self.graph is None:
            return exact_search(self.store, vectors, k, self.space)
        if ef is not None and ef < 1:
            raise InputError(f"--ef {ef}: must be at least 1")
        covered = self.manifest.count
        graph_k = min(k, covered)
        self.graph.set_ef(max(ef or self.default_ef, graph_k))
        try:
            labels, distances = self.graph.knn_query(prepare_queries(vectors, self.space), k=graph_k)
        except RuntimeError as exc:  # hnswlib: fewer than k reachable (tiny ef on a sparse graph)
            raise SbertError(f"index search failed ({exc}); try a larger --ef or --exact") from exc
        ids = labels.astype(np.int64)
        scores = (-np.sqrt(np.maximum(distances, 0.0)) if self.space == "l2" else 1.0 - distances).astype(np.float32)
        if self.pending:
            return merge_results((ids, scores), exact_search(self.store, vectors, k, self.space, self.pending), k)
        return ids, scores

    def search(
        self, queries: Sequence[str], k: int = 10, ef: int | None = None, min_score: float | None = None
    ) -> list[list[Hit]]:
        """Top-k stored rows per query, best first, texts fetched by id."""
        if isinstance(queries, str):
            queries = [queries]
        queries = list(queries)
        if not queries:
            raise InputError("no query given")
        for n, query in enumerate(queries, start=1):
            if not query.strip():
                raise InputError(f"query {n} is empty" if len(queries) > 1 else "the query is empty")
        self.check_k(k)
        ids, scores = self.search_vectors(self.encode(queries), k, ef)
        keep = np.ones(ids.shape, dtype=bool) if min_score is None else scores >= min_score
        rows = self.store.fetch(ids[keep])
        results = []
        for qi, query in enumerate(queries):
            hits = []
            for rank, (row_id, score) in enumerate(zip(ids[qi], scores[qi], strict=True), start=1):
                if not keep[qi, rank - 1]:
                    continue
                row = rows.get(int(row_id))
                if row is None:
                    raise SbertError(
                        f"{self.store.path}: row {int(row_id)} found by the index is not in the store; "
                        f"rebuild with: sbert index {self.store.path} --rebuild"
                    )
                hits.append(
                    Hit(query, rank, int(row_id), float(score), row.get("text"), row.get("source"), row.get("line"))
                )
            results.append(hits)
        return results
