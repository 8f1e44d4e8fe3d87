"""Where and how the model runs: device, dtype and backend, resolved from the user's choices."""

from __future__ import annotations

from sbert_cli.errors import InputError

DTYPES = ("auto", "fp32", "bf16", "fp16", "int8")
BACKENDS = ("auto", "torch", "onnx", "openvino")
# Padded tokens per batch. On CPU small batches win (measured on 500 paragraphs, 2 cores:
# 8192 -> 5.9 s, 4096 -> 4.5 s, 2048 -> 4.0 s, 1024 -> 3.9 s): the GEMMs are already
# big enough for two cores and attention grows with length. On a GPU big batches keep it busy.
# The same holds on the 2-core AMD EPYC with AVX-512 (600 paragraphs, best of 4: fp32 2048 ->
# 5.9 s, 3072 -> 6.0 s, 4096 -> 6.2 s; bf16 2048 -> 3.7 s, 4096 -> 3.7 s, 8192 -> 4.2 s).
DEFAULT_CPU_BATCH_TOKENS = 2048
DEFAULT_GPU_BATCH_TOKENS = 65536
DEFAULT_WINDOW = 2048
# Texts per sorted window on a GPU. Windows are sorted by length and cut into 65,536-token
# batches of at most 512 texts; from 2,048-text windows those batches are 37% padding (the book
# paragraphs), from 16,384-text windows (cut at 4M characters, ~10,800 paragraphs) 6.5%: the GPU
# would spend a third of its time on padding. (The CPU's 2,048-token batches: 2.5% from 2,048.)
# Windows still never straddle a shard and are a fixed function of the input, so resuming holds.
DEFAULT_GPU_WINDOW = 16384


def window_texts(device: str) -> int:
    """Texts per window the encode runner sorts and batches together on `device`."""
    return DEFAULT_GPU_WINDOW if str(device).startswith("cuda") else DEFAULT_WINDOW


def _cpuinfo(field: str) -> str:
    """The first `field` line of /proc/cpuinfo ("" where there is none)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith(field):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


def cpu_bf16_flags() -> list[str]:
    """The CPU's bf16 features: avx512_bf16 (dot products), amx_bf16 (tile matrix units)."""
    return sorted(set(_cpuinfo("flags").split()) & {"avx512_bf16", "amx_bf16"})


def cpu_has_native_bf16() -> bool:
    """True when the CPU does bf16 matrix math in hardware (AVX512-BF16 or AMX).

    Without it torch emulates bf16 and runs slower than fp32. With it bf16 is not always faster
    either (an Intel Xeon with AVX512-BF16 and no AMX: 400 paragraphs fp32 ~13 s, bf16 ~15.5 s),
    so the encode runner times both before `--dtype auto` picks bf16 (encoding/calibrate.py).
    """
    return bool(cpu_bf16_flags())


def cpu_name() -> str:
    """The CPU's model name, as /proc/cpuinfo gives it (or the platform's processor string)."""
    import platform

    return _cpuinfo("model name") or platform.processor() or "unknown CPU"


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
    """`auto`: on a GPU bf16 where it computes it natively, else fp16; on the CPU fp32.

    fp32 keeps exact parity with sentence-transformers for small, interactive work; the encode
    runner replaces it with bf16 for big jobs where a measurement shows bf16 faster
    (encoding/calibrate.py), and records the dtype it used in the store.
    """
    import torch

    if dtype not in DTYPES:
        raise InputError(f"--dtype {dtype}: choose from {', '.join(DTYPES)}")
    if dtype != "auto":
        return dtype
    if device.startswith("cuda"):
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "fp32"


def resolve_backend(backend: str, device: str, dtype: str) -> str:
    """`auto`: ONNX Runtime for int8 (the only engine that runs it), torch for everything else.

    That is the static choice; for a new store's `--dtype auto` the encode runner measures torch
    and OpenVINO in fp32 and bf16 instead and records the winner (encoding/calibrate.py).
    fp32 on this project's 2-core AVX2 CPU: torch 6.9 s, ONNX Runtime 7.6 s (7.9 s with its
    transformer fusions) for the same 800 paragraphs; `--backend onnx` stays available.
    """
    from sbert_cli.encoding import onnx_backend

    if backend not in BACKENDS:
        raise InputError(f"--backend {backend}: choose from {', '.join(BACKENDS)}")
    onnx_ok = device == "cpu" and dtype in ("fp32", "int8")
    if backend == "openvino":
        if device != "cpu":
            raise InputError(f"--backend openvino runs on the CPU, not on {device}")
        from sbert_cli.encoding import openvino_backend

        openvino_backend.check(dtype)
        return backend
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
