"""The encoder: tokenizer + transformer + pooling + normalization, ours rather than a wrapper.

Work is split so the model never waits for Python: a background thread reads, tokenizes and
pads the next window (the Rust tokenizer releases the GIL) while the main thread runs the model
on the current one. Batches are cut by token budget from length-sorted windows; results come
back in input order.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from sbert_cli.batcher import plan_batches, windows
from sbert_cli.errors import InputError, SbertError
from sbert_cli.model import ModelSpec, load_spec
from sbert_cli.pooling import pool

log = logging.getLogger("sbert")

DTYPES = ("auto", "fp32", "bf16", "fp16", "int8")
BACKENDS = ("auto", "torch", "onnx")
# Padded tokens per batch. On CPU small batches win (measured on 500 paragraphs, 2 cores:
# 8192 -> 5.9 s, 4096 -> 4.5 s, 2048 -> 4.0 s, 1024 -> 3.9 s): the GEMMs are already
# big enough for two cores and attention grows with length. On a GPU big batches keep it busy.
DEFAULT_CPU_BATCH_TOKENS = 2048
DEFAULT_GPU_BATCH_TOKENS = 65536
DEFAULT_WINDOW = 2048


def cpu_has_native_bf16() -> bool:
    """True when the CPU does bf16 matrix math in hardware (AVX512-BF16 or AMX).

    Without it torch emulates bf16 and runs slower than fp32, so `--dtype auto` stays fp32.
    """
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool(flags & {"avx512_bf16", "amx_bf16"})
    except OSError:
        pass
    return False


def resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise InputError(f"--device {device}: no CUDA GPU is available on this machine")
    if device != "cpu" and not device.startswith("cuda"):
        raise InputError(f"--device {device}: choose auto, cpu, cuda or cuda:N")
    return device


def resolve_dtype(dtype: str, device: str) -> str:
    """`auto`: bf16 where the hardware computes it natively, fp16 on older GPUs, else fp32."""
    import torch

    if dtype not in DTYPES:
        raise InputError(f"--dtype {dtype}: choose from {', '.join(DTYPES)}")
    if dtype != "auto":
        return dtype
    if device.startswith("cuda"):
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "bf16" if cpu_has_native_bf16() else "fp32"


def resolve_backend(backend: str, device: str, dtype: str) -> str:
    """`auto`: ONNX Runtime for int8 (the only engine that runs it), torch for everything else.

    fp32 on this project's 2-core AVX2 CPU: torch 6.9 s, ONNX Runtime 7.6 s (7.9 s with its
    transformer fusions) for the same 800 paragraphs; both run the GEMMs at ~140 GFLOP/s, 73% of
    the cores' fp32 peak. `--backend onnx` stays available for CPUs where ONNX Runtime wins.
    """
    from sbert_cli import onnx_backend

    if backend not in BACKENDS:
        raise InputError(f"--backend {backend}: choose from {', '.join(BACKENDS)}")
    onnx_ok = device == "cpu" and dtype in ("fp32", "int8")
    if backend == "onnx" and not onnx_ok:
        raise InputError(f"--backend onnx runs fp32 or int8 on the CPU, not {dtype} on {device}")
    if dtype == "int8" and not onnx_ok:
        raise InputError("--dtype int8 runs on the CPU only (ONNX Runtime)")
    if backend == "torch" and dtype == "int8":
        raise InputError("--dtype int8 needs the onnx backend")
    if backend == "auto":
        backend = "onnx" if dtype == "int8" else "torch"
    if backend == "onnx" and not onnx_backend.available():
        raise InputError("--backend onnx needs the packages onnxruntime and onnx (pip install onnxruntime onnx)")
    return backend


def torch_dtype(dtype: str):
    import torch

    return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[dtype]


@dataclass
class Batch:
    positions: np.ndarray  # positions within the window, in batch order
    input_ids: Any  # torch.LongTensor (rows, longest)
    attention_mask: Any


@dataclass
class PreparedWindow:
    payload: Any
    size: int  # distinct texts, the rows the model computes
    batches: list[Batch]
    tokens: int  # over all texts of the window, duplicates included (what throughput counts)
    truncated: int
    inverse: np.ndarray | None = None  # text position -> distinct row, when the window had duplicates


@dataclass
class EncodedWindow:
    """One window's embeddings in input order, with what the summary counts."""

    payload: Any
    embeddings: np.ndarray
    tokens: int
    truncated: int


