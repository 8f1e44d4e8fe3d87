"""The query encoder `sbert search` starts in about a second: the model's cached ONNX graph run
by ONNX Runtime, the tokenizer read from tokenizer.json, pooling and normalization in numpy.

Neither torch (2.5 s to import on 2 cores) nor transformers is imported. The graph is the one
`--backend onnx` runs, exported once per model from the same weights (`prepare_query_graph`,
which `sbert index` calls); until it exists, or where this path does not apply (a GPU, Dense
modules, no tokenizer.json), search loads the full encoder as before.

Precision: fp32 and int8 stores get queries from the very graph (fp32 or int8) their dtype
names. A bf16 or fp16 store gets fp32 queries: the same model at higher precision, whose
cosines to the store's vectors differ from bf16 queries' by rounding only (benchmarks/README.md).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from sbert_cli.encoding.batching import pad_rows, plan_batches
from sbert_cli.encoding.model import ModelSpec, load_spec
from sbert_cli.encoding.modules import apply_prompt
from sbert_cli.encoding.windows import Batch, EncodedWindow, PreparedWindow, WindowEncoder
from sbert_cli.store.manifest import ModelRecord

log = logging.getLogger("sbert")
# Padded tokens a batch of queries: queries sorted by length in small batches pad little. 16
# sentence queries (median 21 tokens) on 2 cores, all-MiniLM-L6-v2: one batch 9.5 ms wall and
# 17.5 CPU ms a query; batches of 128-192 tokens 5.7-5.9 ms and 10.0-10.2 (64 or 256: 11-12 CPU ms).
QUERY_BATCH_TOKENS = 128


def graph_variant(dtype: str) -> str:
    return "int8" if dtype == "int8" else "fp32"


def _cpu_only(device: str) -> bool:
    # Without importing torch: an NVIDIA driver means `auto` would pick the GPU.
    return device == "cpu" or (device == "auto" and not Path("/proc/driver/nvidia").exists())


def fast_path_blocker(record: ModelRecord, spec: ModelSpec, device: str) -> str | None:
    """Why the fast path cannot serve this store's queries, or None when it can."""
    from importlib.util import find_spec

    from sbert_cli.encoding import onnx_backend

    if not _cpu_only(device):
        return "a GPU is used"
    if spec.modules:
        return "the model has Dense modules"
    if not (Path(spec.path) / "tokenizer.json").is_file():
        return "the model has no tokenizer.json"
    if find_spec("onnxruntime") is None:
        return "onnxruntime is not installed"
    if not onnx_backend.graph_path(spec.fingerprint, graph_variant(record.dtype)).is_file():
        return "no cached ONNX graph yet (`sbert index` prepares it)"
    return None


def fast_query_encoder(record: ModelRecord, device: str = "auto") -> QueryEncoder | None:
    """The fast encoder for a store's queries, or None (with the reason logged under -v)."""
    spec = load_spec(
        record.name,
        ",".join(record.pooling),
        record.normalize,
        record.max_seq_length,
        prompt=record.prompt or "",
    )
    reason = fast_path_blocker(record, spec, device)
    if reason is not None:
        log.debug("query encoder: the full model (%s)", reason)
        return None
    return QueryEncoder(spec, record.dtype)


def prepare_query_graph(record: ModelRecord) -> Path | None:
    """Export (once per model) the ONNX graph fast queries need; None where they cannot use one."""
    from sbert_cli.encoding import onnx_backend

    spec = load_spec(record.name, ",".join(record.pooling), record.normalize, record.max_seq_length)
    if spec.modules or not (Path(spec.path) / "tokenizer.json").is_file() or not onnx_backend.available():
        return None
    path = onnx_backend.graph_path(spec.fingerprint, graph_variant(record.dtype))
    if path.is_file():
        return path

    def load_fp32():
        import torch
        from transformers import AutoModel

        from sbert_cli.encoding.encoder import quiet_transformers

        with quiet_transformers():
            return AutoModel.from_pretrained(spec.path, dtype=torch.float32)

    return onnx_backend.ensure_graph(spec.fingerprint, graph_variant(record.dtype), load_fp32)


