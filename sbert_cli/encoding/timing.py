"""Timing engines for `auto` (encoding/calibrate.py): loaded one at a time, the likeliest fastest
first, each stopped once it cannot win, the losers' memory given back.

Which engine wins is the measurement's alone; the order only decides what a job too small to
measure every engine gets to measure, and lets a slow engine be stopped after its first batch.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import replace

from sbert_cli.encoding.settings import ModelSettings

CUTOFF = 1.1  # an engine past this many times the best so far cannot win (bf16 needs 0.97x): stopped
CLOSE = 1.1  # an engine within this of the best so far is timed again, and so is the best
BF16_MIN_GAIN = 0.97  # bf16 replaces fp32 only when it takes under 97% of the fastest fp32 time


def choose_dtype(fp32_s: float, bf16_s: float) -> str:
    """bf16 only when it clearly wins (see BF16_MIN_GAIN), else fp32."""
    return "bf16" if bf16_s < BF16_MIN_GAIN * fp32_s else "fp32"


def choose_engine(seconds: dict[tuple[str, str], float]) -> tuple[str, str]:
    """The fastest fp32 engine, unless the fastest bf16 one beats it by BF16_MIN_GAIN."""
    fp32 = min(((s, e) for e, s in seconds.items() if e[1] == "fp32"), default=None)
    bf16 = min(((s, e) for e, s in seconds.items() if e[1] == "bf16"), default=None)
    if fp32 is None or (bf16 is not None and choose_dtype(fp32[0], bf16[0]) == "bf16"):
        return bf16[1]
    return fp32[1]


def engine_order(engines: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """The order engines are measured in: the likeliest fastest first (OpenVINO before torch, bf16
    before fp32: benchmarks/README.md). Measurement still decides; the order decides which engines
    a job too small to measure them all gets to measure, and lets the later ones stop early."""
    return sorted(engines, key=lambda e: (e[0] != "openvino", e[1] != "bf16"))


def time_sample(encoder, prepared, limit: float = float("inf")) -> float:
    """Model seconds for the prepared sample, batch by batch; once past `limit` it stops and
    returns the time extrapolated to the whole sample by tokens (an engine that cannot win)."""
    total = sum(int(b.attention_mask.sum()) for b in prepared.batches)
    done, started, elapsed = 0, time.perf_counter(), 0.0
    for batch in prepared.batches:
        encoder.run(replace(prepared, batches=[batch], inverse=None))
        done += int(batch.attention_mask.sum())
        elapsed = time.perf_counter() - started
        if elapsed > limit and done < total:
            return elapsed * total / max(done, 1)
    return elapsed


def release_memory() -> None:
    """Give unloaded engines' memory back to the system (glibc keeps freed pages otherwise), so RSS
    stays that of the engine the run keeps. Reference counts already freed them (a gc.collect after a
    full calibration found 49 small objects) and a collection costs ~0.15 CPU s with torch's heap."""
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


class Measure:
    """One calibration: engines loaded one at a time, the best so far kept, the rest dropped."""

    def __init__(self, settings: ModelSettings, batch_tokens: int) -> None:
        self.settings, self.batch_tokens = settings, batch_tokens
        self.encoders: dict[tuple[str, str], object] = {}
        self.seconds: dict[tuple[str, str], float] = {}
        self.winner: tuple[str, str] | None = None

    def load(self, engine: tuple[str, str]):
        from sbert_cli.encoding.loader import load_encoder

        encoder = self.encoders[engine] = load_encoder(replace(self.settings, backend=engine[0], dtype=engine[1]))
        return encoder

    def drop_losers(self) -> None:
        from sbert_cli.encoding.loader import unload_encoder

        for engine in [e for e in self.encoders if e != self.winner]:
            del self.encoders[engine]
            unload_encoder(replace(self.settings, backend=engine[0], dtype=engine[1]))

    def measure(self, engine: tuple[str, str], prepared, warm) -> None:
        """Warm `engine` up, time it (stopped early past CUTOFF x the best so far), and where it
        comes CLOSE to the best, time both once more (best of two: load drifts over the run)."""
        encoder = self.load(engine)
        encoder.run(warm(encoder))  # one-time kernel setup, not counted
        best = min(self.seconds.values(), default=float("inf"))
        self.seconds[engine] = time_sample(encoder, prepared, CUTOFF * best)
        if self.winner is not None and self.seconds[engine] < CLOSE * best:
            self.seconds[engine] = min(self.seconds[engine], time_sample(encoder, prepared))
            self.seconds[self.winner] = min(best, time_sample(self.encoders[self.winner], prepared))
        self.winner = choose_engine(self.seconds)
        self.drop_losers()

    def finish(self) -> None:
        """Once, at the end of the measuring."""
        release_memory()
