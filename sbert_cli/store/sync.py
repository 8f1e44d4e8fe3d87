"""The store side of `sbert encode --sync`: an edited input's new rows from its old ones.

A record is the rows sharing (input, line) (one row, or several once chunking splits it). Each
row carries `record_hash`, the hash of its whole record: text, key and kept fields
(inputs/hashing.py), the same on each chunk row. When an
input changes, its new records are matched to the old ones by that hash, in order (the n-th
copy of a text matches the n-th old copy): a matched record keeps its rows, vectors and ids,
only its line (and source name) follow the file; the rest go through the chunking stage and the
model like any encode, and their rows get ids above any the input ever had (one per row).

Matching reads only the old rows' ids, lines and hashes. At the commit, an old shard whose rows
all stay, at the same lines, with nothing inserted among them, is not written again but linked
under a new name (an append or an in-place edit of a big file writes only the shards it
touches; the indexes see a new shard, as after any rewrite); the other rows are written afresh,
copy-on-write (store/delete.py), the kept records' vectors read from their old shards.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict, deque
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from sbert_cli.inputs.hashing import content_hash, record_hash
from sbert_cli.inputs.reader import InputSource, ReadOptions, ReadStats, Record, read_records
from sbert_cli.store.delete import input_table, next_local, replace_input_rows
from sbert_cli.store.manifest import InputEntry, ShardInfo, StoreManifest
from sbert_cli.store.store import Store, make_id
from sbert_cli.store.writer import ShardLayout, build_table, shard_schema


@dataclass
class Rewrite:
    """How one changed input becomes its new rows: which old records it keeps (old line -> new
    line) and which lines the model must encode."""

    entry: InputEntry  # the store's entry, updated on commit
    source: InputSource
    identity: tuple[str | None, int | None, int | None, str | None]  # path, size, mtime_ns, sha256
    old: object | None  # the input's old rows' ids, lines and hashes (a pyarrow Table), None: it had none
    store: Store | None = None  # where the old rows' full columns are read at the commit
    old_shards: list = field(default_factory=list)  # the input's shards before the change
    keep: dict[int, int] = field(default_factory=dict)
    encode: set[int] = field(default_factory=set)
    records: int = 0
    blank: int = 0
    last_line: int = 0


def _old_hashes(table, manifest: StoreManifest) -> tuple[np.ndarray, list[int | None]]:
    """(line, record hash) of each old record (its first row). The stored `record_hash` column
    where the store has it; else (stores written before it) the hash is computed from the stored
    text, key and kept fields, for records stored as one row only: a record chunked into several
    rows has no whole text stored, so it matches nothing and is re-encoded, once (the rewrite
    writes the column from then on only for stores that have it: the layout stays uniform)."""
    lines = table.column("line").to_numpy()
    first = np.flatnonzero(np.r_[True, lines[1:] != lines[:-1]])
    if "record_hash" in table.column_names and table.column("record_hash").null_count == 0:
        return lines[first], table.column("record_hash").take(first).to_pylist()
    if "text" not in table.column_names:
        return lines[first], [None] * len(first)
    counts = np.diff(np.r_[first, len(lines)])
    rows = table.take(first).to_pylist()
    kept = [k.name for k in manifest.kept_fields]
    hashes = [
        content_hash(row["text"] or "", row.get("key"), {name: row.get(name) for name in kept}) if n == 1 else None
        for row, n in zip(rows, counts.tolist(), strict=True)
    ]
    return lines[first], hashes


def _match_columns(store: Store) -> list[str]:
    """What matching reads of the old rows: ids, lines and the record hash (or, in stores written
    before it, what it is computed from); never the vectors."""
    if store.manifest.has_record_hash:
        return ["id", "line", "record_hash"]
    wanted = {"text", "key", *(k.name for k in store.manifest.kept_fields)}
    return ["id", "line", *(c for c in store.columns() if c in wanted)]


def plan_rewrite(
    store: Store, entry: InputEntry, source: InputSource, identity: tuple, options: ReadOptions
) -> Rewrite:
    """Read the input as it is now and match its records against the stored ones."""
    stats = ReadStats()
    records = list(read_records(source, options, stats))
    old = input_table(store, entry, _match_columns(store))
    plan = Rewrite(entry, source, identity, old, store, records=len(records), blank=stats.blank)
    plan.old_shards = [sh for sh in store.manifest.shards if sh.input == entry.index]
    plan.last_line = records[-1].line if records else 0
    pool: dict[int, deque[int]] = defaultdict(deque)
    if old is not None:
        lines, hashes = _old_hashes(old, store.manifest)
        for line, value in zip(lines.tolist(), hashes, strict=True):
            if value is not None:
                pool[value].append(line)
    for record in records:
        matches = pool.get(record_hash(record))
        if matches:
            plan.keep[matches.popleft()] = record.line
        else:
            plan.encode.add(record.line)
    return plan


def kept_rows(plan: Rewrite, old, schema):
    """The rows of `old` (full rows of some of the input's old shards) whose records are kept,
    moved to their new lines and source name, in `schema`."""
    import pyarrow as pa

    if old is None or not plan.keep:
        return None
    lines = old.column("line").to_numpy()
    old_lines = np.fromiter(plan.keep, dtype=np.int64, count=len(plan.keep))
    new_lines = np.fromiter(plan.keep.values(), dtype=np.int64, count=len(plan.keep))
    order = np.argsort(old_lines)
    old_lines, new_lines = old_lines[order], new_lines[order]
    pos = np.clip(np.searchsorted(old_lines, lines), 0, len(old_lines) - 1)
    rows = np.flatnonzero(old_lines[pos] == lines)
    if not len(rows):
        return None
    table = old.take(pa.array(rows))
    columns = {}
    for f in schema:
        if f.name == "line":
            columns[f.name] = pa.array(new_lines[pos[rows]], pa.int64())
        elif f.name == "source":
            columns[f.name] = pa.array([plan.source.name] * len(rows), pa.string())
        else:
            columns[f.name] = table.column(f.name).cast(f.type)
    return pa.Table.from_arrays(list(columns.values()), schema=schema)


def unchanged_shards(plan: Rewrite, encoded_lines: np.ndarray, schema) -> list[ShardInfo]:
    """The old shards the edit leaves as they are: every record in them kept at its line, no
    record added among them, the same source name and columns."""
    import pyarrow.parquet as pq

    if plan.old is None or plan.source.name != plan.entry.source:
        return []
    final = np.sort(np.r_[np.fromiter(plan.keep.values(), dtype=np.int64), encoded_lines.astype(np.int64)])
    old_lines, start, same = plan.old.column("line").to_numpy(), 0, []
    for shard in plan.old_shards:
        lines = np.unique(old_lines[start : start + shard.rows])
        start += shard.rows
        if not len(lines) or any(plan.keep.get(line) != line for line in lines.tolist()):
            continue
        inside = final[np.searchsorted(final, lines[0]) : np.searchsorted(final, lines[-1], "right")]
        if np.array_equal(inside, lines) and pq.read_schema(plan.store.shard_path(shard)).equals(schema):
            same.append(dataclasses.replace(shard, first_line=int(lines[0]), last_line=int(lines[-1])))
    return same


class RewriteCommitter:
    """Collects an edited input's newly encoded rows (the runner's loop feeds it like a
    ShardCommitter) and, at the end of the input, writes the input's rows afresh and lists them
    in the manifest. Saving the manifest (the commit) is the caller's: the runner saves it as it
    finishes each input, and `--sync` commits all changes that need no model in one save; the
    old files (`old_files`) are deleted after that."""

    def __init__(self, store_path: Path, manifest: StoreManifest, plan: Rewrite) -> None:
        self.store_path = store_path
        self.manifest = manifest
        self.plan = plan
        self.tables: list = []
        self.shards_written = 0
        self.old_files: list[str] = []
        self.local = next_local(manifest, plan.entry)

    def add(self, records: list[Record], embeddings: np.ndarray) -> None:
        import pyarrow as pa

        layout = ShardLayout.of(self.manifest)
        table = build_table(self.plan.entry.index, self.plan.source.name, records, embeddings, layout)
        ids = make_id(self.plan.entry.index, 0) + np.arange(self.local, self.local + table.num_rows, dtype=np.int64)
        self.local += table.num_rows
        self.tables.append(table.set_column(0, "id", pa.array(ids, pa.int64())))

    def commit(self) -> None:
        import pyarrow as pa
        import pyarrow.compute as pc

        # The layout as of now: a kept field's type may have become known since a table was built.
        schema = shard_schema(self.manifest.model.dim, ShardLayout.of(self.manifest))
        new = [t.cast(schema) for t in self.tables]
        encoded = np.concatenate([t.column("line").to_numpy() for t in new]) if new else np.empty(0, np.int64)
        same = unchanged_shards(self.plan, encoded, schema)
        kept = {s.file for s in same}
        old = [self.plan.store.read_shard(s) for s in self.plan.old_shards if s.file not in kept]
        old_rows = kept_rows(self.plan, pa.concat_tables(old, promote_options="default"), schema) if old else None
        parts = [t for t in [old_rows, *new] if t is not None]
        entry = self.plan.entry
        if parts or same:
            table = pa.concat_tables(parts) if parts else None
            if table is not None:  # stable: chunks stay in order
                table = table.take(pc.sort_indices(table, [("line", "ascending")]))
            self.old_files = replace_input_rows(self.store_path, self.manifest, entry, table, same)
            self.shards_written = sum(1 for s in self.manifest.shards if s.input == entry.index) - len(same)
        else:  # the input became empty: it keeps its entry, with no rows
            self.old_files = [s.file for s in self.manifest.shards if s.input == entry.index]
            self.manifest.shards = [s for s in self.manifest.shards if s.input != entry.index]
            entry.rows_done = 0
        path, size, mtime_ns, sha = self.plan.identity
        entry.source, entry.path, entry.size, entry.mtime_ns, entry.content_sha256 = (
            self.plan.source.name,
            path,
            size,
            mtime_ns,
            sha,
        )
        entry.complete, entry.blank, entry.last_line, entry.next_local = (
            True,
            self.plan.blank,
            self.plan.last_line,
            self.local,
        )
        entry.records_done = self.plan.records
