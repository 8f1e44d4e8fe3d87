"""`sbert similarity`: parse arguments, call `sbert_cli.analysis.similarity`, print the scores."""

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
    OutputFormat,
    PoolingOpt,
    PromptNameOpt,
    PromptOpt,
    Quiet,
    ThreadsOpt,
    Verbose,
    handle_errors,
    messenger,
    setup_logging,
)


@handle_errors
def similarity(
    sentences: Annotated[
        list[str] | None,
        typer.Argument(
            metavar="SENTENCE",
            help="Sentences: the first is compared with each of the others (with --store and one sentence: "
            "with each of the store's records).",
            show_default=False,
        ),
    ] = None,
    matrix: Annotated[bool, typer.Option("--matrix", help="Print the full pairwise matrix of the sentences.")] = False,
    pairs: Annotated[
        str | None,
        typer.Option(
            "--pairs",
            metavar="FILE",
            help="Pair file (tsv, csv, jsonl; - for stdin) scored pair by pair.",
            show_default=False,
        ),
    ] = None,
    text_columns: Annotated[
        str | None,
        typer.Option(
            metavar="COL1,COL2",
            help="--pairs: the two sentence columns, by name or 0-based index, e.g. 5,6 "
            "[default: sentence1,sentence2 when the header has them, else 0,1 if they hold sentences].",
        ),
    ] = None,
    gold_column: Annotated[
        str | None,
        typer.Option(
            metavar="COLUMN",
            help="--pairs: gold score column (name or index): report Spearman and Pearson against it.",
        ),
    ] = None,
    header: Annotated[
        bool | None,
        typer.Option("--header/--no-header", help="--pairs: first row is a header [default: when a column is a name]."),
    ] = None,
    pairs_format: Annotated[
        Literal["tsv", "csv", "jsonl"] | None,
        typer.Option(help="--pairs: the file's format [default: by extension; a tab in the first line means TSV]."),
    ] = None,
    on_bad_gold: Annotated[
        Literal["stop", "skip"],
        typer.Option(help="--pairs: a non-numeric gold value stops (exit 2, with file:line) or is skipped (counted)."),
    ] = "stop",
    output_format: Annotated[
        OutputFormat | None,
        typer.Option("--format", help="Output format [default: table on a terminal, else jsonl]."),
    ] = None,
    store: Annotated[
        str | None,
        typer.Option(
            "--store",
            metavar="STORE",
            help="Use the model (and settings, prompt) recorded in this store; with one SENTENCE, score it "
            "against every record of the store.",
        ),
    ] = None,
    chunks: Annotated[
        bool,
        typer.Option(
            "--chunks",
            help="--store with one sentence: score every chunk of a long record [default: one vector per "
            "record, the mean of its chunks].",
        ),
    ] = False,
    model: ModelOpt = None,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "auto",
    backend: BackendOpt = "auto",
    pooling: PoolingOpt = None,
    normalize: NormalizeOpt = None,
    prompt_name: PromptNameOpt = None,
    prompt: PromptOpt = None,
    max_seq_length: MaxSeqLengthOpt = None,
    threads: ThreadsOpt = None,
    quiet: Quiet = False,
    verbose: Verbose = False,
) -> None:
    """Cosine similarity of sentences, of every pair in a pair file (with STS correlations), or of one
    sentence to every record of a store (--store)."""
    from sbert_cli.analysis.similarity import PairOptions, parse_columns, read_pairs
    from sbert_cli.cli.output import default_format, write_rows
    from sbert_cli.encoding.loader import ModelSettings
    from sbert_cli.errors import InputError

    setup_logging(verbose, quiet)
    sentences = sentences or []
    fmt = output_format or default_format()
    records = pairs is None and store is not None and len(sentences) == 1  # one sentence against the store
    if chunks and not records:
        raise InputError("--chunks applies to one sentence scored against a store's records (--store STORE SENTENCE)")
    if records and matrix:
        raise InputError("--matrix compares sentences given on the command line, not a store's records")
    if not records:
        _check_arguments(
            sentences, matrix, pairs, {"--gold-column": gold_column, "--text-columns": text_columns}, header
        )
    if pairs_format is not None and pairs is None:
        raise InputError("--pairs-format applies to --pairs FILE only")
    pair_set = None
    if pairs is not None:
        # Read (and so validate) the whole file before loading the model: bad input fails fast.
        options = PairOptions(parse_columns(text_columns), gold_column, pairs_format, header, on_bad_gold)
        pair_set = read_pairs(pairs, options)
        if not len(pair_set):
            raise InputError(f"{pairs}: no pairs to score")

    settings = ModelSettings(model, device, dtype, pooling, normalize, max_seq_length, backend, prompt, prompt_name)
    encoder = _encoder(store, settings, threads)
    if records:
        _print_records(encoder, sentences[0], store, chunks, fmt)
    elif pair_set is None:
        _print_sentences(encoder, sentences, matrix, fmt, write_rows)
    else:
        _print_pairs(encoder, pair_set, fmt, messenger(quiet))


