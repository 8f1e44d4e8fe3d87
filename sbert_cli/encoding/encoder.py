"""The encoder: tokenizer + transformer + pooling + normalization, ours rather than a wrapper.

`prepare` tokenizes a window, sorts it by length and pads token-budget batches (CPU side, in the
background thread of `WindowEncoder.encode_windows`; the Rust tokenizer releases the GIL);
`run` puts the batches through the transformer, pooling and normalization.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from sbert_cli.encoding.batching import pad_rows, plan_batches
from sbert_cli.encoding.devices import (
    DEFAULT_CPU_BATCH_TOKENS,
    DEFAULT_GPU_BATCH_TOKENS,
    resolve_backend,
    resolve_device,
    resolve_dtype,
    torch_dtype,
)
from sbert_cli.encoding.gpu import ResultSink
from sbert_cli.encoding.model import ModelSpec, load_spec
from sbert_cli.encoding.modules import SentenceHead, apply_prompt, excluded_prompt_tokens
from sbert_cli.encoding.windows import Batch, EncodedWindow, PreparedWindow, WindowEncoder
from sbert_cli.errors import SbertError
from sbert_cli.store.manifest import ModelRecord

log = logging.getLogger("sbert")


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """Silence transformers' warnings and download bars while loading, then put them back:
    the library never changes process-wide logging for longer than a call."""
    from transformers.utils import logging as hf_logging

    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """torch's intra-op thread count for the duration of a block, then the previous one."""
    import torch

    previous = torch.get_num_threads()
    if threads and threads != previous:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        if torch.get_num_threads() != previous:
            torch.set_num_threads(previous)


def without_pooler(model):
    """The model without BERT's pooler (a dense + tanh layer on [CLS]): sentence-transformers
    never reads its output, and it cost a GEMM and a tanh per batch."""
    if getattr(model, "pooler", None) is not None:
        model.pooler = None
    return model


