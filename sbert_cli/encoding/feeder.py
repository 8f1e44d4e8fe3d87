"""Parallel feeding: a reader thread, N prepare workers, results delivered in input order.

`ordered_map` runs the pipeline in front of the model: one thread iterates the source (reading
and decoding the inputs) and submits each window to a pool of worker threads that `prepare` it
(tokenize, sort, pad); a bounded queue of futures keeps input order and bounds memory. Threads
suffice: HF fast tokenizers release the GIL in `encode_batch` (and spread it over the cores in
Rust), and what stays in Python per window is small (2,048 paragraphs: ~10 ms of `Encoding.ids`
and ~2 ms of padding against ~450 ms in the tokenizer, AMD EPYC, 2 cores).

`threaded` runs any iterator in a thread of its own; the encoder uses it to keep a GPU's model
loop apart from the caller's writes.
"""

from __future__ import annotations

import contextlib
import os
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from sbert_cli.progress import StageClock

T = TypeVar("T")
R = TypeVar("R")


def default_workers(device: str, model_threads: int | None) -> int:
    """Prepare workers when `--workers` is not given: the cores the model does not need.

    On the CPU the model's intra-op threads take every core (torch's default) and one worker
    overlaps tokenizing with the model: on 2 cores tokenizing is ~1% of the model's time.
    A GPU's model loop needs one core and the rest tokenize, but each `encode_batch` already
    spreads over every core (the tokenizers' Rust thread pool): then two workers keep the
    tokenizer busy (one in Rust while the other does its Python part), and more would only
    share the cores among more windows, so the first window, and the GPU, would wait longer.
    With TOKENIZERS_PARALLELISM off each call runs on one core, and every spare core gets one.
    """
    cores = os.cpu_count() or 1
    if device.startswith("cuda"):
        return min(2, max(1, cores - 1)) if tokenizer_parallelism() else max(1, cores - 1)
    return max(1, cores - (model_threads or cores))


def tokenizer_parallelism() -> bool:
    """Whether HF fast tokenizers run `encode_batch` on all cores (their env switch, default on)."""
    value = os.environ.get("TOKENIZERS_PARALLELISM", "").strip().lower()
    return value not in ("off", "false", "f", "no", "n", "0")


class BusyTimer:
    """Adds to `clock[name]` the wall seconds during which at least one worker was busy.

    Summing the workers' own seconds would overstate a parallel stage N-fold; this is the time
    the stage was in progress, comparable with a one-thread stage when finding what bounded a run.
    Updated each time a worker finishes, so progress reports see it grow.
    """

    def __init__(self, clock: StageClock, name: str) -> None:
        self.clock, self.name = clock, name
        self._lock = threading.Lock()
        self._active = 0
        self._since = 0.0

    def __enter__(self) -> None:
        with self._lock:
            if self._active == 0:
                self._since = time.perf_counter()
            self._active += 1

    def __exit__(self, *exc: object) -> None:
        with self._lock:
            now = time.perf_counter()
            self.clock.seconds[self.name] = self.clock.seconds.get(self.name, 0.0) + now - self._since
            self._since = now
            self._active -= 1


class _Failure:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


def _close(items: object) -> None:
    close = getattr(items, "close", None)
    if close is not None:
        close()


def threaded(items: Iterable[T], depth: int, name: str) -> Iterator[T]:
    """Iterate `items` in a background thread, at most `depth` items ahead of the consumer.

    Whatever the iteration raises is re-raised here, in the consumer's thread, after the items
    before it. Closing this generator stops the thread (after the item it is producing) and
    closes `items` there.
    """
    ready: queue.Queue = queue.Queue(maxsize=max(1, depth))
    stop = threading.Event()
    done = object()

    def produce() -> None:
        try:
            for item in items:
                ready.put(item)
                if stop.is_set():
                    return
            ready.put(done)
        except BaseException as exc:  # handed to the consumer, which re-raises it
            ready.put(_Failure(exc))
        finally:
            _close(items)

    worker = threading.Thread(target=produce, name=name, daemon=True)
    worker.start()
    try:
        while True:
            item = ready.get()
            if item is done:
                return
            if isinstance(item, _Failure):
                raise item.exc
            yield item
    finally:
        stop.set()
        # Drain so a producer blocked on put() sees the stop flag and exits.
        while worker.is_alive():
            with contextlib.suppress(queue.Empty):
                ready.get(timeout=0.05)


def ordered_map(fn: Callable[[T], R], items: Iterable[T], workers: int, depth: int) -> Iterator[R]:
    """`fn(item)` for every item, computed by `workers` threads, yielded in input order.

    A reader thread iterates `items` and submits them; at most `depth` are submitted and not yet
    consumed. Errors come out in order: `items`' when its turn comes, `fn`'s with its item.
    """
    pool = ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="sbert-prepare")
    futures = threaded((pool.submit(fn, item) for item in items), depth, "sbert-read")
    try:
        for future in futures:
            yield future.result()
    finally:
        futures.close()
        pool.shutdown(wait=True, cancel_futures=True)