class Encoder:
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
        import torch
        import transformers
        from transformers import AutoModel, AutoTokenizer

        transformers.logging.set_verbosity_error()
        transformers.utils.logging.disable_progress_bar()
        self.spec = spec or load_spec(model, pooling=pooling, normalize=normalize, max_seq_length=max_seq_length)
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype, self.device)
        if self.device == "cpu" and self.dtype == "fp16":
            log.warning("fp16 on CPU is slow and imprecise; bf16 or fp32 are better choices")
        if threads:
            torch.set_num_threads(threads)
        self.batch_tokens = batch_tokens or (
            DEFAULT_GPU_BATCH_TOKENS if self.device.startswith("cuda") else DEFAULT_CPU_BATCH_TOKENS
        )
        self.max_batch_size = max_batch_size
        self.backend = resolve_backend(backend, self.device, self.dtype)
        self.model = None
        self._onnx = None
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(self.spec.path)
            if self.backend == "onnx":
                from sbert_cli import onnx_backend

                def load_fp32():
                    return AutoModel.from_pretrained(self.spec.path, dtype=torch.float32)

                graph = onnx_backend.ensure_graph(self.spec.fingerprint, self.dtype, load_fp32)
                self._onnx = onnx_backend.OnnxTransformer(graph, threads or torch.get_num_threads())
            else:
                model_obj = AutoModel.from_pretrained(self.spec.path, dtype=torch_dtype(self.dtype))
                self.model = model_obj.to(self.device).eval()
        except (OSError, ValueError) as exc:
            raise SbertError(f"{self.spec.name}: could not load the model ({exc})") from exc
        self.pad_id = self.tokenizer.pad_token_id or 0
        self._fast_tokenizer = getattr(self.tokenizer, "backend_tokenizer", None)
        if self._fast_tokenizer is not None:
            self._fast_tokenizer.enable_truncation(max_length=self.spec.max_seq_length)
            self._fast_tokenizer.no_padding()

    @property
    def dim(self) -> int:
        return self.spec.dim

    def describe(self) -> dict:
        """What a store records about how its vectors were made."""
        return {**self.spec.describe(), "dtype": self.dtype, "backend": self.backend}

    def hidden_states(self, input_ids, attention_mask):
        """Token vectors from the transformer (torch tensors in, a torch tensor out)."""
        import torch

        if self._onnx is not None:
            return torch.from_numpy(self._onnx(input_ids.numpy(), attention_mask.numpy()))
        return self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state

    # -- tokenization ---------------------------------------------------------------------------
    def tokenize(self, texts: Sequence[str]) -> tuple[list[list[int]], int]:
        """Token ids per text (truncated to max_seq_length) and how many texts were truncated."""
        ids, truncated = self._tokenize(texts)
        return ids, int(truncated.sum())

    def _tokenize(self, texts: Sequence[str]) -> tuple[list[list[int]], np.ndarray]:
        # sentence-transformers strips surrounding whitespace and lower-cases when configured.
        cleaned = [t.strip() for t in texts]
        if self.spec.do_lower_case:
            cleaned = [t.lower() for t in cleaned]
        if self._fast_tokenizer is not None:
            encodings = self._fast_tokenizer.encode_batch(cleaned)
            return [e.ids for e in encodings], np.array([bool(e.overflowing) for e in encodings], dtype=bool)
        ids = self.tokenizer(cleaned, truncation=True, max_length=self.spec.max_seq_length)["input_ids"]
        full = self.tokenizer(cleaned, truncation=False)["input_ids"]
        return ids, np.array([len(b) > len(a) for a, b in zip(ids, full, strict=True)], dtype=bool)

    def prepare(self, texts: Sequence[str], payload: Any = None) -> PreparedWindow:
        """Tokenize a window, sort it by length and pad each token-budget batch (CPU side only).

        Identical texts in a window are encoded once (corpora repeat headings, boilerplate,
        retweets): `inverse` maps every text back to its distinct row.
        """
        import torch

        first_seen: dict[str, int] = {}
        inverse = np.fromiter(
            (first_seen.setdefault(t, len(first_seen)) for t in texts), dtype=np.int64, count=len(texts)
        )
        distinct = list(first_seen)
        ids, truncated = self._tokenize(distinct)
        lengths = np.fromiter((len(x) for x in ids), dtype=np.int64, count=len(ids))
        pin = self.device.startswith("cuda")
        batches = []
        for positions in plan_batches(lengths, self.batch_tokens, self.max_batch_size):
            longest = int(lengths[positions].max()) if len(positions) else 0
            input_ids = np.full((len(positions), longest), self.pad_id, dtype=np.int64)
            mask = np.zeros((len(positions), longest), dtype=np.int64)
            for row, pos in enumerate(positions):
                n = lengths[pos]
                input_ids[row, :n] = ids[pos]
                mask[row, :n] = 1
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
        with torch.inference_mode():
            for batch in window.batches:
                input_ids = batch.input_ids.to(self.device, non_blocking=True)
                mask = batch.attention_mask.to(self.device, non_blocking=True)
                hidden = self.hidden_states(input_ids, mask)
                vectors = pool(hidden, mask, self.spec.pooling)
                if self.spec.normalize:
                    vectors = torch.nn.functional.normalize(vectors, p=2, dim=1)
                out[batch.positions] = vectors.cpu().numpy()
        if window.inverse is not None:
            out = out[window.inverse]
        return EncodedWindow(window.payload, out, window.tokens, window.truncated)

    def encode_windows(self, items: Iterable[tuple[Any, Sequence[str]]], prefetch: int = 2) -> Iterator[EncodedWindow]:
        """Encode (payload, texts) windows, preparing the next ones in a background thread.

        Whatever the source raises (a bad input line, say) is re-raised here, in the caller's
        thread, after the windows before it were yielded.
        """
        ready: queue.Queue = queue.Queue(maxsize=prefetch)
        stop = threading.Event()
        done = object()

        def produce() -> None:
            try:
                for payload, texts in items:
                    if stop.is_set():
                        return
                    ready.put(self.prepare(texts, payload))
                ready.put(done)
            except BaseException as exc:  # handed to the consumer, which re-raises it
                ready.put(exc)

        worker = threading.Thread(target=produce, name="sbert-tokenize", daemon=True)
        worker.start()
        try:
            while True:
                item = ready.get()
                if item is done:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield self.run(item)
        finally:
            stop.set()
            # Drain so a producer blocked on put() sees the stop flag and exits.
            while worker.is_alive():
                try:
                    ready.get(timeout=0.05)
                except queue.Empty:
                    pass

    def encode(self, texts: Sequence[str], window: int = DEFAULT_WINDOW) -> np.ndarray:
        """Embeddings (len(texts), dim) as float32, in the order of `texts`."""
        if isinstance(texts, str):
            texts = [texts]
        if not texts:
            return np.empty((0, self.dim), dtype=np.float32)
        parts = [w.embeddings for w in self.encode_windows((None, chunk) for chunk in windows(texts, window))]
        return np.concatenate(parts)


