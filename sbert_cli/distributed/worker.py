"""The Ray encode worker: an actor that loads the model once, then turns whole shards' windows
into shard files in the store.

It runs the same `encode_windows` (the same `prepare`, batching and `run`) over the same windows
a local run makes, and writes with the same `write_shard`, so its shards hold what a local run's
would. A shard is written under a temp name and handed back; only the driver renames it into
place and lists it in the manifest, in order, so a worker that dies (and is retried) or a driver
that is killed can leave temp files behind, never a shard the manifest does not account for.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sbert_cli.encoding.loader import ModelSettings
from sbert_cli.inputs.reader import Record
from sbert_cli.progress import StageClock
from sbert_cli.store.atomic import atomic_path, temp_path_for
from sbert_cli.store.manifest import InputEntry, ModelRecord, ShardInfo
from sbert_cli.store.writer import ShardLayout


@dataclass(frozen=True)
class WorkerSpec:
    """How every worker loads its encoder."""

    settings: ModelSettings
    batch_tokens: int | None
    threads: int | None
    # The driver's registered model schemes (loader.ENCODER_FACTORIES), so a scheme served by a
    # stand-in in the driver (the tests' `hash:`) is served the same way in the workers.
    factories: dict[str, Callable]


@dataclass(frozen=True)
class WorkerInfo:
    record: ModelRecord
    node: str
    pid: int
    version: str
    device: str  # sets the window size, as in a local run on that device


@dataclass
class ShardTask:
    """One shard's rows (records, or the driver's chunk rows with their token ids and kept
    fields), split into the windows a local run makes (`windows`: their sizes)."""

    store: str  # absolute: a worker's working directory is not the driver's
    file: str
    entry: InputEntry  # its index and source name make the ids and the `source` column
    seq: int
    records: list[Record]
    windows: list[int]
    layout: ShardLayout  # the store's columns, kept fields' types included


@dataclass
class ShardResult:
    shard: ShardInfo
    staged: str  # the written file's path inside the store; the driver renames it to `shard.file`
    last_line: int
    records: int  # whole records in the shard (its rows: their chunks)
    tokens: int
    truncated: int
    stages: dict[str, float]


class EncodeWorker:
    """Wrapped with `ray.remote` where workers are started (ray_encode.py): ray stays optional."""

    def __init__(self, spec: WorkerSpec) -> None:
        from sbert_cli.encoding import loader

        for scheme, factory in spec.factories.items():
            loader.ENCODER_FACTORIES.setdefault(scheme, factory)
        self.encoder = loader.load_encoder(spec.settings)
        self.encoder.batch_tokens = spec.batch_tokens or self.encoder.batch_tokens
        if spec.threads:
            self.encoder.threads = spec.threads

    def info(self) -> WorkerInfo:
        import socket

        from sbert_cli import __version__

        device = str(getattr(self.encoder, "device", "cpu"))
        return WorkerInfo(self.encoder.describe(), socket.gethostname(), os.getpid(), __version__, device)

    def probe(self, directory: str, token: str, tag: str) -> tuple[str, str | None]:
        from sbert_cli.distributed.paths import answer_probe

        return answer_probe(directory, token, tag)

    def encode_shard(self, task: ShardTask) -> ShardResult:
        from sbert_cli.store.writer import write_shard

        clock = StageClock()
        bounds = np.cumsum([0, *task.windows])
        records = task.records
        windows = (
            (None, [r.text for r in records[a:b]], [getattr(r, "ids", None) for r in records[a:b]])
            for a, b in zip(bounds[:-1], bounds[1:], strict=True)
        )
        parts, tokens, truncated = [], 0, 0
        for done in self.encoder.encode_windows(windows, clock=clock):
            parts.append(done.embeddings)
            tokens += done.tokens
            truncated += done.truncated
        final = Path(task.store) / task.file
        staged = temp_path_for(final)  # per process: a retried attempt never shares the dead one's file
        with clock.stage("write"):
            final.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(staged) as tmp:
                shard = write_shard(tmp, task.file, task.entry, task.seq, records, np.concatenate(parts), task.layout)
        staged_name = str(staged.relative_to(task.store))
        whole = sum(getattr(r, "last", True) for r in records)
        return ShardResult(shard, staged_name, records[-1].line, whole, tokens, truncated, clock.snapshot())
