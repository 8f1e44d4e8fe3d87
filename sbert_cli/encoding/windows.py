"""The window pipeline every encoder shares: windows are read in one thread and prepared
(tokenize, sort, pad) by worker threads (encoding/feeder.py) while the model runs; results come
back in input order, identical for any number of workers.

An encoder implements `prepare` (CPU side) and `run` (the model); `encode_windows` and `encode`
are the same for all of them, the real model and the tests' hash encoder alike, and so are the
out-of-memory retry and the model thread used on GPUs.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from sbert_cli.encoding.batching import fit_batches, windows
from sbert_cli.encoding.feeder import BusyTimer, default_workers, ordered_map, threaded
from sbert_cli.encoding.gpu import is_out_of_memory, release_cached_memory
from sbert_cli.progress import StageClock
from sbert_cli.store.manifest import ModelRecord

DEFAULT_WINDOW = 2048
log = logging.getLogger("sbert")


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


# (window payload, texts of that window through the model so far): called after each batch.
BatchHook = Callable[[Any, int], None]


class _ReportedBatches(list):
    """A window's batches that call the hook as the model loop moves past each one, so progress
    comes per batch without a change to any encoder's `run` (which only iterates them once)."""

    def __init__(self, batches: list[Batch], window: PreparedWindow, hook: BatchHook) -> None:
        super().__init__(batches)
        self.window, self.hook = window, hook

    def __iter__(self) -> Iterator[Batch]:
        window = self.window
        texts = len(window.inverse) if window.inverse is not None else window.size
        rows = 0
        for batch in list.__iter__(self):
            yield batch
            rows += len(batch.positions)
            # Duplicate texts ride along with their distinct row: count texts in proportion.
            self.hook(window.payload, texts if rows >= window.size else rows * texts // max(window.size, 1))


class _SayOnce:
    """Passes the first message on and drops the rest (an out-of-memory is said once per run)."""

    def __init__(self, say: Callable[[str], None]) -> None:
        self.say, self.said = say, False

    def __call__(self, text: str) -> None:
        if not self.said:
            self.said = True
            self.say(text)


class WindowEncoder:
    """Base of every encoder: subclasses set `dim` and implement `describe`, `prepare`, `run`."""

    dim: int
    batch_tokens: int
    model_thread: bool | None = None  # run the model in a thread of its own; None: on a GPU only

    def describe(self) -> ModelRecord:
        raise NotImplementedError

    def prepare(self, texts: Sequence[str], payload: Any = None, ids: Sequence[Any] | None = None) -> PreparedWindow:
        """Tokenize and batch a window; `ids`, where given (not None), are a text's token ids
        already made by the chunking stage, used instead of tokenizing it again."""
        raise NotImplementedError

    def token_counter(self) -> Any:
        """The chunking stage's `TokenCounter` for this model's tokenizer (None: it cannot chunk)."""
        return None

    def run(self, window: PreparedWindow) -> EncodedWindow:
        raise NotImplementedError

    def encode_windows(
        self,
        items: Iterable[tuple[Any, Sequence[str]] | tuple[Any, Sequence[str], Sequence[Any] | None]],
        prefetch: int = 2,
        clock: StageClock | None = None,
        workers: int | None = None,
        say: Callable[[str], None] | None = None,
        on_batch: BatchHook | None = None,
    ) -> Iterator[EncodedWindow]:
        """Encode (payload, texts) windows in input order, whatever the number of workers.

        A reader thread iterates `items`, `workers` threads `prepare` windows ahead (default:
        `feeder.default_workers`, 1 on the CPU, 2 by a GPU), and `run` takes them in order:
        in the caller's thread on the CPU, in a thread of its own on a GPU, so the caller's writes
        overlap the device's work. An out-of-memory halves the token budget and runs the window
        again (see `_run_fitting`); `say` gets one line about it (default: the `sbert` logger).
        `clock` gets the seconds spent tokenizing (while any worker was) and in the model;
        `on_batch`, if given, hears after each batch how many of its window's texts are done.

        Whatever the source raises (a bad input line, say) is re-raised here, in the caller's
        thread, after the windows before it were yielded.
        """
        clock = clock or StageClock()
        device = str(getattr(self, "device", "cpu"))
        workers = workers or default_workers(device, getattr(self, "threads", None))
        busy = BusyTimer(clock, "tokenize")

        def prepare(item: tuple) -> PreparedWindow:
            with busy:
                if len(item) > 2 and item[2] is not None:  # token ids from the chunking stage
                    return self.prepare(item[1], item[0], item[2])
                return self.prepare(item[1], item[0])

        prepared = ordered_map(prepare, items, workers, depth=prefetch + workers)
        encoded = self._model_stage(prepared, clock, _SayOnce(say or log.warning), on_batch)
        in_thread = self.model_thread if self.model_thread is not None else device.startswith("cuda")
        if in_thread:
            encoded = threaded(encoded, prefetch, "sbert-model")
        with contextlib.closing(encoded):
            yield from encoded

    def _model_stage(
        self, prepared: Iterator[PreparedWindow], clock: StageClock, say: _SayOnce, on_batch: BatchHook | None
    ) -> Iterator[EncodedWindow]:
        with contextlib.closing(prepared):
            for window in prepared:
                yield self._run_fitting(window, clock, say, on_batch)

    def _run_fitting(
        self, window: PreparedWindow, clock: StageClock, say: _SayOnce, on_batch: BatchHook | None = None
    ) -> EncodedWindow:
        """`run`, fitted to the current token budget; on an out-of-memory (CUDA or host) the budget
        is halved until the window's batches split, and the window runs again. The rows and their
        order stay the same (smaller batches round differently, ~1e-7); a batch of one text that
        still fails raises MemoryError."""
        while True:
            window.batches = batches = fit_batches(window.batches, self.batch_tokens)
            if on_batch is not None:
                window.batches = _ReportedBatches(batches, window, on_batch)
            try:
                with clock.stage("model"):
                    return self.run(window)
            except Exception as exc:
                if not is_out_of_memory(exc):
                    raise
                failure = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            finally:
                window.batches = batches
            # Outside the except block: the traceback (and the tensors its frames hold) is gone.
            release_cached_memory()
            if not self._halve_budget(window):
                raise MemoryError(f"out of memory on a single text ({failure})")
            say(
                f"out of memory ({failure}); token budget halved to {self.batch_tokens:,} padded tokens "
                "per batch and the batch retried: the same rows, in the same order"
            )

    def _halve_budget(self, window: PreparedWindow) -> bool:
        """Halve `batch_tokens` until the window's batches split; False when every batch is one text.
        Windows prepared later are planned with the smaller budget (workers read it)."""
        while any(len(b.positions) > 1 for b in window.batches):
            self.batch_tokens = max(1, self.batch_tokens // 2)
            fitted = fit_batches(window.batches, self.batch_tokens)
            if len(fitted) > len(window.batches):
                window.batches = fitted
                return True
        return False

    def encode(self, texts: Sequence[str], window: int = DEFAULT_WINDOW) -> np.ndarray:
        """Embeddings (len(texts), dim) as float32, in the order of `texts`."""
        if isinstance(texts, str):
            texts = [texts]
        if not texts:
            return np.empty((0, self.dim), dtype=np.float32)
        parts = [w.embeddings for w in self.encode_windows((None, chunk) for chunk in windows(texts, window))]
        return np.concatenate(parts)
