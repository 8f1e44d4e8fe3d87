"""`train_model`: fine-tune a sentence-transformers model with its own trainer, resumably.

sentence-transformers' trainer (on transformers' Trainer) runs the loop, the loss, the optimizer
and the checkpoints; this module decides the settings, feeds progress to a `Reporter`, marks each
checkpoint once it is fully written (so a kill -9 mid-save is never resumed from), saves a
checkpoint at every epoch end (so the best-scoring epoch is always on disk), and at the end
writes the kept model, its card and its record into the output directory.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from sbert_cli.progress import NullReporter, Reporter
from sbert_cli.training.isolation import isolated_training_state
from sbert_cli.training.losses import build_loss, uses_in_batch_negatives
from sbert_cli.training.mining import mine_negatives
from sbert_cli.training.plan import TrainOptions, TrainPlan, plan_training
from sbert_cli.training.record import EVAL_NAME, METRIC, build_record, eval_scores, model_card, train_loss
from sbert_cli.training.state import COMPLETE_MARK, RunDir, write_json

CHECKPOINTS_KEPT = 2  # the newest two (a kill while writing one leaves the other) plus the best
STAGING_DIR = "final"
# A checkpoint's files that are the trainer's state rather than the model.
_TRAINER_STATE_FILES = {"optimizer.pt", "scheduler.pt", "scaler.pt", "trainer_state.json", "training_args.bin"}


@dataclass
class TrainSummary:
    output: str
    status: str  # "trained", "resumed" or "done" (the same command had already finished here)
    rows: int
    loss: str
    steps: int
    scores: list[dict]  # per epoch: epoch, step, spearman
    kept: dict | None  # the epoch whose model was written
    seconds: float
    resumed_from: int | None = None  # the checkpoint step this run continued from


def _trainer_class():
    from sentence_transformers import SentenceTransformerTrainer

    class SbertTrainer(SentenceTransformerTrainer):
        """sentence-transformers' trainer without its generated model card (sbert writes its own
        from the record, and the generated one would be rewritten at every checkpoint)."""

        def add_model_card_callback(self, default_args_dict) -> None:
            pass

        def _save(self, output_dir: str | None = None, state_dict=None) -> None:
            target = output_dir or self.args.output_dir
            os.makedirs(target, exist_ok=True)
            self.model.save_pretrained(target, create_model_card=False)

    return SbertTrainer


def _device_and_precision(options: TrainOptions) -> tuple[str, str]:
    import torch

    from sbert_cli.encoding.devices import cpu_has_native_bf16, resolve_device

    device = resolve_device(options.device)
    if options.precision != "auto":
        return device, options.precision
    # Mixed precision (weights and optimizer stay fp32) where the hardware does bf16 math natively:
    # a MiniLM step took 0.4-0.5 s against 0.6-0.7 s in fp32 on this project's AVX512-BF16 CPU.
    # Emulated bf16 would be slower than fp32.
    if device.startswith("cuda"):
        return device, "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return device, "bf16" if cpu_has_native_bf16() else "fp32"


def _load_model(plan: TrainPlan, options: TrainOptions, device: str):
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Pooling, Transformer

    if options.pooling is None:
        model = SentenceTransformer(plan.spec.path, device=device, local_files_only=True)
    else:
        transformer = Transformer(plan.spec.path, max_seq_length=plan.spec.max_seq_length)
        pooling = Pooling(transformer.get_word_embedding_dimension(), pooling_mode=options.pooling)
        model = SentenceTransformer(modules=[transformer, pooling], device=device)
    if options.max_seq_length:
        model.max_seq_length = options.max_seq_length
    return model


def _datasets(plan: TrainPlan, options: TrainOptions, model, reporter: Reporter):
    from datasets import Dataset

    dataset = Dataset.from_dict(plan.data.as_columns())
    if options.mine_hard_negatives:
        reporter.message(f"mining {options.negatives} hard negative(s) per pair with the base model")
        dataset, mined = mine_negatives(dataset, model, options.negatives, plan.loss)
        reporter.message(f"mined negatives for {mined.rows:,} training rows from {mined.pairs:,} pairs")
    evaluator = None
    if plan.eval_data is not None:
        from sentence_transformers.sentence_transformer.evaluation import EmbeddingSimilarityEvaluator

        first, second = plan.eval_data.texts
        evaluator = EmbeddingSimilarityEvaluator(
            first,
            second,
            plan.eval_data.scores,
            batch_size=64,
            main_similarity="cosine",
            similarity_fn_names=["cosine"],
            name=EVAL_NAME,
            write_csv=False,
        )
    return dataset, evaluator


def _arguments(plan: TrainPlan, options: TrainOptions, run: RunDir, device: str, precision: str):
    from sentence_transformers import SentenceTransformerTrainingArguments
    from sentence_transformers.base.sampler import BatchSamplers

    evaluating = plan.eval_data is not None
    return SentenceTransformerTrainingArguments(
        output_dir=str(run.checkpoints),
        num_train_epochs=options.epochs,
        per_device_train_batch_size=options.batch_size,
        per_device_eval_batch_size=64,
        learning_rate=options.learning_rate,
        warmup_steps=options.warmup_ratio,  # a float below 1 is a fraction of all steps
        weight_decay=options.weight_decay,
        seed=options.seed,
        data_seed=options.seed,
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        use_cpu=device == "cpu",
        dataloader_pin_memory=device != "cpu",
        batch_sampler=BatchSamplers.NO_DUPLICATES
        if uses_in_batch_negatives(plan.loss)
        else BatchSamplers.BATCH_SAMPLER,
        eval_strategy="epoch" if evaluating else "no",
        metric_for_best_model=METRIC if evaluating else None,
        greater_is_better=True,
        save_strategy="steps",
        save_steps=options.save_steps,
        save_total_limit=CHECKPOINTS_KEPT,
        logging_steps=5,
        report_to="none",
        disable_tqdm=True,
    )


def _make_trainer(plan: TrainPlan, options: TrainOptions, run: RunDir, reporter: Reporter):
    from transformers.trainer_callback import PrinterCallback

    from sbert_cli.training.callbacks import SbertCallback

    device, precision = _device_and_precision(options)
    model = _load_model(plan, options, device)
    dataset, evaluator = _datasets(plan, options, model, reporter)
    reporter.message(f"training on {device} ({precision}), {len(dataset):,} rows per epoch, {options.epochs} epoch(s)")
    trainer = _trainer_class()(
        model=model,
        args=_arguments(plan, options, run, device, precision),
        train_dataset=dataset,
        loss=build_loss(plan.loss, model),
        evaluator=evaluator,
        callbacks=[SbertCallback(reporter, run, options.batch_size, options.epochs)],
    )
    trainer.remove_callback(PrinterCallback)  # it prints the logs to stdout; progress goes to the reporter
    return trainer


def _stage_model(source: Path, staging: Path) -> list[str]:
    """Copy the model's files (not the trainer's state) from a checkpoint; returns their names."""
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    names = []
    for entry in sorted(source.iterdir()):
        if entry.name in _TRAINER_STATE_FILES or entry.name == COMPLETE_MARK or entry.name.startswith("rng_state"):
            continue
        (shutil.copytree if entry.is_dir() else shutil.copy2)(entry, staging / entry.name)
        names.append(entry.name)
    return names


def _publish(staging: Path, output: Path, names: list[str]) -> None:
    """Move staged entries into the output directory, each by one rename."""
    for name in names:
        target = output / name
        if target.is_dir():
            shutil.rmtree(target)
        os.replace(staging / name, target)
    shutil.rmtree(staging)


def _finish(plan: TrainPlan, run: RunDir, trainer, started: float, resumed_from: int | None) -> TrainSummary:
    state = trainer.state
    scores = eval_scores(state.log_history, METRIC)
    best_dir = Path(state.best_model_checkpoint) if state.best_model_checkpoint else None
    source = best_dir if best_dir is not None and best_dir.is_dir() else run.last_checkpoint()
    assert source is not None, "training ends with a checkpoint"
    kept_step = int(source.name.rsplit("-", 1)[-1])
    kept = next((s for s in scores if s["step"] == kept_step), {"step": kept_step, "epoch": round(state.epoch or 0)})
    staging = run.work / STAGING_DIR
    names = _stage_model(source, staging)
    facts = {
        **plan.facts,
        "command": plan.command,
        "steps": state.global_step,
        "train_loss": train_loss(state.log_history),
        "precision": "bf16" if trainer.args.bf16 else ("fp16" if trainer.args.fp16 else "fp32"),
        "device": str(trainer.args.device),
    }
    record = build_record(facts, scores, kept)
    record["files"] = sorted([*names, "README.md"])
    (staging / "README.md").write_text(model_card(record, run.output.name), encoding="utf-8")
    _publish(staging, run.output, [*names, "README.md"])
    write_json(run.record_path, record)  # last: its `complete` is what says the model is whole
    run.finish()
    return TrainSummary(
        output=str(run.output),
        status="resumed" if resumed_from is not None else "trained",
        rows=len(plan.data),
        loss=plan.loss,
        steps=state.global_step,
        scores=scores,
        kept=kept,
        seconds=time.perf_counter() - started,
        resumed_from=resumed_from,
    )


def _summary_from_record(run: RunDir, record: dict) -> TrainSummary:
    return TrainSummary(
        output=str(run.output),
        status="done",
        rows=record["rows"],
        loss=record["loss"],
        steps=record["steps"],
        scores=record["eval_scores"],
        kept=record["kept"],
        seconds=0.0,
    )


def train_model(
    paths: Sequence[str], output: str | Path, options: TrainOptions | None = None, reporter: Reporter | None = None
) -> TrainSummary:
    """Fine-tune `options.model` on the pair files `paths` into the model directory `output`.

    Run again after an interruption (even kill -9), the same call continues from the last
    checkpoint and ends with the model an uninterrupted run gives; a different call on the same
    directory is refused unless `options.force`. All input is checked before training starts.
    """
    options = options or TrainOptions()
    reporter = reporter or NullReporter()
    plan = plan_training(list(paths), options)
    run = RunDir(Path(output).resolve())
    with run.lock():
        status = run.prepare(plan.command, options.force)
        if status == "done":
            return _summary_from_record(run, run.record() or {})
        started = time.perf_counter()
        with isolated_training_state(options.threads):
            _announce(plan, reporter)
            trainer = _make_trainer(plan, options, run, reporter)
            checkpoint = run.last_checkpoint() if status == "resume" else None
            resumed_from = int(checkpoint.name.rsplit("-", 1)[-1]) if checkpoint else None
            if checkpoint is not None:
                reporter.message(f"resuming from step {resumed_from:,} ({checkpoint})")
            trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
            return _finish(plan, run, trainer, started, resumed_from)


def _announce(plan: TrainPlan, reporter: Reporter) -> None:
    sources = ", ".join(Path(d["path"]).name for d in plan.facts["data"])
    reporter.message(f"{len(plan.data):,} {plan.data.shape} rows from {sources}; loss {plan.facts['loss_class']}")
    if plan.eval_data is None:
        reporter.message("no --eval file: the model after the last epoch is kept, and no scores are recorded")
    else:
        reporter.message(f"eval: {len(plan.eval_data):,} scored pairs, Spearman each epoch; the best epoch is kept")
