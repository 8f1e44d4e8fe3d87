"""What the user asked for about the model, before anything is resolved or loaded.

The bottom of encoding/'s imports: the loader, the explainer, the calibration and the runner
all read `ModelSettings`, and it imports nothing of theirs, so imports run one way.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class ModelSettings:
    """What the user asked for; None and "auto" are resolved from the model and the machine."""

    model: str | None = None
    device: str = "auto"
    dtype: str = "auto"
    pooling: str | None = None
    normalize: bool | None = None
    max_seq_length: int | None = None
    backend: str = "auto"
    prompt: str | None = None  # None with prompt_name None: the model's default prompt; "": none
    prompt_name: str | None = None