def _check_arguments(sentences: list[str], matrix: bool, pairs: str | None, pair_options: dict, header) -> None:
    from sbert_cli.errors import InputError

    if pairs is None:
        for flag, given in (*pair_options.items(), ("--header/--no-header", header)):
            if given is not None:
                raise InputError(f"{flag} applies to --pairs FILE only")
        if len(sentences) < 2:
            raise InputError(
                f"need at least two sentences to compare (got {len(sentences)}); or score a pair file with "
                "--pairs, or one sentence against a store's records with --store STORE"
            )
    elif sentences:
        raise InputError("give sentences or --pairs FILE, not both")
    elif matrix:
        raise InputError("--matrix compares sentences given on the command line, not --pairs")


def _print_records(encoder, sentence: str, store: str, chunks: bool, fmt: str) -> None:
    from sbert_cli.analysis.records import StoreRecords
    from sbert_cli.analysis.similarity import record_score_columns, score_records
    from sbert_cli.cli.output import write_rows
    from sbert_cli.store.store import Store

    records = StoreRecords(Store.open(store), chunks)
    title = f"cosine similarity to {sentence!r}: {store}"
    write_rows(score_records(encoder, sentence, records), record_score_columns(records), fmt, title)


def _print_pairs(encoder, pair_set, fmt: str, say) -> None:
    import time

    from sbert_cli.analysis.similarity import correlate, pair_rows, score_pairs
    from sbert_cli.cli.output import write_rows

    started = time.perf_counter()
    scores = score_pairs(encoder, pair_set)
    elapsed = time.perf_counter() - started
    skipped = ""
    if pair_set.skipped_gold:
        skipped = (
            f"; skipped {pair_set.skipped_gold:,} pair(s) with a non-numeric gold value "
            f"(first at {pair_set.source}:{pair_set.first_skipped})"
        )
    say(f"scored {len(pair_set):,} pairs from {pair_set.source} in {elapsed:.1f} s{skipped}")
    if pair_set.gold is None:
        columns = ["line", "sentence1", "sentence2", "score"]
        write_rows(pair_rows(pair_set, scores), columns, fmt, title=f"cosine similarity: {pair_set.source}")
        return
    result = correlate(scores, pair_set.gold).as_dict()
    result["skipped"] = pair_set.skipped_gold
    if fmt == "json":
        import json
        import sys

        sys.stdout.write(json.dumps(result) + "\n")
    elif fmt == "table":
        write_rows([result], ["spearman", "pearson", "pairs", "skipped"], fmt, title=f"correlation: {pair_set.source}")
    else:
        columns = ["line", "sentence1", "sentence2", "score", "gold"]
        write_rows(pair_rows(pair_set, scores), columns, fmt)
        say(
            "spearman {spearman}, pearson {pearson} over {pairs:,} pairs".format(
                spearman=_x100(result["spearman"]), pearson=_x100(result["pearson"]), pairs=result["pairs"]
            )
        )


def _x100(value: float | None) -> str:
    return "undefined (constant scores or gold)" if value is None else f"{value * 100:.2f} x100"


def _encoder(store: str | None, settings, threads: int | None):
    """The store's model with --store (refusing overrides that would change its vectors), else
    the model options as encode takes them."""
    from sbert_cli.encoding.loader import encoder_for_store, load_encoder
    from sbert_cli.errors import InputError

    if threads:
        import torch

        torch.set_num_threads(threads)
    if store is None:
        return load_encoder(settings)
    from sbert_cli.store.store import Store

    given = [
        flag
        for flag, value in (
            ("--model", settings.model),
            ("--pooling", settings.pooling),
            ("--normalize", settings.normalize),
            ("--max-seq-length", settings.max_seq_length),
            ("--prompt", settings.prompt),
            ("--prompt-name", settings.prompt_name),
        )
        if value is not None
    ]
    if given or settings.dtype != "auto":
        raise InputError(f"--store uses the store's model settings; drop {', '.join(given or ['--dtype'])}")
    return encoder_for_store(Store.open(store).model, settings.device)


def _print_sentences(encoder, sentences: list[str], matrix: bool, fmt: str, write_rows) -> None:
    from sbert_cli.analysis.similarity import score_sentences, similarity_matrix

    if not matrix:
        write_rows(score_sentences(encoder, sentences), ["sentence1", "sentence2", "score"], fmt, "cosine similarity")
        return
    scores = similarity_matrix(encoder, sentences)
    if fmt in ("jsonl", "json"):
        rows = [
            {"index": i, "sentence": s, "scores": [round(float(v), 6) for v in scores[i]]}
            for i, s in enumerate(sentences)
        ]
        write_rows(rows, ["index", "sentence", "scores"], fmt)
        return
    columns = ["#", "sentence", *(str(j) for j in range(len(sentences)))]
    rows = [
        {"#": i, "sentence": s, **{str(j): round(float(v), 6) for j, v in enumerate(scores[i])}}
        for i, s in enumerate(sentences)
    ]
    write_rows(rows, columns, fmt, "cosine similarity matrix")
