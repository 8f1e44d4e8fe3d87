"""Why the encoder is what it is: one line per choice (model, pooling, prompt, device, dtype,
backend, batches), each naming what decided it, for `-v` output and for bug reports."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sbert_cli.encoding.devices import DEFAULT_CPU_BATCH_TOKENS, DEFAULT_GPU_BATCH_TOKENS

if TYPE_CHECKING:
    from sbert_cli.encoding.settings import ModelSettings
    from sbert_cli.encoding.spec import ModelSpec


def _model_lines(settings: ModelSettings, spec: ModelSpec) -> list[str]:
    from pathlib import Path

    from sbert_cli.encoding.modules import read_prompts

    st_model = (Path(spec.path) / "modules.json").is_file()
    source = "the bundled default" if settings.model is None else "--model"
    pooling = "--pooling" if settings.pooling else ("its Pooling config" if st_model else "plain transformers model")
    normalize = "--[no-]normalize" if settings.normalize is not None else "modules.json"
    lines = [
        f"model: {spec.name} ({source}), {spec.path}, fingerprint {spec.fingerprint}",
        f"pooling: {'+'.join(spec.pooling)} over {spec.hidden_size} values ({pooling}); "
        f"modules after pooling: {', '.join(spec.modules) or 'none'}; "
        f"normalize: {'yes' if spec.normalize else 'no'} ({normalize}); vectors of {spec.dim}",
    ]
    if settings.prompt is not None:
        why = "--prompt" if settings.prompt else "--prompt '' or the store's"
    elif settings.prompt_name is not None:
        why = f"--prompt-name {settings.prompt_name}"
    else:
        default = read_prompts(Path(spec.path))[1]
        why = f"the model's default prompt {default!r}" if default else "the model has no default prompt"
    kept = "" if not spec.prompt or spec.include_prompt else "; its tokens are left out of pooling (include_prompt)"
    lines.append(f"prompt: {repr(spec.prompt) if spec.prompt else 'none'} ({why}){kept}")
    length = "--max-seq-length" if settings.max_seq_length else "the model's config"
    lines.append(f"max_seq_length: {spec.max_seq_length} tokens ({length})")
    return lines


def _runtime_lines(settings: ModelSettings, device: str, dtype: str, backend: str) -> list[str]:
    if settings.device != "auto":
        device_why = "--device"
    else:
        device_why = "auto: a CUDA GPU is available" if device.startswith("cuda") else "auto: no CUDA GPU"
    if settings.dtype != "auto":
        dtype_why = "--dtype, the store's, or measured faster by the encode runner"
    elif device.startswith("cuda"):
        dtype_why = "auto: bf16 where the GPU computes it natively, else fp16"
    else:
        dtype_why = "auto: fp32 on the CPU, for exact parity with sentence-transformers"
    if settings.backend != "auto":
        backend_why = "--backend, or measured fastest by the encode runner"
    else:
        backend_why = "auto: ONNX Runtime for int8, torch otherwise"
    budget = DEFAULT_GPU_BATCH_TOKENS if device.startswith("cuda") else DEFAULT_CPU_BATCH_TOKENS
    return [
        f"device: {device} ({device_why}); dtype: {dtype} ({dtype_why}); backend: {backend} ({backend_why})",
        f"batches: up to {budget:,} padded tokens each (the {device.split(':')[0]} default; --batch-tokens "
        "overrides), from windows of texts sorted by length, at most 512 texts a batch",
    ]


def explain(settings: ModelSettings, spec: ModelSpec, device: str, dtype: str, backend: str) -> list[str]:
    return _model_lines(settings, spec) + _runtime_lines(settings, device, dtype, backend)
