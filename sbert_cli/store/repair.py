"""`sbert check --repair`: re-encode damaged or missing shards from their inputs, rebuild damaged
indexes, then check again.

A shard is re-encoded only from its input as it was: the file at the path the manifest records,
with the size and modification time it had when it was encoded, read with the options it was
read with (`InputEntry.read`; a store from before those were recorded is read with the defaults,
and the rows must still land on the shard's ids and row count). The input is read and cut into
rows by the store's chunking stage from its start (a chunk beyond a record's first shifts the ids
after it), the shard's rows picked by id, and encoded in the windows the encode run formed (they
start at a shard boundary), so the vectors are the ones written before (exactly so on the CPU;
the checksum says which). An input that
changed or is gone cannot be repaired from: the error names each one needed.

Indexes are rebuilt by `sbert index`'s own code, which rebuilds what is damaged or stale (a
re-encoded shard whose bytes differ makes the indexes covering it stale) and keeps what is sound.

This sits above the store: it imports the encoder and the index builders where it runs.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from sbert_cli.errors import SbertError
from sbert_cli.inputs.reader import InputSource, ReadOptions, Record, read_records
from sbert_cli.progress import NullReporter, Reporter
from sbert_cli.store.atomic import atomic_path
from sbert_cli.store.check import CheckReport, check_store
from sbert_cli.store.integrity import digest_file
from sbert_cli.store.manifest import IndexManifest, InputEntry, KeywordManifest, ShardInfo
from sbert_cli.store.store import Store, make_id, store_lock
from sbert_cli.store.writer import ShardLayout, write_shard


@dataclass
class RepairSummary:
    before: CheckReport
    after: CheckReport | None = None
    reencoded: list[str] = field(default_factory=list)  # shards written again
    exact: list[str] = field(default_factory=list)  # ... whose bytes are those first written
    migrated: int = 0  # older shards given an xxh3 checksum
    rebuilt: list[str] = field(default_factory=list)  # indexes rebuilt: "dense", "keyword"
    needed: list[str] = field(default_factory=list)  # inputs to put back before shards can be repaired


class InputNeeded(Exception):
    """A shard's input is gone or changed: the message says which file, as it was."""


def repair_store(store_path: str | Path, *, device: str = "auto", reporter: Reporter | None = None) -> RepairSummary:
    """Repair what `check_store` finds; returns what was done and the check after it. Raises
    SbertError when the manifest itself is damaged or a needed input is gone or changed."""
    reporter = reporter or NullReporter()
    store_path = Path(store_path)
    summary = RepairSummary(check_store(store_path, reporter))
    manifest_problems = [p for p in summary.before.problems if p.kind == "manifest"]
    if manifest_problems:
        raise SbertError(f"{manifest_problems[0].line} (--repair rebuilds shards and indexes, not the manifest)")
    damaged = {p.shard for p in summary.before.problems if p.kind == "shard"}
    changed = _repair_shards(store_path, damaged, device, summary, reporter) if damaged else False
    _migrate_checksums(store_path, damaged, summary)
    if summary.needed:
        raise SbertError(
            f"{store_path}: cannot re-encode {len(damaged) - len(summary.reencoded)} shard(s): their inputs are "
            f"needed as they were when encoded: {'; '.join(summary.needed)} (or encode those inputs again with "
            "--force)"
        )
    index_kinds = {p.kind for p in summary.before.problems} & {"index", "keyword"}
    if index_kinds or changed:
        _rebuild_indexes(store_path, bool(index_kinds), "keyword" in index_kinds, summary, reporter)
    summary.after = check_store(store_path, reporter)
    return summary


# -- shards ---------------------------------------------------------------------------------------
def _repair_shards(store_path: Path, damaged: set, device: str, summary: RepairSummary, reporter: Reporter) -> bool:
    """Re-encode the `damaged` shards under the store lock; True when any shard's bytes changed."""
    changed = False
    with store_lock(store_path):
        store = Store.open(store_path)
        entries = {e.index: e for e in store.manifest.inputs}
        model = None  # (encoder, chunker), loaded for the first shard that can be repaired
        for pos, shard in enumerate(store.manifest.shards):
            if shard.file not in damaged:
                continue
            entry = entries[shard.input]
            try:
                source = _source(entry)  # before the model loads: a missing input needs no model
                model = model or _model(store, device)
                rows, offset = _shard_rows(entry, shard, source, model[1])
            except InputNeeded as exc:
                summary.needed.append(str(exc))
                continue
            reporter.message(f"{store.shard_path(shard)}: re-encoding {len(rows):,} rows from {entry.path}")
            vectors = _encode(model[0], rows)
            new = _write_again(store, dataclasses.replace(entry, id_offset=offset), shard, rows, vectors)
            store.manifest.shards[pos] = new
            store.manifest.save(store_path)  # the commit: one shard at a time, like an encode
            summary.reencoded.append(shard.file)
            if new.sha256 == shard.sha256:
                summary.exact.append(shard.file)
            changed = changed or new.sha256 != shard.sha256
    return changed


