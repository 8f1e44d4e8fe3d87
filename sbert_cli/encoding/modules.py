"""The sentence-transformers modules after the transformer, read and run as sentence-transformers
reads and runs them: Pooling, Dense and Normalize from `modules.json`, and the prompts of
`config_sentence_transformers.json`.

`read_pipeline` turns a model directory into a `Pipeline` (plain data, no torch: stores and cache
keys hold it); `SentenceHead` runs it on token vectors. Any module sbert cannot run is refused by
name rather than skipped, because skipping one silently gives other vectors than the model's.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sbert_cli.encoding.pooling import POOLING_MODES, pool
from sbert_cli.errors import InputError

if TYPE_CHECKING:
    import torch

    from sbert_cli.encoding.spec import ModelSpec

SUPPORTED_MODULES = ("Transformer", "Pooling", "Dense", "Normalize")
# sentence-transformers' order when the legacy `pooling_mode_*` flags turn several modes on: it
# concatenates them in this order whatever order the flags are written in (models/Pooling.py).
LEGACY_POOLING_FLAGS = (
    ("pooling_mode_cls_token", "cls"),
    ("pooling_mode_max_tokens", "max"),
    ("pooling_mode_mean_tokens", "mean"),
    ("pooling_mode_mean_sqrt_len_tokens", "mean_sqrt_len_tokens"),
    ("pooling_mode_weightedmean_tokens", "weightedmean"),
    ("pooling_mode_lasttoken", "lasttoken"),
)
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
_SENTENCE = "sentence_embedding"
# Activations sentence-transformers loads without trust_remote_code: torch.nn module classes.
_TORCH_ACTIVATION = re.compile(r"^torch\.nn\.(?:modules\.[a-z_]+\.)?([A-Za-z][A-Za-z0-9]*)$")


@dataclass(frozen=True)
class Pipeline:
    """What modules.json asks for after the transformer."""

    pooling: tuple[str, ...] = ("mean",)
    include_prompt: bool = True  # False: prompt tokens are left out of pooling
    hidden: int = 0  # token vector size the pooling reads (0: take the transformer's)
    steps: tuple[str, ...] = ()  # after pooling, in order: "Dense:<dir>" or "Normalize"
    normalize: bool = False  # a Normalize module ends the pipeline

    def dense_dirs(self) -> list[str]:
        return [s.split(":", 1)[1] for s in self.steps if s.startswith("Dense:")]


def read_json(path: Path) -> Any:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: unreadable model config ({exc})") from exc


def pooling_modes(cfg: dict, where: str) -> tuple[str, ...]:
    """The modes a Pooling config turns on, in sentence-transformers' concatenation order."""
    mode = cfg.get("pooling_mode")
    if isinstance(mode, str):
        modes: tuple[str, ...] = (mode,)
    elif isinstance(mode, list) and mode:
        modes = tuple(str(m) for m in mode)  # the newer format: concatenated in the order listed
    else:
        modes = tuple(name for key, name in LEGACY_POOLING_FLAGS if cfg.get(key)) or ("mean",)
    unknown = [m for m in modes if m not in POOLING_MODES]
    if unknown:
        raise InputError(f"{where}: unknown pooling mode {', '.join(unknown)}")
    return modes


def _module_kind(module: dict) -> str:
    return str(module.get("type", "")).rsplit(".", 1)[-1]


def _check_io_names(cfg: dict, where: str, kind: str) -> None:
    # sbert pools then transforms the sentence vector; a module on token vectors (ColBERT-style
    # models) would need per-token outputs, which a store does not hold.
    for key in ("module_input_name", "module_output_name"):
        if cfg.get(key, _SENTENCE) not in (_SENTENCE, None):
            raise InputError(f"{where}: {kind} on {cfg[key]!r} is not supported (sbert runs it on the sentence vector)")