class Encoder(WindowEncoder):
    """Turn texts into sentence embeddings, as the model's sentence-transformers config asks.

    >>> Encoder().encode(["A man is eating food."]).shape
    (1, 384)
    """

    def __init__(
        self,
        model: str | None = None,
        *,
        device: str = "auto",
        dtype: str = "auto",
        pooling: str | None = None,
        normalize: bool | None = None,
        max_seq_length: int | None = None,
        batch_tokens: int | None = None,
        max_batch_size: int = 512,
        threads: int | None = None,
        backend: str = "auto",
        spec: ModelSpec | None = None,
    ) -> None:
        self.spec = spec or load_spec(model, pooling=pooling, normalize=normalize, max_seq_length=max_seq_length)
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype, self.device)
        if self.device == "cpu" and self.dtype == "fp16":
            log.warning("fp16 on CPU is slow and imprecise; bf16 or fp32 are better choices")
        self.threads = threads  # torch's intra-op threads while this encoder runs; None: torch's own
        self.batch_tokens = batch_tokens or (
            DEFAULT_GPU_BATCH_TOKENS if self.device.startswith("cuda") else DEFAULT_CPU_BATCH_TOKENS
        )
        self.max_batch_size = max_batch_size
        self.backend = resolve_backend(backend, self.device, self.dtype)
        self.model = None
        self._runtime = None  # ONNX Runtime or OpenVINO: numpy ids and mask in, numpy token vectors out
        with quiet_transformers():
            self._load()
        # modules.json after the transformer (pooling, Dense, Normalize); prompt tokens left out of
        # pooling when the model's Pooling config says include_prompt false. Measured before the
        # truncation below is set: calling the tokenizer resets its backend's truncation.
        self.head = SentenceHead(self.spec, self.device)
        self.prompt_length = excluded_prompt_tokens(self.tokenizer, self.spec)
        self.pad_id = self.tokenizer.pad_token_id or 0
        # A copy of the fast tokenizer's backend, the encoder's own: any call of the transformers
        # tokenizer in this process (a test, a training collator) resets its backend's truncation,
        # and the model must never see more than max_seq_length tokens.
        backend = getattr(self.tokenizer, "backend_tokenizer", None)
        self._fast_tokenizer = None if backend is None else type(backend).from_str(backend.to_str())
        if self._fast_tokenizer is not None:
            self._fast_tokenizer.enable_truncation(max_length=self.spec.max_seq_length)
            self._fast_tokenizer.no_padding()

    def _load(self) -> None:
        from transformers import AutoModel, AutoTokenizer

        try:
            self.tokenizer = AutoTokenizer.from_pretrained(self.spec.path)
            if self.backend in ("onnx", "openvino"):
                self._runtime = self._load_runtime()
            else:
                model_obj = AutoModel.from_pretrained(self.spec.path, dtype=torch_dtype(self.dtype))
                self.model = without_pooler(model_obj).to(self.device).eval()
        except (OSError, ValueError) as exc:
            raise SbertError(f"{self.spec.name}: could not load the model ({exc})") from exc

    def _load_runtime(self):
        """The exported graph (once per model, cached) in ONNX Runtime or compiled by OpenVINO."""
        import torch
        from transformers import AutoModel

        from sbert_cli.encoding import onnx_backend

        def load_fp32(**kwargs):
            return without_pooler(AutoModel.from_pretrained(self.spec.path, dtype=torch.float32, **kwargs))

        threads = self.threads or torch.get_num_threads()
        if self.backend == "openvino":
            from sbert_cli.encoding import openvino_backend

            graph = openvino_backend.ensure_graph(self.spec.fingerprint, lambda: load_fp32(attn_implementation="eager"))
            return openvino_backend.OpenVinoTransformer(graph, self.dtype, threads)
        graph = onnx_backend.ensure_graph(self.spec.fingerprint, self.dtype, load_fp32)
        return onnx_backend.OnnxTransformer(graph, threads)

    @property
    def dim(self) -> int:
        return self.spec.dim

    def describe(self) -> ModelRecord:
        """What a store records about how its vectors were made."""
        return self.spec.record(self.dtype, self.backend)

    def hidden_states(self, input_ids, attention_mask):
        """Token vectors from the transformer (torch tensors in, a torch tensor out)."""
        import torch

        if self._runtime is not None:
            return torch.from_numpy(self._runtime(input_ids.numpy(), attention_mask.numpy()))
        return self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state

    # -- tokenization ---------------------------------------------------------------------------
    def tokenize(self, texts: Sequence[str]) -> tuple[list[list[int]], int]:
        """Token ids per text (truncated to max_seq_length) and how many texts were truncated."""
        ids, truncated = self._tokenize(texts)
        return ids, int(truncated.sum())

    def _tokenize(self, texts: Sequence[str]) -> tuple[list[list[int]], np.ndarray]:
        # sentence-transformers strips surrounding whitespace and lower-cases when configured.
        cleaned = apply_prompt([t.strip() for t in texts], self.spec.prompt)
        if self.spec.do_lower_case:
            cleaned = [t.lower() for t in cleaned]
        if self._fast_tokenizer is not None:
            encodings = self._fast_tokenizer.encode_batch(cleaned)
            return [e.ids for e in encodings], np.array([bool(e.overflowing) for e in encodings], dtype=bool)
        ids = self.tokenizer(cleaned, truncation=True, max_length=self.spec.max_seq_length)["input_ids"]
        full = self.tokenizer(cleaned, truncation=False)["input_ids"]
        return ids, np.array([len(b) > len(a) for a, b in zip(ids, full, strict=True)], dtype=bool)

    def token_counter(self):
        """Counts tokens as `prepare` makes them, untruncated, with offsets (chunking/)."""
        if self._fast_tokenizer is None:
            return None
        from sbert_cli.chunking import FastTokenCounter

        return FastTokenCounter(self._fast_tokenizer, self.spec.prompt, self.spec.do_lower_case)

    def _window_ids(self, distinct: list[str], firsts: list[int], given: Sequence[Any] | None):
        """Token ids of the window's distinct texts: the chunking stage's where it made them."""
        if given is None:
            return self._tokenize(distinct)
        ids = [given[p] for p in firsts]
        truncated = np.zeros(len(distinct), dtype=bool)
        missing = [i for i, x in enumerate(ids) if x is None]
        if missing:
            made, cut = self._tokenize([distinct[i] for i in missing])
            for i, x, c in zip(missing, made, cut, strict=True):
                ids[i], truncated[i] = x, c
        return ids, truncated

    def prepare(self, texts: Sequence[str], payload: Any = None, ids: Sequence[Any] | None = None) -> PreparedWindow:
        """Tokenize a window (where `ids` does not already hold a text's), sort it by length and
        pad each token-budget batch (CPU side only).

        Identical texts in a window are encoded once (corpora repeat headings, boilerplate,
        retweets): `inverse` maps every text back to its distinct row.
        """
        import torch

        first_seen: dict[str, int] = {}
        firsts: list[int] = []
        codes = []
        for position, text in enumerate(texts):
            code = first_seen.setdefault(text, len(first_seen))
            if code == len(firsts):
                firsts.append(position)
            codes.append(code)
        inverse = np.array(codes, dtype=np.int64)
        distinct = list(first_seen)
        ids, truncated = self._window_ids(distinct, firsts, ids)
        lengths = np.fromiter((len(x) for x in ids), dtype=np.int64, count=len(ids))
        pin = self.device.startswith("cuda")
        batches = []
        for positions in plan_batches(lengths, self.batch_tokens, self.max_batch_size):
            input_ids, mask = pad_rows(ids, lengths, positions, self.pad_id)
            t_ids, t_mask = torch.from_numpy(input_ids), torch.from_numpy(mask)
            if pin:
                t_ids, t_mask = t_ids.pin_memory(), t_mask.pin_memory()
            batches.append(Batch(positions, t_ids, t_mask))
        return PreparedWindow(
            payload,
            len(distinct),
            batches,
            tokens=int(lengths[inverse].sum()),
            truncated=int(truncated[inverse].sum()),
            inverse=inverse if len(distinct) < len(texts) else None,
        )

    # -- model ------------------------------------------------------------------------------------
    def run(self, window: PreparedWindow) -> EncodedWindow:
        """Run the model over a prepared window; embeddings come back in input order."""
        import torch

        out = np.empty((window.size, self.dim), dtype=np.float32)
        sink = ResultSink(out, self.device)  # on a GPU: copied back while the next batch runs
        with torch.inference_mode(), torch_threads(self.threads):
            for batch in window.batches:
                input_ids = batch.input_ids.to(self.device, non_blocking=True)
                mask = batch.attention_mask.to(self.device, non_blocking=True)
                hidden = self.hidden_states(input_ids, mask)
                vectors = self.head(hidden, mask, self.prompt_length)
                sink.put(batch.positions, vectors)
            sink.finish()
        if window.inverse is not None:
            out = out[window.inverse]
        return EncodedWindow(window.payload, out, window.tokens, window.truncated)
