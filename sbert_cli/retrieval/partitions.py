"""A partitioned HNSW index: N graphs over disjoint sets of shards, built in parallel, searched as one.

    STORE/index/index.json               `partitions`: per graph its file, checksum, rows and shards
    STORE/index/hnsw-GGGGGG-pPPP.bin     partition P's graph, as of build generation G

A shard is the unit: each lives in exactly one partition, so a partition is built from its own
shards alone, in another process (or as a Ray task, distributed/ray_index.py), and extending the
index adds each new shard to the partition with the fewest rows, rewriting only the graphs that
change. After `sbert rm` or `encode --sync`, each partition marks deleted the rows of its inputs
whose shards went away (retrieval/partition_build.py, build.py's `update_graph`); a rewritten
input's new shards go to the partition that held its rows, where its kept rows already are, and
a partition past the deleted fraction (or any holding deleted rows, with `--compact`) is rebuilt
from its own shards. A build writes the new graph files, then index.json (the commit), then deletes what no
longer is referenced, so a crash leaves the previous index usable, as for one graph.

Search asks every partition for its top k and merges by score: the partitions hold disjoint rows,
so the merged list is the top k of their union, and each graph being smaller than the whole, its
recall at a given ef is at least that of one graph over everything.
"""

from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sbert_cli.errors import InputError, SbertError
from sbert_cli.progress import NullReporter, ProgressUpdate, Reporter
from sbert_cli.retrieval.build import BuildSummary, _check_params, _params, _read_old, build_index
from sbert_cli.retrieval.graph import (
    IndexParams,
    check_index_file,
    gone_inputs,
    index_dir,
    load_graph,
    resolve_space,
    staleness,
    uncovered_shards,
)
from sbert_cli.retrieval.keyword import build_keyword_index
from sbert_cli.retrieval.partition_build import (
    PartitionExecutor,
    PartitionJob,
    PartitionResult,
    local_executor,
)
from sbert_cli.store.integrity import DamagedFileError
from sbert_cli.store.manifest import INDEX_MANIFEST, CoveredShard, IndexFile, IndexManifest, IndexPartition, ShardInfo
from sbert_cli.store.store import Store, store_lock


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
    reason = staleness(store, old, removed_ok=True)  # removed and rewritten inputs: followed
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


@dataclass
class _Plan:
    """What a partition keeps, loses and gets in this build."""

    kept: list[ShardInfo] = field(default_factory=list)  # its shards still in the store
    gone: set[int] = field(default_factory=set)  # inputs whose shards it held went away
    held: dict[int, int] = field(default_factory=dict)  # rows it held per gone input
    new: list[ShardInfo] = field(default_factory=list)  # shards it gets

    @property
    def rows(self) -> int:
        return sum(s.rows for s in [*self.kept, *self.new])


def _plan(store: Store, base: IndexManifest | None, partitions: int) -> list[_Plan]:
    """Each partition keeps its shards still in the store; a new shard of a rewritten input goes
    where most of that input's rows were (its kept rows are there: nothing to add again), any
    other to the partition with the fewest rows so far (ties: the first)."""
    plans = [_Plan() for _ in range(partitions)]
    current = {s.file: s for s in store.shards}
    covered = {c.file: c for c in base.shards} if base else {}
    for plan, part in zip(plans, base.partitions if base else (), strict=False):
        for name in part.shards:
            if name in current:
                plan.kept.append(current[name])
                continue
            for gone in gone_inputs(store, [covered[name]]):
                plan.gone.add(gone)
                plan.held[gone] = plan.held.get(gone, 0) + covered[name].rows
    for shard in uncovered_shards(store, base):
        homes = [plan.held.get(shard.input, 0) for plan in plans]
        if max(homes) > 0:
            part = homes.index(max(homes))
        else:
            rows = [plan.rows for plan in plans]
            part = rows.index(min(rows))
        plans[part].new.append(shard)
    return plans


def _generation(folder: Path, old: IndexManifest | None) -> int:
    generation = (old.generation + 1) if old else 1
    while any(folder.glob(f"hnsw-{generation:06d}*")):
        generation += 1  # left by a crashed build: never overwrite a file something may point at
    return generation


