"""The embedding store: a directory of Parquet shards and a manifest that says what is in them.

    STORE/manifest.json        format, model, dim, pooling, normalize, dtype, shards, inputs
    STORE/shards/part-IIIII-SSSSS.parquet   rows of input I, shard S of that input
    STORE/.lock                held (flock) by the one process writing the store

Only what the manifest lists exists: a shard is written to a temp name, fsynced and renamed
before the manifest (itself replaced atomically) records it, so a crash at any moment leaves the
store as of its last commit. Ids come from input position, not from a counter:
id = input_index << 40 | line, so parallel writers can never collide.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import pyarrow

from sbert_cli.errors import InputError, SbertError
from sbert_cli.store.integrity import (
    DamagedFileError,
    Expected,
    check_present,
    expected_of,
    is_verified,
    shard_fix,
    verify_file,
    verify_view,
)
from sbert_cli.store.manifest import MANIFEST, ModelRecord, ShardInfo, StoreManifest

SHARD_DIR = "shards"
LOCK_FILE = ".lock"
LINE_BITS = 40  # up to 1.1e12 records per input, 8.4e6 inputs per store
STORAGE_DTYPES = ("float32", "float16")


class ShardGone(SbertError):
    """A listed shard vanished: a writer (sync, rm, --force) committed a newer manifest and deleted
    it. Readers reopen the store and try once more (`Index.search`)."""


def make_id(input_index: int, line: int) -> int:
    return (input_index << LINE_BITS) | line


def split_id(row_id: int) -> tuple[int, int]:
    return row_id >> LINE_BITS, row_id & ((1 << LINE_BITS) - 1)


class Store:
    """Read access to a store; `StoreWriter` (writer.py) adds to it under the lock."""

    def __init__(self, path: Path, manifest: StoreManifest) -> None:
        self.path = path
        self.manifest = manifest

    # -- opening ------------------------------------------------------------------------------
    @classmethod
    def open(cls, path: str | Path) -> Store:
        path = Path(path)
        if not path.exists():
            raise InputError(f"{path}: no such store (make one with: sbert encode INPUT -o {path})")
        if not (path / MANIFEST).is_file():
            raise InputError(f"{path}: not an sbert store (no {MANIFEST})")
        return cls(path, StoreManifest.load(path))

    @staticmethod
    def exists(path: str | Path) -> bool:
        return (Path(path) / MANIFEST).is_file()

    # -- what it holds ------------------------------------------------------------------------
    @property
    def model(self) -> ModelRecord:
        return self.manifest.model

    @property
    def dim(self) -> int:
        return self.model.dim

    @property
    def normalized(self) -> bool:
        return self.model.normalize

    @property
    def storage_dtype(self) -> str:
        return self.manifest.storage_dtype

    @property
    def has_text(self) -> bool:
        return self.manifest.has_text

    @property
    def shards(self) -> list[ShardInfo]:
        return list(self.manifest.shards)

    @property
    def rows(self) -> int:
        return self.manifest.rows

    def check_compatible(self, model: ModelRecord, what: str = "this encoder") -> None:
        """Refuse to mix vectors from different models, poolings, dimensions, dtypes or prompts."""
        mine = self.model
        diffs = mine.differences(model)
        if diffs:
            detail = "; ".join(f"{k}: store {getattr(mine, k)!r} vs {getattr(model, k)!r}" for k in diffs)
            raise InputError(
                f"{self.path}: store was made by model {mine.name!r} and {what} differs ({detail}); "
                "use the store's settings or another store"
            )

    # -- reading shards -------------------------------------------------------------------------
    def shard_path(self, shard: ShardInfo) -> Path:
        return self.path / shard.file

    def shard_expected(self, shard: ShardInfo) -> Expected:
        return expected_of(shard, "shard", shard_fix(self.path))

    def check_shard_files(self, skip_inputs: frozenset[int] = frozenset()) -> None:
        """The cheap check (search, `sbert index`, `sbert encode`): every listed shard is there, at
        the size it was written (its checksum is verified whenever it is read). `skip_inputs`:
        inputs about to be encoded again (--force), whose shards are replaced anyway."""
        for shard in self.shards:
            if shard.input not in skip_inputs:
                try:
                    check_present(self.shard_path(shard), self.shard_expected(shard))
                except DamagedFileError as exc:
                    self._raise_if_gone(shard, exc)  # a writer's commit since this store was opened
                    raise

    def read_shard(self, shard: ShardInfo, columns: list[str] | None = None):
        """A shard's columns, verified: the first read in a process hashes the whole file from the
        same memory map it is parsed from, so the bytes checked are the bytes used."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        path, expected = self.shard_path(shard), self.shard_expected(shard)
        try:
            # ParquetFile, not read_table: a shard is one file, and read_table's dataset layer
            # took 2.8x as long (100 shards of 100 rows: 0.80 s against 0.28 s).
            if is_verified(path, expected):
                table = pq.ParquetFile(path).read(columns=columns)
            else:
                st = check_present(path, expected)
                with pa.memory_map(str(path)) as source:
                    buffer = source.read_buffer()
                verify_view(path, st, buffer, expected)
                table = pq.ParquetFile(pa.BufferReader(buffer)).read(columns=columns)
        except (DamagedFileError, FileNotFoundError) as exc:
            self._raise_if_gone(shard, exc)
            raise
        except (OSError, pa.ArrowException) as exc:
            raise DamagedFileError(f"{path}: shard is unreadable ({exc}); {expected.fix}") from exc
        if table.num_rows != shard.rows:
            raise DamagedFileError(
                f"{path}: shard has {table.num_rows:,} rows, manifest.json says {shard.rows:,}; {expected.fix}"
            )
        return table

    def _raise_if_gone(self, shard: ShardInfo, exc: Exception) -> None:
        """A missing shard that the store's current manifest no longer lists was removed by a
        writer that committed since this reader opened the store: `ShardGone` (the reader retries
        with the new manifest). One the current manifest still lists is damage ("missing")."""
        if self.shard_path(shard).exists():
            return
        try:
            current = StoreManifest.load(self.path)
        except (InputError, OSError):
            return
        if all(s.file != shard.file for s in current.shards):
            raise ShardGone(
                f"{self.shard_path(shard)}: removed by a writer since this reader opened the store"
            ) from exc
        if isinstance(exc, FileNotFoundError):
            raise DamagedFileError(
                f"{self.shard_path(shard)}: shard is missing; {self.shard_expected(shard).fix}"
            ) from None

    @contextlib.contextmanager
    def _partial_read(self, shard: ShardInfo, hash_old: bool = True) -> Iterator[Path]:
        """The shard's path for a read of part of it, verified at the cost of that read: its
        Parquet pages' CRCs (checked as pages are read: open it with page_checksum_verification);
        an older shard without them is hashed whole, once per process, when `hash_old`. A failed
        read is `DamagedFileError` naming the shard, or `ShardGone` (store/store.py)."""
        import pyarrow as pa

        path, expected = self.shard_path(shard), self.shard_expected(shard)
        try:
            if shard.page_checksums or not hash_old:
                check_present(path, expected)
            else:
                verify_file(path, expected)
            yield path
        except (DamagedFileError, FileNotFoundError) as exc:
            self._raise_if_gone(shard, exc)
            raise
        except (OSError, pa.ArrowException) as exc:
            detail = "its page checksums differ" if "CRC" in str(exc) else str(exc)
            raise DamagedFileError(f"{path}: shard is damaged ({detail}); {expected.fix}") from exc

    def read_rows(self, shard: ShardInfo, columns: list[str], row_ids):
        """The rows of a shard with these ids (`row_ids`: a list, numpy or Arrow array) and no
        others (the Parquet filter is applied row by row, not only to skip row groups), verified at
        the cost of reading them. Every partial read of a shard goes through `_partial_read`."""
        import pyarrow.parquet as pq

        with self._partial_read(shard) as path:
            return pq.read_table(
                path, columns=columns, filters=[("id", "in", arrow_ids(row_ids))], page_checksum_verification=True
            )

    def read_row_group(self, shard: ShardInfo, group: int, columns: list[str]):
        """One row group of a shard, verified as `read_rows` is."""
        import pyarrow.parquet as pq

        with self._partial_read(shard) as path:
            return pq.ParquetFile(path, page_checksum_verification=True).read_row_group(group, columns=columns)

    def row_group_id_ranges(self, shard: ShardInfo) -> tuple[np.ndarray, np.ndarray]:
        """(lowest ids, highest ids) of a shard's row groups, from its footer's statistics."""
        import pyarrow.parquet as pq

        with self._partial_read(shard) as path:
            metadata = pq.ParquetFile(path).metadata
        column = metadata.schema.names.index("id")
        stats = [metadata.row_group(g).column(column).statistics for g in range(metadata.num_row_groups)]
        return np.array([s.min for s in stats], np.int64), np.array([s.max for s in stats], np.int64)

    def iter_embeddings(self, with_ids: bool = True) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(ids, float32 embeddings) shard by shard: memory is one shard, whatever the store size."""
        for shard in self.shards:
            table = self.read_shard(shard, ["id", "embedding"])
            yield table.column("id").to_numpy(), embeddings_to_numpy(table.column("embedding"), self.dim)

    def load_embeddings(self) -> tuple[np.ndarray, np.ndarray]:
        """All ids and embeddings in memory (for small stores and clustering)."""
        ids, vecs = [], []
        for i, v in self.iter_embeddings():
            ids.append(i)
            vecs.append(v)
        if not ids:
            return np.empty(0, dtype=np.int64), np.empty((0, self.dim), dtype=np.float32)
        return np.concatenate(ids), np.concatenate(vecs)

    def fetch(
        self, ids: list[int] | np.ndarray, columns: tuple[str, ...] = ("text", "source", "line")
    ) -> dict[int, dict]:
        """Rows by id without scanning the store: the manifest's id ranges pick the shards, and
        Parquet row-group statistics skip the rest of each shard."""
        # Id ranges of one input's shards overlap once `--sync` rewrote it (kept rows keep their
        # ids, new ones get ids above them), so a row is looked for in every shard whose range holds it.
        shards = self.shards
        lows = np.array([s.id_min for s in shards], dtype=np.int64)
        highs = np.array([s.id_max for s in shards], dtype=np.int64)
        by_shard: dict[int, list[int]] = {}
        for row_id in sorted({int(i) for i in ids}):
            for pos in np.flatnonzero((lows <= row_id) & (highs >= row_id)):
                by_shard.setdefault(int(pos), []).append(row_id)
        present = [c for c in columns if c in self.columns()]
        out: dict[int, dict] = {}
        for pos, row_ids in by_shard.items():
            table = self.read_rows(shards[pos], ["id", *present], row_ids)  # exactly those rows
            for row in table.to_pylist():
                out[row["id"]] = row
        return out

    def shard_columns(self, shard: ShardInfo) -> list[str]:
        """The columns one shard holds, from its footer (shards of older stores lack some)."""
        import pyarrow.parquet as pq

        with self._partial_read(shard, hash_old=False) as path:
            return pq.read_schema(path).names

    def columns(self) -> list[str]:
        """Every shard's columns, in the writer's order (store/writer.py `shard_schema`)."""
        manifest = self.manifest
        cols = ["id"] + (["text"] if self.has_text else []) + ["source", "line"]
        cols += ["key"] if manifest.has_key else []
        cols += ["chunk", "start", "end"] if manifest.has_chunks else []
        cols += [kept.name for kept in manifest.kept_fields] + ["embedding"]
        return cols + (["record_hash"] if manifest.has_record_hash else [])


def arrow_ids(ids) -> pyarrow.Array:
    """Row ids as an int64 Arrow array that owns its memory. An array over a numpy buffer (what
    pa.array makes of one, without copying) in a Parquet filter is released later by one of
    Arrow's threads, which must take the GIL to do so: once the interpreter is exiting, that
    aborts the process ("terminate called without an active exception", after `sbert search`
    had printed its hits, about 1 run in 13 on a loaded machine)."""
    import pyarrow as pa

    return pa.array(np.asarray(ids, dtype=np.int64).tolist(), type=pa.int64())


def embeddings_to_numpy(column, dim: int) -> np.ndarray:
    """A fixed-size-list column (chunked or not) -> (rows, dim) float32, without a Python loop."""
    import pyarrow as pa

    chunks = column.chunks if isinstance(column, pa.ChunkedArray) else [column]
    parts = [np.asarray(c.values.to_numpy(zero_copy_only=False)).reshape(-1, dim) for c in chunks if len(c)]
    if not parts:
        return np.empty((0, dim), dtype=np.float32)
    # One chunk (the usual case for a shard) is returned without a copy when it is float32.
    merged = parts[0] if len(parts) == 1 else np.concatenate(parts)
    return merged.astype(np.float32, copy=False)


@contextlib.contextmanager
def store_lock(path: Path) -> Iterator[None]:
    """Exclusive writer lock: flock dies with its process, so kill -9 never leaves a stale lock."""
    path.mkdir(parents=True, exist_ok=True)
    lock_path = path / LOCK_FILE
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            raise SbertError(
                f"{path}: store is being written by another sbert process (pid {holder}); "
                "wait for it to finish or stop it"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)
