"""ONNX Runtime backend for the transformer on CPU.

The transformer (token ids -> token vectors) is exported once from the same weights with
torch.onnx, and the graph is cached on disk keyed by the model's fingerprint, so later start-ups
only load it. Pooling and normalization stay ours, in torch, exactly as for the torch backend.
It runs `--dtype int8` (and fp32 with `--backend onnx`, for CPUs where its kernels beat torch's).
`int8` is the same graph with dynamically quantized weights (MatMuls only).
"""

from __future__ import annotations

import logging
import os
import re
import warnings
from pathlib import Path

import numpy as np

from sbert_cli.errors import SbertError
from sbert_cli.store.atomic import atomic_path

log = logging.getLogger("sbert")
EXPORT_VERSION = 2  # bump when the export recipe changes: old cache entries are then ignored


def available() -> bool:
    """Both ONNX Runtime (to run) and onnx (which torch.onnx needs to export) are installed."""
    from importlib.util import find_spec

    return find_spec("onnx") is not None and find_spec("onnxruntime") is not None


def cache_dir() -> Path:
    root = os.environ.get("SBERT_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "sbert"
    )
    return Path(root) / "onnx"


def graph_path(fingerprint: str, variant: str) -> Path:
    # torch's version from its metadata, not `import torch` (2.5 s): fast query start-up looks here.
    from importlib.metadata import version

    tag = f"{fingerprint.split(':')[-1]}-v{EXPORT_VERSION}-torch{version('torch').split('+')[0]}-{variant}"
    return cache_dir() / f"{tag}.onnx"


class _HiddenStates:
    """Wraps a transformers model so the exported graph has plain tensor inputs and one output."""

    def __new__(cls, model):
        import torch

        class Wrapper(torch.nn.Module):
            def __init__(self, inner) -> None:
                super().__init__()
                self.inner = inner

            def forward(self, input_ids, attention_mask):
                return self.inner(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state

        return Wrapper(model).eval()


def export(model, path: Path) -> None:
    """Export the fp32 transformer to `path` (atomically: a crash never leaves half a graph)."""
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    ids = torch.ones(2, 16, dtype=torch.long)
    axes = {0: "batch", 1: "tokens"}
    with atomic_path(path) as tmp, warnings.catch_warnings(), torch.inference_mode():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            _HiddenStates(model),
            (ids, torch.ones_like(ids)),
            str(tmp),
            input_names=["input_ids", "attention_mask"],
            output_names=["hidden"],
            dynamic_axes={"input_ids": axes, "attention_mask": axes, "hidden": axes},
            opset_version=17,
            dynamo=False,
        )


_FIRST_LAYER = re.compile(r"[./](layer|layers|block|h)\.0/")


def sensitive_matmuls(model) -> list[str]:
    """MatMuls kept in fp32 by the int8 recipe: the feed-forward down-projections (weights wider
    in than out, whose inputs after GELU have the widest ranges) and the whole first layer.

    Measured on 500 paragraphs (min cosine to fp32): everything int8 0.982; without the
    down-projections 0.990; without them and layer 0 0.992.
    """
    shapes = {init.name: tuple(init.dims) for init in model.graph.initializer}
    keep = []
    for node in model.graph.node:
        if node.op_type != "MatMul":
            continue
        weight = next((shapes[i] for i in node.input if i in shapes), None)
        down_projection = weight is not None and len(weight) == 2 and weight[0] > weight[1]
        if down_projection or _FIRST_LAYER.search(node.name):
            keep.append(node.name)
    return keep


def quantize(fp32_path: Path, path: Path) -> None:
    """Dynamic int8 quantization of the MatMul weights (activations stay float), sensitive ones kept."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    exclude = sensitive_matmuls(onnx.load(str(fp32_path), load_external_data=False))
    # The quantizer logs advice about pre-processing on the root logger; it is not for our users.
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        with atomic_path(path) as tmp:
            quantize_dynamic(
                str(fp32_path),
                str(tmp),
                weight_type=QuantType.QInt8,
                per_channel=True,
                op_types_to_quantize=["MatMul"],
                nodes_to_exclude=exclude,
            )
    finally:
        root.setLevel(level)


def ensure_graph(fingerprint: str, variant: str, load_torch_model) -> Path:
    """The cached graph for this model and variant, exporting it first if needed."""
    path = graph_path(fingerprint, variant)
    if path.is_file():
        return path
    fp32 = graph_path(fingerprint, "fp32")
    try:
        if not fp32.is_file():
            log.info("exporting the model to ONNX (once; cached in %s)", fp32.parent)
            export(load_torch_model(), fp32)
        if variant == "int8":
            quantize(fp32, path)
    except Exception as exc:  # export can fail for exotic architectures: say so, name the fix
        raise SbertError(f"ONNX export of the model failed ({type(exc).__name__}: {exc}); use --backend torch") from exc
    return path


class OnnxTransformer:
    """Runs the exported transformer: numpy ids and mask in, float32 token vectors out."""

    def __init__(self, path: Path, threads: int | None = None, *, spin: bool = True) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            options.intra_op_num_threads = threads
        if not spin:  # idle pool threads sleep instead of spinning after each run
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.inter_op_num_threads = 1
        try:
            self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # a damaged cache file: drop it so the next run re-exports
            path.unlink(missing_ok=True)
            raise SbertError(f"{path}: unusable ONNX graph, removed ({exc}); run again to re-export") from exc

    def __call__(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        return self.session.run(None, {"input_ids": input_ids, "attention_mask": attention_mask})[0]
