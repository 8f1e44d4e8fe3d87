"""`sbert encode`: parse arguments, call `runner.encode_corpus`, print the summary."""

from __future__ import annotations

from typing import Annotated, Literal

import typer

from sbert_cli.cli._common import (
    BackendOpt,
    DeviceOpt,
    DtypeOpt,
    MaxSeqLengthOpt,
    ModelOpt,
    NormalizeOpt,
    PoolingOpt,
    ProgressInterval,
    PromptNameOpt,
    PromptOpt,
    Quiet,
    ThreadsOpt,
    Verbose,
    handle_errors,
    setup_logging,
)


@handle_errors
def encode(
    inputs: Annotated[
        list[str], typer.Argument(metavar="INPUT", help="Files, directories, or - for stdin.", show_default=False)
    ],
    output: Annotated[
        str,
        typer.Option("--output", "-o", metavar="STORE", help="Store directory (created, appended to or resumed)."),
    ],
    model: ModelOpt = None,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "auto",
    backend: BackendOpt = "auto",
    pooling: PoolingOpt = None,
    normalize: NormalizeOpt = None,
    prompt_name: PromptNameOpt = None,
    prompt: PromptOpt = None,
    max_seq_length: MaxSeqLengthOpt = None,
    batch_tokens: Annotated[
        int | None,
        typer.Option(metavar="TOKENS", help="Padded tokens per batch [default: 2048 on CPU, 65536 on GPU]."),
    ] = None,
    threads: ThreadsOpt = None,
    workers: Annotated[
        int | None,
        typer.Option(
            min=1,
            metavar="N",
            help="Tokenizer threads feeding the model (each tokenizer call already uses every core); "
            "the output is the same for any N [default: 1 on CPU, 2 with a GPU].",
        ),
    ] = None,
    input_format: Annotated[
        Literal["txt", "jsonl", "csv", "tsv", "parquet"] | None,
        typer.Option("--format", help="Input format [default: by extension]."),
    ] = None,
    text_field: Annotated[
        str, typer.Option(metavar="FIELD", help="jsonl: the field holding the text (dots reach into objects).")
    ] = "text",
    id_field: Annotated[
        str | None, typer.Option(metavar="FIELD", help="jsonl/csv/parquet: a field kept as the row's `key`.")
    ] = None,
    text_column: Annotated[
        str | None,
        typer.Option(metavar="COLUMN", help="csv/tsv/parquet: text column by name or 0-based index [default: text]."),
    ] = None,
    header: Annotated[
        bool | None,
        typer.Option(
            "--header/--no-header", help="csv/tsv: first row is a header [default: when --text-column is a name]."
        ),
    ] = None,
    chunk_size: Annotated[
        int | None,
        typer.Option(
            metavar="TOKENS",
            help="Cut records longer than this many tokens (special tokens and prompt included) into "
            "overlapping chunks [default: half the model's max_seq_length].",
        ),
    ] = None,
    chunk_overlap: Annotated[
        int | None, typer.Option(metavar="TOKENS", help="Tokens shared by consecutive chunks [default: 32].")
    ] = None,
    truncate: Annotated[
        bool,
        typer.Option(
            "--truncate", help="One row per record, cut at max_seq_length (the summary says how much was dropped)."
        ),
    ] = False,
    keep_fields: Annotated[
        str | None,
        typer.Option(
            metavar="A,B",
            help="jsonl/csv/parquet: fields stored as typed columns (string, integer, float, boolean, timestamp).",
        ),
    ] = None,
    glob: Annotated[
        str | None, typer.Option(metavar="PATTERN", help="Files inside directory inputs, e.g. '**/*.jsonl'.")
    ] = None,
    encoding: Annotated[str, typer.Option(metavar="CODEC", help="Text encoding of the inputs.")] = "utf-8",
    errors: Annotated[
        Literal["strict", "replace", "ignore"],
        typer.Option(help="Undecodable bytes: strict stops with file and line."),
    ] = "strict",
    storage_dtype: Annotated[
        Literal["float32", "float16"] | None,
        typer.Option(help="How vectors are stored; float16 takes half the disk [default: the store's, or float32]."),
    ] = None,
    store_text: Annotated[
        bool | None,
        typer.Option(
            "--text/--no-text",
            help="Store the texts, or only source and line [default: the store's, or --text].",
        ),
    ] = None,
    shard_size: Annotated[
        int | None,
        typer.Option(
            metavar="ROWS",
            help="Rows per Parquet shard (the unit of resumption) [default: the store's, or 20000].",
        ),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Re-encode inputs the store already has.")] = False,
    sync: Annotated[
        bool,
        typer.Option(
            "--sync",
            help="Make the store hold exactly the given inputs as they are now: encode new and changed records "
            "only, remove inputs not given, follow renames (no model load when nothing changed).",
        ),
    ] = False,
    ray: Annotated[
        str | None,
        typer.Option(
            "--ray",
            metavar="[ADDRESS]",
            help="Run the model on Ray workers; the store is the same. Alone: a local Ray runtime; auto, HOST:PORT "
            "or ray://HOST:PORT: that cluster, whose nodes must all mount the store at the same path. "
            "Needs: pip install 'sbert-cli[ray]'.",
        ),
    ] = None,
    ray_workers: Annotated[
        int | None,
        typer.Option(
            min=1,
            metavar="N",
            help="With --ray: workers, each loading the model once [default: one per GPU, else CPU].",
        ),
    ] = None,
    progress_interval: ProgressInterval = 5.0,
    quiet: Quiet = False,
    verbose: Verbose = False,
) -> None:
    """Encode text into a Parquet embedding store. Safe to kill: run it again to continue."""
    from sbert_cli.cli.progress import CliReporter
    from sbert_cli.encoding.runner import EncodeOptions, encode_corpus
    from sbert_cli.errors import InputError
    from sbert_cli.inputs.fields import parse_names
    from sbert_cli.inputs.reader import ReadOptions

    setup_logging(verbose, quiet)
    if ray_workers is not None and ray is None:
        raise InputError("--ray-workers applies to --ray runs; add --ray")
    if sync and (ray is not None or force):
        raise InputError(f"--sync does not combine with {'--ray' if ray is not None else '--force'}")
    options = EncodeOptions(
        model=model,
        device=device,
        dtype=dtype,
        pooling=pooling,
        normalize=normalize,
        max_seq_length=max_seq_length,
        batch_tokens=batch_tokens,
        threads=threads,
        workers=workers,
        backend=backend,
        prompt=prompt,
        prompt_name=prompt_name,
        storage_dtype=storage_dtype,
        store_text=store_text,
        shard_size=shard_size,
        force=force,
        sync=sync,
        glob=glob,
        chunk_mode="truncate" if truncate else None,
        chunk_size=chunk_size,
        chunk_overlap=chunk_overlap,
        read=ReadOptions(
            format=input_format,
            text_field=text_field,
            id_field=id_field,
            text_column=text_column,
            header=header,
            encoding=encoding,
            errors=errors,
            keep_fields=parse_names(keep_fields),
        ),
    )
    with CliReporter(quiet=quiet, verbose=verbose, interval=progress_interval) as reporter:
        if ray is None:
            summary = encode_corpus(inputs, output, options, reporter=reporter)
        else:
            from sbert_cli.distributed import RayOptions, encode_on_ray

            summary = encode_on_ray(inputs, output, options, RayOptions(ray, ray_workers), reporter=reporter)
    _report(summary, reporter.message, sync)


def _report(summary, say, sync: bool) -> None:
    """The run's one summary line (a sync's counts first)."""
    from sbert_cli.cli.progress import stage_text

    if sync:  # a new store: every input was new
        from sbert_cli.encoding.plan import SyncCounts

        counts = summary.sync or SyncCounts(new=summary.inputs_encoded)
        say(f"{counts.line()}; store {summary.store} now has {summary.store_rows:,} rows")
        if not summary.rows:
            return
    elif summary.inputs_skipped:
        say(
            f"{len(summary.inputs_skipped)} input(s) already encoded, skipped (-v lists them; --force re-encodes, --sync follows changes)"
        )
    if not summary.rows and not summary.inputs_encoded:
        say(f"nothing to do; {summary.store} has {summary.store_rows:,} rows")
        return
    rate = f"{summary.texts_per_s:,.1f} texts/s, {summary.tokens / max(summary.elapsed, 1e-9):,.0f} tokens/s"
    encoded = f"{summary.rows:,} texts"
    if summary.records and summary.records != summary.rows:  # chunked: records in, chunk rows out
        encoded = f"{summary.records:,} records as {summary.rows:,} chunks"
        rate = rate.replace("texts/s", "chunks/s")
    say(
        f"encoded {encoded} from {summary.inputs_encoded} input(s) into {summary.shards} shard(s) "
        f"in {summary.elapsed:.1f} s ({rate}); skipped blank: {summary.blank:,}; "
        f"{_rows_text(summary)}; store {summary.store} now has {summary.store_rows:,} rows; "
        f"stages: {stage_text(summary.stages, summary.tokens)}"
    )


def _rows_text(summary) -> str:
    """`truncated: N` (and what it dropped), plus how many records became several chunks."""
    chunks = summary.chunking
    text = f"truncated: {summary.truncated:,}"
    if chunks.truncated:
        text += f" (dropped {chunks.dropped_chars:,} characters, {chunks.dropped_tokens:,} tokens)"
    if chunks.chunked:
        text += f"; chunked: {chunks.chunked:,} records into {chunks.rows - (chunks.records - chunks.chunked):,} chunks"
    return text
