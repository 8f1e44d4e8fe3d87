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
# How far back from the limit a boundary counts, as a fraction of the budget. A paragraph end
# anywhere in the chunk's second half: a paragraph is the author's unit of meaning, and a chunk
# that mixes the end of one with the start of the next dilutes both (a recursive splitter's order:
# paragraphs, then sentences, then words). A sentence end in the last quarter, a word end in the
# last 16 tokens, else any token boundary.
PARAGRAPH_NEAR, SENTENCE_NEAR = 2, 4
WORD_NEAR = 16


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
    paragraph_from = max(start + 1, limit - budget // PARAGRAPH_NEAR)
    sentence_from = max(start + 1, limit - max(1, budget // SENTENCE_NEAR))
    best, best_score = limit, INSIDE
    for e in range(limit, paragraph_from - 1, -1):
        score = boundary(text, spans, e)
        if score == PARAGRAPH:
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
    """Where the chunk after [start, end) begins. Overlap carries a split sentence's context into
    the next chunk, so: after a paragraph end, no overlap (the cut split no thought, and the
    paragraph's tail would only dilute the next one); after a sentence end, the whole sentences
    that fit in `overlap` tokens, if any; after a cut inside a sentence, up to `overlap` tokens
    back from the earliest sentence start, else word start, in reach. Always past `start`."""
    cut = boundary(text, spans, end)
    if cut == PARAGRAPH or not overlap:
        return end
    first = max(end - overlap, start + 1)
    scores = [boundary(text, spans, s) for s in range(first, end)]
    for wanted in (SENTENCE, WORD) if cut < SENTENCE else (SENTENCE,):
        for s, score in zip(range(first, end), scores, strict=True):
            if score >= wanted:
                return s
    return first if cut < SENTENCE else end


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
