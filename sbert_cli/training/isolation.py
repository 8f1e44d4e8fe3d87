"""Training touches process-wide state (seeds, env vars, loggers, warnings, torch threads,
accelerate's singleton); the library must not leave any of it changed. This puts it all back."""

from __future__ import annotations

import contextlib
import logging
import os
import random
import warnings
from collections.abc import Iterator

# Libraries whose INFO/WARNING chatter would otherwise reach the CLI's stderr handler.
_CHATTY_LOGGERS = ("sentence_transformers", "transformers", "datasets", "accelerate", "torch")


def import_sentence_transformers() -> None:
    """Import sentence-transformers without keeping the warnings filter its import installs."""
    with warnings.catch_warnings():
        import sentence_transformers  # noqa: F401


@contextlib.contextmanager
def isolated_training_state(threads: int | None = None) -> Iterator[None]:
    """Run a block that trains; afterwards the process is as it was: RNG states, environment,
    logger levels, warnings filters, progress bars, torch threads, accelerate's state."""
    import numpy as np
    import torch

    from sbert_cli.encoding.encoder import quiet_transformers, torch_threads

    import_sentence_transformers()
    environment = dict(os.environ)
    rng = (random.getstate(), np.random.get_state(), torch.get_rng_state())
    levels = {name: logging.getLogger(name).level for name in _CHATTY_LOGGERS}
    bars = _datasets_bars(None)
    try:
        with warnings.catch_warnings(), quiet_transformers(), torch_threads(threads):
            warnings.simplefilter("ignore")  # deprecation notes from the stack, not the user's business
            for name in _CHATTY_LOGGERS:
                logging.getLogger(name).setLevel(logging.ERROR)
            yield
    finally:
        if os.environ != environment:
            os.environ.clear()
            os.environ.update(environment)
        random.setstate(rng[0])
        np.random.set_state(rng[1])
        torch.set_rng_state(rng[2])
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)
        _datasets_bars(bars)
        _reset_accelerate()


def _datasets_bars(enable: bool | None) -> bool:
    """Turn datasets' progress bars off (enable=None) and say whether they were on; or put them back."""
    from datasets.utils import logging as ds_logging

    was = ds_logging.is_progress_bar_enabled()
    if enable is None:
        ds_logging.disable_progress_bar()
    elif enable:
        ds_logging.enable_progress_bar()
    return was


def _reset_accelerate() -> None:
    """accelerate keeps one process-wide state (device, mixed precision) from the first trainer;
    a later training call in the same process with other settings must start clean."""
    with contextlib.suppress(ImportError):
        from accelerate.state import AcceleratorState, GradientState

        AcceleratorState._reset_state(reset_partial_state=True)
        GradientState._reset_state()
