"""The window pipeline every encoder shares: prepare (tokenize, sort, pad) the next window in a
background thread while the model runs the current one; results come back in input order.

An encoder implements `prepare` (CPU side) and `run` (the model); `encode_windows` and `encode`
are the same for all of them, the real model and the tests' hash encoder alike.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from sbert_cli.encoding.batching import windows
from sbert_cli.progress import StageClock
from sbert_cli.store.manifest import ModelRecord

DEFAULT_WINDOW = 2048


@dataclass
class Batch:
    positions: np.ndarray  # positions within the window, in batch order
    input_ids: Any  # torch.LongTensor (rows, longest)
    attention_mask: Any


@dataclass
class PreparedWindow:
    payload: Any
    size: int  # distinct texts, the rows the model computes
    batches: list[Batch]
    tokens: int  # over all texts of the window, duplicates included (what throughput counts)
    truncated: int
    inverse: np.ndarray | None = None  # text position -> distinct row, when the window had duplicates


@dataclass
class EncodedWindow:
    """One window's embeddings in input order, with what the summary counts."""

    payload: Any
    embeddings: np.ndarray
    tokens: int
    truncated: int


class WindowEncoder:
    """Base of every encoder: subclasses set `dim` and implement `describe`, `prepare`, `run`."""

    dim: int
    batch_tokens: int

    def describe(self) -> ModelRecord:
        raise NotImplementedError

    def prepare(self, texts: Sequence[str], payload: Any = None) -> PreparedWindow:
        raise NotImplementedError

    def run(self, window: PreparedWindow) -> EncodedWindow:
        raise NotImplementedError

    def encode_windows(
        self, items: Iterable[tuple[Any, Sequence[str]]], prefetch: int = 2, clock: StageClock | None = None
    ) -> Iterator[EncodedWindow]:
        """Encode (payload, texts) windows, preparing the next ones in a background thread.

        `clock` gets the seconds spent tokenizing (the background thread) and in the model.

        Whatever the source raises (a bad input line, say) is re-raised here, in the caller's
        thread, after the windows before it were yielded.
        """
        ready: queue.Queue = queue.Queue(maxsize=prefetch)
        stop = threading.Event()
        done = object()
        clock = clock or StageClock()

        def produce() -> None:
            try:
                for payload, texts in items:
                    if stop.is_set():
                        return
                    with clock.stage("tokenize"):
                        prepared = self.prepare(texts, payload)
                    ready.put(prepared)
                ready.put(done)
            except BaseException as exc:  # handed to the consumer, which re-raises it
                ready.put(exc)

        worker = threading.Thread(target=produce, name="sbert-tokenize", daemon=True)
        worker.start()
        try:
            while True:
                item = ready.get()
                if item is done:
                    return
                if isinstance(item, BaseException):
                    raise item
                with clock.stage("model"):
                    encoded = self.run(item)
                yield encoded
        finally:
            stop.set()
            # Drain so a producer blocked on put() sees the stop flag and exits.
            while worker.is_alive():
                try:
                    ready.get(timeout=0.05)
                except queue.Empty:
                    pass

    def encode(self, texts: Sequence[str], window: int = DEFAULT_WINDOW) -> np.ndarray:
        """Embeddings (len(texts), dim) as float32, in the order of `texts`."""
        if isinstance(texts, str):
            texts = [texts]
        if not texts:
            return np.empty((0, self.dim), dtype=np.float32)
        parts = [w.embeddings for w in self.encode_windows((None, chunk) for chunk in windows(texts, window))]
        return np.concatenate(parts)
