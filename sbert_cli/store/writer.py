"""Write stage: embedded rows -> Parquet shards, committed to the store one at a time.

A commit is: shard to a temp name, fsync, rename, then the manifest (atomically replaced) lists
it together with how far its input is done. A crash before the manifest write leaves at most an
unlisted file, which the next run overwrites or removes.

A row is a record or one chunk of it (chunking/); a shard ends only at the end of a record, so
an input's resume point (its last committed line) is always a record boundary. Ids stay
`input << 40 | line` for the first row of every record in stores of short texts; each further
chunk shifts the ids after it by one (`InputEntry.id_offset`), so ids are unique and rise.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from sbert_cli.errors import SbertError
from sbert_cli.inputs.hashing import record_hash
from sbert_cli.inputs.reader import Record
from sbert_cli.store.atomic import atomic_path
from sbert_cli.store.integrity import digest_file
from sbert_cli.store.manifest import InputEntry, KeptField, ShardInfo, StoreManifest
from sbert_cli.store.store import LINE_BITS, SHARD_DIR, make_id

ROW_GROUP_ROWS = 2048  # small row groups let `Store.fetch` read a few KB instead of a whole shard
SAVE_EVERY_S = 1.0  # a run's manifest commits at most this often (and at its end)


class ManifestSaver:
    """Commits a run's manifest at most every `every_s` seconds, and at the end (`flush`).

    Saving after every shard or input rewrote the whole manifest each time: a run over 1,000
    small files spent most of its time there. A crash loses at most `every_s` of work: what
    was written and not yet listed is unlisted, removed by the next writer and done again,
    so the store still ends as an uninterrupted run leaves it."""

    def __init__(self, store_path: Path, manifest: StoreManifest, every_s: float = SAVE_EVERY_S) -> None:
        self.store_path, self.manifest, self.every_s = store_path, manifest, every_s
        self.saved_at = time.monotonic()
        self.pending = False

    def save(self) -> None:
        """Commit now if `every_s` passed since the last commit, else at the next chance."""
        self.pending = True
        if time.monotonic() - self.saved_at >= self.every_s:
            self.flush()

    def flush(self) -> None:
        if self.pending:
            self.manifest.save(self.store_path)
            self.saved_at, self.pending = time.monotonic(), False

    def __enter__(self) -> ManifestSaver:
        return self

    def __exit__(self, kind, error, trace) -> None:
        """Commit what is done, also when the run stops (Ctrl-C keeps the finished shards); a
        failed commit then must not hide why the run stopped."""
        if kind is None:
            self.flush()
            return
        with contextlib.suppress(Exception):
            self.flush()


@dataclass(frozen=True)
class ShardLayout:
    """The store's columns: what every shard of it holds."""

    storage_dtype: str
    has_text: bool
    has_key: bool
    has_chunks: bool = False
    kept: tuple[KeptField, ...] = field(default_factory=tuple)
    has_record_hash: bool = False

    @classmethod
    def of(cls, manifest: StoreManifest) -> ShardLayout:
        return cls(
            manifest.storage_dtype,
            manifest.has_text,
            manifest.has_key,
            manifest.has_chunks,
            tuple(manifest.kept_fields),
            manifest.has_record_hash,
        )


def shard_schema(dim: int, layout: ShardLayout):
    import pyarrow as pa

    from sbert_cli.inputs.fields import arrow_column

    value = pa.float16() if layout.storage_dtype == "float16" else pa.float32()
    fields = [pa.field("id", pa.int64(), nullable=False)]
    if layout.has_text:
        fields.append(pa.field("text", pa.string()))
    fields += [pa.field("source", pa.string()), pa.field("line", pa.int64())]
    if layout.has_key:
        fields.append(pa.field("key", pa.string()))
    if layout.has_chunks:
        fields += [pa.field(name, pa.int32()) for name in ("chunk", "start", "end")]
    fields += [pa.field(k.name, arrow_column(k.name, k.type, []).type) for k in layout.kept]
    fields.append(pa.field("embedding", pa.list_(value, dim), nullable=False))
    if layout.has_record_hash:  # --sync recognizes unchanged records by it (inputs/hashing.py)
        fields.append(pa.field("record_hash", pa.int64()))
    return pa.schema(fields)


def row_ids(input_index: int, id_offset: int, records: Sequence[Record]) -> np.ndarray:
    """`input << 40 | (line + id_offset + further chunks so far)`: unique, rising, and the old
    line-based ids wherever every record is one row."""
    lines = np.fromiter((r.line for r in records), dtype=np.int64, count=len(records))
    further = np.fromiter((getattr(r, "chunk", 0) > 0 for r in records), dtype=np.int64, count=len(records))
    return make_id(input_index, 0) | (lines + id_offset + np.cumsum(further))


