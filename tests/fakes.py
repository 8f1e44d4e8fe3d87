"""A deterministic stand-in encoder for plumbing tests: no torch, no model load, instant.

Registered for model names `hash:DIM` (see conftest.py). A text's vector is drawn from a
generator seeded by the sha256 of its words, summed per word and normalized, so texts sharing
words have a positive cosine, identical texts are identical, and every run gives the same bits.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import numpy as np

from sbert_cli.encoding.batching import plan_batches
from sbert_cli.encoding.loader import ModelSettings
from sbert_cli.encoding.windows import Batch, EncodedWindow, PreparedWindow, WindowEncoder
from sbert_cli.errors import InputError
from sbert_cli.store.manifest import ModelRecord

MAX_TOKENS = 128


def word_vector(word: str, dim: int) -> np.ndarray:
    seed = int.from_bytes(hashlib.sha256(word.encode("utf-8")).digest()[:8], "little")
    return np.random.default_rng(seed).standard_normal(dim).astype(np.float32)


def hash_embed(text: str, dim: int) -> np.ndarray:
    words = text.strip().lower().split()[:MAX_TOKENS] or [""]
    vector = np.sum([word_vector(w, dim) for w in words], axis=0)
    return (vector / max(float(np.linalg.norm(vector)), 1e-12)).astype(np.float32)


class HashEncoder(WindowEncoder):
    """Tokens are whitespace words (truncated at MAX_TOKENS); vectors as `hash_embed`."""

    def __init__(self, dim: int = 16) -> None:
        self.dim = dim
        self.batch_tokens = 256
        self.threads = None
        self.calls = 0  # windows run, so tests can see that work was (or was not) done

    def describe(self) -> ModelRecord:
        return ModelRecord(
            name=f"hash:{self.dim}",
            fingerprint=f"hash-v1:{self.dim}",
            dim=self.dim,
            pooling=["mean"],
            normalize=True,
            max_seq_length=MAX_TOKENS,
            dtype="fp32",
            backend="hash",
        )

    def prepare(self, texts: Sequence[str], payload: Any = None) -> PreparedWindow:
        lengths = np.array([min(len(t.split()), MAX_TOKENS) or 1 for t in texts], dtype=np.int64)
        truncated = sum(len(t.split()) > MAX_TOKENS for t in texts)
        batches = [Batch(positions, list(positions), None) for positions in plan_batches(lengths, self.batch_tokens, 64)]
        window = PreparedWindow(payload, len(texts), batches, tokens=int(lengths.sum()), truncated=truncated)
        window.texts = list(texts)  # type: ignore[attr-defined]
        return window

    def run(self, window: PreparedWindow) -> EncodedWindow:
        self.calls += 1
        texts = window.texts  # type: ignore[attr-defined]
        out = np.empty((window.size, self.dim), dtype=np.float32)
        for batch in window.batches:
            for pos in batch.positions:
                out[pos] = hash_embed(texts[pos], self.dim)
        return EncodedWindow(window.payload, out, window.tokens, window.truncated)


_ENCODERS: dict[int, HashEncoder] = {}


def hash_factory(settings: ModelSettings) -> HashEncoder:
    """`hash:DIM` -> one HashEncoder per dimension (like the real loader's per-process cache)."""
    try:
        dim = int(str(settings.model).split(":", 1)[1])
    except ValueError:
        raise InputError(f"{settings.model}: write hash:DIM, e.g. hash:16") from None
    return _ENCODERS.setdefault(dim, HashEncoder(dim))
