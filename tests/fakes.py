"""A deterministic stand-in encoder for plumbing tests: no torch, no model load, instant.

Registered for model names `hash:DIM` (see conftest.py). A text's tokens are its lower-cased
words (`\\w+`, at most `max_seq_length` of them); each distinct word gets a vector drawn from a
generator seeded by the word's sha256, and the text's vector pools them (mean by default) and
normalizes, so texts sharing most words are close, identical texts are identical, and every run
gives the same bits. It honours --pooling (mean, max, cls; several concatenate), --normalize and
--max-seq-length like a real model, so a store's settings checks work on it too.
"""

from __future__ import annotations

import functools
import hashlib
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from sbert_cli.chunking import Tokenized
from sbert_cli.encoding.batching import plan_batches
from sbert_cli.encoding.loader import ModelSettings
from sbert_cli.encoding.windows import Batch, EncodedWindow, PreparedWindow, WindowEncoder
from sbert_cli.errors import InputError
from sbert_cli.store.manifest import ModelRecord

HASH_MODEL = "hash:64"  # the model plumbing tests use: 64 dimensions keep unrelated texts apart
# Chunks default to half of this, above every sample_corpus paragraph (581 words): plumbing tests
# see one row per record.
MAX_TOKENS = 2048
HASH_POOLING = ("mean", "max", "cls")
_WORD = re.compile(r"\w+")


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


@functools.cache
def word_vector(word: str, dim: int) -> np.ndarray:
    seed = int.from_bytes(hashlib.sha256(word.encode("utf-8")).digest()[:8], "little")
    vector = np.random.default_rng(seed).standard_normal(dim).astype(np.float32)
    vector.setflags(write=False)
    return vector


def hash_embed(
    text: str,
    dim: int = 16,
    pooling: Sequence[str] = ("mean",),
    normalize: bool = True,
    max_tokens: int = MAX_TOKENS,
    prompt: str | None = None,
) -> np.ndarray:
    """The vector HashEncoder gives `text`, computed directly: the reference tests compare with."""
    distinct = list(dict.fromkeys(words((prompt or "") + text)[:max_tokens])) or [""]
    matrix = np.stack([word_vector(w, dim) for w in distinct])
    parts = {"mean": matrix.mean(0), "max": matrix.max(0), "cls": matrix[0]}
    vector = np.concatenate([parts[mode] for mode in pooling])
    if normalize:
        vector = vector / max(float(np.linalg.norm(vector)), 1e-12)
    return vector.astype(np.float32)


class WordCounter:
    """The hash model's tokenizer for the chunking stage: words, with their character spans; the
    prompt's words count (there are no special tokens)."""

    def __init__(self, prompt: str | None) -> None:
        self.prompt_words = len(words(prompt or ""))

    def tokenize(self, texts: Sequence[str]) -> list[Tokenized]:
        out = []
        for text in texts:
            spans = np.array([m.span() for m in _WORD.finditer(text)], dtype=np.int64).reshape(-1, 2)
            out.append(Tokenized(self.prompt_words + len(spans), None, spans))
        return out


class HashEncoder(WindowEncoder):
    """Tokens are words (truncated at `max_tokens`, the prompt's included); vectors as `hash_embed`."""

    def __init__(
        self,
        dim: int = 16,
        pooling: tuple[str, ...] = ("mean",),
        normalize: bool = True,
        max_tokens: int = MAX_TOKENS,
        prompt: str | None = None,
    ) -> None:
        self.prompt = prompt or None
        self.word_dim = dim
        self.dim = dim * len(pooling)
        self.pooling = pooling
        self.normalize = normalize
        self.max_tokens = max_tokens
        self.batch_tokens = 256
        self.threads: int | None = None
        self.calls = 0  # windows run, so tests can see that work was (or was not) done

    def describe(self) -> ModelRecord:
        return ModelRecord(
            name=f"hash:{self.word_dim}",
            fingerprint=f"hash-v2:{self.word_dim}",
            dim=self.dim,
            pooling=list(self.pooling),
            normalize=self.normalize,
            max_seq_length=self.max_tokens,
            dtype="fp32",
            backend="hash",
            prompt=self.prompt,
        )

    def embed(self, text: str) -> np.ndarray:
        return hash_embed(text, self.word_dim, self.pooling, self.normalize, self.max_tokens, self.prompt)

    def token_counter(self) -> WordCounter:
        return WordCounter(self.prompt)

    def prepare(self, texts: Sequence[str], payload: Any = None, ids: Sequence[Any] | None = None) -> PreparedWindow:
        counts = [len(words((self.prompt or "") + t)) for t in texts]
        lengths = np.array([min(n, self.max_tokens) or 1 for n in counts], dtype=np.int64)
        truncated = sum(n > self.max_tokens for n in counts)
        batches = [
            Batch(positions, list(positions), None) for positions in plan_batches(lengths, self.batch_tokens, 64)
        ]
        window = PreparedWindow(payload, len(texts), batches, tokens=int(lengths.sum()), truncated=truncated)
        window.texts = list(texts)  # type: ignore[attr-defined]
        return window

    def run(self, window: PreparedWindow) -> EncodedWindow:
        self.calls += 1
        texts = window.texts  # type: ignore[attr-defined]
        out = np.empty((window.size, self.dim), dtype=np.float32)
        for batch in window.batches:
            for pos in batch.positions:
                out[pos] = self.embed(texts[pos])
        return EncodedWindow(window.payload, out, window.tokens, window.truncated)


_ENCODERS: dict[tuple, HashEncoder] = {}


def hash_factory(settings: ModelSettings) -> HashEncoder:
    """`hash:DIM` -> one HashEncoder per dimension and settings (like the real loader's cache)."""
    try:
        dim = int(str(settings.model).split(":", 1)[1])
    except ValueError:
        raise InputError(f"{settings.model}: write hash:DIM, e.g. hash:16") from None
    if dim < 1:
        raise InputError(f"{settings.model}: DIM must be at least 1")
    pooling = tuple(m.strip() for m in settings.pooling.split(",")) if settings.pooling else ("mean",)
    for mode in pooling:
        if mode not in HASH_POOLING:
            raise InputError(f"--pooling {mode}: unknown mode for the hash model (choose from {HASH_POOLING})")
    normalize = True if settings.normalize is None else settings.normalize
    max_tokens = settings.max_seq_length or MAX_TOKENS
    key = (dim, pooling, normalize, max_tokens, settings.prompt or None)
    if key not in _ENCODERS:
        _ENCODERS[key] = HashEncoder(dim, pooling, normalize, max_tokens, settings.prompt)
    return _ENCODERS[key]


def save_tiny_bert(folder: Path) -> None:
    """A random 2-layer BERT (hidden size 32, seed 0) with the bundled model's tokenizer, saved in
    `folder`; the global torch RNG is left as it was."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    from sbert_cli.encoding.model import resolve_model_path

    tokenizer = AutoTokenizer.from_pretrained(resolve_model_path(None)[1])
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
    )
    state = torch.random.get_rng_state()
    torch.manual_seed(0)
    BertModel(config).save_pretrained(folder)
    torch.random.set_rng_state(state)
    tokenizer.save_pretrained(folder)


class Messages:
    """A Reporter that keeps its messages (`lines`) and ignores progress."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def message(self, text: str) -> None:
        self.lines.append(text)

    def progress(self, update: object) -> None:
        pass
