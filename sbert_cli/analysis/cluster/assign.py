"""Assigning every row of the store to its cluster, streamed shard by shard, and writing them."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from sbert_cli.analysis.cluster.methods import CENTRAL_TEXTS, NOISE, ClusterSummary, Fitted, threads_for
from sbert_cli.analysis.similarity import unit_rows
from sbert_cli.errors import InputError
from sbert_cli.store.atomic import atomic_path
from sbert_cli.store.store import Store

# -- assignments --------------------------------------------------------------------------------------
ASSIGNMENT_COLUMNS = ["id", "cluster", "distance", "text"]


class Assigner:
    """Streams one row per store row (`id`, `cluster`, `distance`, `text`), shard by shard, and
    counts cluster sizes and the most central rows as it goes; `summary` is complete once the
    rows are exhausted."""

    def __init__(self, store: Store, fitted: Fitted, top: int = CENTRAL_TEXTS) -> None:
        self.store = store
        self.fitted = fitted
        self.top = top
        self.summary = ClusterSummary(
            fitted.method,
            fitted.clusters,
            silhouettes=fitted.silhouettes,
            sample_size=fitted.sample_size,
            streamed=fitted.streamed,
        )
        self._central: dict[int, list[tuple[float, int, str | None]]] = {}

    def rows(self) -> Iterator[dict]:
        from sbert_cli.store.store import embeddings_to_numpy

        store, fitted = self.store, self.fitted
        in_memory = fitted.labels is not None
        columns = ["id"] + (["text"] if store.has_text else []) + ([] if in_memory else ["embedding"])
        offset = 0
        for shard in store.shards:
            table = store.read_shard(shard, columns)
            ids = table.column("id").to_numpy()
            texts = table.column("text").to_pylist() if store.has_text else [None] * len(ids)
            if in_memory:
                assert fitted.labels is not None and fitted.vectors is not None
                labels = fitted.labels[offset : offset + len(ids)]
                unit = fitted.vectors[offset : offset + len(ids)]
            else:
                unit = unit_rows(embeddings_to_numpy(table.column("embedding"), store.dim))
                with threads_for(len(unit)):
                    labels = fitted.predictor.predict(unit).astype(np.int64)  # type: ignore[union-attr]
            offset += len(ids)
            distances = self._distances(unit, labels)
            self._count(ids, labels, distances, texts)
            for i, row_id in enumerate(ids.tolist()):
                label = int(labels[i])
                yield {
                    "id": row_id,
                    "cluster": label,
                    "distance": None if label == NOISE else round(float(distances[i]), 6),
                    "text": texts[i],
                }
        self._finish()

    def _distances(self, unit: np.ndarray, labels: np.ndarray) -> np.ndarray:
        distances = np.full(len(labels), np.nan, dtype=np.float64)
        member = labels != NOISE
        if member.any():
            centres = self.fitted.centres[labels[member]]
            cos = np.einsum("ij,ij->i", unit[member], centres)
            distances[member] = np.clip(1.0 - cos, 0.0, 2.0)
        return distances

    def _count(self, ids: np.ndarray, labels: np.ndarray, distances: np.ndarray, texts: list) -> None:
        summary = self.summary
        summary.rows += len(ids)
        values, counts = np.unique(labels, return_counts=True)
        for value, count in zip(values.tolist(), counts.tolist(), strict=True):
            summary.sizes[value] = summary.sizes.get(value, 0) + count
        if self.top <= 0:
            return
        # Per shard, keep only each cluster's `top` nearest rows: the pool stays tiny.
        order = np.lexsort((distances, labels))
        seen: dict[int, int] = {}
        for i in order.tolist():
            label = int(labels[i])
            if label == NOISE or seen.get(label, 0) >= self.top:
                continue
            seen[label] = seen.get(label, 0) + 1
            self._central.setdefault(label, []).append((float(distances[i]), int(ids[i]), texts[i]))

    def _finish(self) -> None:
        for label, pool in self._central.items():
            pool.sort(key=lambda item: (item[0], item[1]))
            self.summary.central[label] = [
                {"id": row_id, "distance": round(d, 6), "text": text} for d, row_id, text in pool[: self.top]
            ]


ASSIGNMENT_BATCH_ROWS = 65_536


def write_assignments(path: str, rows: Iterator[dict]) -> int:
    """Write assignment rows to a .parquet or .jsonl file, committed atomically (a crash never
    leaves half a file under the name asked for). Returns the row count."""
    target = Path(path)
    kind = _output_kind(path)
    if not target.parent.exists():
        raise InputError(f"{path}: directory {target.parent} does not exist")
    with atomic_path(target) as tmp:
        return _write_jsonl(tmp, rows) if kind == "jsonl" else _write_parquet(tmp, rows)


def _write_jsonl(path: Path, rows: Iterator[dict]) -> int:
    written = 0
    with open(path, "w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
            written += 1
    return written


def _write_parquet(path: Path, rows: Iterator[dict]) -> int:
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema(
        [
            pa.field("id", pa.int64(), nullable=False),
            pa.field("cluster", pa.int64(), nullable=False),
            pa.field("distance", pa.float32()),
            pa.field("text", pa.string()),
        ]
    )
    written = 0
    with pq.ParquetWriter(path, schema) as writer:
        batch: list[dict] = []
        for row in rows:
            batch.append(row)
            if len(batch) >= ASSIGNMENT_BATCH_ROWS:
                writer.write_table(pa.Table.from_pylist(batch, schema=schema))
                written += len(batch)
                batch = []
        if batch or not written:
            writer.write_table(pa.Table.from_pylist(batch, schema=schema))
            written += len(batch)
    return written


def _output_kind(path: str) -> str:
    suffix = Path(path).suffix.lower()
    if suffix in (".parquet", ".pq"):
        return "parquet"
    if suffix in (".jsonl", ".ndjson"):
        return "jsonl"
    raise InputError(f"-o {path}: name a .parquet or .jsonl file")


def check_output_path(path: str) -> None:
    """Refuse a bad -o before any work is done."""
    _output_kind(path)
    parent = Path(path).parent
    if not parent.exists():
        raise InputError(f"-o {path}: directory {parent} does not exist")
