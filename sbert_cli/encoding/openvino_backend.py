"""OpenVINO backend for the transformer on the CPU (`--backend openvino`, the optional extra).

OpenVINO compiles an ONNX graph exported once per model from its own weights (the export of
encoding/onnx_backend.py, with eager attention; cached) into fused CPU kernels:
attention, layer norm and GELU each become one kernel, and on CPUs with native bf16 (AVX512-BF16,
AMX) the matrix products run in bf16 through oneDNN. Pooling and normalization stay ours, in
torch, exactly as for the other backends.

Measured on a 2-core AMD EPYC with AVX512-BF16 (no AMX), 128 book paragraphs, the model only,
interleaved rounds (load ~3-4): torch fp32 5.2 CPU s, torch bf16 3.3, OpenVINO fp32 2.6,
OpenVINO bf16 1.6 (see benchmarks/README.md for whole-process runs).

OpenVINO's CPU plugin runs bf16 by default wherever the CPU has it; sbert always sets the
precision hint, so `--dtype fp32` is fp32 (sentence-transformers parity) and `--dtype bf16` bf16.
"""

from __future__ import annotations

from importlib.util import find_spec
from pathlib import Path

import numpy as np

from sbert_cli.errors import InputError, SbertError

# The graph OpenVINO compiles is exported with transformers' eager attention, not SDPA: OpenVINO
# fuses eager attention (MatMul, scale, mask, Softmax, MatMul) into one kernel, while the SDPA
# export's mask handling (IsNaN, Select, extra Transposes) stays separate ops. OpenVINO's per-op
# profile, bf16, 128 book paragraphs: everything besides the projections' FullyConnected took
# 0.57 of their time with the SDPA graph, 0.45 with the eager one (7% less in all).
GRAPH_VARIANT = "fp32-eager"
MISSING = "--backend openvino needs the package openvino (pip install 'sbert-cli[openvino]' or pip install openvino)"
DTYPES = ("fp32", "bf16")
_PRECISION = {"fp32": "f32", "bf16": "bf16"}


def available() -> bool:
    """OpenVINO to run, and onnx (which torch.onnx needs to export the graph it compiles)."""
    return find_spec("openvino") is not None and find_spec("onnx") is not None


def version() -> str:
    """OpenVINO's version from its package metadata ("" when not installed): for cache keys."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as package_version

    try:
        return package_version("openvino")
    except PackageNotFoundError:
        return ""


def runs_bf16() -> bool:
    """Whether OpenVINO's CPU plugin computes bf16 on this CPU (else a bf16 hint would run fp32)."""
    import openvino as ov

    return "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


def check(dtype: str) -> None:
    """Refuse what this backend cannot run here, with a one-line reason."""
    if not available():
        raise InputError(MISSING)
    if dtype not in DTYPES:
        raise InputError(f"--backend openvino runs fp32 or bf16 on the CPU, not {dtype}")
    if dtype == "bf16" and not runs_bf16():
        raise InputError("--backend openvino --dtype bf16: OpenVINO has no bf16 kernels for this CPU")


def ensure_graph(fingerprint: str, load_eager_model) -> Path:
    """The cached eager-attention graph for this model, exported first if needed."""
    from sbert_cli.encoding import onnx_backend

    path = onnx_backend.graph_path(fingerprint, GRAPH_VARIANT)
    if not path.is_file():
        try:
            onnx_backend.export(load_eager_model(), path)
        except Exception as exc:  # exotic architectures: say so, name the fix
            raise SbertError(
                f"ONNX export for OpenVINO failed ({type(exc).__name__}: {exc}); use --backend torch"
            ) from exc
    return path


def compiled_cache_dir() -> Path:
    """Where OpenVINO keeps compiled models (its CACHE_DIR), beside the exported graphs."""
    from sbert_cli.encoding import onnx_backend

    return onnx_backend.cache_dir().parent / "openvino"


def compile_cached(path: Path, config: dict):
    """The graph at `path` compiled for the CPU, from OpenVINO's compiled-model cache when it holds
    it (keyed by the graph, the settings and the OpenVINO version). Compiling from the path lets a
    cache hit skip reading the ONNX file too: start-up, AMD EPYC 2 cores, load ~12: 1.3-1.5 s
    without the cache, 0.52 s with it (0.35-0.41 CPU s against 0.6). A cache folder that cannot
    be written costs the compile, not the run."""
    import openvino as ov

    core = ov.Core()
    try:
        return core.compile_model(str(path), "CPU", {**config, "CACHE_DIR": str(compiled_cache_dir())})
    except RuntimeError:
        return core.compile_model(core.read_model(str(path)), "CPU", config)


class OpenVinoTransformer:
    """The compiled transformer: numpy ids and mask in, float32 token vectors out.

    One synchronous infer request, `threads` inference threads (OpenVINO's own pool, separate
    from torch's: no process-wide setting is touched), latency mode (one stream: batches come one
    at a time). Outputs share the request's buffer, which the next call overwrites: the caller
    pools each batch before running the next, as `Encoder.run` does.
    """

    def __init__(self, path: Path, dtype: str, threads: int | None = None) -> None:
        config = {"INFERENCE_PRECISION_HINT": _PRECISION[dtype], "PERFORMANCE_HINT": "LATENCY"}
        if threads:
            config["INFERENCE_NUM_THREADS"] = int(threads)
        try:
            compiled = compile_cached(path, config)
        except Exception as exc:  # a damaged cached graph: drop it so the next run re-exports
            path.unlink(missing_ok=True)
            raise SbertError(f"{path}: OpenVINO could not compile the graph, removed ({exc}); run again") from exc
        self.request = compiled.create_infer_request()

    def __call__(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        inputs = {"input_ids": input_ids, "attention_mask": attention_mask}
        return self.request.infer(inputs, share_inputs=True, share_outputs=True)[0]
