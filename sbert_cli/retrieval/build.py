"""Building and extending a store's indexes: the dense one (an HNSW graph, retrieval/graph.py, or
compressed codes, retrieval/quantized.py) and the keyword one (BM25, retrieval/keyword.py).

A build writes a new generation file, then replaces index.json (atomically) to point at it, and
only then deletes the old generation: a crash at any moment leaves the previous index usable.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from sbert_cli.errors import InputError, SbertError
from sbert_cli.progress import NullReporter, ProgressUpdate, Reporter
from sbert_cli.retrieval.graph import (
    DEFAULT_EF_CONSTRUCTION,
    DEFAULT_M,
    IndexParams,
    check_graph_file,
    check_graph_written,
    default_space,
    gone_inputs,
    index_dir,
    iter_shard_vectors,
    load_graph,
    resolve_space,
    staleness,
    uncovered_shards,
)
from sbert_cli.retrieval.keyword import KeywordSummary, build_keyword_index
from sbert_cli.retrieval.quantized import check_quantize, extend_quantized, recalibration_reason
from sbert_cli.store.atomic import atomic_path
from sbert_cli.store.integrity import DamagedFileError
from sbert_cli.store.manifest import INDEX_MANIFEST, CoveredShard, IndexManifest
from sbert_cli.store.store import LINE_BITS, Store, store_lock

log = logging.getLogger("sbert")
# A graph whose deleted rows pass this fraction is rebuilt without them (also `sbert index
# --compact`): hnswlib still walks deleted nodes, so they cost search time and memory.
COMPACT_DELETED_FRACTION = 0.2


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
    keyword: KeywordSummary | None = None  # None: not asked for (--no-bm25)
    deleted: int = 0  # rows of removed or rewritten inputs taken out of the index in this run
    deleted_in_graph: int = 0  # rows marked deleted in the graph now (0 after a compaction)


def _check_params(M: int | None, ef_construction: int | None, threads: int | None) -> None:
    if M is not None and not 2 <= M <= 2048:
        raise InputError(f"--M {M}: choose a value from 2 to 2048 (the default is {DEFAULT_M})")
    if ef_construction is not None and ef_construction < 1:
        raise InputError(f"--ef-construction {ef_construction}: must be at least 1")
    if threads is not None and threads < 1:
        raise InputError(f"--threads {threads}: must be at least 1")


def _rebuild_reason(store: Store, old: IndexManifest, requested: dict, rebuild: bool, compact: bool) -> str | None:
    """Why `old` cannot simply be extended (None when it can)."""
    if rebuild:
        return "asked with --rebuild"
    if compact and old.deleted:
        return f"compacting: {old.deleted:,} deleted rows, asked with --compact"
    reason = staleness(store, old, removed_ok=not old.partitions)
    if reason is None and old.partitions:  # retrieval/partitions.py extends those
        reason = f"it has {len(old.partitions)} partitions; now one graph"
    for key, value in requested.items():
        if reason is None and value is not None and value != getattr(old, key):
            reason = f"{key} changes from {getattr(old, key)} to {value}"
    reason = reason or recalibration_reason(store, old)
    if reason is None:
        try:
            check_graph_file(store.path, old)
        except (InputError, DamagedFileError) as exc:
            reason = str(exc).split("; rebuild")[0]
    return reason


def _params(store: Store, old, space: str | None, M: int | None, ef_construction: int | None, quantize: str | None):
    """Parameters not given now are those the index was built with (a rebuild after a re-encode
    keeps the user's --space and --M), else the defaults."""
    quantize = quantize or (old.quantize if old else "none")
    space = space or (old.space if old else default_space(store))
    check_quantize(quantize, space)
    if quantize != "none":
        if M or ef_construction:
            raise InputError("--M and --ef-construction shape an HNSW graph: they apply to --quantize none only")
        return IndexParams(space=space, M=0, ef_construction=0, quantize=quantize)
    graph = old if old is not None and old.quantize == "none" else None  # a compressed index has no graph
    return IndexParams(
        space=space,
        M=M or (graph.M if graph else DEFAULT_M),
        ef_construction=ef_construction or (graph.ef_construction if graph else DEFAULT_EF_CONSTRUCTION),
    )


def _read_old(store_path: Path, reporter: Reporter) -> IndexManifest | None:
    try:
        return IndexManifest.load(store_path)
    except InputError as exc:
        reporter.message(f"rebuilding the index: {str(exc).split('; rebuild')[0]}")
        return None


def build_index(
    store_path: str | Path,
    *,
    space: str | None = None,
    M: int | None = None,
    ef_construction: int | None = None,
    threads: int | None = None,
    rebuild: bool = False,
    quantize: str | None = None,
    bm25: bool = True,
    compact: bool = False,
    reporter: Reporter | None = None,
) -> BuildSummary:
    """Create or bring up to date the indexes of a store; returns what was done.

    The dense index is an HNSW graph (`quantize` "none") or compressed codes ("int8", "binary");
    parameters not given keep what the index was built with. `bm25` also builds or updates the
    keyword index (a store without texts gets none, and the summary says why).

    An index that cannot be extended (stale shards, another model, other parameters, a damaged
    file) is rebuilt from scratch, with a note to the reporter: the result is always an index of
    exactly the store's current shards.
    """
    reporter = reporter or NullReporter()
    store_path = Path(store_path)
    store = Store.open(store_path)
    _check_params(M, ef_construction, threads)
    if store.rows == 0:
        raise InputError(f"{store_path}: the store has no rows to index")
    started = time.perf_counter()
    with store_lock(store_path):
        store = Store.open(store_path)  # re-read under the lock: an encode may have committed since
        store.check_shard_files()  # a missing or cut shard is an error here, not "up to date"
        old = _read_old(store_path, reporter)
        wanted_space = resolve_space(space, store) if space is not None else None
        requested = {"quantize": quantize, "space": wanted_space, "M": M, "ef_construction": ef_construction}
        params = _params(store, old, wanted_space, M, ef_construction, quantize)
        reason = _rebuild_reason(store, old, requested, rebuild, compact) if old is not None else None
        if reason is not None:
            reporter.message(f"rebuilding the index: {reason}")
        base = None if reason is not None else old
        summary = BuildSummary(str(index_dir(store_path)), rebuilt=old is not None and base is None, reason=reason)
        summary.params = asdict(params)
        extend = _extend if params.quantize == "none" else extend_quantized
        threads = threads or os.cpu_count() or 1
        summary.count = extend(store, base, old, params, threads, summary, reporter)
        fresh = IndexManifest.load(store_path)
        if fresh is not None and _compaction_due(fresh):
            reporter.message(
                f"compacting the index: {fresh.deleted:,} of its {fresh.count + fresh.deleted:,} rows are deleted"
            )
            summary.added = summary.shards_added = 0
            summary.count = extend(store, None, fresh, params, threads, summary, reporter)
            summary.rebuilt, summary.reason = True, "compacted"
            fresh = IndexManifest.load(store_path)
        summary.deleted_in_graph = fresh.deleted if fresh is not None else 0
        if bm25:
            summary.keyword = build_keyword_index(store, rebuild=rebuild, reporter=reporter)
    summary.elapsed = time.perf_counter() - started
    return summary


def _compaction_due(manifest: IndexManifest) -> bool:
    total = manifest.count + manifest.deleted
    return manifest.quantize == "none" and total > 0 and manifest.deleted / total > COMPACT_DELETED_FRACTION


def _extend(store, base, old, params: IndexParams, threads: int, summary: BuildSummary, reporter: Reporter) -> int:
    """Add the shards `base` (None: start afresh) lacks and mark deleted the rows of inputs
    removed or rewritten since (hnswlib's mark_deleted), commit, return the live row count."""
    import hnswlib

    todo = uncovered_shards(store, base)
    gone = gone_inputs(store, base.shards) if base else set()
    if not todo and not gone:
        return base.count
    new_rows = sum(s.rows for s in todo)
    deleted = base.deleted if base else 0
    if base is None:
        graph = hnswlib.Index(space=params.space, dim=store.dim)
        graph.init_index(max_elements=new_rows, ef_construction=params.ef_construction, M=params.M)
    else:
        graph = load_graph(index_dir(store.path) / base.file, params.space, store.dim, base.count + deleted + new_rows)
    live = store_files(store)
    covered = [c for c in base.shards if c.file in live] if base else []
    started = time.perf_counter()

    def shard_done(shard, added: int) -> None:
        covered.append(CoveredShard(shard.file, shard.sha256, shard.rows))
        summary.added += added
        summary.shards_added += 1
        elapsed = time.perf_counter() - started
        reporter.progress(ProgressUpdate("indexing", summary.added, new_rows, elapsed, unit="rows"))

    removed, _ = update_graph(graph, store, todo, gone, threads, shard_done)
    summary.deleted += removed
    deleted += removed
    count = sum(c.rows for c in covered)
    if graph.get_current_count() != count + deleted:
        raise SbertError(
            f"{store.path}: the index holds {graph.get_current_count() - deleted:,} live rows but the shards list "
            f"{count:,}; are ids repeated across shards? (rebuild with: sbert index --rebuild)"
        )
    _commit(store, graph, params, covered, count, old, deleted)
    reporter.progress(
        ProgressUpdate("indexing", summary.added, new_rows, time.perf_counter() - started, final=True, unit="rows")
    )
    return count


def store_files(store: Store) -> set[str]:
    return {s.file for s in store.shards}


def update_graph(graph, store: Store, todo, gone: set[int], threads: int, shard_done=None) -> tuple[int, int]:
    """Bring an hnswlib graph up to the store (one graph, or one partition's): mark deleted its
    rows of `gone` inputs (removed, or rewritten by a sync) that no shard of `todo` still holds,
    then add the rows of `todo` it lacks (a rewrite's kept rows, even under a new shard name, are
    in it already: a row id always names the same vector, store/delete.py). `shard_done(shard,
    rows added)` after each shard; returns (rows marked deleted now, rows added)."""
    removed, present = _delete_gone(graph, store, todo, gone) if gone else (0, np.empty(0, np.int64))
    added = 0
    for shard, ids, vectors in iter_shard_vectors(store, todo):
        fresh = ~np.isin(ids, present)
        if fresh.any():
            graph.add_items(vectors[fresh], ids[fresh].astype(np.uint64), num_threads=threads)
        added += int(fresh.sum())
        if shard_done is not None:
            shard_done(shard, int(fresh.sum()))
    return removed, added


def _delete_gone(graph, store: Store, todo, gone: set[int]) -> tuple[int, np.ndarray]:
    """Mark deleted the graph's rows of `gone` inputs that no new shard still holds; returns
    (rows marked now, labels of new shards' rows that the graph already holds)."""
    new_ids = np.concatenate(
        [store.read_shard(s, ["id"]).column("id").to_numpy() for s in todo] or [np.empty(0, np.int64)]
    )
    labels = np.asarray(graph.get_ids_list(), dtype=np.int64)
    stale = labels[np.isin(labels >> LINE_BITS, np.array(sorted(gone), dtype=np.int64)) & ~np.isin(labels, new_ids)]
    removed = 0
    for label in stale.tolist():
        try:
            graph.mark_deleted(label)
            removed += 1
        except RuntimeError:  # marked in an earlier update (hnswlib keeps deleted labels)
            pass
    return removed, labels[np.isin(labels, new_ids)]


def _commit(
    store: Store, graph, params: IndexParams, covered: list[CoveredShard], count: int, old, deleted: int = 0
) -> None:
    """Write the graph as a new generation, then point index.json at it, then drop the old one."""
    directory = index_dir(store.path)
    directory.mkdir(exist_ok=True)
    generation = (old.generation + 1) if old else 1
    while (directory / f"hnsw-{generation:06d}.bin").exists():
        generation += 1  # left by a crashed build: never overwrite a file something may point at
    name = f"hnsw-{generation:06d}.bin"
    with atomic_path(directory / name) as tmp:
        graph.save_index(str(tmp))
        digest = check_graph_written(tmp, directory / name, count + deleted, store.dim)  # hnswlib counts deleted rows
    manifest = IndexManifest(
        generation=generation,
        file=name,
        bytes=digest.bytes,
        sha256=digest.sha256,
        xxh3=digest.xxh3,
        space=params.space,
        M=params.M,
        ef_construction=params.ef_construction,
        dim=store.dim,
        count=count,
        model=store.model,
        shards=covered,
        deleted=deleted,
    )
    manifest.save(store.path)
    # Everything else in index/ is an old generation or a crashed build's leftover.
    for path in directory.iterdir():
        if path.name not in (name, INDEX_MANIFEST):
            path.unlink(missing_ok=True)
