"""A partitioned HNSW index: N graphs over disjoint sets of shards, built in parallel, searched as one.

    STORE/index/index.json               `partitions`: per graph its file, checksum, rows and shards
    STORE/index/hnsw-GGGGGG-pPPP.bin     partition P's graph, as of build generation G

A shard is the unit: each lives in exactly one partition, so a partition is built from its own
shards alone, in another process (or as a Ray task, distributed/ray_index.py), and extending the
index adds each new shard to the partition with the fewest rows, rewriting only the graphs that
grew. A build writes the new graph files, then index.json (the commit), then deletes what no
longer is referenced, so a crash leaves the previous index usable, as for one graph.

Search asks every partition for its top k and merges by score: the partitions hold disjoint rows,
so the merged list is the top k of their union, and each graph being smaller than the whole, its
recall at a given ef is at least that of one graph over everything.
"""

from __future__ import annotations

import multiprocessing
import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sbert_cli.errors import InputError, SbertError
from sbert_cli.progress import NullReporter, ProgressUpdate, Reporter
from sbert_cli.retrieval.build import BuildSummary, _check_params, _params, _read_old, build_index
from sbert_cli.retrieval.graph import (
    IndexParams,
    check_graph_written,
    check_index_file,
    index_dir,
    iter_shard_vectors,
    load_graph,
    resolve_space,
    staleness,
    uncovered_shards,
)
from sbert_cli.retrieval.keyword import build_keyword_index
from sbert_cli.store.atomic import atomic_path
from sbert_cli.store.integrity import DamagedFileError
from sbert_cli.store.manifest import INDEX_MANIFEST, CoveredShard, IndexFile, IndexManifest, IndexPartition, ShardInfo
from sbert_cli.store.store import Store, store_lock


@dataclass(frozen=True)
class PartitionJob:
    """Build or extend one partition's graph; runs in another process or on a Ray worker."""

    store: str  # absolute: the worker's working directory is not the driver's
    part: int
    base: str | None  # the graph file to extend; None: a new graph
    base_count: int
    shards: list[ShardInfo]  # to add, in store order
    target: str  # the file to write, in STORE/index/
    params: IndexParams
    dim: int
    threads: int


@dataclass(frozen=True)
class PartitionResult:
    part: int
    file: str
    bytes: int
    sha256: str
    count: int
    seconds: float
    xxh3: str | None = None


# (jobs, called with each result as it comes) -> all results: local processes, or Ray tasks.
PartitionExecutor = Callable[[list[PartitionJob], Callable[[PartitionResult], None]], list[PartitionResult]]


def build_partition(job: PartitionJob) -> PartitionResult:
    """Add a partition's new shards to its graph (or a new one) and write it as `job.target`."""
    import hnswlib

    started = time.perf_counter()
    store = Store.open(job.store)
    folder = index_dir(store.path)
    count = job.base_count + sum(s.rows for s in job.shards)
    p = job.params
    if job.base is None:
        graph = hnswlib.Index(space=p.space, dim=job.dim)
        graph.init_index(max_elements=count, ef_construction=p.ef_construction, M=p.M)
    else:
        graph = load_graph(folder / job.base, p.space, job.dim, count)
    for _shard, ids, vectors in iter_shard_vectors(store, job.shards):
        graph.add_items(vectors, ids.astype(np.uint64), num_threads=job.threads)
    if graph.get_current_count() != count:
        raise SbertError(
            f"{store.path}: partition {job.part} holds {graph.get_current_count():,} rows, its shards {count:,}; "
            "are ids repeated across shards? (rebuild with: sbert index --rebuild)"
        )
    path = folder / job.target
    with atomic_path(path) as tmp:
        graph.save_index(str(tmp))
        digest = check_graph_written(tmp, path, count, job.dim)
    seconds = time.perf_counter() - started
    return PartitionResult(job.part, job.target, digest.bytes, digest.sha256, count, seconds, digest.xxh3)


def local_executor(jobs: list[PartitionJob], done: Callable[[PartitionResult], None]) -> list[PartitionResult]:
    """Each job in its own process (at most one per CPU); a single job runs here."""
    if len(jobs) == 1:
        results = [build_partition(jobs[0])]
        done(results[0])
        return results
    # spawn, not fork: the caller may hold torch's or hnswlib's threads, which fork cannot copy.
    context = multiprocessing.get_context("spawn")
    results = []
    with ProcessPoolExecutor(max_workers=min(len(jobs), os.cpu_count() or 1), mp_context=context) as pool:
        for future in as_completed([pool.submit(build_partition, job) for job in jobs]):
            results.append(future.result())
            done(results[-1])
    return results


def _peek(store_path: str | Path) -> IndexManifest | None:
    try:
        return IndexManifest.load(store_path)
    except InputError:
        return None