def dense_activation(cfg: dict, where: str) -> str:
    """The torch.nn class name of a Dense module's activation (Tanh when the config names none)."""
    name = cfg.get("activation_function", "torch.nn.modules.activation.Tanh")
    match = _TORCH_ACTIVATION.match(str(name))
    if match is None:
        raise InputError(f"{where}: activation {name!r} is not a torch.nn module; sbert runs those only")
    return match.group(1)


def read_pipeline(name: str, path: Path) -> Pipeline:
    """Read modules.json (absent: a plain transformers model, mean pooling); refuse what sbert cannot run."""
    modules = read_json(path / "modules.json")
    if not isinstance(modules, list):
        return Pipeline()
    pipeline: dict[str, Any] = {"steps": []}
    for position, module in enumerate(modules):
        kind, sub = _module_kind(module), str(module.get("path", ""))
        where = f"{name}: {sub or 'modules.json'}"
        if kind not in SUPPORTED_MODULES:
            raise InputError(
                f"{name}: sentence-transformers module {kind!r} ({sub or 'modules.json'}) is not supported; "
                f"sbert runs {', '.join(SUPPORTED_MODULES)}"
            )
        if (kind == "Transformer") != (position == 0):
            raise InputError(f"{where}: sbert needs the Transformer first and only there (found {kind})")
        cfg = (read_json(path / sub / "config.json") or {}) if kind != "Transformer" else {}
        if kind == "Pooling":
            pipeline["pooling"] = pooling_modes(cfg, where)
            pipeline["include_prompt"] = bool(cfg.get("include_prompt", True))
            pipeline["hidden"] = int(cfg.get("embedding_dimension") or cfg.get("word_embedding_dimension") or 0)
        elif kind in ("Dense", "Normalize"):
            if "pooling" not in pipeline:
                raise InputError(f"{where}: {kind} before Pooling is not supported")
            _check_io_names(cfg, where, kind)
            if kind == "Dense":
                dense_activation(cfg, where)
                if not any((path / sub / w).is_file() for w in WEIGHT_FILES):
                    raise InputError(f"{where}: Dense module without weights ({' or '.join(WEIGHT_FILES)})")
            pipeline["steps"].append(f"Dense:{sub}" if kind == "Dense" else "Normalize")
    steps = pipeline.pop("steps")
    normalize = bool(steps) and steps[-1] == "Normalize"
    return Pipeline(**pipeline, steps=tuple(steps[:-1] if normalize else steps), normalize=normalize)


def dense_dims(path: Path, sub: str) -> tuple[int, int]:
    cfg = read_json(path / sub / "config.json") or {}
    try:
        return int(cfg["in_features"]), int(cfg["out_features"])
    except (KeyError, TypeError, ValueError):
        raise InputError(f"{path / sub / 'config.json'}: Dense config without in_features/out_features") from None


def output_dim(name: str, path: Path, steps: tuple[str, ...], pooled: int) -> int:
    """The vector size after the steps, checking that each Dense takes what the step before gives."""
    dim = pooled
    for step in steps:
        if step.startswith("Dense:"):
            sub = step.split(":", 1)[1]
            d_in, d_out = dense_dims(path, sub)
            if d_in != dim:
                raise InputError(
                    f"{name}: {sub} takes vectors of {d_in} values but receives {dim} "
                    "(a --pooling override changes the pooled size)"
                )
            dim = d_out
    return dim


# -- prompts --------------------------------------------------------------------------------------
def read_prompts(path: Path) -> tuple[dict[str, str], str | None]:
    """(prompts, default_prompt_name) from config_sentence_transformers.json."""
    cfg = read_json(path / "config_sentence_transformers.json") or {}
    prompts = cfg.get("prompts") or {}
    if not isinstance(prompts, dict):
        prompts = {}
    return {str(k): str(v) for k, v in prompts.items() if v is not None}, cfg.get("default_prompt_name")


