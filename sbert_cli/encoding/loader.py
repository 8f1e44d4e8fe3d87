"""Which encoder a command gets: one per model settings per process, or a registered stand-in.

Commands never construct `Encoder` themselves: they ask `load_encoder` (or `encoder_for_store`),
which loads a model once per process and settings (commands called from Python, or tests, share
the weights) and which lets a scheme such as `hash:` be served by another factory: the test
suite registers a deterministic hash encoder that way, so plumbing tests load no model.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from sbert_cli.encoding.settings import ModelSettings
from sbert_cli.encoding.windows import WindowEncoder
from sbert_cli.errors import InputError
from sbert_cli.store.manifest import COMPAT_KEYS, ModelRecord

log = logging.getLogger("sbert")
__all__ = ["ModelSettings", "load_encoder", "describe_model", "encoder_for_store"]  # ModelSettings: re-exported


EncoderFactory = Callable[[ModelSettings], WindowEncoder]
# scheme -> factory, for model names written "scheme:rest" (see module docstring).
ENCODER_FACTORIES: dict[str, EncoderFactory] = {}
_CACHE: dict[tuple, WindowEncoder] = {}


def _factory_for(settings: ModelSettings) -> EncoderFactory | None:
    if settings.model and ":" in settings.model:
        return ENCODER_FACTORIES.get(settings.model.split(":", 1)[0])
    return None


def _resolved_key(settings: ModelSettings) -> tuple:
    """Settings as they resolve, so "the default" and "all-MiniLM-L6-v2, mean, 256" share a model."""
    from sbert_cli.encoding.devices import resolve_backend, resolve_device, resolve_dtype
    from sbert_cli.encoding.model import load_spec

    spec = load_spec(
        settings.model,
        settings.pooling,
        settings.normalize,
        settings.max_seq_length,
        prompt=settings.prompt,
        prompt_name=settings.prompt_name,
    )
    device = resolve_device(settings.device)
    dtype = resolve_dtype(settings.dtype, device)
    backend = resolve_backend(settings.backend, device, dtype)
    return (spec, device, dtype, backend)


def describe_model(settings: ModelSettings) -> ModelRecord:
    """What vectors these settings would make, without loading the weights."""
    factory = _factory_for(settings)
    if factory is not None:
        return factory(settings).describe()
    spec, _device, dtype, backend = _resolved_key(settings)
    return spec.record(dtype, backend)


def load_encoder(settings: ModelSettings | None = None) -> WindowEncoder:
    settings = settings or ModelSettings()
    factory = _factory_for(settings)
    if factory is not None:
        return factory(settings)
    from sbert_cli.encoding.encoder import Encoder

    spec, device, dtype, backend = key = _resolved_key(settings)
    if key not in _CACHE:
        if log.isEnabledFor(logging.DEBUG):  # -v: what was chosen and why
            from sbert_cli.encoding.explain import explain

            for line in explain(settings, spec, device, dtype, backend):
                log.debug("%s", line)
        _CACHE[key] = Encoder(spec=spec, device=device, dtype=dtype, backend=backend)
    return _CACHE[key]


def unload_encoder(settings: ModelSettings) -> None:
    """Drop a loaded model from the per-process cache (its memory goes once nothing holds it)."""
    if _factory_for(settings) is None:
        _CACHE.pop(_resolved_key(settings), None)


def cached_encoder(model: str | None = None, **settings) -> WindowEncoder:
    """`load_encoder` with keyword settings: `cached_encoder(None, device="cpu", dtype="fp32")`."""
    return load_encoder(ModelSettings(model, **settings))


def settings_for_record(record: ModelRecord, device: str = "auto") -> ModelSettings:
    # int8 vectors come from ONNX Runtime on the CPU, wherever the store is searched.
    return ModelSettings(
        model=record.name,
        device="cpu" if record.dtype == "int8" else device,
        dtype=record.dtype,
        pooling=",".join(record.pooling),
        normalize=record.normalize,
        max_seq_length=record.max_seq_length,
        prompt=record.prompt or "",  # "": the store's texts had no prompt, whatever the model's default
    )


def recorded_engine(settings: ModelSettings, record: ModelRecord) -> ModelSettings:
    """`settings` on the engine a store records (the one `sbert encode` measured fastest, e.g.
    OpenVINO bf16) where this machine has it and runs on the CPU; else as they are (the loader's
    choice for the dtype: torch). Appending to a store and serving it both encode this way."""
    from importlib import import_module

    on_cpu = settings.device == "cpu" or (settings.device == "auto" and not Path("/proc/driver/nvidia").exists())
    if record.backend not in ("onnx", "openvino") or settings.backend != "auto" or settings.dtype != record.dtype:
        return settings
    if not on_cpu:
        return settings
    if not import_module(f"sbert_cli.encoding.{record.backend}_backend").available():
        log.debug("%s is not installed here; the store's dtype on the default engine", record.backend)
        return settings
    return replace(settings, backend=record.backend)


def encoder_for_store(record: ModelRecord, device: str = "auto") -> WindowEncoder:
    """The encoder that made a store (its manifest's model record), refusing a changed model."""
    return _same_model(load_encoder(settings_for_record(record, device)), record)


def query_encoder_for_store(record: ModelRecord, device: str = "auto") -> WindowEncoder:
    """`encoder_for_store` for a handful of queries: where it applies, the fast path of
    encoding/query.py (ONNX Runtime, no torch import: search answers in ~1 s instead of ~6)."""
    if _factory_for(settings_for_record(record, device)) is None:
        key = ("query", device, *(repr(getattr(record, k)) for k in COMPAT_KEYS))
        if key not in _CACHE:
            from sbert_cli.encoding.query import fast_query_encoder

            encoder = fast_query_encoder(record, device)
            if encoder is not None:
                _CACHE[key] = _same_model(encoder, record)
        if key in _CACHE:
            return _CACHE[key]
    return encoder_for_store(record, device)


def _same_model(encoder: WindowEncoder, record: ModelRecord) -> WindowEncoder:
    found = encoder.describe().fingerprint
    if found != record.fingerprint:
        raise InputError(
            f"model {record.name!r} on this machine (fingerprint {found}) is not the one "
            f"that made the store ({record.fingerprint}); pass the original model"
        )
    return encoder
