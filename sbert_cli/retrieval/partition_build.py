"""Building one partition of a partitioned HNSW index (retrieval/partitions.py plans and commits).

A job runs in another process or as a Ray task (distributed/ray_index.py): it reads its shards
from the store, brings its partition's graph up to date and writes it under a new name in
STORE/index/, which nothing refers to until the driver commits index.json.

Following the store works as for one graph (build.py's `update_graph`): the rows of inputs whose
shards went away (removed, or rewritten by `encode --sync`) are marked deleted unless one of the
partition's new shards still holds them, and only rows the graph lacks are added. A partition
whose deleted rows pass build.py's COMPACT_DELETED_FRACTION (or any, with `--compact`) is then
rebuilt from its shards alone, which is also how a new partition is built.
"""

from __future__ import annotations

import multiprocessing
import os
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field

import numpy as np

from sbert_cli.errors import SbertError
from sbert_cli.retrieval.build import COMPACT_DELETED_FRACTION, update_graph
from sbert_cli.retrieval.graph import IndexParams, check_graph_written, index_dir, iter_shard_vectors, load_graph
from sbert_cli.store.atomic import atomic_path
from sbert_cli.store.manifest import ShardInfo
from sbert_cli.store.store import Store


@dataclass(frozen=True)
class PartitionJob:
    """Build or bring up to date one partition's graph; runs in another process or on a Ray worker."""

    store: str  # absolute: the worker's working directory is not the driver's
    part: int
    base: str | None  # the graph file to update; None: a new graph
    base_count: int  # its live rows
    shards: list[ShardInfo]  # to add, in store order
    target: str  # the file to write, in STORE/index/
    params: IndexParams
    dim: int
    threads: int
    base_deleted: int = 0  # rows the base graph holds marked deleted
    gone: list[int] = field(default_factory=list)  # inputs whose rows it holds under shards now gone
    kept: list[ShardInfo] = field(default_factory=list)  # its shards still in the store
    compact: bool = False  # rebuild it without its deleted rows even under the threshold (--compact)


@dataclass(frozen=True)
class PartitionResult:
    part: int
    file: str
    bytes: int
    sha256: str
    count: int  # live rows
    seconds: float
    xxh3: str | None = None
    deleted: int = 0  # rows marked deleted in the written graph
    removed: int = 0  # rows marked deleted in this run (before any compaction)
    added: int = 0  # rows put into the graph in this run (all of them when it was rebuilt)
    shards_added: int = 0
    compacted: int = 0  # deleted rows a compaction dropped (0: the graph was updated in place)


# (jobs, called with each result as it comes) -> all results: local processes, or Ray tasks.
PartitionExecutor = Callable[[list[PartitionJob], Callable[[PartitionResult], None]], list[PartitionResult]]


def build_partition(job: PartitionJob) -> PartitionResult:
    """Bring a partition's graph up to the store (or build it afresh) and write it as `job.target`."""
    started = time.perf_counter()
    store = Store.open(job.store)
    folder = index_dir(store.path)
    expected = sum(s.rows for s in [*job.kept, *job.shards])  # a shard's rows all live in its partition
    removed = added = compacted = 0
    deleted = job.base_deleted
    graph = None
    if job.base is not None:
        size = job.base_count + job.base_deleted + sum(s.rows for s in job.shards)
        graph = load_graph(folder / job.base, job.params.space, job.dim, size)
        removed, added = update_graph(graph, store, job.shards, set(job.gone), job.threads)
        deleted += removed
        _check_live(graph, deleted, expected, job, store)
        total = graph.get_current_count()
        if deleted and (job.compact or deleted / total > COMPACT_DELETED_FRACTION):
            graph, compacted = None, deleted
    shards_added = len(job.shards)
    if graph is None:  # a new partition, or a compaction: every row of its shards, none deleted
        graph = _fresh_graph(store, [*job.kept, *job.shards], job)
        deleted, added, shards_added = 0, expected, len(job.kept) + len(job.shards)
        _check_live(graph, 0, expected, job, store)
    path = folder / job.target
    with atomic_path(path) as tmp:
        graph.save_index(str(tmp))
        digest = check_graph_written(tmp, path, expected + deleted, job.dim)  # hnswlib counts deleted rows
    seconds = time.perf_counter() - started
    return PartitionResult(
        job.part,
        job.target,
        digest.bytes,
        digest.sha256,
        expected,
        seconds,
        digest.xxh3,
        deleted=deleted,
        removed=removed,
        added=added,
        shards_added=shards_added,
        compacted=compacted,
    )


def _fresh_graph(store: Store, shards: list[ShardInfo], job: PartitionJob):
    import hnswlib

    p = job.params
    graph = hnswlib.Index(space=p.space, dim=job.dim)
    graph.init_index(max_elements=max(1, sum(s.rows for s in shards)), ef_construction=p.ef_construction, M=p.M)
    for _shard, ids, vectors in iter_shard_vectors(store, shards):
        graph.add_items(vectors, ids.astype(np.uint64), num_threads=job.threads)
    return graph


def _check_live(graph, deleted: int, expected: int, job: PartitionJob, store: Store) -> None:
    live = graph.get_current_count() - deleted
    if live != expected:
        raise SbertError(
            f"{store.path}: partition {job.part} holds {live:,} live rows, its shards {expected:,}; "
            "are ids repeated across shards? (rebuild with: sbert index --rebuild)"
        )


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
