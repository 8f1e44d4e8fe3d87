"""Everything decided before training starts: the checked data, the loss, the base model, and the
command's identity (what a resumed run must match)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from sbert_cli.encoding.model import ModelSpec, load_spec
from sbert_cli.errors import InputError
from sbert_cli.store.atomic import sha256_file
from sbert_cli.training.data import ColumnOptions, TrainingData, read_training_data
from sbert_cli.training.losses import LOSS_CLASSES, choose_loss
from sbert_cli.training.mining import DEFAULT_NEGATIVES

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
POOLING_OVERRIDES = ("mean", "cls", "max")


@dataclass
class TrainOptions:
    """`sbert train`'s settings. Defaults are sentence-transformers' recipe for continuing to train
    a sentence model on STS-benchmark (examples/.../training_stsbenchmark_continue_training.py):
    batch 16, 4 epochs, 10% linear warm-up, and its trainer's AdamW defaults (learning rate 5e-5,
    no weight decay)."""

    model: str | None = None
    columns: ColumnOptions = field(default_factory=ColumnOptions)
    eval_path: str | None = None
    eval_columns: ColumnOptions | None = None  # None: the training columns
    loss: str = "auto"
    epochs: int = 4
    batch_size: int = 16
    learning_rate: float = 5e-5
    warmup_ratio: float = 0.1
    weight_decay: float = 0.0
    seed: int = 42
    max_seq_length: int | None = None
    pooling: str | None = None
    mine_hard_negatives: bool = False
    negatives: int = DEFAULT_NEGATIVES
    save_steps: int = 100
    precision: str = "auto"
    device: str = "auto"
    threads: int | None = None
    force: bool = False

    def hyperparameters(self) -> dict:
        """The settings that shape the model (and so must match when a run is resumed)."""
        keys = ("epochs", "batch_size", "learning_rate", "warmup_ratio", "weight_decay", "seed", "max_seq_length")
        values = {k: getattr(self, k) for k in keys}
        values["pooling"] = self.pooling
        values["negatives"] = self.negatives if self.mine_hard_negatives else None
        return values


@dataclass
class TrainPlan:
    data: TrainingData
    eval_data: TrainingData | None
    loss: str
    spec: ModelSpec
    facts: dict  # what the record says about inputs, base model and settings
    command: dict  # the identity a resumed run must match


def _check_options(options: TrainOptions) -> None:
    for name in ("epochs", "batch_size", "save_steps"):
        if getattr(options, name) < 1:
            raise InputError(f"--{name.replace('_', '-')} {getattr(options, name)}: must be at least 1")
    if options.batch_size < 2:
        raise InputError("--batch-size must be at least 2 (in-batch losses compare rows with each other)")
    if not 0 < options.learning_rate < 1:
        raise InputError(f"--learning-rate {options.learning_rate}: expected a small positive number, e.g. 2e-5")
    if not 0 <= options.warmup_ratio < 1:
        raise InputError(f"--warmup {options.warmup_ratio}: a fraction of the steps, 0 <= x < 1")
    if options.precision not in PRECISIONS:
        raise InputError(f"--precision {options.precision}: choose from {', '.join(PRECISIONS)}")
    if options.pooling is not None and options.pooling not in POOLING_OVERRIDES:
        raise InputError(f"--pooling {options.pooling}: choose from {', '.join(POOLING_OVERRIDES)}")


def _base_model(options: TrainOptions) -> ModelSpec:
    spec = load_spec(options.model, max_seq_length=options.max_seq_length)
    has_pooling = (Path(spec.path) / "modules.json").is_file()
    if options.pooling is not None and has_pooling:
        raise InputError(
            f"{spec.name}: is a sentence-transformers model with its own pooling ({', '.join(spec.pooling)}); "
            "--pooling applies to a plain transformers checkpoint"
        )
    return spec


def _eval_data(options: TrainOptions) -> TrainingData | None:
    if options.eval_path is None:
        return None
    columns = options.eval_columns or options.columns
    if columns.score_column is None:
        raise InputError("--eval needs gold scores: give the score column (--eval-score-column or --score-column)")
    data = read_training_data([options.eval_path], columns)
    if data.shape != "scored":
        raise InputError(f"{options.eval_path}: --eval takes scored pairs (two text columns and a score)")
    return data


def _file_facts(paths: list[str], data: TrainingData) -> list[dict]:
    rows = [0] * len(paths)
    for source, _line in data.origins:
        rows[source] += 1
    return [
        {"path": str(Path(p).resolve()), "sha256": sha256_file(Path(p)), "rows": n}
        for p, n in zip(paths, rows, strict=True)
    ]


def plan_training(paths: list[str], options: TrainOptions) -> TrainPlan:
    """Read and check all data and settings; any problem is an InputError before training starts."""
    _check_options(options)
    data = read_training_data(paths, options.columns)
    eval_data = _eval_data(options)
    loss = choose_loss(options.loss, data, options.mine_hard_negatives)
    spec = _base_model(options)
    facts = {
        "base_model": {
            "name": spec.name,
            "fingerprint": spec.fingerprint,
            "pooling": list(spec.pooling if options.pooling is None else (options.pooling,)),
            "dim": spec.dim,
        },
        "data": _file_facts(paths, data),
        "columns": asdict(options.columns),
        "eval": _file_facts([options.eval_path], eval_data)[0] if eval_data is not None else None,
        "shape": data.shape,
        "rows": len(data),
        "loss": loss,
        "loss_class": LOSS_CLASSES[loss],
        "mining": {"negatives": options.negatives} if options.mine_hard_negatives else None,
        "hyperparameters": options.hyperparameters(),
    }
    command = {
        key: facts[key] for key in ("base_model", "data", "columns", "eval", "loss", "mining", "hyperparameters")
    }
    command["eval_columns"] = asdict(options.eval_columns) if options.eval_columns else None
    command["precision"] = options.precision
    # Compared with the JSON a previous run saved: tuples must already be lists.
    return TrainPlan(data, eval_data, loss, spec, facts, json.loads(json.dumps(command)))