def build_table(input_index: int, source: str, records: Sequence[Record], embeddings: np.ndarray, layout, id_offset=0):
    import pyarrow as pa

    from sbert_cli.inputs.fields import arrow_column

    layout = layout if isinstance(layout, ShardLayout) else ShardLayout(*layout)
    dim = embeddings.shape[1]
    schema = shard_schema(dim, layout)
    flat = np.ascontiguousarray(embeddings, dtype=np.float16 if layout.storage_dtype == "float16" else np.float32)
    columns = {"id": pa.array(row_ids(input_index, id_offset, records), pa.int64())}
    if layout.has_text:
        columns["text"] = pa.array([r.text for r in records], pa.string())
    columns["source"] = pa.DictionaryArray.from_arrays(np.zeros(len(records), np.int32), [source]).cast(pa.string())
    columns["line"] = pa.array([r.line for r in records], pa.int64())
    if layout.has_key:
        columns["key"] = pa.array([r.key for r in records], pa.string())
    if layout.has_chunks:
        columns["chunk"] = pa.array([getattr(r, "chunk", 0) for r in records], pa.int32())
        columns["start"] = pa.array([getattr(r, "start", 0) for r in records], pa.int32())
        columns["end"] = pa.array([getattr(r, "end", len(r.text)) for r in records], pa.int32())
    for kept in layout.kept:
        values = [(r.fields or {}).get(kept.name) for r in records]
        columns[kept.name] = arrow_column(kept.name, kept.type, values)
    columns["embedding"] = pa.FixedSizeListArray.from_arrays(pa.array(flat.reshape(-1)), dim)
    if layout.has_record_hash:
        columns["record_hash"] = pa.array([record_hash(r) for r in records], pa.int64())
    return pa.Table.from_arrays(list(columns.values()), schema=schema)


class ShardCommitter:
    """Accumulates one input's rows and commits a shard at the first record end at or after
    `shard_size` rows (the runner's windows end there too)."""

    def __init__(
        self,
        store_path: Path,
        manifest: StoreManifest,
        input_entry: InputEntry,
        shard_size: int,
        saver: ManifestSaver | None = None,  # None: commit each shard at once
    ) -> None:
        self.saver = saver
        self.store_path = store_path
        self.manifest = manifest
        self.entry = input_entry
        self.shard_size = shard_size
        self.records: list[Record] = []
        self.vectors: list[np.ndarray] = []
        self.pending = 0
        self.shards_written = 0

    def add(self, records: Sequence[Record], embeddings: np.ndarray) -> None:
        self.records.extend(records)
        self.vectors.append(embeddings)
        self.pending += len(records)
        if self.pending >= self.shard_size and getattr(self.records[-1], "last", True):
            self.commit()

    def commit(self) -> None:
        """Write what is pending as the input's next shard, then record it in the manifest."""
        if not self.records:
            return
        entry, manifest = self.entry, self.manifest
        name = shard_file(entry.index, entry.shards)
        final = self.store_path / name
        final.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(final) as tmp:
            shard = write_shard(
                tmp, name, entry, entry.shards, self.records, np.concatenate(self.vectors), ShardLayout.of(manifest)
            )
        record_shard(manifest, entry, shard, self.records[-1].line, sum(getattr(r, "last", True) for r in self.records))
        if self.saver is None:
            manifest.save(self.store_path)
        else:
            self.saver.save()
        self.shards_written += 1
        self.records, self.vectors, self.pending = [], [], 0


def shard_file(input_index: int, seq: int) -> str:
    """A shard's name in the store: the input and the shard's place in it, never a counter."""
    return f"{SHARD_DIR}/part-{input_index:05d}-{seq:05d}.parquet"


def write_shard(
    path: Path,
    name: str,
    entry: InputEntry,
    seq: int,
    records: Sequence[Record],
    embeddings: np.ndarray,
    layout: ShardLayout | tuple,
) -> ShardInfo:
    """Write one shard's rows to `path` (a temp name: the caller commits it) and describe it as
    `name`. `layout` is the store's (`ShardLayout.of(manifest)`). Shared by the local writer and
    Ray workers, so both make the same bytes."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = build_table(entry.index, entry.source, records, embeddings, layout, entry.id_offset)
    pq.write_table(table, path, row_group_size=ROW_GROUP_ROWS, compression="zstd", write_page_checksum=True)
    # Read it back before it is committed: what the manifest records must be what is on disk.
    digest = digest_file(path)
    try:
        written = pq.read_metadata(path).num_rows
    except (OSError, pa.ArrowException) as exc:
        written = f"none ({exc})"
    if written != table.num_rows:
        raise SbertError(
            f"{path.with_name(Path(name).name)}: wrote {table.num_rows:,} rows, read back {written} (is the disk "
            "full?); nothing was committed"
        )
    ids = table.column("id")
    return ShardInfo(
        file=name,
        input=entry.index,
        seq=seq,
        rows=table.num_rows,
        id_min=int(ids[0].as_py()),
        id_max=int(ids[-1].as_py()),
        sha256=digest.sha256,
        bytes=digest.bytes,
        xxh3=digest.xxh3,
        page_checksums=True,
        first_line=records[0].line,
        last_line=records[-1].line,
    )


def record_shard(
    manifest: StoreManifest, entry: InputEntry, shard: ShardInfo, last_line: int, records: int | None = None
) -> None:
    """List a written shard and move its input's resume point past it (saving is the caller's:
    the manifest write is the commit). `records`: whole records in it (default: one per row)."""
    manifest.shards.append(shard)
    entry.shards = shard.seq + 1
    entry.rows_done += shard.rows
    entry.records_done += shard.rows if records is None else records
    entry.last_line = last_line
    entry.id_offset = (shard.id_max & ((1 << LINE_BITS) - 1)) - last_line
