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
    """A Hugging Face fast tokenizer (the `tokenizers` backend): the encoder's own instance, which
    truncates at max_seq_length, so a text that fits is tokenized exactly as the encoder would
    and only once; a text that overflows is tokenized again, whole, by a copy that does not
    truncate (made on first need)."""

    def __init__(self, backend: Any, prompt: str | None, lower: bool) -> None:
        self.backend = backend
        self._whole: Any = None
        self.prompt = prompt or ""
        self.lower = lower

    @property
    def whole(self) -> Any:
        if self._whole is None:
            from tokenizers import Tokenizer

            self._whole = Tokenizer.from_str(self.backend.to_str())
            self._whole.no_truncation()
            self._whole.no_padding()
        return self._whole

    def _clean(self, text: str) -> str:
        cleaned = self.prompt + text.strip()
        return cleaned.lower() if self.lower else cleaned

    def tokenize(self, texts: Sequence[str]) -> list[Tokenized]:
        cleaned = [self._clean(t) for t in texts]
        encodings = self.backend.encode_batch(cleaned)
        long = [i for i, e in enumerate(encodings) if e.overflowing]
        if long:
            for i, e in zip(long, self.whole.encode_batch([cleaned[i] for i in long]), strict=True):
                encodings[i] = e
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
            encoding = counter.whole.encode(counter.prompt + stripped)
        plen = len(counter.prompt)
        spans = [
            (start - plen + lead, end - plen + lead)
            for (start, end), special in zip(encoding.offsets, encoding.special_tokens_mask, strict=True)
            if not special and start >= plen and end > start
        ]
        return np.array(spans, dtype=np.int64).reshape(-1, 2)
