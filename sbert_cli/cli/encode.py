"""`sbert encode`: parse arguments, call `runner.encode_corpus`, print the summary."""

from __future__ import annotations

from typing import Annotated

import typer

from sbert_cli.cli._common import (
    BackendOpt,
    DeviceOpt,
    DtypeOpt,
    ModelOpt,
    NormalizeOpt,
    PoolingOpt,
    Quiet,
    Verbose,
    handle_errors,
    setup_logging,
)


@handle_errors
def encode(
    inputs: Annotated[list[str], typer.Argument(help="Files, directories, or - for stdin.", show_default=False)],
    output: Annotated[str, typer.Option("--output", "-o", help="Store directory (created, appended to or resumed).")],
    model: ModelOpt = None,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "auto",
    backend: BackendOpt = "auto",
    pooling: PoolingOpt = None,
    normalize: NormalizeOpt = None,
    max_seq_length: Annotated[
        int | None, typer.Option(help="Truncate texts to this many tokens [default: the model's].")
    ] = None,
    batch_tokens: Annotated[
        int | None, typer.Option(help="Padded tokens per batch [default: 2048 on CPU, 65536 on GPU].")
    ] = None,
    threads: Annotated[int | None, typer.Option(help="CPU threads for the model [default: all cores].")] = None,
    input_format: Annotated[
        str | None,
        typer.Option("--format", help="Input format: txt | jsonl | csv | tsv | parquet [default: by extension]."),
    ] = None,
    text_field: Annotated[
        str, typer.Option(help="jsonl: the field holding the text (dots reach into objects).")
    ] = "text",
    id_field: Annotated[str | None, typer.Option(help="jsonl/csv/parquet: a field kept as the row's `key`.")] = None,
    text_column: Annotated[
        str | None, typer.Option(help="csv/tsv/parquet: text column by name or 0-based index [default: text].")
    ] = None,
    header: Annotated[
        bool | None,
        typer.Option(
            "--header/--no-header", help="csv/tsv: first row is a header [default: when --text-column is a name]."
        ),
    ] = None,
    glob: Annotated[
        str | None, typer.Option(help="Pattern for files inside directory inputs, e.g. '**/*.jsonl'.")
    ] = None,
    encoding: Annotated[str, typer.Option(help="Text encoding of the inputs.")] = "utf-8",
    errors: Annotated[
        str, typer.Option(help="Undecodable bytes: strict (stop with file and line) | replace | ignore.")
    ] = "strict",
    storage_dtype: Annotated[str, typer.Option(help="float32 | float16 (half the disk).")] = "float32",
    no_text: Annotated[bool, typer.Option("--no-text", help="Do not store the texts, only source and line.")] = False,
    shard_size: Annotated[int, typer.Option(help="Rows per Parquet shard (the unit of resumption).")] = 20_000,
    force: Annotated[bool, typer.Option("--force", help="Re-encode inputs the store already has.")] = False,
    quiet: Quiet = False,
    verbose: Verbose = False,
) -> None:
    """Encode text into a Parquet embedding store. Safe to kill: run it again to continue."""
    from sbert_cli.cli.progress import CliReporter, stage_text
    from sbert_cli.encoding.runner import EncodeOptions, encode_corpus
    from sbert_cli.errors import InputError
    from sbert_cli.inputs.reader import ReadOptions

    setup_logging(verbose, quiet)
    if errors not in ("strict", "replace", "ignore"):
        raise InputError(f"--errors {errors}: choose strict, replace or ignore")
    options = EncodeOptions(
        model=model,
        device=device,
        dtype=dtype,
        pooling=pooling,
        normalize=normalize,
        max_seq_length=max_seq_length,
        batch_tokens=batch_tokens,
        threads=threads,
        backend=backend,
        storage_dtype=storage_dtype,
        store_text=not no_text,
        shard_size=shard_size,
        force=force,
        glob=glob,
        read=ReadOptions(
            format=input_format,
            text_field=text_field,
            id_field=id_field,
            text_column=text_column,
            header=header,
            encoding=encoding,
            errors=errors,
        ),
    )
    with CliReporter(quiet=quiet, verbose=verbose) as reporter:
        summary = encode_corpus(inputs, output, options, reporter=reporter)
    say = reporter.message
    if not summary.rows and not summary.inputs_encoded:
        say(f"nothing to do; {summary.store} has {summary.store_rows:,} rows")
        return
    rate = f"{summary.texts_per_s:,.1f} texts/s, {summary.tokens / max(summary.elapsed, 1e-9):,.0f} tokens/s"
    say(
        f"encoded {summary.rows:,} texts from {summary.inputs_encoded} input(s) into {summary.shards} shard(s) "
        f"in {summary.elapsed:.1f} s ({rate}); skipped blank: {summary.blank:,}; "
        f"truncated: {summary.truncated:,}; store {summary.store} now has {summary.store_rows:,} rows"
    )
    say(f"stages: {stage_text(summary.stages)}")
