"""Removing and rewriting a store's inputs, copy-on-write.

Shards hold one input each, so removing an input drops its shard files, and changing one (an
edit or a rename under `--sync`) writes all its rows afresh into new shard files (new sequence
numbers, so never a name something may still read). The order is always: write the new files,
commit the manifest (the atomic rename is the commit point), then delete the old files. A crash
before the commit leaves unlisted files, which the next writer removes; a crash after it leaves
only old files to delete. Readers holding the previous manifest either finish before the delete
or find a file gone and reopen the store (`store.ShardGone`).

So the shards never hold a removed row: `pandas.read_parquet("STORE/shards")` reads exactly the
live rows, and there is nothing in the shards to compact.

Ids are never reused: an input's index comes from `StoreManifest.next_input`, and a record an
edit adds gets a local id from `InputEntry.next_local`, above every id the input ever had. So a
row id always names the same vector, which is what lets the indexes follow by deleting labels.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from sbert_cli.errors import InputError, SbertError
from sbert_cli.store.atomic import atomic_path, fsync_dir, temp_path_for
from sbert_cli.store.integrity import digest_file
from sbert_cli.store.manifest import InputEntry, ShardInfo, StoreManifest
from sbert_cli.store.store import LINE_BITS, SHARD_DIR, Store, store_lock
from sbert_cli.store.writer import ROW_GROUP_ROWS, shard_file

LOCAL_MASK = (1 << LINE_BITS) - 1


@dataclass
class RemoveSummary:
    store: str
    inputs: list[str] = field(default_factory=list)
    rows: int = 0
    store_rows: int = 0


def reserve_indexes(manifest: StoreManifest) -> None:
    """Make `next_input` cover every index in use (older stores do not record it)."""
    used = max((e.index for e in manifest.inputs), default=-1) + 1
    manifest.next_input = max(manifest.next_input, used)


def next_local(manifest: StoreManifest, entry: InputEntry) -> int:
    """The first local id an edit may give a new record of `entry`: above all it ever had."""
    highest = max((s.id_max & LOCAL_MASK for s in manifest.shards if s.input == entry.index), default=0)
    return max(entry.next_local, entry.last_line + 1, highest + 1)


def drop_inputs(manifest: StoreManifest, entries: Iterable[InputEntry]) -> list[str]:
    """Forget inputs and their shards; returns the files to delete once the manifest is committed."""
    reserve_indexes(manifest)
    gone = {e.index for e in entries}
    files = [s.file for s in manifest.shards if s.input in gone]
    manifest.shards = [s for s in manifest.shards if s.input not in gone]
    manifest.inputs = [e for e in manifest.inputs if e.index not in gone]
    return files


def commit(store_path: Path, manifest: StoreManifest, old_files: Sequence[str]) -> None:
    """The commit point (the manifest), then the files it no longer lists."""
    manifest.save(store_path)
    for name in old_files:
        (store_path / name).unlink(missing_ok=True)


def replace_input_rows(
    store_path: Path, manifest: StoreManifest, entry: InputEntry, table, same: Sequence[ShardInfo] = ()
) -> list[str]:
    """Write `table` (`entry`'s rows, in order, the shard layout; None: no rows) as new shard
    files, link the old shards in `same` (whose rows stay as they are) under new names, and list
    these instead of the input's old shards; returns the old files (delete after the commit)."""
    old = [s for s in manifest.shards if s.input == entry.index]
    seq = max([entry.shards, *(s.seq + 1 for s in old)])
    new: list[ShardInfo] = []
    for shard in same:
        new.append(link_rows(store_path, shard, seq))
        seq += 1
    lines = table.column("line").to_numpy() if table is not None else np.empty(0, np.int64)
    for start, end in _record_slices(lines, max(manifest.shard_size, 1)):
        new.append(write_rows(store_path, entry.index, seq, table.slice(start, end - start)))
        seq += 1
    new.sort(key=lambda s: s.first_line or 0)  # the input's shards in line order, as an encode lists them
    manifest.shards = [s for s in manifest.shards if s.input != entry.index] + new
    entry.shards = seq
    entry.rows_done = sum(s.rows for s in new)
    return [s.file for s in old]


def link_rows(store_path: Path, shard: ShardInfo, seq: int) -> ShardInfo:
    """An unchanged shard under the new name `seq` gives it, without writing it again: a hard
    link (a copy, verified, where the file system has none). A new name, never the old one, so
    readers and indexes see a rewritten shard, and the old name is deleted like any other.
    Marked `rewritten`: its ids may no longer follow from the lines before it, as a repair of
    a never-rewritten shard assumes."""
    name = shard_file(shard.input, seq)
    source, final = store_path / shard.file, store_path / name
    tmp = temp_path_for(final)
    tmp.unlink(missing_ok=True)  # left by a killed writer of the same process id
    try:
        try:
            os.link(source, tmp)
        except OSError:
            shutil.copyfile(source, tmp)
            if digest_file(tmp).sha256 != shard.sha256:
                raise SbertError(f"{final}: the copy of {source} differs from it; nothing was committed") from None
        os.replace(tmp, final)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise SbertError(f"{final}: could not be written ({exc.strerror or exc}); nothing was committed") from exc
    fsync_dir(final.parent)
    return dataclasses.replace(shard, file=name, seq=seq, rewritten=True)


def _record_slices(lines: np.ndarray, size: int) -> list[tuple[int, int]]:
    """(start, end) row ranges of about `size` rows that end where a record ends (a long
    record's chunk rows share its line and stay in one shard, as the encode writer keeps them)."""
    slices, start = [], 0
    while start < len(lines):
        end = min(start + size, len(lines))
        while end < len(lines) and lines[end] == lines[end - 1]:
            end += 1
        slices.append((start, end))
        start = end
    return slices


def write_rows(store_path: Path, input_index: int, seq: int, table) -> ShardInfo:
    """One shard of rewritten rows, with the checksums every read verifies (store/integrity.py)."""
    import pyarrow.parquet as pq

    name = shard_file(input_index, seq)
    final = store_path / name
    final.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(final) as tmp:
        pq.write_table(table, tmp, row_group_size=ROW_GROUP_ROWS, compression="zstd", write_page_checksum=True)
        digest = digest_file(tmp)
        if pq.read_metadata(tmp).num_rows != table.num_rows:
            raise SbertError(f"{final}: wrote {table.num_rows:,} rows, read back fewer (is the disk full?)")
    ids, lines = table.column("id").to_numpy(), table.column("line").to_numpy()
    return ShardInfo(
        file=name,
        input=input_index,
        seq=seq,
        rows=table.num_rows,
        id_min=int(ids.min()),
        id_max=int(ids.max()),
        sha256=digest.sha256,
        bytes=digest.bytes,
        xxh3=digest.xxh3,
        page_checksums=True,
        first_line=int(lines[0]),
        last_line=int(lines[-1]),
        rewritten=True,
    )


def input_table(store: Store, entry: InputEntry, columns: list[str] | None = None):
    """All rows of one input (or some columns of them), in shard order (None when it has none)."""
    import pyarrow as pa

    tables = [store.read_shard(s, columns) for s in store.manifest.shards if s.input == entry.index]
    if not tables:
        return None
    return pa.concat_tables(tables, promote_options="default")


def find_inputs(manifest: StoreManifest, names: Sequence[str]) -> list[InputEntry]:
    """Inputs by the source name the store shows or by path (as given, or resolved); an unknown
    name is an InputError listing what the store holds."""
    found: list[InputEntry] = []
    for name in names:
        resolved = str(Path(name).resolve())
        match = [e for e in manifest.inputs if name in (e.source, e.path) or e.path == resolved]
        if not match:
            known = ", ".join(e.source for e in manifest.inputs[:5]) or "none"
            more = f" (and {len(manifest.inputs) - 5} more)" if len(manifest.inputs) > 5 else ""
            raise InputError(f"{name}: not an input of this store; its inputs: {known}{more}")
        found += [e for e in match if e not in found]
    return found


def remove_inputs(store_path: str | Path, names: Sequence[str]) -> RemoveSummary:
    """`sbert rm`: remove inputs and their rows from the store, under the writer lock."""
    store_path = Path(store_path)
    Store.open(store_path)  # a clear error for a missing or foreign store, before locking
    if not names:
        raise InputError("name at least one input to remove")
    with store_lock(store_path):
        store = Store.open(store_path)
        manifest = store.manifest
        remove_unlisted(store_path, manifest)  # what a killed writer left, even if the names are wrong
        entries = find_inputs(manifest, names)
        summary = RemoveSummary(str(store_path), [e.source for e in entries])
        summary.rows = sum(s.rows for s in manifest.shards if s.input in {e.index for e in entries})
        commit(store_path, manifest, drop_inputs(manifest, entries))
        summary.store_rows = manifest.rows
    return summary


def remove_unlisted(store_path: Path, manifest: StoreManifest) -> None:
    """Delete shard files the manifest does not list: a killed writer's new files (before its
    commit) or old ones (after it). Call under the lock."""
    listed = {s.file for s in manifest.shards}
    folder = store_path / SHARD_DIR
    if folder.is_dir():
        for path in folder.iterdir():
            if f"{SHARD_DIR}/{path.name}" not in listed:
                path.unlink(missing_ok=True)


def live_ids(store: Store) -> np.ndarray:
    """Every row id the store holds, sorted (reads the id column only)."""
    parts = [store.read_shard(s, ["id"]).column("id").to_numpy() for s in store.shards]
    return np.sort(np.concatenate(parts)) if parts else np.empty(0, np.int64)
