"""Committing a file: write a temp file beside it, fsync, rename over it, fsync the folder.

Every file sbert commits (store manifests, shards, index graphs, ONNX graphs, cluster outputs,
training records) goes through here, so a crash at any moment leaves either the old file or the
new one, never half of one, and never a temp file that a later run would mistake for data.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

from sbert_cli.errors import SbertError

TEMP_PREFIX = "."
TEMP_MARK = ".tmp-"


def temp_path_for(path: Path) -> Path:
    """The temp name for `path`: hidden, in the same folder (a rename is only atomic within one
    file system), and per process, so two writers never share one."""
    return path.with_name(f"{TEMP_PREFIX}{path.name}{TEMP_MARK}{os.getpid()}")


def is_temp_name(name: str) -> bool:
    return name.startswith(TEMP_PREFIX) and TEMP_MARK in name


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temp path to write `path`'s new contents to (by any library); on success it is
    fsynced and renamed over `path`, on failure removed.

    A writer that can fail silently (hnswlib ignores a short write) checks what it wrote inside
    the block (store/integrity.py `check_written`), before the rename. A failed write (a full
    disk) is one line naming `path`: nothing is renamed, so the previous version stays in use."""
    path = Path(path)
    tmp = temp_path_for(path)
    try:
        yield tmp
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise SbertError(
            f"{path}: could not be written ({exc.strerror or exc}); nothing was committed, the previous "
            "version stays in use"
        ) from exc
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def write_atomic(path: str | Path, data: bytes) -> None:
    """Replace `path` with `data`: readers see the old contents or the new, never half."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 22):
            digest.update(chunk)
    return "sha256:" + digest.hexdigest()
