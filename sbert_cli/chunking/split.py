"""Where a long record is cut: token ranges of at most a budget, overlapping, preferring
paragraph and sentence ends near the limit, then word ends, then any token boundary.

Pure functions of the text and its content-token character spans; the stage (stage.py) turns
the ranges into chunks and checks each against the tokenizer.
"""

from __future__ import annotations

import numpy as np

PARAGRAPH, SENTENCE, WORD, TOKEN, INSIDE = 3, 2, 1, 0, -1
SENTENCE_END = ".!?\u2026\u3002\uff01\uff1f"  # ... and the CJK full stop, exclamation and question marks
CLOSERS = "\"')]}\u201d\u2019\u00bb"  # a sentence may end inside quotes or brackets: `."` `?)`
NEAR = 4  # a paragraph or sentence end counts when it lies in the last 1/NEAR of the budget
WORD_NEAR = 16  # a word end counts when it lies in the last 16 tokens (else: a token boundary)


def boundary(text: str, spans: np.ndarray, e: int) -> int:
    """How good a cut before content token `e` is (between tokens e-1 and e)."""
    prev_end, next_start = int(spans[e - 1, 1]), int(spans[e, 0])
    if next_start < prev_end:
        return INSIDE  # both tokens come from one character (byte-level pieces)
    gap = text[prev_end:next_start]
    if not any(c.isspace() for c in gap):
        return TOKEN  # inside a word (or between a word and its punctuation)
    if "\n" in gap:
        return PARAGRAPH
    before = text[:next_start].rstrip().rstrip(CLOSERS)  # sentence punctuation may be in the gap
    return SENTENCE if before and before[-1] in SENTENCE_END else WORD


def piece(text: str, spans: np.ndarray, start: int, end: int) -> tuple[int, int]:
    """Character range of tokens [start, end): from the first token (from the text's start for
    the first chunk) to the last one, plus what follows it up to the next token that is not
    whitespace (punctuation a tokenizer skipped), so no character falls between chunks."""
    first = 0 if start == 0 else int(spans[start, 0])
    following = int(spans[end, 0]) if end < len(spans) else len(text)
    last = int(spans[end - 1, 1])
    return first, last + len(text[last:following].rstrip())


def best_cut(text: str, spans: np.ndarray, start: int, limit: int, budget: int) -> int:
    """The end (exclusive) of the chunk that starts at token `start` and may reach `limit`."""
    near = max(1, budget // NEAR)
    best, best_score = limit, INSIDE
    for e in range(limit, max(start + 1, limit - near) - 1, -1):
        score = boundary(text, spans, e)
        if score >= SENTENCE:
            if score == PARAGRAPH:
                return e
            if best_score < SENTENCE:
                best, best_score = e, score
        elif score > best_score and (score < WORD or limit - e < WORD_NEAR):
            best, best_score = e, score
    if best_score == INSIDE:  # no clean boundary at all: the first one before the limit
        for e in range(limit, start, -1):
            if boundary(text, spans, e) > INSIDE:
                return e
    return best


def next_start(text: str, spans: np.ndarray, start: int, end: int, overlap: int) -> int:
    """Where the chunk after [start, end) begins: `overlap` tokens back, moved forward to a word
    start when one lies in the overlap, and always past `start`."""
    first = max(end - overlap, start + 1)
    for s in range(first, end):
        if boundary(text, spans, s) >= WORD:
            return s
    return first if overlap else end


def token_ranges(text: str, spans: np.ndarray, budget: int, overlap: int) -> list[tuple[int, int]]:
    """[start, end) content-token ranges covering every token, each at most `budget` long."""
    n = len(spans)
    ranges: list[tuple[int, int]] = []
    start = 0
    while True:
        limit = min(start + budget, n)
        end = limit if limit == n else best_cut(text, spans, start, limit, budget)
        ranges.append((start, end))
        if end >= n:
            return ranges
        start = next_start(text, spans, start, end, overlap)
