"""`sbert eval sts` and `sbert eval retrieval`: parse arguments, call `sbert_cli.evaluation`, print one
row per model (and dtype)."""

from __future__ import annotations

from typing import Annotated, Literal

import typer

from sbert_cli.cli._common import DeviceOpt, OutputFormat, Quiet, SbertCommand, Verbose, handle_errors

app = typer.Typer(
    name="eval",
    help="Measure models: STS correlations, or retrieval metrics on BEIR-layout files; several models side by side.",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode=None,
)

ModelsOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--model", "-m", metavar="MODEL", help="Model to evaluate; repeat to compare [default: all-MiniLM-L6-v2]."
    ),
]
DtypesOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--dtype",
        metavar="DTYPE",
        help="auto, fp32, bf16, fp16 or int8, for each model; repeat to compare [default: auto].",
    ),
]
FormatOpt = Annotated[
    OutputFormat | None,
    typer.Option("--format", help="table | jsonl | tsv | csv | json [default: table on a terminal, else jsonl]."),
]


@app.command(cls=SbertCommand, no_args_is_help=True)
@handle_errors
def sts(
    pairs: Annotated[str, typer.Argument(metavar="PAIRS", help="Pair file: tsv, csv or jsonl.", show_default=False)],
    gold_column: Annotated[str, typer.Option(metavar="COLUMN", help="Gold score column (name or 0-based index).")],
    text_columns: Annotated[
        str | None,
        typer.Option(
            metavar="A,B", help="The two sentence columns [default: sentence1,sentence2 when the header has them]."
        ),
    ] = None,
    header: Annotated[
        bool | None,
        typer.Option("--header/--no-header", help="First row is a header [default: when a column is a name]."),
    ] = None,
    pairs_format: Annotated[Literal["tsv", "csv", "jsonl"] | None, typer.Option(help="[default: by extension]")] = None,
    model: ModelsOpt = None,
    dtype: DtypesOpt = None,
    device: DeviceOpt = "auto",
    output_format: FormatOpt = None,
    quiet: Quiet = False,
    verbose: Verbose = False,
) -> None:
    """Spearman and Pearson (x1) of cosine vs gold, as `sbert similarity --pairs` computes them."""
    from sbert_cli.analysis.pairs import PairOptions, parse_columns, read_pairs
    from sbert_cli.cli._common import setup_logging
    from sbert_cli.cli.progress import CliReporter
    from sbert_cli.evaluation.compare import STS_COLUMNS, compare_sts, variants

    setup_logging(verbose, quiet)
    options = PairOptions(
        text_columns=parse_columns(text_columns), gold_column=gold_column, format=pairs_format, header=header
    )
    pair_set = read_pairs(pairs, options)  # all of it, before any model loads: bad input fails fast
    with CliReporter(quiet=quiet, verbose=verbose) as reporter:
        rows = compare_sts(pair_set, variants(model, dtype), device, reporter)
    _print(rows, STS_COLUMNS, output_format, f"STS: {pair_set.source}")


@app.command(cls=SbertCommand, no_args_is_help=True)
@handle_errors
def retrieval(
    queries: Annotated[str, typer.Option(metavar="JSONL", help="BEIR queries: _id, text.")],
    qrels: Annotated[str, typer.Option(metavar="TSV", help="BEIR qrels: query-id, corpus-id, score.")],
    corpus: Annotated[
        str | None, typer.Option(metavar="JSONL", help="BEIR corpus: _id, title, text (encoded by each model).")
    ] = None,
    store: Annotated[
        str | None,
        typer.Option(metavar="STORE", help="Instead of --corpus: a store encoded with --id-field _id (its model)."),
    ] = None,
    use_index: Annotated[
        bool, typer.Option("--index", help="--store: search its HNSW index instead of exact search.")
    ] = False,
    model: ModelsOpt = None,
    dtype: DtypesOpt = None,
    device: DeviceOpt = "auto",
    output_format: FormatOpt = None,
    quiet: Quiet = False,
    verbose: Verbose = False,
) -> None:
    """nDCG@10, MRR@10, Recall@1/10/100 and MAP@100 (pytrec_eval) over the judged queries."""
    from sbert_cli.cli._common import setup_logging
    from sbert_cli.cli.progress import CliReporter
    from sbert_cli.errors import InputError
    from sbert_cli.evaluation.compare import RETRIEVAL_COLUMNS, compare_retrieval, retrieval_on_store, variants
    from sbert_cli.evaluation.retrieval import judged_queries, read_jsonl_texts

    setup_logging(verbose, quiet)
    if (corpus is None) == (store is None):
        raise InputError("give --corpus JSONL (each model encodes it) or --store STORE (its vectors), one of them")
    if store is not None and (model or dtype):
        raise InputError("--store is evaluated with the model that encoded it; drop --model/--dtype")
    if use_index and store is None:
        raise InputError("--index measures a store's HNSW index: give --store STORE (built with sbert index)")
    judged = judged_queries(queries, qrels)
    if store is not None:
        rows = [retrieval_on_store(store, judged, use_index, device)]
    else:
        documents = read_jsonl_texts(corpus, with_title=True)
        with CliReporter(quiet=quiet, verbose=verbose) as reporter:
            rows = compare_retrieval(documents, judged, variants(model, dtype), device, reporter)
    _print(rows, RETRIEVAL_COLUMNS, output_format, "retrieval")


def _print(rows: list[dict], columns: list[str], output_format: str | None, title: str) -> None:
    from sbert_cli.cli.output import default_format, write_rows

    write_rows(rows, columns, output_format or default_format(), title=title)
