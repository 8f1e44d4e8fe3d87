"""The chunking stage, between reading and encoding: records in, chunk rows out.

A record that fits (the plan's `whole` tokens: by default the model's max_seq_length, with an
explicit `--chunk-size` that size; special tokens and the prompt counted) is one row, carrying the token ids the encoder will use, so it is
tokenized once. A longer record becomes several rows of at most `size` tokens, cut by
`split.token_ranges`; each chunk's
text is tokenized again and, should it not fit (a cut inside a word can tokenize differently),
the record is cut again with a smaller budget. With `--truncate` a long record stays one row, as
before, and what the model will not see is counted: no text is ever dropped silently.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

from sbert_cli.chunking.split import piece, token_ranges
from sbert_cli.chunking.tokens import TokenCounter, Tokenized
from sbert_cli.errors import InputError
from sbert_cli.inputs.hashing import record_hash
from sbert_cli.inputs.reader import Record

CHUNK, TRUNCATE = "chunk", "truncate"
DEFAULT_OVERLAP = 32
BATCH_RECORDS = 256  # records tokenized per tokenizer call
MAX_RECUTS = 8


@dataclass
class ChunkRow(Record):
    """One row of the store: a record, or one chunk of it. `start`/`end` are character offsets
    in the record's text (`record.text[start:end] == text` when chunking); `last` marks the
    record's last row (the resume point lies only there)."""

    chunk: int = 0
    start: int = 0
    end: int = 0
    last: bool = True
    ids: list[int] | None = None
    record_hash: int | None = None  # the whole record's (inputs/hashing.py), the same on each of its rows


@dataclass
class ChunkStats:
    records: int = 0  # records in
    chunked: int = 0  # records that became more than one row
    rows: int = 0  # rows out
    truncated: int = 0  # --truncate: records longer than the model reads
    dropped_chars: int = 0
    dropped_tokens: int = 0


@dataclass(frozen=True)
class ChunkPlan:
    """Resolved settings: `size` tokens per row (special tokens and prompt included); a record
    of at most `whole` tokens (when larger than `size`) stays one row."""

    mode: str
    size: int
    overlap: int
    whole: int = 0


class Chunker:
    def __init__(self, counter: TokenCounter, plan: ChunkPlan, stats: ChunkStats | None = None) -> None:
        self.counter = counter
        self.plan = plan
        self.stats = stats or ChunkStats()

    def rows(self, records: Iterable[Record]) -> Iterator[ChunkRow]:
        batch: list[Record] = []
        for record in records:
            batch.append(record)
            if len(batch) >= BATCH_RECORDS:
                yield from self._batch(batch)
                batch = []
        if batch:
            yield from self._batch(batch)

    def _batch(self, records: Sequence[Record]) -> Iterator[ChunkRow]:
        tokenized = self.counter.tokenize([r.text for r in records])
        for record, tokens in zip(records, tokenized, strict=True):
            self.stats.records += 1
            if tokens.count <= max(self.plan.size, self.plan.whole):
                self.stats.rows += 1
                yield _row(record, 0, 0, len(record.text), True, tokens.ids)
            elif self.plan.mode == TRUNCATE:
                yield self._truncated(record, tokens)
            else:
                rows = self.split(record, tokens)
                self.stats.chunked += 1
                self.stats.rows += len(rows)
                yield from rows

    def _truncated(self, record: Record, tokens: Tokenized) -> ChunkRow:
        """One row; the encoder truncates it. Counts what falls beyond the model's reach."""
        kept = max(self.plan.size - tokens.overhead, 0)
        spans = tokens.spans
        end = int(spans[kept - 1, 1]) if kept else 0
        self.stats.rows += 1
        self.stats.truncated += 1
        self.stats.dropped_tokens += tokens.count - self.plan.size
        self.stats.dropped_chars += len(record.text.rstrip()) - end
        return _row(record, 0, 0, end, True, None)

    def split(self, record: Record, tokens: Tokenized) -> list[ChunkRow]:
        """The record's chunks, each checked against the tokenizer."""
        text, spans, overhead = record.text, tokens.spans, tokens.overhead
        budget = self.plan.size - overhead
        if budget <= self.plan.overlap:
            raise InputError(
                f"chunks of {self.plan.size} tokens leave {max(budget, 0)} for text after {overhead} special and "
                f"prompt tokens, not more than --chunk-overlap {self.plan.overlap}; use a larger --chunk-size "
                "or a smaller --chunk-overlap"
            )
        for _ in range(MAX_RECUTS):
            ranges = token_ranges(text, spans, budget, self.plan.overlap)
            pieces = [piece(text, spans, s, e) for s, e in ranges]
            checked = self.counter.tokenize([text[a:b] for a, b in pieces])
            excess = max(t.count - self.plan.size for t in checked)
            if excess <= 0:
                last, whole = len(pieces) - 1, record_hash(record)
                return [
                    _row(record, i, a, b, i == last, t.ids, whole)
                    for i, ((a, b), t) in enumerate(zip(pieces, checked, strict=True))
                ]
            budget -= excess
            if budget <= self.plan.overlap:
                break
        raise InputError(f"line {record.line}: could not cut the record into chunks of {self.plan.size} tokens")


def _row(
    record: Record, chunk: int, start: int, end: int, last: bool, ids: list[int] | None, whole: int | None = None
) -> ChunkRow:
    text = record.text if chunk == 0 and last else record.text[start:end]
    whole = record_hash(record) if whole is None else whole
    return ChunkRow(
        record.line,
        text,
        record.key,
        fields=record.fields,
        chunk=chunk,
        start=start,
        end=end,
        last=last,
        ids=ids,
        record_hash=whole,
    )
