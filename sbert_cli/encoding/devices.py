"""Where and how the model runs: device, dtype and backend, resolved from the user's choices."""

from __future__ import annotations

from sbert_cli.errors import InputError

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
    from sbert_cli.encoding import onnx_backend

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
