"""POST /v1/embeddings: OpenAI's request and response shape over the store's model.

Vectors are `sbert encode`'s: the encoder comes from the same loader, with the store's model,
pooling, normalization, dtype and sequence length. The store's prompt is NOT prepended unless
asked: `input_type` names a prompt of the model (as `sbert encode --prompt-name NAME`), or is
"store" for the prompt the store's rows were encoded with (so the vectors compare with them).
"""

from __future__ import annotations

import asyncio
import base64
import logging
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import orjson

from sbert_cli.encoding.loader import load_encoder, recorded_engine, settings_for_record
from sbert_cli.encoding.windows import WindowEncoder
from sbert_cli.errors import InputError
from sbert_cli.serve.config import ApiError, ServeOptions
from sbert_cli.store.manifest import ModelRecord

log = logging.getLogger("sbert")
STORE_PROMPT = "store"
# A group holds at most the texts in flight (16 clients x 8 texts: 128), which `sbert encode`'s
# 2,048-token batches pad to the longest of a few dozen texts: 1.48x the real tokens, against
# 1.10x for a file's 1,024 texts sorted by length. On the CPU a token costs the same from a batch
# of ~256 tokens up (all-MiniLM-L6-v2, OpenVINO bf16, 2-core EPYC), so smaller batches of
# nearer lengths cost nothing and pad 1.14x; torch too spent 25% (fp32) and 17% (bf16) less CPU on
# such groups than in 2,048-token batches. (A GPU wants its large batches: left as loaded.)
CPU_GROUP_BATCH_TOKENS = 512
_FIELDS = {"input", "model", "encoding_format", "dimensions", "input_type", "user"}


@dataclass(frozen=True)
class EmbeddingRequest:
    texts: list[str]
    input_type: str | None
    base64: bool


def parse_request(body: Any, record: ModelRecord, options: ServeOptions) -> EmbeddingRequest:
    """The request checked field by field; ApiError (422, or 404 for another model) otherwise."""
    if not isinstance(body, dict):
        raise ApiError(422, "the body must be a JSON object")
    unknown = sorted(set(body) - _FIELDS)
    if unknown:
        raise ApiError(422, f"unknown field(s): {', '.join(unknown)} (known: {', '.join(sorted(_FIELDS))})")
    texts = _texts(body.get("input"), options)
    model = body.get("model")
    if model is not None and model not in served_names(record):
        raise ApiError(
            404, f"model {model!r}: this server serves {record.name!r} (the store's model)", code="model_not_found"
        )
    fmt = body.get("encoding_format") or "float"
    if fmt not in ("float", "base64"):
        raise ApiError(422, f"encoding_format {fmt!r}: choose float or base64")
    dimensions = body.get("dimensions")
    if dimensions is not None and dimensions != record.dim:
        raise ApiError(
            422,
            f"dimensions {dimensions!r}: {record.name} makes {record.dim}-dimensional vectors and cannot shorten "
            "them (leave dimensions out)",
        )
    input_type = body.get("input_type")
    if input_type is not None and (not isinstance(input_type, str) or not input_type):
        raise ApiError(422, "input_type: a prompt name of the model, or 'store'")
    return EmbeddingRequest(texts, input_type, fmt == "base64")


def served_names(record: ModelRecord) -> set[str]:
    """What a client may call the model: its name, its last path part, or its fingerprint."""
    return {record.name, record.name.rstrip("/").rsplit("/", 1)[-1], record.fingerprint}


def _texts(value: Any, options: ServeOptions) -> list[str]:
    texts = [value] if isinstance(value, str) else value
    if not isinstance(texts, list) or not texts:
        raise ApiError(422, "input: a string or a non-empty list of strings")
    if len(texts) > options.max_batch:
        raise ApiError(422, f"input: {len(texts):,} texts; at most {options.max_batch:,} per request")
    for n, text in enumerate(texts):
        if not isinstance(text, str):
            raise ApiError(422, f"input[{n}]: not a string (token arrays are not supported; send texts)")
        if not text.strip():
            raise ApiError(422, f"input[{n}]: empty text")
        if len(text) > options.max_text_chars:
            raise ApiError(422, f"input[{n}]: {len(text):,} characters; at most {options.max_text_chars:,} per text")
    return texts


