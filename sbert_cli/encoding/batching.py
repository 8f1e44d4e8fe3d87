"""Batching: group texts into windows, then into token-budget batches of similar length.

Sorting a bounded window by token length, then cutting it into batches whose padded size
(rows x longest row) stays under a token budget, keeps padding small and memory flat: nothing
ever holds more than one window, however large the corpus. Callers restore input order.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TypeVar

import numpy as np

T = TypeVar("T")


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
