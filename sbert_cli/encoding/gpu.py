"""The asynchronous side of the model loop: results copied back while the next batch runs.

`Encoder.run` queues each batch on the device and hands its vectors to a `ResultSink`. On a
CUDA device the sink starts a non-blocking copy into pinned host memory, records an event, and
only waits for that event `lag` batches later, when the device is already busy with the next
batch; inputs arrive pinned (prepared by the feeder's workers) and are copied with
`non_blocking=True`, so the host never waits on a copy. The one wait left per batch is inside
transformers: its SDPA mask helper checks `attention_mask.all()` on the host before every forward.

The same sink runs on the CPU with an event that is always complete, so the deferred collection
(ordering, scatter, draining) is exercised by the CPU test suite; only the pinned buffer and the
CUDA event differ.
"""

from __future__ import annotations

import sys
from collections import deque
from typing import Any

import numpy as np

# How allocation failures read when they arrive as plain RuntimeErrors (CUDA outside torch's
# caching allocator, cuBLAS workspaces, torch's CPU allocator, ONNX Runtime's arena).
_OOM_SIGNS = ("out of memory", "can't allocate memory", "failed to allocate memory", "cublas_status_alloc_failed")


class _DoneEvent:
    """A CPU stand-in for `torch.cuda.Event`: computed results are ready at once."""

    def record(self, stream: Any = None) -> None:
        pass

    def synchronize(self) -> None:
        pass


class ResultSink:
    """Collects a window's batch vectors into `out` (rows by position), `lag` batches behind."""

    def __init__(self, out: np.ndarray, device: str, lag: int = 2) -> None:
        self.out = out
        self.cuda = str(device).startswith("cuda")
        self.lag = max(0, lag)
        self.pending: deque[tuple[np.ndarray, Any, Any]] = deque()

    def put(self, positions: np.ndarray, vectors: Any) -> None:
        """Take one batch's vectors (a torch tensor on the model's device) for rows `positions`."""
        import torch

        vectors = vectors.detach().float()
        if self.cuda:
            host = torch.empty(vectors.shape, dtype=torch.float32, pin_memory=True)  # torch caches pinned blocks
            host.copy_(vectors, non_blocking=True)  # queued on the vectors' device's current stream
            event: Any = torch.cuda.Event()
            stream = torch.cuda.current_stream(vectors.device)  # that device's, not device 0's
        else:
            host, event, stream = vectors, _DoneEvent(), None
        event.record(stream)
        self.pending.append((positions, host, event))
        while len(self.pending) > self.lag:
            self._collect()

    def _collect(self) -> None:
        positions, host, event = self.pending.popleft()
        event.synchronize()
        self.out[positions] = host.numpy()

    def finish(self) -> np.ndarray:
        """Wait for every batch still in flight; `out` is then complete."""
        while self.pending:
            self._collect()
        return self.out


def release_cached_memory() -> None:
    """After an out-of-memory: give the CUDA caching allocator's free blocks back, so the retry
    at half the batch size starts from a clean heap. A no-op without torch or CUDA."""
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.empty_cache()


def is_out_of_memory(exc: BaseException) -> bool:
    """A CUDA or host allocation failure, from torch, numpy or ONNX Runtime."""
    if isinstance(exc, MemoryError) or any(cls.__name__ == "OutOfMemoryError" for cls in type(exc).__mro__):
        return True
    text = str(exc).lower()
    return any(sign in text for sign in _OOM_SIGNS)
