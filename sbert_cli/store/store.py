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

import numpy as np

from sbert_cli.errors import InputError, SbertError
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

    def read_shard(self, shard: ShardInfo, columns: list[str] | None = None):
        import pyarrow as pa
        import pyarrow.parquet as pq

        path = self.shard_path(shard)
        try:
            return pq.read_table(path, columns=columns)
        except FileNotFoundError as exc:
            raise ShardGone(f"{path}: removed by a writer since this reader opened the store") from exc
        except (OSError, pa.ArrowException) as exc:
            raise SbertError(f"{path}: unreadable shard ({exc}); the store is damaged") from exc

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
        import pyarrow as pa
        import pyarrow.compute as pc
        import pyarrow.parquet as pq

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
            path = self.shard_path(shards[pos])
            try:
                table = pq.read_table(path, columns=["id", *present], filters=[("id", "in", row_ids)])
            except FileNotFoundError as exc:
                raise ShardGone(f"{path}: removed by a writer since this reader opened the store") from exc
            except (OSError, pa.ArrowException) as exc:
                raise SbertError(f"{path}: unreadable shard ({exc}); the store is damaged") from exc
            table = table.filter(pc.is_in(table.column("id"), value_set=pa.array(row_ids, type=pa.int64())))
            for row in table.to_pylist():
                out[row["id"]] = row
        return out

    def columns(self) -> list[str]:
        cols = ["id", "source", "line", "embedding"]
        if self.has_text:
            cols.insert(1, "text")
        if self.manifest.has_key:
            cols.append("key")
        return cols


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