def resolve_prompt(name: str, path: Path, prompt: str | None, prompt_name: str | None) -> str | None:
    """The text prepended to every input, as `SentenceTransformer.encode` resolves it: an explicit
    prompt, else the named one, else the model's default prompt; "" (or none) means no prompt."""
    if prompt is not None and prompt_name is not None:
        raise InputError("give --prompt or --prompt-name, not both")
    if prompt is None:
        prompts, default = read_prompts(path)
        if prompt_name is not None:
            if prompt_name not in prompts:
                known = ", ".join(sorted(prompts)) or "none"
                raise InputError(f"--prompt-name {prompt_name}: {name} has no such prompt (it has: {known})")
            prompt = prompts[prompt_name]
        elif default is not None:
            prompt = prompts.get(default)
    return prompt or None


def apply_prompt(texts: list[str], prompt: str | None) -> list[str]:
    return [prompt + t for t in texts] if prompt else texts


def excluded_prompt_tokens(tokenizer, spec: ModelSpec) -> int:
    """How many leading tokens pooling leaves out: 0, or the prompt's tokenization without a
    trailing special token (sentence-transformers' `Transformer._get_prompt_length`: [CLS] counts)."""
    if not spec.prompt or spec.include_prompt:
        return 0
    ids = tokenizer(spec.prompt.lower() if spec.do_lower_case else spec.prompt)["input_ids"]
    if ids and ids[-1] in set(getattr(tokenizer, "all_special_ids", ())):
        return len(ids) - 1
    return len(ids)


# -- running ---------------------------------------------------------------------------------------
class _Dense:
    """`Dense`: activation(linear(x)) (+ x, or a projection of x, with use_residual), in fp32."""

    def __init__(self, directory: Path, device: str) -> None:
        import torch

        cfg = read_json(directory / "config.json") or {}
        weights = _load_weights(directory)
        name = dense_activation(cfg, str(directory))
        activation = getattr(torch.nn, name, None)
        if not (isinstance(activation, type) and issubclass(activation, torch.nn.Module)):
            raise InputError(f"{directory}: activation {name!r} is not a torch.nn module in this torch")
        self.activation = activation()
        self.weight = weights["linear.weight"].float().to(device)
        bias = weights.get("linear.bias")
        self.bias = bias.float().to(device) if bias is not None and cfg.get("bias", True) else None
        residual = weights.get("residual.weight")
        self.use_residual = bool(cfg.get("use_residual", False))
        self.residual = residual.float().to(device) if residual is not None else None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        import torch

        out = self.activation(torch.nn.functional.linear(x, self.weight, self.bias))
        if self.use_residual:
            out = out + (x if self.residual is None else torch.nn.functional.linear(x, self.residual))
        return out


def _load_weights(directory: Path) -> dict:
    if (directory / "model.safetensors").is_file():
        from safetensors.torch import load_file

        return load_file(str(directory / "model.safetensors"))
    import torch

    return torch.load(directory / "pytorch_model.bin", map_location="cpu", weights_only=True)


class SentenceHead:
    """Token vectors -> sentence vectors: pooling (prompt tokens left out when the model says so),
    then the Dense / Normalize steps in modules.json order, then the final normalization."""

    def __init__(self, spec: ModelSpec, device: str) -> None:
        self.pooling = spec.pooling
        self.normalize = spec.normalize
        self.layers: list = [
            _Dense(Path(spec.path) / step.split(":", 1)[1], device) if step.startswith("Dense:") else _l2
            for step in spec.modules
        ]

    def __call__(self, hidden: torch.Tensor, mask: torch.Tensor, prompt_length: int = 0) -> torch.Tensor:
        vectors = pool(hidden, mask, self.pooling, prompt_length=prompt_length)
        for layer in self.layers:
            vectors = layer(vectors)
        return _l2(vectors) if self.normalize else vectors


def _l2(vectors: torch.Tensor) -> torch.Tensor:
    import torch

    return torch.nn.functional.normalize(vectors, p=2, dim=-1)
