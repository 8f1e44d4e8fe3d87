"""`sbert train`: parse arguments, call `training.train_model`, print the summary."""

from __future__ import annotations

from typing import Annotated, Literal

import typer

from sbert_cli.cli._common import DeviceOpt, ModelOpt, OutputFormat, ProgressInterval, Quiet, Verbose, handle_errors

Loss = Literal["auto", "cosent", "cosine", "mnrl", "contrastive", "triplet"]
Precision = Literal["auto", "fp32", "bf16", "fp16"]
PairsFormat = Literal["csv", "tsv", "jsonl", "parquet"]
SUMMARY_COLUMNS = ["output", "status", "rows", "loss", "steps", "kept_epoch", "spearman", "seconds"]


@handle_errors
def train(
    pairs: Annotated[
        list[str],
        typer.Argument(
            metavar="PAIRS", help="Training files: csv, tsv, jsonl or parquet (.gz too).", show_default=False
        ),
    ],
    output: Annotated[
        str, typer.Option("--output", "-o", metavar="MODEL_DIR", help="Model directory to write (or resume).")
    ],
    model: ModelOpt = None,
    text_columns: Annotated[
        str | None,
        typer.Option(
            metavar="A,B[,C]",
            help="Text columns by name or 0-based index: two for pairs, three for (anchor, positive, negative) "
            "[default: anchor,positive[,negative] or sentence1,sentence2 when named, else 0,1].",
        ),
    ] = None,
    score_column: Annotated[
        str | None, typer.Option(metavar="COLUMN", help="Score column (name or index): scored pairs.")
    ] = None,
    score_range: Annotated[
        str, typer.Option(metavar="LO,HI", help="The scores' scale, mapped to [0, 1]; a score outside it stops.")
    ] = "0,1",
    header: Annotated[
        bool | None,
        typer.Option("--header/--no-header", help="csv/tsv: first row is a header [default: when a column is a name]."),
    ] = None,
    pairs_format: Annotated[PairsFormat | None, typer.Option(help="Input format [default: by extension].")] = None,
    eval_path: Annotated[
        str | None,
        typer.Option("--eval", metavar="PAIRS", help="Scored pairs: Spearman each epoch; the best epoch is kept."),
    ] = None,
    eval_text_columns: Annotated[
        str | None, typer.Option(metavar="A,B", help="--eval's text columns [default: --text-columns].")
    ] = None,
    eval_score_column: Annotated[
        str | None, typer.Option(metavar="COLUMN", help="--eval's score column [default: --score-column].")
    ] = None,
    eval_score_range: Annotated[
        str | None, typer.Option(metavar="LO,HI", help="--eval's score scale [default: --score-range].")
    ] = None,
    loss: Annotated[
        Loss, typer.Option(help="auto: cosent for scored pairs, mnrl (MultipleNegativesRanking) otherwise.")
    ] = "auto",
    epochs: Annotated[int, typer.Option(min=1)] = 4,
    batch_size: Annotated[int, typer.Option(min=2)] = 16,
    learning_rate: Annotated[float, typer.Option()] = 5e-5,
    warmup: Annotated[float, typer.Option(help="Linear warm-up, as a fraction of all steps.")] = 0.1,
    seed: Annotated[int, typer.Option(help="Seed for initialization and data order.")] = 42,
    max_seq_length: Annotated[
        int | None, typer.Option(help="Truncate texts to this many tokens [default: the model's].")
    ] = None,
    pooling: Annotated[
        Literal["mean", "cls", "max"] | None,
        typer.Option(help="Pooling for a plain transformers checkpoint [default: the model's, else mean]."),
    ] = None,
    mine_hard_negatives: Annotated[
        bool,
        typer.Option(
            "--mine-hard-negatives",
            help="(anchor, positive) pairs: add the texts the base model ranks just below each positive as negatives.",
        ),
    ] = False,
    negatives: Annotated[int, typer.Option(min=1, help="Mined negatives per pair.")] = 1,
    save_steps: Annotated[int, typer.Option(min=1, help="Checkpoint every N steps (and at every epoch end).")] = 100,
    precision: Annotated[
        Precision, typer.Option(help="auto: bf16 mixed precision where the hardware has native bf16, else fp32.")
    ] = "auto",
    device: DeviceOpt = "auto",
    threads: Annotated[int | None, typer.Option(help="CPU threads [default: all cores].")] = None,
    force: Annotated[bool, typer.Option("--force", help="Start over in a directory holding another run.")] = False,
    output_format: Annotated[
        OutputFormat | None,
        typer.Option("--format", help="Summary format [default: table on a terminal, else jsonl]."),
    ] = None,
    progress_interval: ProgressInterval = 5.0,
    quiet: Quiet = False,
    verbose: Verbose = False,
) -> None:
    """Fine-tune a sentence-transformers model on labelled pairs. Safe to kill: run it again to continue."""
    import os

    # Before torch loads (a process-wide choice, so the CLI's): OpenMP threads that sleep at a
    # barrier instead of spinning. On a CPU shared with other jobs, spinning threads measured
    # 2-19 s per training step, sleeping ones 0.6-1.2 s (one thread alone: 1.2-1.9 s).
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from sbert_cli.cli._common import setup_logging
    from sbert_cli.cli.progress import CliReporter
    from sbert_cli.training.data import ColumnOptions, parse_score_range, parse_text_columns
    from sbert_cli.training.plan import TrainOptions
    from sbert_cli.training.trainer import train_model

    setup_logging(verbose, quiet)
    columns = ColumnOptions(
        text_columns=parse_text_columns(text_columns),
        score_column=score_column,
        score_range=parse_score_range(score_range),
        header=header,
        format=pairs_format,
    )
    eval_columns = None
    if any(v is not None for v in (eval_text_columns, eval_score_column, eval_score_range)):
        eval_columns = ColumnOptions(
            text_columns=parse_text_columns(eval_text_columns) or columns.text_columns,
            score_column=eval_score_column or score_column,
            score_range=parse_score_range(eval_score_range) if eval_score_range else columns.score_range,
            header=header,
            format=pairs_format,
        )
    options = TrainOptions(
        model=model,
        columns=columns,
        eval_path=eval_path,
        eval_columns=eval_columns,
        loss=loss,
        epochs=epochs,
        batch_size=batch_size,
        learning_rate=learning_rate,
        warmup_ratio=warmup,
        seed=seed,
        max_seq_length=max_seq_length,
        pooling=pooling,
        mine_hard_negatives=mine_hard_negatives,
        negatives=negatives,
        save_steps=save_steps,
        precision=precision,
        device=device,
        threads=threads,
        force=force,
    )
    with CliReporter(quiet=quiet, verbose=verbose, interval=progress_interval) as reporter:
        summary = train_model(pairs, output, options, reporter=reporter)
    _print_summary(summary, output_format, reporter.message)


def _print_summary(summary, output_format: str | None, say) -> None:
    from dataclasses import asdict

    from sbert_cli.cli.output import default_format, write_rows

    kept = summary.kept or {}
    if summary.status == "done":
        say(f"{summary.output} already holds the model this command trains; nothing to do (--force to retrain)")
    else:
        score = f", eval Spearman {kept['spearman'] * 100:.2f}" if "spearman" in kept else ""
        say(
            f"wrote {summary.output}: {summary.steps:,} steps in {summary.seconds:.0f} s; kept epoch {kept.get('epoch')}{score}"
        )
    fmt = output_format or default_format()
    if fmt == "json":
        import json
        import sys

        sys.stdout.write(json.dumps(asdict(summary)) + "\n")
        return
    row = {**asdict(summary), "kept_epoch": kept.get("epoch"), "spearman": kept.get("spearman")}
    row["seconds"] = round(summary.seconds, 1)
    write_rows([row], SUMMARY_COLUMNS, fmt, title="sbert train")
