"""Hits and records: what a search returns, and how chunk rows group into the records they cut.

A record is one input record (a line of a text file, a JSON line, a CSV row): the store rows
sharing its input and `line`. A store whose shards have a `chunk` column may hold several rows
(chunks) per record; in one without it every row is its own record. Record-level search ranks
a record by its best chunk (max-sim: the first of its rows in the chunk ranking) and shows that
chunk as the passage; `chunks=True` returns the rows themselves.
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from sbert_cli.retrieval.kept import NOT_KEPT, kept_for
from sbert_cli.store.store import LINE_BITS, Store

HIT_COLUMNS = ("query", "rank", "id", "score", "cosine", "text", "source", "line", "key")
CHUNK_COLUMNS = ("chunk", "start", "end")
FUSION_COLUMNS = ("dense_rank", "dense_score", "keyword_rank", "keyword_score")
# Shard columns that are not kept fields: the row's identity, its text and its vector.
_BUILT_IN = {"id", "text", "source", "line", "key", "embedding", "record_hash", *CHUNK_COLUMNS}


@dataclass(frozen=True)
class Hit:
    """One search result: a record (or, with `chunks=True`, a chunk row) and how close it is.

    `score` is the mode's own (dense: the index space's similarity, cosine for normalized
    vectors; keyword: BM25; hybrid: the fused score), `cosine` the dense cosine similarity
    of the query and the hit's passage whatever the mode. `extra` holds the store's further
    columns (chunk, start, end, kept fields); `as_dict` is exactly one `--format jsonl` line."""

    query: str
    rank: int  # 1-based
    id: int
    score: float
    text: str | None
    source: str | None
    line: int | None
    # Where the hit stood in each ranking (None: not in that list's top); in hybrid mode `score`
    # is the fused score, in keyword mode the BM25 score.
    dense_rank: int | None = None
    dense_score: float | None = None
    keyword_rank: int | None = None
    keyword_score: float | None = None
    cosine: float | None = None
    key: str | None = None
    extra: dict = field(default_factory=dict)
    mode: str = "dense"

    def as_dict(self) -> dict:
        out = {c: getattr(self, c) for c in HIT_COLUMNS}
        out.update(self.extra)
        if self.mode != "dense":
            out.update({c: getattr(self, c) for c in FUSION_COLUMNS})
        return out


@dataclass(frozen=True)
class Layout:
    """Which optional columns a store's shards have (as its manifest records them)."""

    chunked: bool
    extra: tuple[str, ...]  # chunk columns present, then kept fields, in shard order
    rows_per_record: float = 1.0  # over the store's inputs: how many candidate rows make a record

    @classmethod
    def of(cls, store: Store) -> Layout:
        names = store.columns()  # the manifest's layout: every shard of a store has the same columns
        chunk = tuple(c for c in CHUNK_COLUMNS if c in names)
        kept = tuple(n for n in names if n not in _BUILT_IN)
        inputs = store.manifest.inputs
        # The writer counts, per input, the rows beyond one a record (`id_offset`): where every
        # input's is 0, each row is its own record and the search needs no grouping.
        several = any(getattr(entry, "id_offset", 1) > 0 for entry in inputs)
        records = sum(getattr(entry, "records_done", 0) for entry in inputs)
        rows = sum(getattr(entry, "rows_done", 0) for entry in inputs)
        return cls("chunk" in names and several, chunk + kept, max(1.0, rows / records) if records else 1.0)

    def columns(self, mode: str) -> tuple[str, ...]:
        return HIT_COLUMNS + self.extra + (FUSION_COLUMNS if mode != "dense" else ())


def fetch_rows(store: Store, ids: Sequence[int], columns: Sequence[str]) -> dict[int, dict]:
    """Rows by id with whichever of `columns` the store has: from the rows a server keeps in
    memory for this store (retrieval/kept.py) where it keeps them, else `Store.fetch`, which
    verifies what it reads, finds a row in any shard whose id range holds it (one input's ranges
    overlap after `--sync`), and raises `ShardGone` when a writer removed a shard (search then reopens)."""
    kept = kept_for(store)
    if kept is not None and not set(columns) & set(NOT_KEPT):
        return kept.fetch(ids, columns)
    return store.fetch(ids, tuple(columns))


def record_keys(store: Store, layout: Layout, ids: Sequence[int]) -> dict[int, tuple[int, int]]:
    """Each row id's record, as (input, line): rows of one record share it."""
    ids = [int(i) for i in ids]
    if not layout.chunked:
        return {i: (i >> LINE_BITS, i) for i in ids}
    kept = kept_for(store)
    lines = None if kept is None else kept.lines_of(np.asarray(ids, dtype=np.int64))
    if lines is not None:  # a server's rows in memory: no row dicts made
        return {i: (i >> LINE_BITS, line if line >= 0 else i) for i, line in zip(ids, lines.tolist(), strict=True)}
    rows = fetch_rows(store, ids, ("line",))
    return {i: (i >> LINE_BITS, rows[i]["line"] if i in rows else i) for i in ids}


def first_per_record(store: Store, layout: Layout, ids: np.ndarray, k: int) -> list[int]:
    """Places in `ids` (a ranking, best first) of the first k records' first (best) rows: no
    record twice. Rows' records are looked up a block at a time, only as far as k records need."""
    seen: set[tuple[int, int]] = set()
    picks: list[int] = []
    start, block = 0, 4 * k
    while start < len(ids) and len(picks) < k:
        part = [int(i) for i in ids[start : start + block]]
        keys = record_keys(store, layout, part)
        for offset, row in enumerate(part):
            if keys[row] not in seen:
                seen.add(keys[row])
                picks.append(start + offset)
                if len(picks) == k:
                    break
        start, block = start + len(part), block * 4
    return picks


def plain(value):
    """A stored value as JSON writes it: timestamps (kept fields) as ISO 8601 text."""
    if isinstance(value, (datetime.date, datetime.time)):
        return value.isoformat()
    return value


def cosines(query: np.ndarray, vectors: list[np.ndarray | None], dim: int) -> list[float | None]:
    """The cosine similarity of a query vector and each row's vector (None: not found)."""
    out: list[float | None] = []
    unit = query / max(float(np.linalg.norm(query)), 1e-12)
    for vector in vectors:
        if vector is None:
            out.append(None)
            continue
        v = np.asarray(vector, dtype=np.float32).reshape(dim)
        out.append(float(unit @ v / max(float(np.linalg.norm(v)), 1e-12)))
    return out
