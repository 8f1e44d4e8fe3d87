"""`sbert encode --ray`: the local run's plan, windows and commits, with the model on Ray workers.

The driver does what a local run does except run the model: it checks and plans the inputs,
holds the store lock, reads the inputs into the same shard-aligned windows (`runner._windows`),
and owns the manifest. Each whole shard's windows go to a worker (ray.remote `EncodeWorker`, one
per GPU, else one per CPU slot), which encodes them as a local run would and writes the shard to
a temp name in the store. The driver commits results strictly in shard order: rename into place,
then list in the manifest; consecutive finished shards share one manifest write. So the store,
its ids, shards and resume points are a local run's, and a killed driver or worker costs only
uncommitted shards: a worker's failed task is retried by Ray (on the restarted actor), and a
rerun of the command continues after the last committed shard.
"""

from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from sbert_cli.chunking import Chunker
from sbert_cli.distributed.paths import check_visible
from sbert_cli.distributed.session import check_address, import_ray, ray_session, worker_error
from sbert_cli.distributed.tokens import driver_chunker
from sbert_cli.distributed.worker import EncodeWorker, ShardResult, ShardTask, WorkerInfo, WorkerSpec
from sbert_cli.encoding.chunk_settings import merge_kept_types
from sbert_cli.encoding.devices import window_texts
from sbert_cli.encoding.plan import PlannedInput
from sbert_cli.encoding.runner import (
    PROGRESS_EVERY_S,
    EncodeOptions,
    EncodeSummary,
    _finish_input,
    _update,
    _windows,
    begin_run,
    encode_corpus,
)
from sbert_cli.errors import InputError, SbertError
from sbert_cli.inputs.reader import ReadStats, Record
from sbert_cli.progress import NullReporter, ProgressUpdate, Reporter, StageClock
from sbert_cli.store.atomic import fsync_dir
from sbert_cli.store.delete import remove_unlisted
from sbert_cli.store.manifest import StoreManifest, sbert_version
from sbert_cli.store.store import SHARD_DIR
from sbert_cli.store.writer import ShardLayout, record_shard, shard_file

QUEUED_PER_WORKER = 2  # a worker always has its next shard waiting while it runs one
MANIFEST_EVERY_S = 0.5  # at most two manifest writes a second while shards keep arriving


@dataclass
class RayOptions:
    address: str | None = None  # None or "local": a private local runtime; else an existing cluster
    workers: int | None = None  # default: one per GPU, else one per CPU
    retries: int = 3  # actor restarts, and task retries on them, before a run gives up
    start_timeout: float = 900.0  # seconds for every worker to load the model


def encode_on_ray(
    inputs: list[str],
    store_path: str | Path,
    options: EncodeOptions | None = None,
    ray_options: RayOptions | None = None,
    *,
    reporter: Reporter | None = None,
) -> EncodeSummary:
    """`encode_corpus` with the model on Ray workers; the store it makes is a local run's."""
    ray_options = ray_options or RayOptions()
    import_ray()  # before reading anything: a missing extra is a usage error, said first
    check_address(ray_options.address)
    if ray_options.workers is not None and ray_options.workers < 1:
        raise InputError("--ray-workers must be at least 1")
    return encode_corpus(inputs, store_path, options, reporter=reporter, loop=RayLoop(ray_options))


class _Committed:
    """What `runner._finish_input` asks of a committer: here every shard was committed on arrival."""

    def __init__(self) -> None:
        self.shards_written = 0

    def commit(self) -> None:
        pass


class WorkerPool:
    """The actors, and which of their tasks are still running (to keep each one's queue full)."""

    def __init__(self, ray: Any, actors: list, infos: list[WorkerInfo]) -> None:
        self.ray, self.actors, self.infos = ray, actors, infos
        self.load = [0] * len(actors)
        self.running: dict[Any, int] = {}  # task ref -> actor

    @classmethod
    def start(cls, ray: Any, options: EncodeOptions, ray_options: RayOptions) -> WorkerPool:
        from sbert_cli.encoding.loader import ENCODER_FACTORIES

        count, resources, threads = _worker_shape(ray.cluster_resources(), ray_options.workers)
        spec = WorkerSpec(
            options.model_settings(), options.batch_tokens, options.threads or threads, dict(ENCODER_FACTORIES)
        )
        remote = ray.remote(EncodeWorker).options(
            max_restarts=ray_options.retries, max_task_retries=ray_options.retries, **resources
        )
        actors = [remote.remote(spec) for _ in range(count)]
        try:
            infos = ray.get([a.info.remote() for a in actors], timeout=ray_options.start_timeout)
        except ray.exceptions.GetTimeoutError:
            raise SbertError(
                f"{count} Ray worker(s) did not start within {ray_options.start_timeout:.0f} s; does the cluster "
                f"have the resources ({resources}) for them? (--ray-workers sets how many)"
            ) from None
        except ray.exceptions.RayError as exc:
            raise worker_error(ray, exc, "starting the model") from None
        return cls(ray, actors, infos)

    def submit(self, task: ShardTask) -> Any:
        while min(self.load) >= QUEUED_PER_WORKER:
            self.wait_any()
        actor = self.load.index(min(self.load))
        ref = self.actors[actor].encode_shard.remote(task)
        self.running[ref] = actor
        self.load[actor] += 1
        return ref

    def wait_any(self) -> None:
        ready, _ = self.ray.wait(list(self.running), num_returns=1)
        for ref in ready:
            self.load[self.running.pop(ref)] -= 1

    def finished(self, ref: Any) -> bool:
        ready, _ = self.ray.wait([ref], timeout=0)
        return bool(ready)

    def result(self, ref: Any) -> ShardResult:
        try:
            return self.ray.get(ref)
        except self.ray.exceptions.RayError as exc:
            raise worker_error(self.ray, exc, "encoding a shard") from None
        finally:
            if ref in self.running:
                self.load[self.running.pop(ref)] -= 1


