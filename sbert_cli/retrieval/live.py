"""Keeping removed rows out of search results while an index is behind its store.

After `sbert encode --sync` or `sbert rm`, an index built before still holds the rows of the
inputs whose shards went away (removed, or rewritten: their live rows are then in new shards,
which search covers exactly until `sbert index` adds them). Until the next build, hits from
those inputs are dropped, asking the index for more until k live hits are found or it has
nothing more to give. After the build, the HNSW graph marks them deleted (hnswlib skips them),
the compressed codes no longer hold them, and the keyword index is rebuilt without them.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TypeVar

import numpy as np

from sbert_cli.store.store import LINE_BITS, ShardGone

READ_RETRIES = 10  # reopenings when a writer deletes a shard a search was reading
T = TypeVar("T")
Search = Callable[[int], tuple[np.ndarray, np.ndarray]]  # k -> (ids, scores), each (queries, k)


def without_gone(search: Search, k: int, limit: int, gone: set[int]) -> tuple[np.ndarray, np.ndarray]:
    """The top `k` hits of `search` whose input is not in `gone`, best first (rows with fewer
    live hits are padded with id -1, score -inf); `limit` is the most the index can return."""
    if not gone:
        return search(min(k, limit))
    dead = np.array(sorted(gone), dtype=np.int64)
    want = min(limit, 2 * k + 16)
    while True:
        ids, scores = search(want)
        live = (ids >= 0) & ~np.isin(ids >> LINE_BITS, dead)
        if want >= limit or bool((live.sum(axis=1) >= k).all()):
            break
        want = min(limit, want * 4)
    order = np.argsort(~live, axis=1, kind="stable")[:, :k]  # live hits first, in rank order
    kept = np.take_along_axis(live, order, 1)
    ids = np.where(kept, np.take_along_axis(ids, order, 1), -1)
    scores = np.where(kept, np.take_along_axis(scores, order, 1), -np.inf).astype(np.float32)
    return ids, scores


def reopening(search: Callable[..., T]) -> Callable[..., T]:
    """A writer that deleted a shard a search was reading committed a newer state: reopen the
    store and search that (a few times, for writers that commit back to back). The signature
    stays the search's (`sbert serve` reads its parameters)."""

    @functools.wraps(search)
    def retried(self, *args, **kwargs) -> T:
        for attempt in range(READ_RETRIES):
            try:
                if attempt:
                    self._reopen()  # may itself find a shard gone: the next writer committed meanwhile
                return search(self, *args, **kwargs)
            except ShardGone:
                if not self.reopens_itself:  # a served state: its server opens the new commit
                    raise
                continue
        self._reopen()
        return search(self, *args, **kwargs)

    return retried