class Embedders:
    """One encoder per prompt choice, loaded on first use in a thread (never in the event loop)."""

    def __init__(self, record: ModelRecord, device: str) -> None:
        self.record = record
        self.device = device
        self._loaded: dict[str | None, WindowEncoder] = {}
        self._lock = asyncio.Lock()

    def engine(self) -> dict | None:
        """What runs /v1/embeddings (None until the model is loaded): the store's engine, as
        `sbert encode` recorded it (backend, dtype), on this device."""
        if not self._loaded:
            return None
        encoder = next(iter(self._loaded.values()))
        record = encoder.describe()
        threads = getattr(encoder, "threads", None)
        return {
            "backend": record.backend,
            "dtype": record.dtype,
            "device": str(getattr(encoder, "device", "cpu")),
            "threads": threads or _torch_threads(),
        }

    def loaded(self, input_type: str | None) -> WindowEncoder:
        return self._loaded[input_type]

    async def get(self, input_type: str | None) -> WindowEncoder:
        if input_type not in self._loaded:
            async with self._lock:
                if input_type not in self._loaded:
                    try:
                        encoder = await asyncio.to_thread(self._load, input_type)
                    except InputError as exc:
                        raise ApiError(422, f"input_type {input_type!r}: {exc}") from None
                    self._loaded[input_type] = encoder
        return self._loaded[input_type]

    def _load(self, input_type: str | None) -> WindowEncoder:
        settings = recorded_engine(settings_for_record(self.record, self.device), self.record)  # the store's prompt
        if input_type is None:
            settings = replace(settings, prompt="")
        elif input_type != STORE_PROMPT:
            settings = replace(settings, prompt=None, prompt_name=input_type)
        encoder = load_encoder(settings)
        found = encoder.describe().fingerprint
        if found != self.record.fingerprint:
            raise InputError(f"the model on this machine ({found}) is not the one that made the store")
        if (
            str(getattr(encoder, "device", "cpu")) == "cpu"
            and getattr(encoder, "batch_tokens", 0) > CPU_GROUP_BATCH_TOKENS
        ):
            encoder.batch_tokens = CPU_GROUP_BATCH_TOKENS
        log.debug("embeddings: encoder for input_type %s loaded", input_type)
        return encoder


def _torch_threads() -> int | None:
    import sys

    torch = sys.modules.get("torch")  # only where the encoder imported it
    return torch.get_num_threads() if torch is not None else None


def embed_group(encoder: WindowEncoder, payloads: list[list[str]]) -> list[tuple[np.ndarray, int]]:
    """(vectors, tokens) per request, from one model call over all their texts (engine thread)."""
    texts = [t for texts in payloads for t in texts]
    if len(payloads) == 1:
        encoded = list(encoder.encode_windows([(None, texts)]))[0]
        return [(encoded.embeddings, encoded.tokens)]
    tokens = [encoder.prepare(texts).tokens for texts in payloads]
    vectors = encoder.encode(texts)
    bounds = np.cumsum([len(t) for t in payloads])[:-1]
    return list(zip(np.split(vectors, bounds), tokens, strict=True))


def response(record: ModelRecord, vectors: np.ndarray, tokens: int, as_base64: bool) -> bytes:
    """The response body. Floats are written from the float32 vectors as the shortest text that
    reads back to the same float32 (orjson), so a client's float32 equals `sbert encode`'s."""
    vectors = np.asarray(vectors, dtype="<f4")
    data = [
        {
            "object": "embedding",
            "index": n,
            "embedding": base64.b64encode(v.tobytes()).decode("ascii") if as_base64 else v,
        }
        for n, v in enumerate(vectors)
    ]
    body = {
        "object": "list",
        "data": data,
        "model": record.name,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }
    return orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY)


def estimated_tokens(texts: list[str]) -> int:
    """A token count for the batching budget, before tokenizing: ~4 characters a token."""
    return sum(len(t) // 4 + 2 for t in texts)