def _worker_shape(resources: dict[str, float], workers: int | None) -> tuple[int, dict[str, float], int]:
    """(how many workers, each one's Ray resources, torch threads each): one per GPU where the
    cluster has GPUs, else one per CPU; `workers` overrides the count, sharing what there is."""
    gpus, cpus = int(resources.get("GPU", 0)), max(int(resources.get("CPU", 1)), 1)
    if gpus:
        count = workers or gpus
        return count, {"num_gpus": min(1.0, gpus / count), "num_cpus": min(1.0, cpus / count)}, 0
    count = workers or cpus
    share = cpus / count
    return count, {"num_cpus": share if share < 1 else float(int(share))}, max(int(share), 1)


def _check_workers(pool: WorkerPool, manifest: StoreManifest, store_path: Path) -> None:
    """Every worker must make the store's vectors with this sbert, and see the store."""
    for info in pool.infos:
        if info.version != sbert_version():
            raise InputError(
                f"node {info.node} runs sbert {info.version}, this one {sbert_version()}; install the same"
            )
        diffs = manifest.model.differences(info.record)
        if diffs:
            detail = ", ".join(f"{k} {getattr(info.record, k)!r} vs {getattr(manifest.model, k)!r}" for k in diffs)
            raise InputError(
                f"node {info.node}: the workers' model differs from this run's ({detail}); 'auto' settings "
                "resolve on each machine, so pass --device/--dtype explicitly"
            )

    def ask(directory: str, token: str) -> dict[str, Any]:
        return {str(i): actor.probe.remote(directory, token, str(i)) for i, actor in enumerate(pool.actors)}

    check_visible(pool.ray, store_path / SHARD_DIR, store_path, ask)


def _shard_tasks(
    plan: list[PlannedInput],
    options: EncodeOptions,
    stats: dict[int, ReadStats],
    store: Path,
    manifest: StoreManifest,
    device: str = "cpu",
    chunker: Chunker | None = None,
) -> Iterator[tuple[PlannedInput, ShardTask | None]]:
    """The windows a local run on the workers' `device` makes (chunk rows, when `chunker`),
    grouped into its shards: (input, task) per shard, in order, and (input, None) where an input
    ends. A shard ends where a local run's does: at a record's last row."""
    windows: list[list[Record]] = []
    rows = 0
    seq: dict[int, int] = {}
    offsets: dict[int, int] = {}
    for (item, window), *_ in _windows(plan, options, stats, window_texts(device), chunker):
        if window is not None:
            windows.append(window)
            rows += len(window)
        shard_ends = window is not None and rows >= options.shard_size and getattr(window[-1], "last", True)
        if windows and (window is None or shard_ends):
            entry = item.entry
            seq[entry.index] = seq.get(entry.index, entry.shards - 1) + 1
            merge_kept_types(manifest, stats[entry.index].field_types, item.source.name)
            # Ids count chunk rows (writer.row_ids): this shard's start where the earlier ones end.
            start = offsets.get(entry.index, entry.id_offset)
            yield item, _task(store, item, seq[entry.index], windows, ShardLayout.of(manifest), start)
            offsets[entry.index] = start + sum(getattr(r, "chunk", 0) > 0 for w in windows for r in w)
            windows, rows = [], 0
        if window is None:
            yield item, None


def _task(
    store: Path, item: PlannedInput, seq: int, windows: list[list[Record]], layout: ShardLayout, id_offset: int
) -> ShardTask:
    return ShardTask(
        store=str(store),
        file=shard_file(item.entry.index, seq),
        entry=replace(item.entry, id_offset=id_offset),
        seq=seq,
        records=[r for window in windows for r in window],
        windows=[len(window) for window in windows],
        layout=layout,
    )