def _model(store: Store, device: str) -> tuple:
    """The store's model and its chunking stage, as the encode run had them."""
    from sbert_cli.chunking.stage import ChunkStats
    from sbert_cli.encoding.chunk_settings import chunker_for
    from sbert_cli.encoding.loader import encoder_for_store

    encoder = encoder_for_store(store.model, device)
    return encoder, chunker_for(encoder, store.manifest.chunking, ChunkStats())


def _source(entry: InputEntry) -> InputSource:
    """The entry's input, if it is still the file that was encoded."""
    fmt = entry.format.removesuffix(".gz")
    if entry.path is None:
        raise InputNeeded(f"{entry.source} (read from stdin: encode it again with --force)")
    path = Path(entry.path)
    try:
        st = path.stat()
    except OSError:
        raise InputNeeded(f"{entry.path} (missing)") from None
    if (st.st_size, st.st_mtime_ns) != (entry.size, entry.mtime_ns):
        raise InputNeeded(f"{entry.path} (changed since it was encoded: {entry.size:,} bytes then, {st.st_size:,} now)")
    return InputSource(entry.source, path, fmt, entry.format.endswith(".gz"))


def _shard_rows(entry: InputEntry, shard: ShardInfo, source: InputSource, chunker) -> tuple[list[Record], int]:
    """The rows a shard was made from (records, or chunks of them) and the input's id offset
    before its first row: the input is read and chunked from its start, each row's id computed
    as the writer does (line + chunks beyond the first so far), and the shard's id range kept."""
    known = {f.name for f in dataclasses.fields(ReadOptions)}  # options a later sbert dropped are ignored
    options = {k: v for k, v in (entry.read or {}).items() if k in known and k != "format"}
    read = ReadOptions(**options, format=source.format)
    offset, before, last, rows = 0, 0, None, []
    for row in chunker.rows(read_records(source, read)):
        further = getattr(row, "chunk", 0) > 0
        offset += further
        row_id = make_id(entry.index, row.line + offset)
        if row_id > shard.id_max:
            break
        if row_id >= shard.id_min:
            before = before if rows else offset - further
            rows.append(row)
            last = row_id
    if len(rows) != shard.rows or last != shard.id_max:
        raise InputNeeded(f"{entry.path} (it now reads as {len(rows):,} rows where the shard had {shard.rows:,})")
    return rows, before


def _encode(encoder, rows: list[Record]) -> np.ndarray:
    """Vectors in the windows the encode run used (a shard starts at a window boundary), from
    the token ids the chunking stage made, as the run's were."""
    from sbert_cli.encoding.devices import window_texts
    from sbert_cli.encoding.stream import aligned_windows

    windows = aligned_windows(iter(rows), len(rows), window_texts(getattr(encoder, "device", "cpu")))
    items = ((None, [r.text for r in w], [getattr(r, "ids", None) for r in w]) for w in windows)
    return np.concatenate([w.embeddings for w in encoder.encode_windows(items)])


def _write_again(store: Store, entry: InputEntry, shard: ShardInfo, records: list[Record], vectors) -> ShardInfo:
    layout = ShardLayout.of(store.manifest)
    with atomic_path(store.shard_path(shard)) as tmp:
        return write_shard(tmp, shard.file, entry, shard.seq, records, vectors, layout)


def _migrate_checksums(store_path: Path, damaged: set, summary: RepairSummary) -> None:
    """Give shards written before xxh3 was recorded their xxh3, once their sha256 is verified
    (readers never write the manifest, so this is where older stores move to the fast check)."""
    with store_lock(store_path):
        store = Store.open(store_path)
        for pos, shard in enumerate(store.manifest.shards):
            if shard.xxh3 is None and shard.file not in damaged:
                digest = digest_file(store.shard_path(shard))
                if (digest.bytes, digest.sha256) == (shard.bytes, shard.sha256):
                    store.manifest.shards[pos] = dataclasses.replace(shard, xxh3=digest.xxh3)
                    summary.migrated += 1
        if summary.migrated:
            store.manifest.save(store_path)


# -- indexes --------------------------------------------------------------------------------------
def _rebuild_indexes(store_path: Path, damaged: bool, keyword_damaged: bool, summary, reporter: Reporter) -> None:
    """Bring the indexes the store has back: rebuilt whole when one was damaged, else brought up
    to date (a changed shard makes an index stale, which `sbert index`'s code rebuilds)."""
    from sbert_cli.retrieval.partitions import build_partitioned_index

    has_dense = IndexManifest.path_in(store_path).is_file()
    has_keyword = KeywordManifest.path_in(store_path).is_file()
    if not (has_dense or has_keyword):
        return
    build_partitioned_index(store_path, rebuild=damaged, bm25=has_keyword or keyword_damaged, reporter=reporter)
    summary.rebuilt += [name for name, present in (("dense", has_dense), ("keyword", has_keyword)) if present]
