"""Verified reads: every file a store lists is checked against the size and checksum recorded when
it was written, as it is read, so a damaged file is an error naming it, never data.

Checksum: xxh3-64 (the `xxhash` package): ~17 GB/s on this machine against sha256's ~1.7 GB/s,
so hashing a file costs a small fraction of reading it. sha256 is still recorded beside it (index
coverage compares shards by it). Files are hashed through a memory map in large blocks, and each
file is verified once per process (keyed by its identity on disk and the digest expected), so a
search that reads a shard twice pays once.

Files written before xxh3 was recorded carry only sha256: readers verify those with sha256 and do
not migrate them (a reader holds no lock and must never write the manifest); `sbert check
--repair` records their xxh3 once it has verified their sha256.

Shards also carry Parquet page CRCs (`page_checksums`): `Store.fetch` reads a few row groups of a
shard, and verifying those pages costs what reading them does, where hashing the whole file would
read all of it.
"""

from __future__ import annotations

import hashlib
import mmap
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import xxhash

from sbert_cli.errors import SbertError

XXH3 = "xxh3:"
SHA256 = "sha256:"
BLOCK = 1 << 24  # bytes hashed at a time: large blocks keep the per-call overhead negligible

_verified: set[tuple] = set()  # (path, device, inode, size, mtime_ns, expected digest) verified here


class DamagedFileError(SbertError):
    """A file the store lists is missing, or not what was written. Exit 1: a runtime failure,
    fixed by repairing the store or rebuilding the index, never by changing the command."""


@dataclass(frozen=True)
class Digest:
    """What a file holds, as recorded when it is written."""

    bytes: int
    sha256: str
    xxh3: str


@dataclass(frozen=True)
class Expected:
    """What a file must hold: its size and checksum (xxh3, or sha256 for older files); `what` names
    the kind of file in messages, `fix` says what to do about a bad one."""

    bytes: int
    xxh3: str | None
    sha256: str
    what: str
    fix: str

    @property
    def digest(self) -> str:
        return self.xxh3 or self.sha256


def expected_of(record, what: str, fix: str) -> Expected:
    """The `Expected` of a manifest record with `bytes`, `sha256` and (maybe) `xxh3`."""
    return Expected(record.bytes, getattr(record, "xxh3", None), record.sha256, what, fix)


def shard_fix(store_path: Path) -> str:
    return f"repair with: sbert check --repair {store_path}"


def index_fix(store_path: Path) -> str:
    return f"rebuild it with: sbert index {store_path} --rebuild"


# -- hashing --------------------------------------------------------------------------------------
def hash_view(view, sha: bool) -> tuple[str, str | None]:
    """(xxh3, sha256 or None) of a buffer, in blocks."""
    fast = xxhash.xxh3_64()
    slow = hashlib.sha256() if sha else None
    view = memoryview(view).cast("B")
    for start in range(0, len(view), BLOCK):
        block = view[start : start + BLOCK]
        fast.update(block)
        if slow is not None:
            slow.update(block)
    return XXH3 + fast.hexdigest(), (SHA256 + slow.hexdigest()) if slow is not None else None


def _with_map(path: Path, use: Callable[[memoryview], object]):
    with open(path, "rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        if size == 0:
            return use(memoryview(b""))
        with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
            mapped.madvise(mmap.MADV_SEQUENTIAL)
            view = memoryview(mapped)
            try:
                return use(view)
            finally:
                view.release()


def digest_file(path: str | Path) -> Digest:
    """Size, sha256 and xxh3 of a file, in one pass (what a writer records)."""
    path = Path(path)
    fast, slow = _with_map(path, lambda view: hash_view(view, sha=True))
    return Digest(path.stat().st_size, slow, fast)


def _matches(view, expected: Expected) -> bool:
    if expected.xxh3:
        return hash_view(view, sha=False)[0] == expected.xxh3
    return hash_view(view, sha=True)[1] == expected.sha256


# -- checking -------------------------------------------------------------------------------------
def damaged(path: Path, expected: Expected, detail: str) -> DamagedFileError:
    return DamagedFileError(f"{path}: {expected.what} is damaged ({detail}); {expected.fix}")


def check_present(path: str | Path, expected: Expected) -> os.stat_result:
    """The cheap check: the file exists and has the recorded size (no reading)."""
    path = Path(path)
    try:
        st = path.stat()
    except FileNotFoundError:
        raise DamagedFileError(f"{path}: {expected.what} is missing; {expected.fix}") from None
    except OSError as exc:
        raise DamagedFileError(f"{path}: {expected.what} is unreadable ({exc.strerror}); {expected.fix}") from exc
    if st.st_size != expected.bytes:
        raise damaged(path, expected, f"{st.st_size:,} bytes, {expected.bytes:,} were written")
    return st


def _key(path: Path, st: os.stat_result, expected: Expected) -> tuple:
    return (str(path.absolute()), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns, expected.digest)


def is_verified(path: str | Path, expected: Expected) -> bool:
    """Whether this process already verified `path` as it is now on disk."""
    path = Path(path)
    try:
        return _key(path, path.stat(), expected) in _verified
    except OSError:
        return False


def verify_view(path: Path, st: os.stat_result, view, expected: Expected) -> None:
    """Check bytes read from `path` (stat `st`, taken before reading) against `expected`."""
    if len(view) != expected.bytes:
        raise damaged(path, expected, f"{len(view):,} bytes, {expected.bytes:,} were written")
    if not _matches(view, expected):
        raise damaged(path, expected, "its checksum is not the one recorded when it was written")
    _verified.add(_key(path, st, expected))


def verify_file(path: str | Path, expected: Expected) -> Path:
    """Refuse a missing, resized or altered file; each file is hashed once per process."""
    path = Path(path)
    st = check_present(path, expected)
    if _key(path, st, expected) in _verified:
        return path
    try:
        _with_map(path, lambda view: verify_view(path, st, view, expected))
    except OSError as exc:
        raise DamagedFileError(f"{path}: {expected.what} is unreadable ({exc.strerror}); {expected.fix}") from exc
    return path


def check_written(tmp: Path, final: Path, size: int | None = None, digest: str | None = None) -> Digest:
    """Read back a file a library just wrote to `tmp` (to be committed as `final`): its size and,
    where the caller knows them, its expected size and xxh3; returns what to record."""
    found = digest_file(tmp)
    if size is not None and found.bytes != size:
        raise SbertError(
            f"{final}: the write was cut short ({found.bytes:,} of {size:,} bytes; is the disk full?); "
            "nothing was committed, the previous version stays in use"
        )
    if digest is not None and found.xxh3 != digest:
        raise SbertError(f"{final}: what was read back is not what was written; nothing was committed")
    return found


def forget_verified() -> None:
    """Forget what this process verified (tests, and `sbert check`, which must hash everything)."""
    _verified.clear()
