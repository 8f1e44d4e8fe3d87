"""`ModelSpec`: everything that decides what vectors a model produces, as plain data.

Below model.py (which reads a model directory into one) and modules.py (which runs the
modules it lists), so that neither imports the other's types back.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from sbert_cli.store.manifest import ModelRecord


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
    prompt: str | None = None  # prepended to every text
    include_prompt: bool = True  # False: the prompt's tokens are left out of pooling
    modules: tuple[str, ...] = ()  # run after pooling: "Dense:<dir>", "Normalize" (see modules.py)

    def record(self, dtype: str, backend: str) -> ModelRecord:
        """What a store records about vectors this model made with `dtype` on `backend`."""
        return ModelRecord(**self.describe(), dtype=dtype, backend=backend)

    def describe(self) -> dict:
        """The JSON form stored in manifests (path omitted: it differs between machines)."""
        d = asdict(self)
        d.pop("path")
        d.pop("include_prompt")  # a property of the model's files, which the fingerprint covers
        d["pooling"] = list(self.pooling)
        d["modules"] = list(self.modules)
        return d
