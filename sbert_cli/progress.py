"""Progress on stderr: a rich bar on a terminal (texts/s, tokens/s, ETA), nothing otherwise.

Results go to stdout and logs to stderr; a cron job's log gets the final summary only.
"""

from __future__ import annotations

import sys
import time
from types import TracebackType


def stderr_console():
    from rich.console import Console

    return Console(stderr=True, highlight=False, soft_wrap=True)


class Progress:
    """Counts texts and tokens; draws a bar when stderr is a terminal and not `quiet`."""

    def __init__(self, description: str, total: int | None, quiet: bool = False) -> None:
        self.description = description
        self.total = total
        self.texts = 0
        self.tokens = 0
        self.started = time.perf_counter()
        self._bar = None
        self._task = None
        if not quiet and sys.stderr.isatty():
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )
            from rich.progress import Progress as RichProgress

            self._bar = RichProgress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[rate]}"),
                TimeElapsedColumn(),
                TextColumn("ETA"),
                TimeRemainingColumn(),
                console=stderr_console(),
                transient=False,
            )

    def __enter__(self) -> Progress:
        if self._bar is not None:
            self._bar.start()
            self._task = self._bar.add_task(self.description, total=self.total, rate="")
        return self

    def __exit__(self, exc_type: type | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if self._bar is not None:
            self._bar.stop()

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def advance(self, texts: int, tokens: int = 0) -> None:
        self.texts += texts
        self.tokens += tokens
        if self._bar is not None and self._task is not None:
            secs = max(self.elapsed, 1e-9)
            rate = f"{self.texts / secs:,.0f} texts/s"
            if self.tokens:
                rate += f" {self.tokens / secs:,.0f} tok/s"
            self._bar.update(self._task, advance=texts, rate=rate)