def is_partitioned(store_path: str | Path) -> bool:
    manifest = _peek(store_path)
    return manifest is not None and bool(manifest.partitions)


def _why_rebuild(store: Store, old: IndexManifest, params: IndexParams, partitions: int, rebuild: bool) -> str | None:
    """Why `old` cannot be extended into `partitions` graphs with `params` (None when it can)."""
    if rebuild:
        return "asked with --rebuild"
    reason = staleness(store, old)
    if reason is None and not old.partitions:
        reason = (
            f"it is one {'graph' if old.quantize == 'none' else old.quantize + ' index'}; now {partitions} partitions"
        )
    if reason is None and len(old.partitions) != partitions:
        reason = f"partitions change from {len(old.partitions)} to {partitions}"
    for key in ("space", "M", "ef_construction"):
        if reason is None and getattr(params, key) != getattr(old, key):
            reason = f"{key} changes from {getattr(old, key)} to {getattr(params, key)}"
    for part in old.partitions if reason is None else ():
        try:
            check_index_file(index_dir(store.path) / part.file, part, store.path)
        except (InputError, DamagedFileError) as exc:
            reason = str(exc).split("; rebuild")[0]
            break
    return reason


def _assign(todo: Sequence[ShardInfo], counts: list[int]) -> list[list[ShardInfo]]:
    """New shards per partition: each to the one with the fewest rows so far (ties: the first)."""
    counts = list(counts)
    added: list[list[ShardInfo]] = [[] for _ in counts]
    for shard in todo:
        part = counts.index(min(counts))
        added[part].append(shard)
        counts[part] += shard.rows
    return added


def _generation(folder: Path, old: IndexManifest | None) -> int:
    generation = (old.generation + 1) if old else 1
    while any(folder.glob(f"hnsw-{generation:06d}*")):
        generation += 1  # left by a crashed build: never overwrite a file something may point at
    return generation


