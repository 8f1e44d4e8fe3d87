"""Manifests to JSON text and back (`dumps`, `from_json`: checked field by field), fast enough
for a 1,000-file store.

`dataclasses.asdict` deep-copies every leaf and `json.dumps(indent=...)` runs the pure-Python
encoder: on a 1 MB manifest (1,000 inputs, 1,000 shards) that was about 0.3 s a save, and a
nightly sync of 1,000 files saves once per input it finishes. Here each input and shard is one
line written by the C encoder, so the file stays readable (and diffable) line by line.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import re
import types
import typing
from typing import Any, TypeVar

T = TypeVar("T")

_LEAVES = frozenset({str, int, float, bool, type(None)})


@functools.cache
def _field_names(cls: type) -> tuple[str, ...] | None:
    """A dataclass's field names; None for any other type."""
    return tuple(f.name for f in dataclasses.fields(cls)) if dataclasses.is_dataclass(cls) else None


@functools.cache
def field_hints(cls: type) -> dict[str, Any]:
    """`typing.get_type_hints(cls)`, once per class (it re-evaluates every annotation each call)."""
    return typing.get_type_hints(cls)


def plain(value: Any) -> Any:
    """Dataclasses to dicts, recursively, as `dataclasses.asdict` (no copies: the result is only
    serialized)."""
    kind = type(value)
    if kind in _LEAVES:
        return value
    names = _field_names(kind)
    if names is not None:
        return {name: plain(getattr(value, name)) for name in names}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    return value


def dumps(obj: object) -> str:
    """A dataclass as JSON: one top-level key a line, a list of objects one object a line."""
    parts = []
    for key, value in plain(obj).items():
        if isinstance(value, list) and value and isinstance(value[0], dict):
            body = ",\n  ".join(json.dumps(item) for item in value)
            parts.append(f"{json.dumps(key)}: [\n  {body}\n ]")
        else:
            parts.append(f"{json.dumps(key)}: {json.dumps(value)}")
    return "{\n " + ",\n ".join(parts) + "\n}\n"


# Checksum fields, by name, and their only valid form.
_DIGESTS = {"sha256": re.compile(r"sha256:[0-9a-f]{64}"), "xxh3": re.compile(r"xxh3:[0-9a-f]{16}")}
_EXACT = {int: int, str: str, bool: bool, dict: dict, float: float}  # JSON values taken as they are


@functools.cache
def _field_plan(cls: type) -> tuple[tuple[str, Any, bool, frozenset], ...]:
    """Per field: name, type, required, and the value types taken as they are (checked no further:
    the common case, which used to go through `typing` introspection for each of 80k values)."""
    hints, plan = field_hints(cls), []
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        args = typing.get_args(tp) if typing.get_origin(tp) in (types.UnionType, typing.Union) else (tp,)
        exact = frozenset(type(None) if a is type(None) else _EXACT.get(a) for a in args) - {None}
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        plan.append((f.name, tp, required, frozenset() if f.name in _DIGESTS else exact))
    return tuple(plan)


def from_json(cls: type[T], data: Any, where: str = "") -> T:
    """Build dataclass `cls` from parsed JSON, checking every field's presence and type."""
    if not isinstance(data, dict):
        raise ValueError(f"{where or 'top level'}: expected an object")
    kwargs = {}
    for name, tp, required, exact in _field_plan(cls):
        if name not in data:
            if required:
                raise ValueError(f"{where}{name}: missing")
            continue
        value = data[name]
        kwargs[name] = value if type(value) in exact else _convert(tp, value, f"{where}{name}")
    return cls(**kwargs)


def _convert(tp: Any, value: Any, where: str) -> Any:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (types.UnionType, typing.Union):
        if value is None and type(None) in args:
            return None
        return _convert(next(a for a in args if a is not type(None)), value, where)
    if origin is list:
        if not isinstance(value, list):
            raise ValueError(f"{where}: expected a list")
        return [_convert(args[0], v, f"{where}[{i}]") for i, v in enumerate(value)]
    if dataclasses.is_dataclass(tp):
        return from_json(tp, value, f"{where}.")
    expected = {int: int, str: str, bool: bool, float: (int, float), dict: dict}[tp]
    if not isinstance(value, expected) or (tp is not bool and isinstance(value, bool)):
        raise ValueError(f"{where.rstrip('.')}: expected {tp.__name__}, found {type(value).__name__}")
    digest = _DIGESTS.get(where.rsplit(".", 1)[-1])
    if digest is not None and not digest.fullmatch(value):
        # Damage inside a digest can still parse as JSON (a flipped byte pair is valid UTF-8):
        # say the manifest is damaged rather than that a file changed.
        raise ValueError(f"{where}: not a {where.rsplit('.', 1)[-1]} digest")
    return float(value) if tp is float else value