class QueryEncoder(WindowEncoder):
    """tokenizer.json + ONNX Runtime + numpy pooling: vectors as `Encoder` makes them (module docstring)."""

    def __init__(self, spec: ModelSpec, dtype: str) -> None:
        from tokenizers import Tokenizer

        from sbert_cli.encoding import onnx_backend

        self.spec = spec
        self.dtype = dtype
        self.dim = spec.dim
        self.batch_tokens = QUERY_BATCH_TOKENS
        self.threads = None
        self.tokenizer = Tokenizer.from_file(str(Path(spec.path) / "tokenizer.json"))
        # Pad positions are masked, so the pad id changes no vector; the file's own is used anyway.
        self.pad_id = (self.tokenizer.padding or {}).get("pad_id", 0)
        self.tokenizer.enable_truncation(max_length=spec.max_seq_length)
        self.tokenizer.no_padding()  # a tokenizer.json may pad to a fixed length: batches pad themselves
        self.prompt_length = self._prompt_tokens()
        # Queries come one short run at a time (a search, a server's request): ONNX Runtime's
        # threads spinning after each run doubled the CPU a query costs (all-MiniLM-L6-v2, 2 cores
        # under load: 23 -> 12 ms per query) and took the core from whoever needed it next.
        path = onnx_backend.graph_path(spec.fingerprint, graph_variant(dtype))
        self.graph = onnx_backend.OnnxTransformer(path, spin=False)
        log.debug("query encoder: ONNX Runtime, cached %s graph, no torch", graph_variant(dtype))

    def _prompt_tokens(self) -> int:
        # As modules.excluded_prompt_tokens: the prompt's tokens bar a trailing special one.
        if not self.spec.prompt or self.spec.include_prompt:
            return 0
        prompt = self.spec.prompt.lower() if self.spec.do_lower_case else self.spec.prompt
        ids = self.tokenizer.encode(prompt).ids
        special = {i for i, token in self.tokenizer.get_added_tokens_decoder().items() if token.special}
        return len(ids) - 1 if ids and ids[-1] in special else len(ids)

    def describe(self) -> ModelRecord:
        return self.spec.record(self.dtype, "onnx")

    def prepare(self, texts: Sequence[str], payload: Any = None) -> PreparedWindow:
        cleaned = apply_prompt([t.strip() for t in texts], self.spec.prompt)
        if self.spec.do_lower_case:
            cleaned = [t.lower() for t in cleaned]
        encodings = self.tokenizer.encode_batch(cleaned)
        ids = [e.ids for e in encodings]
        lengths = np.fromiter((len(x) for x in ids), dtype=np.int64, count=len(ids))
        batches = [
            Batch(positions, *pad_rows(ids, lengths, positions, self.pad_id))
            for positions in plan_batches(lengths, self.batch_tokens, 512)
        ]
        truncated = sum(bool(e.overflowing) for e in encodings)
        return PreparedWindow(payload, len(texts), batches, tokens=int(lengths.sum()), truncated=truncated)

    def run(self, window: PreparedWindow) -> EncodedWindow:
        out = np.empty((window.size, self.dim), dtype=np.float32)
        for batch in window.batches:
            hidden = self.graph(batch.input_ids, batch.attention_mask)
            vectors = pool_numpy(hidden, batch.attention_mask, self.spec.pooling, self.prompt_length)
            if self.spec.normalize:
                vectors = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
            out[batch.positions] = vectors
        return EncodedWindow(window.payload, out, window.tokens, window.truncated)


def pool_numpy(tokens: np.ndarray, attention_mask: np.ndarray, modes: Sequence[str], prompt_length: int = 0):
    """`pooling.pool` in numpy, mode for mode (see there for the why of each)."""
    tokens = tokens.astype(np.float32, copy=False)
    original, mask = attention_mask, attention_mask
    rows, width = np.arange(tokens.shape[0]), tokens.shape[1]
    if prompt_length:
        positions = np.arange(width)[None, :]
        mask = np.where(positions < (original.argmax(1) + prompt_length)[:, None], 0, original)
    weights = mask[..., None].astype(np.float32)
    outputs = []
    for mode in modes:
        if mode == "cls":
            outputs.append(tokens[rows, mask.argmax(1)])
        elif mode == "max":
            outputs.append(np.where(weights == 0, -np.inf, tokens).max(1))
        elif mode in ("mean", "mean_sqrt_len_tokens"):
            counts = np.maximum(weights.sum(1), 1e-9)
            outputs.append((tokens * weights).sum(1) / (counts if mode == "mean" else np.sqrt(counts)))
        elif mode == "weightedmean":
            position = np.arange(1, width + 1, dtype=np.float32)[None, :, None]
            w = weights * (position - original.argmax(1)[:, None, None])
            outputs.append((tokens * w).sum(1) / np.maximum(w.sum(1), 1e-9))
        elif mode == "lasttoken":
            flipped = mask[:, ::-1]
            from_end = np.where(flipped.max(1) == 0, width - 1, flipped.argmax(1))
            outputs.append((tokens * weights)[rows, width - from_end - 1])
        else:
            raise ValueError(f"unknown pooling mode {mode!r}")
    return np.concatenate(outputs, axis=-1)