def _jobs(
    store: Store, base: IndexManifest | None, params: IndexParams, partitions: int, threads: int, generation: int
):
    """(jobs for the partitions that grow, the shards each gets)."""
    old_parts = base.partitions if base else [IndexPartition("", 0, "", 0) for _ in range(partitions)]
    added = _assign(uncovered_shards(store, base), [p.count for p in old_parts])
    if base is None and not all(added):
        raise InputError(
            f"--partitions {partitions}: the store has {len(store.shards)} shard(s), and a shard is the unit of "
            f"a partition; use at most {len(store.shards)} (or encode with a smaller --shard-size)"
        )
    growing = [p for p in range(partitions) if added[p]]
    per_job = max(1, threads // max(1, min(len(growing), threads)))
    jobs = [
        PartitionJob(
            str(store.path.absolute()),
            p,
            old_parts[p].file or None,
            old_parts[p].count,
            added[p],
            f"hnsw-{generation:06d}-p{p:03d}.bin",
            params,
            store.dim,
            per_job,
        )
        for p in growing
    ]
    return jobs, added


def _commit(store: Store, base, params: IndexParams, added, results: list[PartitionResult], generation: int) -> int:
    """index.json lists the new partitions (the commit), then unreferenced files go."""
    parts = list(base.partitions) if base else [IndexPartition("", 0, "", 0) for _ in added]
    covered = list(base.shards) if base else []
    for result in results:
        new = added[result.part]
        files = [*parts[result.part].shards, *(s.file for s in new)]
        parts[result.part] = IndexPartition(
            result.file, result.bytes, result.sha256, result.count, files, xxh3=result.xxh3
        )
        covered += [CoveredShard(s.file, s.sha256, s.rows) for s in new]
    first, rest = parts[0], parts[1:]
    manifest = IndexManifest(
        generation=generation,
        file=first.file,
        bytes=first.bytes,
        sha256=first.sha256,
        xxh3=first.xxh3,
        space=params.space,
        M=params.M,
        ef_construction=params.ef_construction,
        dim=store.dim,
        count=sum(p.count for p in parts),
        model=store.model,
        shards=covered,
        parts=[IndexFile(p.file, p.bytes, p.sha256, p.xxh3) for p in rest],
        partitions=parts,
    )
    manifest.save(store.path)
    keep = {p.file for p in parts} | {INDEX_MANIFEST}
    for path in index_dir(store.path).iterdir():
        if path.name not in keep:
            path.unlink(missing_ok=True)
    return manifest.count


def build_partitioned_index(
    store_path: str | Path,
    partitions: int | None = None,
    *,
    executor: PartitionExecutor | None = None,
    **options: Any,
) -> BuildSummary:
    """`build_index` for N graphs: build, extend or re-partition the store's HNSW index, the
    partitions built by `executor` (default: local processes). `options` are `build_index`'s
    (space, M, ef_construction, threads, rebuild, quantize, bm25, reporter). `partitions` None
    keeps the index's count; 1 (an unpartitioned index) is `build_index`'s own."""
    old = _peek(store_path)
    count = partitions or (len(old.partitions) if old and old.partitions else 1)
    if count < 1:
        raise InputError(f"--partitions {count}: must be at least 1")
    if count == 1 and executor is None:  # one graph (or a compressed index): build.py's, as ever
        return build_index(store_path, **options)
    quantize = options.pop("quantize", None)
    if quantize not in (None, "none"):
        raise InputError(f"--quantize {quantize} makes one compressed index; --partitions splits HNSW graphs")
    _check_params(options.get("M"), options.get("ef_construction"), options.get("threads"))
    return _build(Path(store_path), count, executor or local_executor, **options)


def _build(
    store_path: Path,
    count: int,
    executor: PartitionExecutor,
    *,
    space: str | None = None,
    M: int | None = None,
    ef_construction: int | None = None,
    threads: int | None = None,
    rebuild: bool = False,
    bm25: bool = True,
    reporter: Reporter | None = None,
) -> BuildSummary:
    reporter = reporter or NullReporter()
    started = time.perf_counter()
    with store_lock(store_path):
        store = Store.open(store_path)  # under the lock: what is indexed is what the store holds now
        if not store.rows:
            raise InputError(f"{store_path}: the store has no rows to index")
        old = _read_old(store_path, reporter)
        params = _params(store, old, resolve_space(space, store) if space else None, M, ef_construction, "none")
        reason = _why_rebuild(store, old, params, count, rebuild) if old is not None else None
        if reason is not None:
            reporter.message(f"rebuilding the index: {reason}")
        base = None if reason is not None else old
        summary = BuildSummary(str(index_dir(store_path)), rebuilt=old is not None and base is None, reason=reason)
        summary.params = {**asdict(params), "partitions": count}
        index_dir(store_path).mkdir(exist_ok=True)
        generation = _generation(index_dir(store_path), old)
        jobs, added = _jobs(store, base, params, count, threads or os.cpu_count() or 1, generation)
        new_rows = sum(s.rows for shards in added for s in shards)

        def done(result: PartitionResult) -> None:
            summary.added += sum(s.rows for s in added[result.part])
            summary.shards_added += len(added[result.part])
            elapsed, final = time.perf_counter() - started, summary.added == new_rows
            reporter.progress(ProgressUpdate("indexing", summary.added, new_rows, elapsed, final=final, unit="rows"))

        summary.count = _commit(store, base, params, added, executor(jobs, done), generation) if jobs else base.count
        if bm25:
            summary.keyword = build_keyword_index(store, rebuild=rebuild, reporter=reporter)
    summary.elapsed = time.perf_counter() - started
    return summary


class PartitionedGraph:
    """Several hnswlib graphs answering as one: what `Index` asks of a graph."""

    def __init__(self, graphs: list) -> None:
        self.graphs = graphs

    def set_ef(self, ef: int) -> None:
        for graph in self.graphs:
            graph.set_ef(ef)

    def get_current_count(self) -> int:
        return sum(graph.get_current_count() for graph in self.graphs)

    def knn_query(self, queries: np.ndarray, k: int, **options) -> tuple[np.ndarray, np.ndarray]:
        """Each partition's top k, merged: (labels, distances), closest first, ties by label.
        `options` go to each graph's knn_query (a `--where` filter)."""
        labels, distances = [], []
        for graph in self.graphs:
            found, dist = graph.knn_query(queries, k=min(k, graph.get_current_count()), **options)
            labels.append(found.astype(np.int64))
            distances.append(dist)
        labels_all, dist_all = np.concatenate(labels, axis=1), np.concatenate(distances, axis=1)
        order = np.lexsort((labels_all, dist_all), axis=1)[:, :k]
        return np.take_along_axis(labels_all, order, 1), np.take_along_axis(dist_all, order, 1)


def open_partitions(store_path: Path, manifest: IndexManifest) -> PartitionedGraph:
    """Load every partition's graph (their files were checked with the index's), refusing a
    graph whose size is not the one index.json records."""
    graphs = []
    for part in manifest.partitions:
        path = index_dir(store_path) / part.file
        graph = load_graph(path, manifest.space, manifest.dim, part.count)
        if graph.get_current_count() != part.count:
            raise InputError(
                f"{path}: holds {graph.get_current_count():,} rows, index.json says {part.count:,}; "
                f"rebuild it with: sbert index {store_path} --rebuild"
            )
        graphs.append(graph)
    return PartitionedGraph(graphs)
