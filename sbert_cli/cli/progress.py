"""Rendering library progress on stderr: a rich bar on a terminal, a plain line every few
seconds otherwise (cron logs, `2> log`), nothing but errors under --quiet."""

from __future__ import annotations

import sys
import time
from typing import TextIO

from sbert_cli.progress import ProgressUpdate

DEFAULT_INTERVAL_S = 5.0


def stderr_console():
    from rich.console import Console

    return Console(stderr=True, highlight=False, soft_wrap=True)


def duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def stage_text(stages: dict[str, float], tokens: int = 0) -> str:
    """`read 1.2 s (2.1M tok/s), tokenize 3.4 s (...), model 20.1 s (...), write 0.8 s (...); bound by model`.

    A stage's rate is the tokens over its own seconds: how fast the run could go if it were
    the only stage (stages overlap in threads, so the slowest bounds the run)."""
    if not stages:
        return ""

    def rate(secs: float) -> str:
        return f" ({per_second(tokens / secs)} tok/s)" if tokens and secs > 0 else ""

    parts = ", ".join(f"{name} {secs:.1f} s{rate(secs)}" for name, secs in stages.items())
    return f"{parts}; bound by {max(stages, key=stages.__getitem__)}"


def per_second(rate: float) -> str:
    """480, 12.3k, 2.10M: three significant figures or so, whatever the scale."""
    if rate >= 1e6:
        return f"{rate / 1e6:,.2f}M"
    return f"{rate / 1e3:,.1f}k" if rate >= 1e4 else f"{rate:,.0f}"


def plain_line(update: ProgressUpdate) -> str:
    done = f"{update.done:,}" + (f"/{update.total:,}" if update.total else "") + f" {update.unit}"
    if update.total:
        done += f" ({100 * update.done / update.total:.0f}%)"
    if update.chunks is not None:
        done += f" as {update.chunks:,} chunks"
    rate = f"{update.rate:,.0f} {update.unit}/s"
    if update.tokens and update.elapsed:
        rate += f", {update.tokens / update.elapsed:,.0f} tokens/s"
    eta = f", ETA {duration(update.eta)}" if update.eta is not None else ""
    current = f"; {update.current}" if update.current else ""
    return f"{update.task}: {done}, {rate}, {duration(update.elapsed)} elapsed{eta}{current}"


class CliReporter:
    """The CLI's `Reporter`. Use as a context manager so a terminal bar is taken down at the end."""

    def __init__(
        self,
        quiet: bool = False,
        verbose: bool = False,
        interval: float = DEFAULT_INTERVAL_S,
        stream: TextIO | None = None,
    ) -> None:
        self.quiet = quiet
        self.verbose = verbose
        self.interval = interval
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self._bar = None
        self._task = None
        self._last_line = 0.0

    def __enter__(self) -> CliReporter:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None

    def message(self, text: str) -> None:
        if not self.quiet:
            self._write(f"sbert: {text}")

    def debug(self, text: str) -> None:
        if self.verbose and not self.quiet:
            self._write(f"sbert: {text}")

    def _write(self, line: str) -> None:
        if self._bar is not None:
            self._bar.console.print(line, markup=False, highlight=False)
        else:
            print(line, file=self.stream, flush=True)

    def progress(self, update: ProgressUpdate) -> None:
        if self.quiet:
            return
        if self.tty:
            self._draw(update)
            return
        now = time.monotonic()
        if self._last_line == 0.0:
            self._last_line = now  # the first line comes one interval in, not at once
        if update.final or now - self._last_line >= self.interval:
            self._last_line = now
            if not update.final or self.verbose:
                self._write(f"sbert: {plain_line(update)}")
        if self.verbose and update.stages and not update.final and now == self._last_line:
            self._write(f"sbert: stages so far: {stage_text(update.stages, update.tokens)}")

    def _draw(self, update: ProgressUpdate) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        if self._bar is None:
            self._bar = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[rate]}"),
                TimeElapsedColumn(),
                TextColumn("ETA"),
                TimeRemainingColumn(),
                console=stderr_console(),
            )
            self._bar.start()
            self._task = self._bar.add_task(update.task, total=update.total, rate="")
        rate = f"{update.rate:,.0f} {update.unit}/s"
        if update.chunks is not None:
            rate = f"{update.unit} as {update.chunks:,} chunks, {update.rate:,.0f} {update.unit}/s"
        if update.tokens and update.elapsed:
            rate += f" {update.tokens / update.elapsed:,.0f} tok/s"
        self._bar.update(self._task, completed=update.done, total=update.total, rate=rate)
