"""The store side of `sbert encode --sync`: an edited input's new rows from its old ones.

A record is the rows sharing (input, line) (one row, or several once chunking splits it). Each
row carries `record_hash`, the hash of its whole record: text, key and kept fields
(inputs/hashing.py), the same on each chunk row. When an
input changes, its new records are matched to the old ones by that hash, in order (the n-th
copy of a text matches the n-th old copy): a matched record keeps its rows, vectors and ids,
only its line (and source name) follow the file; the rest go through the chunking stage and the
model like any encode, and their rows get ids above any the input ever had (one per row). Then all the input's rows are written afresh (store/delete.py).
"""

from __future__ import annotations

from collections import defaultdict, deque
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from sbert_cli.inputs.hashing import content_hash, record_hash
from sbert_cli.inputs.reader import InputSource, ReadOptions, ReadStats, Record, read_records
from sbert_cli.store.delete import input_table, next_local, replace_input_rows
from sbert_cli.store.manifest import InputEntry, StoreManifest
from sbert_cli.store.store import Store, make_id
from sbert_cli.store.writer import ShardLayout, build_table, shard_schema


@dataclass
class Rewrite:
    """How one changed input becomes its new rows: which old records it keeps (old line -> new
    line) and which lines the model must encode."""

    entry: InputEntry  # the store's entry, updated on commit
    source: InputSource
    identity: tuple[str | None, int | None, int | None, str | None]  # path, size, mtime_ns, sha256
    old: object | None  # the input's old rows (a pyarrow Table), None when it had none
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


def plan_rewrite(
    store: Store, entry: InputEntry, source: InputSource, identity: tuple, options: ReadOptions
) -> Rewrite:
    """Read the input as it is now and match its records against the stored ones."""
    stats = ReadStats()
    records = list(read_records(source, options, stats))
    old = input_table(store, entry)
    plan = Rewrite(entry, source, identity, old, records=len(records), blank=stats.blank)
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


def kept_rows(plan: Rewrite, schema):
    """The old rows of the records kept, moved to their new lines and source name, in `schema`."""
    import pyarrow as pa

    if plan.old is None or not plan.keep:
        return None
    old = plan.old
    lines = old.column("line").to_numpy()
    old_lines = np.fromiter(plan.keep, dtype=np.int64, count=len(plan.keep))
    new_lines = np.fromiter(plan.keep.values(), dtype=np.int64, count=len(plan.keep))
    order = np.argsort(old_lines)
    old_lines, new_lines = old_lines[order], new_lines[order]
    pos = np.clip(np.searchsorted(old_lines, lines), 0, len(old_lines) - 1)
    rows = np.flatnonzero(old_lines[pos] == lines)
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
        parts = [t for t in [kept_rows(self.plan, schema), *(t.cast(schema) for t in self.tables)] if t is not None]
        entry = self.plan.entry
        if parts:
            table = pa.concat_tables(parts)
            table = table.take(pc.sort_indices(table, [("line", "ascending")]))  # stable: chunks stay in order
            self.old_files = replace_input_rows(self.store_path, self.manifest, entry, table)
            self.shards_written = sum(1 for s in self.manifest.shards if s.input == entry.index)
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