_CACHE: dict[tuple, Encoder] = {}


def cached_encoder(
    model: str | None = None,
    *,
    device: str = "auto",
    dtype: str = "auto",
    pooling: str | None = None,
    normalize: bool | None = None,
    max_seq_length: int | None = None,
    backend: str = "auto",
) -> Encoder:
    """One Encoder per model settings per process: commands called from Python (or tests) in one
    process share the loaded weights instead of loading them again."""
    # Keyed by what the settings resolve to, so "the default" and "all-MiniLM-L6-v2, mean, 256"
    # share one loaded model.
    spec = load_spec(model, pooling=pooling, normalize=normalize, max_seq_length=max_seq_length)
    resolved_device = resolve_device(device)
    resolved_dtype = resolve_dtype(dtype, resolved_device)
    resolved_backend = resolve_backend(backend, resolved_device, resolved_dtype)
    key = (spec.fingerprint, spec.pooling, spec.normalize, spec.max_seq_length)
    key += (resolved_device, resolved_dtype, resolved_backend)
    if key not in _CACHE:
        _CACHE[key] = Encoder(spec=spec, device=resolved_device, dtype=resolved_dtype, backend=resolved_backend)
    return _CACHE[key]


def encoder_for_store(model: dict, device: str = "auto") -> Encoder:
    """The encoder that made a store (from its manifest's `model`), refusing a changed model."""
    if model["dtype"] == "int8":
        device = "cpu"  # int8 vectors come from ONNX Runtime on the CPU, wherever the store is searched
    encoder = cached_encoder(
        model["name"],
        device=device,
        dtype=model["dtype"],
        pooling=",".join(model["pooling"]),
        normalize=model["normalize"],
        max_seq_length=model["max_seq_length"],
    )
    if encoder.spec.fingerprint != model["fingerprint"]:
        raise InputError(
            f"model {model['name']!r} on this machine (fingerprint {encoder.spec.fingerprint}) is not the one "
            f"that made the store ({model['fingerprint']}); pass the original model"
        )
    return encoder
