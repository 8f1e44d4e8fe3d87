"""Assigning every row of the store to its cluster, streamed shard by shard, and writing them."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from sbert_cli.analysis.cluster.methods import CENTRAL_TEXTS, NOISE, ClusterSummary, Fitted, threads_for
from sbert_cli.analysis.records import RecordBlock, StoreRecords
from sbert_cli.errors import InputError
from sbert_cli.store.atomic import atomic_path

# -- assignments --------------------------------------------------------------------------------------
# Every record's place and id, its cluster, and its text; `--chunks` adds `chunk`, `start`, `end`
# before `text` when the store has them.
ASSIGNMENT_COLUMNS = ["id", "source", "line", "key", "cluster", "distance", "text"]
_COLUMN_TYPES = {"source": "string", "key": "string", "text": "string", "distance": "float32"}


def assignment_columns(records: StoreRecords) -> list[str]:
    return [*records.columns[:-1], "cluster", "distance", "text"]


class Assigner:
    """Streams one row per record (`assignment_columns`), shard by shard, and counts cluster
    sizes and the most central records as it goes; `summary` is complete once the rows are
    exhausted."""

    def __init__(self, records: StoreRecords, fitted: Fitted, top: int = CENTRAL_TEXTS) -> None:
        self.records = records
        self.fitted = fitted
        self.top = top
        self.columns = assignment_columns(records)
        self.summary = ClusterSummary(
            fitted.method,
            fitted.clusters,
            silhouettes=fitted.silhouettes,
            sample_size=fitted.sample_size,
            streamed=fitted.streamed,
        )
        self._central: dict[int, list[tuple[float, int, dict]]] = {}

    def rows(self) -> Iterator[dict]:
        fitted = self.fitted
        in_memory = fitted.labels is not None
        offset = 0
        for block in self.records.blocks(vectors=not in_memory):
            n = len(block)
            if in_memory:
                assert fitted.labels is not None and fitted.vectors is not None
                labels = fitted.labels[offset : offset + n]
                unit = fitted.vectors[offset : offset + n]
            else:
                assert block.vectors is not None
                unit = block.vectors
                with threads_for(len(unit)):
                    labels = fitted.predictor.predict(unit).astype(np.int64)  # type: ignore[union-attr]
            offset += n
            distances = self._distances(unit, labels)
            self._count(block, labels, distances)
            for i, row in enumerate(block.rows()):
                label = int(labels[i])
                row["cluster"] = label
                row["distance"] = None if label == NOISE else round(float(distances[i]), 6)
                yield {c: row[c] for c in self.columns}
        self._finish()

    def _distances(self, unit: np.ndarray, labels: np.ndarray) -> np.ndarray:
        distances = np.full(len(labels), np.nan, dtype=np.float64)
        member = labels != NOISE
        if member.any():
            centres = self.fitted.centres[labels[member]]
            cos = np.einsum("ij,ij->i", unit[member], centres)
            distances[member] = np.clip(1.0 - cos, 0.0, 2.0)
        return distances

    def _count(self, block: RecordBlock, labels: np.ndarray, distances: np.ndarray) -> None:
        summary = self.summary
        summary.rows += len(block)
        values, counts = np.unique(labels, return_counts=True)
        for value, count in zip(values.tolist(), counts.tolist(), strict=True):
            summary.sizes[value] = summary.sizes.get(value, 0) + count
        if self.top <= 0:
            return
        # Per shard, keep only each cluster's `top` nearest records: the pool stays tiny.
        order = np.lexsort((distances, labels))
        seen: dict[int, int] = {}
        meta = block.meta
        for i in order.tolist():
            label = int(labels[i])
            if label == NOISE or seen.get(label, 0) >= self.top:
                continue
            seen[label] = seen.get(label, 0) + 1
            where = {c: meta[c][i] for c in ("id", "source", "line", "key", "text")}
            self._central.setdefault(label, []).append((float(distances[i]), int(meta["id"][i]), where))

    def _finish(self) -> None:
        for label, pool in self._central.items():
            pool.sort(key=lambda item: (item[0], item[1]))
            self.summary.central[label] = [{**where, "distance": round(d, 6)} for d, _, where in pool[: self.top]]


ASSIGNMENT_BATCH_ROWS = 65_536


def write_assignments(path: str, rows: Iterator[dict], columns: list[str] = ASSIGNMENT_COLUMNS) -> int:
    """Write assignment rows to a .parquet or .jsonl file, committed atomically (a crash never
    leaves half a file under the name asked for). Returns the row count."""
    target = Path(path)
    kind = _output_kind(path)
    if not target.parent.exists():
        raise InputError(f"{path}: directory {target.parent} does not exist")
    with atomic_path(target) as tmp:
        return _write_jsonl(tmp, rows) if kind == "jsonl" else _write_parquet(tmp, rows, columns)


def _write_jsonl(path: Path, rows: Iterator[dict]) -> int:
    written = 0
    with open(path, "w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
            written += 1
    return written


def _write_parquet(path: Path, rows: Iterator[dict], columns: list[str]) -> int:
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema(
        [
            pa.field(c, getattr(pa, _COLUMN_TYPES.get(c, "int64"))(), nullable=c not in ("id", "cluster"))
            for c in columns
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
