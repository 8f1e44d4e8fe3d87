"""The stream the encoder reads: records -> chunk rows (chunking/) -> shard-aligned windows.

Windows never straddle a shard boundary, and a shard ends only where a record ends (the first
record end at or after `shard_size` rows): a resumed run starts at such a boundary, so it forms
exactly the same windows and batches as an uninterrupted one, and its vectors are identical.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from sbert_cli.chunking import Chunker
from sbert_cli.errors import InputError, located
from sbert_cli.inputs.reader import ReadOptions, ReadStats, Record, read_records

WINDOW_TEXTS = 2048
WINDOW_CHARS = 4_000_000  # bounds memory for corpora of very long records


def aligned_windows(rows: Iterable[Record], shard_size: int, texts: int = WINDOW_TEXTS) -> Iterator[list[Record]]:
    """Windows of at most `texts` rows (or WINDOW_CHARS characters) that end at every shard end."""
    window: list[Record] = []
    chars = 0
    in_shard = 0
    for row in rows:
        window.append(row)
        chars += len(row.text)
        in_shard += 1
        shard_ends = in_shard >= shard_size and getattr(row, "last", True)
        if len(window) >= texts or chars >= WINDOW_CHARS or shard_ends:
            yield window
            window, chars = [], 0
            in_shard = 0 if shard_ends else in_shard
    if window:
        yield window


def input_windows(
    plan: list[Any],
    read: ReadOptions,
    shard_size: int,
    stats: dict[int, ReadStats],
    texts: int = WINDOW_TEXTS,
    chunker: Chunker | None = None,
) -> Iterator[tuple[tuple[Any, list[Record] | None], list[str], list[list[int] | None] | None]]:
    """(payload, texts, token ids) for the encoder: each input's windows, then an end marker per
    input. Without a `chunker` every record is one row and the encoder tokenizes it."""
    for item in plan:
        input_stats = stats.setdefault(item.entry.index, ReadStats())
        skip = item.entry.last_line
        rows: Iterable[Record] = (r for r in read_records(item.source, read, input_stats) if r.line > skip)
        if chunker is not None:
            rows = _located(chunker.rows(rows), item.source.name)
        for window in aligned_windows(rows, shard_size, texts):
            ids = [getattr(r, "ids", None) for r in window] if chunker is not None else None
            yield (item, window), [r.text for r in window], ids
        yield (item, None), [], None


def _located(rows: Iterator[Record], source: str) -> Iterator[Record]:
    """Chunking errors name the input file (the chunker knows only lines)."""
    try:
        yield from rows
    except InputError as exc:
        if str(exc).startswith("line "):
            line, _, message = str(exc)[5:].partition(": ")
            raise InputError(located(source, int(line), message)) from None
        raise
