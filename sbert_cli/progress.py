"""How the library reports progress: one small interface, rendered by the CLI (or by nobody).

Library code never prints and never imports rich: long-running functions take a `Reporter` and
call `message` for one-line notes and `progress` with a `ProgressUpdate` (counts, rates, stage
times). `cli/progress.py` renders them as a bar on a terminal or as plain lines in a log;
`NullReporter` drops them, which is what a Python caller gets by default.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

T = TypeVar("T")
log = logging.getLogger("sbert")


@dataclass
class ProgressUpdate:
    task: str  # "encoding", "indexing", ...
    done: int  # items finished (texts, rows, steps)
    total: int | None  # None when unknown (stdin)
    elapsed: float
    tokens: int = 0
    current: str | None = None  # the input or phase being worked on
    stages: dict[str, float] = field(default_factory=dict)  # seconds spent per stage so far
    final: bool = False  # the last update of the task
    unit: str = "texts"
    chunks: int | None = None  # encoding: rows made so far, where records became several chunks

    @property
    def rate(self) -> float:
        return self.done / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def eta(self) -> float | None:
        if self.total is None or not self.done or self.done >= self.total:
            return None
        return (self.total - self.done) / self.rate

    @property
    def bound_by(self) -> str | None:
        """The stage that took the most time: what limited the run."""
        return max(self.stages, key=self.stages.__getitem__) if self.stages else None


class Reporter(Protocol):
    def message(self, text: str) -> None: ...

    def progress(self, update: ProgressUpdate) -> None: ...


class NullReporter:
    """Drops progress; messages go to the `sbert` logger (silent unless the caller configures it)."""

    def message(self, text: str) -> None:
        log.info(text)

    def progress(self, update: ProgressUpdate) -> None:
        pass


class StageClock:
    """Seconds spent per stage (read, tokenize, model, write). Each stage is timed by one thread,
    so plain float additions are safe; stages on different threads overlap, so their sum can
    exceed the wall time, and the largest is what bounded the run."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - started

    def timed(self, name: str, items: Iterable[T]) -> Iterator[T]:
        """Iterate `items`, counting the time spent producing each one as stage `name`."""
        iterator = iter(items)
        while True:
            with self.stage(name):
                try:
                    item = next(iterator)
                except StopIteration:
                    return
            yield item

    def snapshot(self) -> dict[str, float]:
        return dict(self.seconds)


class ProgressMeter:
    """One task's progress fed from two places: units finished (`advance`, e.g. a window's records
    written, with the `rows` (chunks) they made) and units in work (`in_work`, e.g. the records
    whose rows are in the model, told
    after each batch, possibly from the model's thread). At most one update per `every` seconds
    goes to the reporter, and only when the count moved; the count shown never goes back."""

    def __init__(
        self,
        reporter: Reporter,
        task: str,
        total: int | None,
        clock: StageClock | None = None,
        every: float = 0.5,
        unit: str = "texts",
    ) -> None:
        self.reporter, self.task, self.total, self.clock, self.every = reporter, task, total, clock, every
        self.unit = unit
        self.finished = self.working = self.tokens = self.shown = 0
        self.rows_finished = self.rows_working = 0  # rows (chunks), where a unit can be several
        self.current: str | None = None
        self.started = time.perf_counter()
        self._last = -math.inf
        self._lock = threading.Lock()

    def in_work(self, current: str | None, done: int, rows: int | None = None) -> None:
        with self._lock:
            self.working, self.current = done, current or self.current
            self.rows_working = done if rows is None else rows
            self._report()

    def advance(self, done: int, tokens: int = 0, current: str | None = None, rows: int | None = None) -> None:
        with self._lock:
            self.finished += done
            self.rows_finished += done if rows is None else rows
            self.tokens += tokens
            self.working = self.rows_working = 0
            self.current = current or self.current
            self._report()

    def _report(self) -> None:
        now = time.perf_counter()
        count = self.finished + self.working
        count = min(count, self.total) if self.total else count
        if now - self._last < self.every or count <= self.shown:
            return
        self._last, self.shown = now, count
        stages = self.clock.snapshot() if self.clock else {}
        rows = self.rows_finished + self.rows_working
        update = ProgressUpdate(self.task, count, self.total, now - self.started, self.tokens, self.current, stages)
        update.unit, update.chunks = self.unit, rows if rows != count else None
        self.reporter.progress(update)
