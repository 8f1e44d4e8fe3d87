"""`sbert search`: gather queries, call `Index.search`, print the hits."""

from __future__ import annotations

from typing import Annotated, Literal

import typer

from sbert_cli.cli._common import DeviceOpt, OutputFormat, Quiet, Verbose, handle_errors, setup_logging

SEARCH_FORMATS = ("table", "jsonl", "tsv", "csv", "json")


@handle_errors
def search(
    store: Annotated[
        str, typer.Argument(metavar="STORE", help="Store directory made by `sbert encode`.", show_default=False)
    ],
    queries: Annotated[
        list[str] | None,
        typer.Argument(metavar="QUERY", help="Queries; - reads them from stdin, one a line.", show_default=False),
    ] = None,
    queries_file: Annotated[
        str | None,
        typer.Option("--queries-file", "-f", metavar="FILE", help="File of queries, one a line (- for stdin)."),
    ] = None,
    k: Annotated[int, typer.Option("-k", "--top-k", help="Hits per query.")] = 10,
    ef: Annotated[
        int | None, typer.Option(help="HNSW search breadth: higher is better recall, slower [default: 400, >= k].")
    ] = None,
    exact: Annotated[
        bool, typer.Option("--exact", help="Brute-force search over every row (no index needed; the reference).")
    ] = False,
    min_score: Annotated[
        float | None,
        typer.Option(help="Drop hits scoring below this: cosine similarity (dense), BM25 (keyword), fused (hybrid)."),
    ] = None,
    mode: Annotated[
        Literal["dense", "keyword", "hybrid"] | None,
        typer.Option(
            help="dense: vectors; keyword: BM25 over the texts; hybrid: both, fused [default: hybrid when the "
            "store has a keyword index, else dense].",
        ),
    ] = None,
    rrf_k: Annotated[
        int | None, typer.Option(help="Hybrid: fuse by reciprocal rank, 1/(rrf_k + rank) per list [default: 60].")
    ] = None,
    alpha: Annotated[
        float | None,
        typer.Option(help="Hybrid: fuse by alpha x dense + (1 - alpha) x keyword, each min-max normalized (0 to 1)."),
    ] = None,
    rescore: Annotated[
        int | None,
        typer.Option(
            help="Compressed index: rescore this many x k candidates at full precision [default: int8 4, binary 30]."
        ),
    ] = None,
    output_format: Annotated[
        OutputFormat | None,
        typer.Option(
            "--format",
            help="table: one line a hit, cut to the terminal's width; the others keep every field in full "
            "[default: table on a terminal, else jsonl].",
        ),
    ] = None,
    device: DeviceOpt = "auto",
    quiet: Quiet = False,
    verbose: Verbose = False,
) -> None:
    """Search a store: the rows closest in meaning (dense), sharing rare words (keyword), or both (hybrid)."""
    from sbert_cli.cli.output import default_format, write_rows
    from sbert_cli.errors import InputError
    from sbert_cli.inputs.reader import STDIN, read_text_lines
    from sbert_cli.retrieval import FUSION_COLUMNS, HIT_COLUMNS, Index

    setup_logging(verbose, quiet)
    fmt = output_format or default_format()
    if fmt not in SEARCH_FORMATS:
        raise InputError(f"--format {fmt}: choose from {', '.join(SEARCH_FORMATS)}")
    texts: list[str] = []
    for query in queries or []:
        texts += read_text_lines(STDIN) if query == STDIN else [query]
    if queries_file is not None:
        from_file = read_text_lines(queries_file)
        if not from_file:
            raise InputError(f"{'<stdin>' if queries_file == STDIN else queries_file}: no queries (only blank lines)")
        texts += from_file
    if not texts:
        raise InputError("no query given (pass queries as arguments, --queries-file FILE, or - for stdin)")

    # Keyword search needs no dense index: open the store as exact search does (no graph loaded).
    index = Index.open(store, exact=exact or mode == "keyword", device=device)
    mode = index.resolve_mode(mode)
    results = index.search(texts, k=k, ef=ef, min_score=min_score, mode=mode, rrf_k=rrf_k, alpha=alpha, rescore=rescore)
    # Keyword and hybrid hits also say where they stood in each ranking.
    extra = () if mode == "dense" else FUSION_COLUMNS
    hits = [hit.as_dict() for per_query in results for hit in per_query]
    if fmt != "table":
        write_rows(hits, HIT_COLUMNS + extra, fmt)
        return
    # On a terminal: one table per query, titled with it.
    columns = ("rank", "score", "text", "source", "line", "id") + (("dense_rank", "keyword_rank") if extra else ())
    for query, per_query in zip(texts, results, strict=True):
        write_rows([h.as_dict() for h in per_query], columns, fmt, query)