def _jobs(store: Store, base: IndexManifest | None, params: IndexParams, plans: list[_Plan], options: dict):
    """Jobs for the partitions that change: new shards, removed rows, or a compaction asked for."""
    partitions, threads, generation = len(plans), options["threads"], options["generation"]
    if base is None and not all(plan.new for plan in plans):
        raise InputError(
            f"--partitions {partitions}: the store has {len(store.shards)} shard(s), and a shard is the unit of "
            f"a partition; use at most {len(store.shards)} (or encode with a smaller --shard-size)"
        )
    old = base.partitions if base else [IndexPartition("", 0, "", 0) for _ in plans]
    changing = [p for p, plan in enumerate(plans) if plan.new or plan.gone or (options["compact"] and old[p].deleted)]
    per_job = max(1, threads // max(1, min(len(changing), threads)))
    return [
        PartitionJob(
            str(store.path.absolute()),
            p,
            old[p].file or None,
            old[p].count,
            plans[p].new,
            f"hnsw-{generation:06d}-p{p:03d}.bin",
            params,
            store.dim,
            per_job,
            base_deleted=old[p].deleted,
            gone=sorted(plans[p].gone),
            kept=plans[p].kept,
            compact=options["compact"],
        )
        for p in changing
    ]


def _commit(store: Store, base, params: IndexParams, plans: list[_Plan], results, generation: int) -> int:
    """index.json lists the new partitions (the commit), then unreferenced files go."""
    parts = list(base.partitions) if base else [IndexPartition("", 0, "", 0) for _ in plans]
    for p, plan in enumerate(plans):  # an unchanged partition: only names of its shards
        parts[p] = dataclasses.replace(parts[p], shards=[s.file for s in [*plan.kept, *plan.new]])
    for r in results:
        parts[r.part] = dataclasses.replace(
            parts[r.part], file=r.file, bytes=r.bytes, sha256=r.sha256, count=r.count, xxh3=r.xxh3, deleted=r.deleted
        )
    count = sum(p.count for p in parts)
    if count != store.rows:  # each worker checked its own; this catches a shard no partition got
        raise SbertError(
            f"{store.path}: the partitions hold {count:,} live rows, the store {store.rows:,}; "
            "nothing was committed (rebuild with: sbert index --rebuild)"
        )
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
        count=count,
        model=store.model,
        shards=[CoveredShard(s.file, s.sha256, s.rows) for s in store.shards],
        parts=[IndexFile(p.file, p.bytes, p.sha256, p.xxh3) for p in rest],
        partitions=parts,
        deleted=sum(p.deleted for p in parts),
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
    compact: bool = False,
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
        plans = _plan(store, base, count)
        options = {"threads": threads or os.cpu_count() or 1, "generation": _generation(index_dir(store_path), old)}
        jobs = _jobs(store, base, params, plans, {**options, "compact": compact})
        finished: list[PartitionResult] = []

        def done(result: PartitionResult) -> None:
            finished.append(result)
            summary.added += result.added
            summary.shards_added += result.shards_added
            summary.deleted += result.removed
            if result.compacted:
                reporter.message(f"compacted partition {result.part}: dropped its {result.compacted:,} deleted rows")
            final = len(finished) == len(jobs)
            elapsed = time.perf_counter() - started
            reporter.progress(ProgressUpdate("indexing", len(finished), len(jobs), elapsed, final=final, unit="graphs"))

        if jobs:
            summary.count = _commit(store, base, params, plans, executor(jobs, done), options["generation"])
        else:
            summary.count = base.count
        if any(r.compacted for r in finished):
            summary.reason = summary.reason or f"compacted {sum(1 for r in finished if r.compacted)} partition(s)"
        summary.deleted_in_graph = IndexManifest.load(store_path).deleted
        if bm25:
            summary.keyword = build_keyword_index(store, rebuild=rebuild, reporter=reporter)
    summary.elapsed = time.perf_counter() - started
    return summary


class PartitionedGraph:
    """Several hnswlib graphs answering as one: what `Index` asks of a graph. `live`: each
    graph's rows not marked deleted (hnswlib's count includes those, and a graph cannot return
    more than its live rows: asking for more raises)."""

    def __init__(self, graphs: list, live: list[int] | None = None) -> None:
        self.graphs = graphs
        self.live = live if live is not None else [graph.get_current_count() for graph in graphs]

    def set_ef(self, ef: int) -> None:
        for graph in self.graphs:
            graph.set_ef(ef)

    def get_current_count(self) -> int:
        return sum(self.live)

    def knn_query(self, queries: np.ndarray, k: int, **options) -> tuple[np.ndarray, np.ndarray]:
        """Each partition's top k, merged: (labels, distances), closest first, ties by label.
        `options` go to each graph's knn_query (a `--where` filter); hnswlib never returns a
        row marked deleted, filtered or not."""
        queries = np.asarray(queries)
        labels = [np.empty((len(queries), 0), np.int64)]
        distances = [np.empty((len(queries), 0), np.float32)]
        for graph, live in zip(self.graphs, self.live, strict=True):
            if live == 0 or k == 0:  # every row of it removed: nothing to ask
                continue
            found, dist = graph.knn_query(queries, k=min(k, live), **options)
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
        total = part.count + part.deleted  # hnswlib counts rows marked deleted too
        graph = load_graph(path, manifest.space, manifest.dim, total)
        if graph.get_current_count() != total:
            raise InputError(
                f"{path}: holds {graph.get_current_count():,} rows, index.json says {total:,}; "
                f"rebuild it with: sbert index {store_path} --rebuild"
            )
        graphs.append(graph)
    return PartitionedGraph(graphs, [part.count for part in manifest.partitions])
