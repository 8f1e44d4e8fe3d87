"""Standard input that can be looked into once before it is read.

A pipe can be read only once, yet `sbert encode -` must refuse an empty stdin before it makes a
store, as it refuses an empty file. `peeking()` records the bytes read while the first record is
looked for; every later reader gets them back first, then the rest of the pipe, so nothing is
read twice and nothing is lost. Outside a peek nothing is kept: memory stays flat.
"""

from __future__ import annotations

import io
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import BinaryIO


class _ReplayingStdin(io.RawIOBase):
    """The raw bytes of `stream`, with what a peek recorded served again first."""

    def __init__(self, stream: BinaryIO) -> None:
        self.stream = stream
        self.recording: bytearray | None = None
        self.replay = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:  # type: ignore[override]
        if self.replay:
            n = min(len(buffer), len(self.replay))
            buffer[:n] = self.replay[:n]
            self.replay = self.replay[n:]
            return n
        read = getattr(self.stream, "read1", self.stream.read)
        data = read(len(buffer))
        if self.recording is not None:
            self.recording += data
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        """Kept open: each reader's buffer closes its raw stream when collected, and stdin
        outlives them all."""


_current: _ReplayingStdin | None = None


def _replaying() -> _ReplayingStdin:
    global _current
    stream = sys.stdin.buffer
    if _current is None or _current.stream is not stream:  # a new stdin (tests swap it per call)
        _current = _ReplayingStdin(stream)
    return _current


def stdin_binary() -> BinaryIO:
    """Standard input as a binary stream, starting with whatever a peek read from it."""
    return io.BufferedReader(_replaying())  # type: ignore[return-value]


@contextmanager
def peeking() -> Iterator[None]:
    """Bytes read from stdin inside this block are served again to the next reader."""
    raw = _replaying()
    served_again, raw.recording = raw.replay, bytearray()  # an earlier peek's bytes come first
    try:
        yield
    finally:
        raw.replay, raw.recording = served_again + bytes(raw.recording), None
