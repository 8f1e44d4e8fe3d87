"""The trainer's callback: progress to a `Reporter`, a checkpoint at every epoch end, and a mark on
each checkpoint once it is fully written (transformers' Trainer writes them file by file)."""

from __future__ import annotations

import time
from pathlib import Path

from transformers import TrainerCallback

from sbert_cli.progress import ProgressUpdate, Reporter
from sbert_cli.training.record import METRIC
from sbert_cli.training.state import RunDir


class SbertCallback(TrainerCallback):
    """Progress to the reporter, a checkpoint at each epoch end, and completion marks."""

    def __init__(self, reporter: Reporter, run: RunDir, rows_per_step: int, epochs: int) -> None:
        self.reporter = reporter
        self.run = run
        self.rows_per_step = rows_per_step
        self.epochs = epochs
        self.started = time.perf_counter()
        self.first_step = 0
        self.latest: dict = {}

    def on_train_begin(self, args, state, control, **kwargs):
        self.started = time.perf_counter()
        self.first_step = state.global_step

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "loss" in logs:
            self.latest = logs

    def on_step_end(self, args, state, control, **kwargs):
        self.reporter.progress(self._update(state, final=False))

    def on_train_end(self, args, state, control, **kwargs):
        self.reporter.progress(self._update(state, final=True))

    def on_epoch_end(self, args, state, control, **kwargs):
        control.should_save = True

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        score = (metrics or {}).get(METRIC)
        if score is None:
            return
        best = state.best_metric is None or score > state.best_metric  # the trainer updates it after us
        epoch = round(state.epoch or 0)
        self.reporter.message(
            f"epoch {epoch}/{self.epochs}: eval Spearman {score * 100:.2f}" + (" (best so far)" if best else "")
        )

    def on_save(self, args, state, control, **kwargs):
        self.run.mark_complete(Path(args.output_dir) / f"checkpoint-{state.global_step}")

    def _update(self, state, final: bool) -> ProgressUpdate:
        done = state.global_step - self.first_step
        detail = f"step {state.global_step:,}/{state.max_steps:,}, epoch {state.epoch or 0:.2f}"
        if "loss" in self.latest:
            detail += f", loss {float(self.latest['loss']):.4f}, lr {float(self.latest.get('learning_rate', 0)):.2e}"
        if state.best_metric is not None:
            detail += f", best eval {state.best_metric * 100:.2f}"
        return ProgressUpdate(
            task="training",
            done=done * self.rows_per_step,
            total=(state.max_steps - self.first_step) * self.rows_per_step,
            elapsed=time.perf_counter() - self.started,
            current=detail,
            final=final,
            unit="rows",
        )
