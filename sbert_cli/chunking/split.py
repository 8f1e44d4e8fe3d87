"""Where a long record is cut: token ranges of at most a budget, never across a paragraph end,
else at a line end, sentence end or word end near the limit, else at any token boundary.

Pure functions of the text and its content-token character spans; the stage (stage.py) turns
the ranges into chunks and checks each against the tokenizer.
"""

from __future__ import annotations

import numpy as np

PARAGRAPH, LINE, SENTENCE, WORD, TOKEN, INSIDE = 4, 3, 2, 1, 0, -1
SENTENCE_END = ".!?\u2026\u3002\uff01\uff1f"  # ... and the CJK full stop, exclamation and question marks
CLOSERS = "\"')]}\u201d\u2019\u00bb"  # a sentence may end inside quotes or brackets: `."` `?)`
# A paragraph (a blank line, or a line break right after a sentence end) is the author's unit of
# meaning: a chunk never spans two, since the end of one and the start of the next dilute each
# other's vector (a recursive splitter's first separator). Inside a paragraph the cut is the
# last line end in the chunk's second half (hard-wrapped text), else the last sentence end in
# its last quarter, else a word end in the last 16 tokens, else a token boundary.
LINE_NEAR, SENTENCE_NEAR = 2, 4
WORD_NEAR = 16


def boundary(text: str, spans: np.ndarray, e: int) -> int:
    """How good a cut before content token `e` is (between tokens e-1 and e)."""
    prev_end, next_start = int(spans[e - 1, 1]), int(spans[e, 0])
    if next_start < prev_end:
        return INSIDE  # both tokens come from one character (byte-level pieces)
    gap = text[prev_end:next_start]
    if not any(c.isspace() for c in gap):
        return TOKEN  # inside a word (or between a word and its punctuation)
    # the last few tokens and the gap: sentence punctuation may sit in either, inside closers
    before = text[int(spans[max(e - 3, 0), 0]) : next_start].rstrip().rstrip(CLOSERS)
    sentence_end = bool(before) and before[-1] in SENTENCE_END
    if "\n" in gap:
        return PARAGRAPH if sentence_end or gap.count("\n") > 1 else LINE
    return SENTENCE if sentence_end else WORD


def piece(text: str, spans: np.ndarray, start: int, end: int) -> tuple[int, int]:
    """Character range of tokens [start, end): from the first token (from the text's start for
    the first chunk) to the last one, plus what follows it up to the next token that is not
    whitespace (punctuation a tokenizer skipped), so no character falls between chunks."""
    first = 0 if start == 0 else int(spans[start, 0])
    following = int(spans[end, 0]) if end < len(spans) else len(text)
    last = int(spans[end - 1, 1])
    return first, last + len(text[last:following].rstrip())


def first_paragraph_end(text: str, spans: np.ndarray, start: int, limit: int) -> int | None:
    """The first paragraph end after token `start`, up to `limit` (exclusive), if any."""
    for e in range(start + 1, limit):
        if boundary(text, spans, e) == PARAGRAPH:
            return e
    return None


def best_cut(text: str, spans: np.ndarray, start: int, limit: int, budget: int) -> int:
    """The end (exclusive) of the chunk that starts at token `start` and may reach `limit`, when
    no paragraph ends before it."""
    line_from = max(start + 1, limit - budget // LINE_NEAR)
    sentence_from = max(start + 1, limit - max(1, budget // SENTENCE_NEAR))
    best, best_score = limit, INSIDE
    for e in range(limit, line_from - 1, -1):
        score = boundary(text, spans, e)
        if score >= LINE:
            return e
        if e < sentence_from or best_score >= SENTENCE:
            continue
        if score == SENTENCE or (score > best_score and (score < WORD or limit - e < WORD_NEAR)):
            best, best_score = e, score
    if best_score == INSIDE:  # no clean boundary at all: the first one before the limit
        for e in range(limit, start, -1):
            if boundary(text, spans, e) > INSIDE:
                return e
    return best


def next_start(text: str, spans: np.ndarray, start: int, end: int, overlap: int) -> int:
    """Where the chunk after [start, end) begins. Overlap carries a cut sentence's context into
    the next chunk, so: after a paragraph end, no overlap (the cut split no thought); after a
    sentence end, the whole sentences that fit in `overlap` tokens, if any; after a cut inside a
    sentence (a line end of hard-wrapped text too), up to `overlap` tokens back from the
    earliest sentence start, else word start, in reach. Always past `start`."""
    cut = boundary(text, spans, end)
    if cut == PARAGRAPH or not overlap:
        return end
    inside = cut != SENTENCE
    first = max(end - overlap, start + 1)
    scores = [boundary(text, spans, s) for s in range(first, end)]
    for wanted in (SENTENCE, WORD) if inside else (SENTENCE,):
        for s, score in zip(range(first, end), scores, strict=True):
            if score >= wanted:
                return s
    return first if inside else end


def token_ranges(text: str, spans: np.ndarray, budget: int, overlap: int) -> list[tuple[int, int]]:
    """[start, end) content-token ranges covering every token, each at most `budget` long."""
    n = len(spans)
    ranges: list[tuple[int, int]] = []
    start = 0
    while True:
        limit = min(start + budget, n)
        end = first_paragraph_end(text, spans, start, limit)
        if end is None:
            end = limit if limit == n else best_cut(text, spans, start, limit, budget)
        ranges.append((start, end))
        if end >= n:
            return ranges
        start = next_start(text, spans, start, end, overlap)