class RayLoop:
    """The encode loop `encode_corpus` runs under the store lock when asked for Ray."""

    def __init__(self, ray_options: RayOptions) -> None:
        self.ray_options = ray_options

    def __call__(
        self,
        store_path: Path,
        manifest: StoreManifest,
        plan: list[PlannedInput],
        options: EncodeOptions,
        total: int,
        reporter: Reporter,
    ) -> EncodeSummary:
        address = check_address(self.ray_options.address)
        started = time.perf_counter()
        with ray_session(address, num_cpus=os.cpu_count()) as ray:
            pool = WorkerPool.start(ray, options, self.ray_options)
            where = "a local Ray runtime" if address is None else f"Ray at {address}"
            nodes = len({info.node for info in pool.infos})
            reporter.message(
                f"encoding on {where}: {len(pool.actors)} worker(s) on {nodes} node(s), "
                f"ready in {time.perf_counter() - started:.1f} s"
            )
            _check_workers(pool, manifest, store_path.absolute())
            summary = EncodeSummary(str(store_path))
            total = begin_run(store_path, manifest, plan, options, total, reporter, summary)
            _Driver(pool, store_path, manifest, total, reporter, summary).run(plan, options)
        return summary


class _Driver:
    """Submits shards as they are read and commits finished ones in order."""

    def __init__(self, pool: WorkerPool, store_path: Path, manifest, total: int, reporter: Reporter, summary) -> None:
        self.pool, self.store_path, self.manifest = pool, store_path, manifest
        self.total, self.reporter, self.summary = total, reporter or NullReporter(), summary
        self.clock, self.stats = StageClock(), {}
        self.queue: deque[tuple[PlannedInput, Any]] = deque()  # (input, task ref or None: its end)
        self.committers: dict[int, _Committed] = {}
        self.unsaved, self.saved_at, self.save_gap = False, 0.0, MANIFEST_EVERY_S
        self.started = self.last_report = time.perf_counter()

    def run(self, plan: list[PlannedInput], options: EncodeOptions) -> None:
        device = self.pool.infos[0].device
        chunker = driver_chunker(options.model_settings(), self.manifest.chunking, self.summary.chunking)
        tasks = _shard_tasks(plan, options, self.stats, self.store_path.absolute(), self.manifest, device, chunker)
        for item, task in self.clock.timed("read", tasks):
            with self.clock.stage("wait"):
                ref = self.pool.submit(task) if task is not None else None
            self.queue.append((item, ref))
            self.commit(block=False)
        self.commit(block=True)
        remove_unlisted(self.store_path, self.manifest)  # what killed attempts of retried tasks wrote
        summary = self.summary
        summary.elapsed = time.perf_counter() - self.started
        summary.stages = self.clock.snapshot()
        summary.store_rows = self.manifest.rows
        self.reporter.progress(_update(summary, self.total, summary.elapsed, self.clock, None, True))

    def commit(self, block: bool) -> None:
        """Commit finished shards from the head of the queue, in order; `block`: all of them."""
        while self.queue:
            item, ref = self.queue[0]
            if ref is not None and not block and not self.pool.finished(ref):
                break
            self.queue.popleft()
            committer = self.committers.setdefault(item.entry.index, _Committed())
            if ref is None:
                with self.clock.stage("commit"):
                    _finish_input(
                        committer,
                        item,
                        self.stats[item.entry.index],
                        self.manifest,
                        self.store_path,
                        self.summary,
                        self.reporter,
                    )
                self.unsaved, self.saved_at = False, time.perf_counter()
                continue
            with self.clock.stage("wait"):
                result = self.pool.result(ref)
            with self.clock.stage("commit"):
                self._place(item, result)
            committer.shards_written += 1
            self.unsaved = True
            self._progress(item)
        self._save(block)

    def _save(self, now: bool) -> None:
        """Write the manifest (the commit point) for the shards placed since the last write.

        Each write rewrites the whole manifest, whose size grows with the store; on a cluster
        shards can finish faster than the driver writes it. So unless `now`, writes are spaced
        by at least ten times what the last one took (and MANIFEST_EVERY_S): committing costs the
        driver at most a tenth of its time, and consecutive shards share a write. A crash loses
        at most the shards since the last write, which the next run encodes again."""
        started = time.perf_counter()
        if not self.unsaved or (not now and started - self.saved_at < self.save_gap):
            return
        with self.clock.stage("commit"):
            self.manifest.save(self.store_path)
        self.unsaved, self.saved_at = False, time.perf_counter()
        self.save_gap = max(MANIFEST_EVERY_S, 10 * (self.saved_at - started))

    def _place(self, item: PlannedInput, result: ShardResult) -> None:
        """Rename the worker's file into place and list it (the manifest write is the caller's)."""
        final = self.store_path / result.shard.file
        os.replace(self.store_path / result.staged, final)
        fsync_dir(final.parent)
        record_shard(self.manifest, item.entry, result.shard, result.last_line, result.records)
        summary = self.summary
        summary.rows += result.shard.rows
        summary.records += result.records
        summary.tokens += result.tokens
        summary.truncated += result.truncated
        for stage, seconds in result.stages.items():  # workers' time, summed over workers
            self.clock.seconds[stage] = self.clock.seconds.get(stage, 0.0) + seconds

    def _progress(self, item: PlannedInput) -> None:
        now = time.perf_counter()
        if now - self.last_report >= PROGRESS_EVERY_S:
            self.last_report = now
            update: ProgressUpdate = _update(
                self.summary, self.total, now - self.started, self.clock, item.source.name, False
            )
            self.reporter.progress(update)
