"""How the chunking stage counts tokens: with the model's own tokenizer, as the encoder feeds it.

A `TokenCounter` tokenizes record texts exactly as the encoder will (whitespace stripped, the
prompt put in front, lower-cased when the model says so, special tokens added) without
truncating, and says where each of the text's own tokens lies in the record's text, so chunk
offsets are exact character positions.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np


@dataclass
class Tokenized:
    """One record's full tokenization. `count` includes special and prompt tokens; `ids` are the
    encoder's input ids (None where the encoder tokenizes itself); `spans` (content tokens only,
    (n, 2) character offsets into the record's text) are computed on first use: short records,
    which are one chunk, never need them."""

    count: int
    ids: list[int] | None
    _spans: Any  # np.ndarray, or a callable that makes it

    @property
    def spans(self) -> np.ndarray:
        if callable(self._spans):
            self._spans = self._spans()
        return self._spans

    @property
    def overhead(self) -> int:
        """Tokens that are not the text's own: special tokens and the prompt."""
        return self.count - len(self.spans)


class TokenCounter(Protocol):
    def tokenize(self, texts: Sequence[str]) -> list[Tokenized]: ...


class FastTokenCounter:
    """A Hugging Face fast tokenizer (the `tokenizers` backend), without truncation.

    `backend` is copied: the encoder's own instance truncates at max_seq_length."""

    def __init__(self, backend: Any, prompt: str | None, lower: bool) -> None:
        from tokenizers import Tokenizer

        self.tokenizer = Tokenizer.from_str(backend.to_str())
        self.tokenizer.no_truncation()
        self.tokenizer.no_padding()
        self.prompt = prompt or ""
        self.lower = lower

    def _clean(self, text: str) -> str:
        cleaned = self.prompt + text.strip()
        return cleaned.lower() if self.lower else cleaned

    def tokenize(self, texts: Sequence[str]) -> list[Tokenized]:
        encodings = self.tokenizer.encode_batch([self._clean(t) for t in texts])
        return [
            Tokenized(len(e.ids), e.ids, _SpanMaker(self, text, e)) for text, e in zip(texts, encodings, strict=True)
        ]


class _SpanMaker:
    """Content-token offsets of one encoding, mapped back to the record's own text."""

    def __init__(self, counter: FastTokenCounter, text: str, encoding: Any) -> None:
        self.counter, self.text, self.encoding = counter, text, encoding

    def __call__(self) -> np.ndarray:
        counter, text, encoding = self.counter, self.text, self.encoding
        lead = len(text) - len(text.lstrip())
        stripped = text.strip()
        if counter.lower and len(stripped.lower()) != len(stripped):
            # Lower-casing changed the length (a few Unicode letters): offsets from the text as
            # written, which tokenizes to the same pieces where lengths agree.
            encoding = counter.tokenizer.encode(counter.prompt + stripped)
        plen = len(counter.prompt)
        spans = [
            (start - plen + lead, end - plen + lead)
            for (start, end), special in zip(encoding.offsets, encoding.special_tokens_mask, strict=True)
            if not special and start >= plen and end > start
        ]
        return np.array(spans, dtype=np.int64).reshape(-1, 2)
