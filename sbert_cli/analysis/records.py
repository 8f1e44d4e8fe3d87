"""A store's records: what `cluster` and `similarity --store` compare.

A record is one line (or row) of one input: the store rows sharing (input, line). With chunking
a long record is several rows (shard columns `chunk`, `start`, `end`); a short one, and every
row of a store without those columns, is one row. A record's vector is the mean of its chunks'
unit vectors, normalized again; it shows the `id` and `text` of its first chunk, and carries
`source`, `line` and `key`. `chunks=True` keeps every row as it is (with `chunk`, `start`, `end`).

Records are read shard by shard; a record whose chunks run on into the next shard of its input
is held back until its last chunk is read, so memory stays one shard (plus that record).
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from sbert_cli.analysis.vectors import unit_rows
from sbert_cli.store.store import Store, embeddings_to_numpy

CHUNK_COLUMNS = ("chunk", "start", "end")
META_COLUMNS = ("id", "source", "line", "key", "text")


@dataclass
class RecordBlock:
    """Consecutive records: their columns (lists, `META_COLUMNS` plus the chunk columns when
    rows are kept) and unit vectors (None when not asked for)."""

    meta: dict[str, list]
    vectors: np.ndarray | None

    def __len__(self) -> int:
        return len(self.meta["id"])

    def rows(self) -> Iterator[dict]:
        names = list(self.meta)
        for values in zip(*(self.meta[n] for n in names), strict=True):
            yield dict(zip(names, values, strict=True))


class StoreRecords:
    """The records (or, with `chunks`, the rows) of a store, with unit vectors."""

    def __init__(self, store: Store, chunks: bool = False) -> None:
        self.store = store
        self.chunks = chunks
        self._schemas = {shard.file: _shard_columns(store, shard) for shard in store.shards}
        present = {c for names in self._schemas.values() for c in names}
        self.chunk_columns = [c for c in CHUNK_COLUMNS if c in present]
        self.one_row_each = chunks or not self.chunk_columns  # no grouping to do

    @property
    def path(self):
        return self.store.path

    @property
    def dim(self) -> int:
        return self.store.dim

    @property
    def kind(self) -> str:
        return "rows" if self.chunks and self.chunk_columns else "records"

    @property
    def columns(self) -> list[str]:
        """The columns of every record, in the order outputs show them."""
        extra = self.chunk_columns if self.chunks else []
        return ["id", "source", "line", "key", *extra, "text"]

    @functools.cached_property
    def rows(self) -> int:
        """How many records (rows with `chunks`)."""
        if self.one_row_each:
            return self.store.rows
        return sum(len(block) for block in self.blocks(vectors=False))

    def load(self) -> RecordBlock:
        """Every record at once."""
        blocks = list(self.blocks())
        if not blocks:
            return RecordBlock({c: [] for c in self.columns}, np.empty((0, self.dim), np.float32))
        meta = {c: [v for b in blocks for v in b.meta[c]] for c in self.columns}
        return RecordBlock(meta, np.concatenate([b.vectors for b in blocks]))

    def blocks(self, vectors: bool = True) -> Iterator[RecordBlock]:
        """The records shard by shard, in store order."""
        held: _Rows | None = None
        for shard in self.store.shards:
            rows = self._read(shard, vectors)
            if self.one_row_each:
                yield rows.block(vectors)
                continue
            if held is not None and held.input == shard.input:
                rows = held.then(rows)
            elif held is not None and len(held):
                yield held.records(vectors)  # a new input: the held record is complete
            complete, held = rows.split_last_record()
            if len(complete):
                yield complete.records(vectors)
        if held is not None and len(held):
            yield held.records(vectors)

    def _read(self, shard, vectors: bool) -> _Rows:
        store = self.store
        present = self._schemas[shard.file]  # shards written before chunking lack its columns
        wanted = [c for c in (*META_COLUMNS, *self.chunk_columns) if c in present]
        table = store.read_shard(shard, wanted + (["embedding"] if vectors else []))
        n = table.num_rows
        meta = {c: table.column(c).to_pylist() if c in wanted else [None] * n for c in self.columns}
        unit = unit_rows(embeddings_to_numpy(table.column("embedding"), store.dim)) if vectors else None
        return _Rows(shard.input, np.asarray(meta["line"], dtype=np.int64), meta, unit)


@dataclass
class _Rows:
    """Store rows of one input, in order, before grouping."""

    input: int
    lines: np.ndarray
    meta: dict[str, list]
    vectors: np.ndarray | None

    def __len__(self) -> int:
        return len(self.lines)

    def block(self, vectors: bool) -> RecordBlock:
        return RecordBlock(self.meta, self.vectors if vectors else None)

    def then(self, other: _Rows) -> _Rows:
        vectors = None if self.vectors is None else np.concatenate([self.vectors, other.vectors])
        meta = {c: self.meta[c] + other.meta[c] for c in self.meta}
        return _Rows(self.input, np.concatenate([self.lines, other.lines]), meta, vectors)

    def _slice(self, start: int, stop: int) -> _Rows:
        vectors = None if self.vectors is None else self.vectors[start:stop]
        return _Rows(self.input, self.lines[start:stop], {c: v[start:stop] for c, v in self.meta.items()}, vectors)

    def split_last_record(self) -> tuple[_Rows, _Rows]:
        """(the rows of every record but the last, the last record's rows): the last one may go
        on in the next shard."""
        if not len(self):
            return self, self
        starts = _record_starts(self.lines)
        return self._slice(0, int(starts[-1])), self._slice(int(starts[-1]), len(self))

    def records(self, vectors: bool) -> RecordBlock:
        """One record per run of equal lines: the first row's columns, the mean unit vector."""
        starts = _record_starts(self.lines)
        meta = {c: [values[i] for i in starts.tolist()] for c, values in self.meta.items()}
        mean = None
        if vectors and self.vectors is not None:
            mean = unit_rows(np.add.reduceat(self.vectors.astype(np.float64), starts).astype(np.float32))
        return RecordBlock(meta, mean)


def _record_starts(lines: np.ndarray) -> np.ndarray:
    if not len(lines):
        return np.empty(0, dtype=np.int64)
    return np.flatnonzero(np.r_[True, lines[1:] != lines[:-1]])


def _shard_columns(store: Store, shard) -> set[str]:
    """The columns a shard holds: the store's, as its manifest records them."""
    return set(store.columns())
