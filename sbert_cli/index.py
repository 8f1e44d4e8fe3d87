"""Index and search a store: an hnswlib graph kept inside the store, and exact search as reference.

    STORE/index/index.json        commit point: what the graph covers and how it was built
    STORE/index/hnsw-NNNNNN.bin   the graph (hnswlib's own format), one generation per build

Building streams over the shards, so memory is the graph plus one shard. A build writes a new
generation file, fsyncs it, then replaces index.json (atomically) to point at it, and only then
deletes the old generation: a crash at any moment leaves the previous index usable.

index.json lists every shard it covers with its checksum. Shards are only appended to a store,
except by `sbert encode --force`, which rewrites an input's shards under the same names with new
contents; a checksum that no longer matches means the graph holds vectors the store no longer has,
so the index is stale: search refuses it and `sbert index` rebuilds it. Shards added since the
last build are searched exactly next to the graph, so results are never silently incomplete.

Labels in the graph are the store's row ids (int64, non-negative, fit hnswlib's uint64 labels),
so a hit leads straight to its row through the manifest's id ranges.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from sbert_cli.errors import InputError, SbertError
from sbert_cli.store import (
    COMPAT_KEYS,
    ShardInfo,
    Store,
    embeddings_to_numpy,
    fsync_dir,
    sha256_file,
    store_lock,
    write_atomic,
)

log = logging.getLogger("sbert")

INDEX_DIR = "index"
INDEX_MANIFEST = "index.json"
INDEX_FORMAT = "sbert-hnsw-index"
INDEX_VERSION = 1
SPACES = ("auto", "cosine", "ip", "l2")
# Defaults measured on the books corpus (18,340 paragraphs, all-MiniLM-L6-v2; benchmarks/
# bench_search.py), recall@10 against exact search for 500 book fragments / 500 STS sentences:
#   M=16, ef_construction=200: ef=64 0.990 / 0.840, ef=256 0.999 / 0.970, ef=400 1.000 / 0.985
#   M=32, ef_construction=400: ef=64 0.996 / 0.897, ef=256 1.000 / 0.987, ef=400 1.000 / 0.995
# Queries far from every document (STS sentences against novels) are the hard case, so the
# defaults are the larger graph and ef=400 (0.997 overall; 0.990 even counting an identical
# duplicate paragraph as a miss): the search costs ~1.2 ms a query, less than a tenth of encoding
# it, and building costs a few percent of encoding. ef is raised to k when k is larger.
DEFAULT_M = 32
DEFAULT_EF_CONSTRUCTION = 400
DEFAULT_EF = 400
EXACT_CHUNK_ROWS = 16_384  # rows scored at a time in exact search: (queries x chunk) floats


# -- results -------------------------------------------------------------------------------------
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


# -- index manifest --------------------------------------------------------------------------------
@dataclass
class IndexParams:
    space: str
    M: int = DEFAULT_M
    ef_construction: int = DEFAULT_EF_CONSTRUCTION


@dataclass
class BuildSummary:
    path: str
    added: int = 0
    shards_added: int = 0
    count: int = 0
    rebuilt: bool = False
    reason: str | None = None
    elapsed: float = 0.0
    params: dict = field(default_factory=dict)


def index_dir(store_path: Path) -> Path:
    return Path(store_path) / INDEX_DIR


def default_space(store: Store) -> str:
    """Inner product for normalized vectors (equal to cosine, and cheaper); cosine otherwise."""
    return "ip" if store.normalized else "cosine"


def resolve_space(space: str | None, store: Store) -> str:
    if space is None or space == "auto":
        return default_space(store)
    if space not in SPACES:
        raise InputError(f"--space {space}: choose from {', '.join(SPACES)}")
    return space


def read_index_manifest(store_path: Path) -> dict | None:
    """The index manifest, or None when the store has no index."""
    path = index_dir(store_path) / INDEX_MANIFEST
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(
            f"{path}: unreadable index manifest ({exc}); rebuild with: sbert index {store_path} --rebuild"
        ) from exc
    if manifest.get("format") != INDEX_FORMAT:
        raise InputError(f"{path}: not an sbert index manifest; rebuild with: sbert index {store_path} --rebuild")
    if manifest.get("version", 0) > INDEX_VERSION:
        raise InputError(f"{path}: index format {manifest['version']} is newer than this sbert reads; upgrade sbert")
    return manifest


def staleness(store: Store, manifest: dict) -> str | None:
    """Why the index no longer describes the store (None if it still does, new shards aside)."""
    model = store.model
    diffs = [k for k in COMPAT_KEYS if manifest["model"].get(k) != model.get(k)]
    if diffs:
        return f"it was built from another model ({', '.join(diffs)} differ from the store's)"
    if int(manifest["dim"]) != store.dim:
        return f"its dimension {manifest['dim']} is not the store's {store.dim}"
    current = {s.file: s.sha256 for s in store.shards}
    for shard in manifest["shards"]:
        sha = current.get(shard["file"])
        if sha is None:
            return f"{shard['file']} was removed from the store since"
        if sha != shard["sha256"]:
            return f"{shard['file']} was re-encoded since (checksum differs)"
    return None


def uncovered_shards(store: Store, manifest: dict | None) -> list[ShardInfo]:
    """Store shards the index does not hold yet, in store order."""
    covered = {s["file"] for s in manifest["shards"]} if manifest else set()
    return [s for s in store.shards if s.file not in covered]


def check_graph_file(store_path: Path, manifest: dict, verify_checksum: bool) -> Path:
    """The graph file named by the manifest, refusing a missing, truncated or altered one."""
    path = index_dir(store_path) / manifest["file"]
    rebuild = f"rebuild it with: sbert index {store_path} --rebuild"
    if not path.is_file():
        raise InputError(f"{path}: index file is missing; {rebuild}")
    size = path.stat().st_size
    if size != manifest["bytes"]:
        raise InputError(f"{path}: index file is damaged ({size:,} bytes, expected {manifest['bytes']:,}); {rebuild}")
    if verify_checksum and sha256_file(path) != manifest["sha256"]:
        raise InputError(f"{path}: index file is damaged (checksum differs); {rebuild}")
    return path


def _load_graph(path: Path, space: str, dim: int, max_elements: int):
    import hnswlib

    graph = hnswlib.Index(space=space, dim=dim)
    try:
        graph.load_index(str(path), max_elements=max_elements)
    except (RuntimeError, ValueError, MemoryError) as exc:
        store_path = path.parent.parent
        raise InputError(
            f"{path}: unreadable index file ({exc}); rebuild it with: sbert index {store_path} --rebuild"
        ) from exc
    return graph


# -- building ------------------------------------------------------------------------------------
def _iter_shard_vectors(
    store: Store, shards: Sequence[ShardInfo]
) -> Iterator[tuple[ShardInfo, np.ndarray, np.ndarray]]:
    """(shard, ids, float32 vectors) one shard at a time, checking that each is the listed one."""
    for shard in shards:
        table = store.read_shard(shard, ["id", "embedding"])
        ids = table.column("id").to_numpy()
        if len(ids) != shard.rows:
            raise SbertError(
                f"{store.shard_path(shard)}: has {len(ids)} rows, the manifest says {shard.rows}; the store is damaged"
            )
        yield shard, ids, embeddings_to_numpy(table.column("embedding"), store.dim)


def build_index(
    store_path: str | Path,
    *,
    space: str | None = None,
    M: int | None = None,
    ef_construction: int | None = None,
    threads: int | None = None,
    rebuild: bool = False,
    quiet: bool = True,
    say: Callable[[str], None] | None = None,
) -> BuildSummary:
    """Create or bring up to date the HNSW index of a store; returns what was done.

    An index that cannot be extended (stale shards, another model, other parameters, a damaged
    file) is rebuilt from scratch, with a note through `say`: the result is always an index of
    exactly the store's current shards.
    """
    import hnswlib

    from sbert_cli.progress import Progress

    say = say or (lambda msg: log.info(msg))
    store_path = Path(store_path)
    store = Store.open(store_path)
    if M is not None and not 2 <= M <= 2048:
        raise InputError(f"--M {M}: choose a value from 2 to 2048 (the default is {DEFAULT_M})")
    if ef_construction is not None and ef_construction < 1:
        raise InputError(f"--ef-construction {ef_construction}: must be at least 1")
    if threads is not None and threads < 1:
        raise InputError(f"--threads {threads}: must be at least 1")
    if store.rows == 0:
        raise InputError(f"{store_path}: the store has no rows to index")
    threads = threads or os.cpu_count() or 1
    started = time.perf_counter()

    with store_lock(store_path):
        store = Store.open(store_path)  # re-read under the lock: an encode may have committed since
        try:
            old = read_index_manifest(store_path)
        except InputError as exc:
            say(f"rebuilding the index: {str(exc).split('; rebuild')[0]}")
            old = None
        wanted_space = resolve_space(space, store) if space is not None else None
        reason = "asked with --rebuild" if rebuild and old else None
        if old is not None and reason is None:
            reason = staleness(store, old)
            requested = {"space": wanted_space, "M": M, "ef_construction": ef_construction}
            for key, value in requested.items():
                if reason is None and value is not None and value != old[key]:
                    reason = f"{key} changes from {old[key]} to {value}"
            if reason is None:
                try:
                    check_graph_file(store_path, old, verify_checksum=True)
                except InputError as exc:
                    reason = str(exc).split("; rebuild")[0]
        if old is not None and reason is not None:
            say(f"rebuilding the index: {reason}")
        fresh = old is None or reason is not None
        # Parameters not given now are those the index was built with (a rebuild after a
        # re-encode keeps the user's --space and --M), else the defaults.
        params = IndexParams(
            space=wanted_space or (old["space"] if old else default_space(store)),
            M=M or (old["M"] if old else DEFAULT_M),
            ef_construction=ef_construction or (old["ef_construction"] if old else DEFAULT_EF_CONSTRUCTION),
        )
        todo = uncovered_shards(store, None if fresh else old)
        summary = BuildSummary(str(index_dir(store_path)), rebuilt=bool(old) and fresh, reason=reason)
        summary.params = asdict(params)
        if not todo:
            summary.count = old["count"]
            summary.elapsed = time.perf_counter() - started
            return summary

        new_rows = sum(s.rows for s in todo)
        count = new_rows if fresh else old["count"] + new_rows
        if fresh:
            graph = hnswlib.Index(space=params.space, dim=store.dim)
            graph.init_index(max_elements=count, ef_construction=params.ef_construction, M=params.M)
        else:
            graph = _load_graph(index_dir(store_path) / old["file"], params.space, store.dim, count)
        covered = [] if fresh else list(old["shards"])
        with Progress("indexing", new_rows, quiet=quiet) as progress:
            for shard, ids, vectors in _iter_shard_vectors(store, todo):
                graph.add_items(vectors, ids.astype(np.uint64), num_threads=threads)
                covered.append({"file": shard.file, "sha256": shard.sha256, "rows": shard.rows})
                progress.advance(len(ids))
                summary.added += len(ids)
                summary.shards_added += 1
        if graph.get_current_count() != count:
            raise SbertError(
                f"{store_path}: the index holds {graph.get_current_count():,} rows but the shards list {count:,}; "
                "are ids repeated across shards? (rebuild with: sbert index --rebuild)"
            )
        _commit(store_path, store, graph, params, covered, count, old)
        summary.count = count
    summary.elapsed = time.perf_counter() - started
    return summary


def _commit(store_path: Path, store: Store, graph, params: IndexParams, covered: list[dict], count: int, old) -> None:
    """Write the graph as a new generation, then point index.json at it, then drop the old one."""
    directory = index_dir(store_path)
    directory.mkdir(exist_ok=True)
    generation = (old["generation"] + 1) if old else 1
    while (directory / f"hnsw-{generation:06d}.bin").exists():
        generation += 1  # left by a crashed build: never overwrite a file something may point at
    name = f"hnsw-{generation:06d}.bin"
    tmp = directory / f".{name}.tmp-{os.getpid()}"
    graph.save_index(str(tmp))
    with open(tmp, "rb+") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, directory / name)
    fsync_dir(directory)
    manifest = {
        "format": INDEX_FORMAT,
        "version": INDEX_VERSION,
        "updated": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "generation": generation,
        "file": name,
        "bytes": (directory / name).stat().st_size,
        "sha256": sha256_file(directory / name),
        "library": "hnswlib",
        "space": params.space,
        "M": params.M,
        "ef_construction": params.ef_construction,
        "dim": store.dim,
        "count": count,
        "model": {k: store.model.get(k) for k in ("name", *COMPAT_KEYS)},
        "shards": covered,
    }
    write_atomic(directory / INDEX_MANIFEST, (json.dumps(manifest, indent=1) + "\n").encode())
    # Everything else in index/ is an old generation or a crashed build's leftover.
    for path in directory.iterdir():
        if path.name not in (name, INDEX_MANIFEST):
            path.unlink(missing_ok=True)


# -- exact search ------------------------------------------------------------------------------------
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
) -> tuple[np.ndarray, np.ndarray]:
    """Brute-force top-k over the store's shards (or the given ones), one chunk at a time.

    Returns (ids, scores), each (queries, k') with k' = min(k, rows searched), best first; ties
    go to the smaller id so the order is reproducible. Memory is one shard plus queries x chunk.
    """
    space = space or default_space(store)
    queries = prepare_queries(query_vectors, space)
    nq = len(queries)
    best_ids = np.empty((nq, 0), dtype=np.int64)
    best_scores = np.empty((nq, 0), dtype=np.float32)
    for _, ids, vectors in _iter_shard_vectors(store, store.shards if shards is None else shards):
        for start in range(0, len(ids), chunk_rows):
            block_ids = ids[start : start + chunk_rows]
            scores = _scores(queries, vectors[start : start + chunk_rows], space).astype(np.float32)
            cand_ids = np.concatenate([best_ids, np.broadcast_to(block_ids, (nq, len(block_ids)))], axis=1)
            cand_scores = np.concatenate([best_scores, scores], axis=1)
            best_ids, best_scores = _top_k(cand_ids, cand_scores, k)
    return best_ids, best_scores


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


# -- fetching rows ---------------------------------------------------------------------------------
# -- the searchable index ----------------------------------------------------------------------------
class Index:
    """A store opened for search: its HNSW graph, or exact search on request (`exact=True`).

    Example::

        for hit in Index.open("corpus.store").search(["a whale of a time"], k=5)[0]:
            print(hit.rank, f"{hit.score:.3f}", hit.source, hit.line, hit.text)
    """

    def __init__(self, store: Store, manifest: dict | None, graph, device: str = "auto") -> None:
        self.store = store
        self.manifest = manifest
        self.graph = graph
        self.device = device
        self.space = manifest["space"] if manifest else default_space(store)
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
                manifest = read_index_manifest(store_path)
            except InputError:
                manifest = None
            if manifest is not None and staleness(store, manifest) is not None:
                manifest = None
            return cls(store, manifest, None, device)
        manifest = read_index_manifest(store_path)
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
            fresh = read_index_manifest(store_path)
            if fresh is None or fresh.get("file") == manifest["file"]:
                raise
            manifest = fresh
            path = check_graph_file(store_path, manifest, verify_checksum=False)
        graph = _load_graph(path, manifest["space"], int(manifest["dim"]), int(manifest["count"]))
        if graph.get_current_count() != manifest["count"]:
            raise InputError(
                f"{path}: holds {graph.get_current_count():,} rows, index.json says {manifest['count']:,}; "
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
            from sbert_cli.encoder import encoder_for_store

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
        covered = int(self.manifest["count"])
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
