"""`sbert search`: gather queries, call `Index.search`, print the hits."""

from __future__ import annotations

from typing import Annotated, Literal

import typer

from sbert_cli.cli._common import DeviceOpt, OutputFormat, Quiet, Verbose, handle_errors, setup_logging

SEARCH_FORMATS = ("table", "jsonl", "tsv", "csv", "json")
# The table's name for the score column: what the mode ranks by.
SCORE_HEADERS = {"dense": "score:dense", "keyword": "score:bm25", "hybrid": "score:fused"}


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
        typer.Option(
            help="Drop hits whose mode score is below this. Scales: dense cosine (-1 to 1); keyword BM25 "
            "(0 up, unbounded); hybrid convex fusion (0 to 1), rrf (at most 2 / (rrf_k + 1)).",
        ),
    ] = None,
    min_cosine: Annotated[
        float | None,
        typer.Option(help="Drop hits whose dense cosine similarity to the query (-1 to 1) is below this, any mode."),
    ] = None,
    mode: Annotated[
        Literal["dense", "keyword", "hybrid"] | None,
        typer.Option(
            help="dense: vectors; keyword: BM25 over the texts; hybrid: both, fused [default: hybrid when the "
            "store has a keyword index, else dense].",
        ),
    ] = None,
    fusion: Annotated[
        Literal["convex", "rrf"] | None,
        typer.Option(
            help="Hybrid: convex = alpha x dense + (1 - alpha) x BM25, each normalized per query (dense min-max, "
            "BM25 / its max); rrf = reciprocal rank fusion [default: convex].",
        ),
    ] = None,
    alpha: Annotated[
        float | None, typer.Option(help="Hybrid convex: the dense weight, 0 to 1 [default: 0.4, measured].")
    ] = None,
    rrf_k: Annotated[
        int | None, typer.Option(help="Hybrid rrf: 1 / (rrf_k + rank) per list [default: 60]; implies --fusion rrf.")
    ] = None,
    where: Annotated[
        str | None,
        typer.Option(
            metavar="SQL",
            help="Only rows for which this SQL boolean expression holds, over the stored columns (source, line, "
            "key, text, chunk and kept fields), e.g. \"year >= 2020 AND source LIKE '%news%'\" (DuckDB).",
        ),
    ] = None,
    chunks: Annotated[
        bool,
        typer.Option(
            "--chunks",
            help="Return chunk rows; by default hits are records, each ranked by and showing its best chunk.",
        ),
    ] = False,
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
    """Search a store: the records closest in meaning (dense), sharing rare words (keyword), or both (hybrid).

    Every hit has `score` (the mode's) and `cosine` (the dense similarity, whatever the mode)."""
    from sbert_cli.cli.output import default_format, write_rows
    from sbert_cli.errors import InputError
    from sbert_cli.inputs.reader import STDIN, read_text_lines
    from sbert_cli.retrieval import Index

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
    results = index.search(
        texts,
        k=k,
        ef=ef,
        min_score=min_score,
        mode=mode,
        fusion=fusion,
        rrf_k=rrf_k,
        alpha=alpha,
        rescore=rescore,
        where=where,
        chunks=chunks,
        min_cosine=min_cosine,
    )
    columns = index.columns(mode)
    if fmt != "table":
        write_rows([hit.as_dict() for per_query in results for hit in per_query], columns, fmt)
        return
    # On a terminal: one table per query, titled with it and with what its score column is.
    # The passage's offsets stay in the other formats: the table gives its width to the text.
    extra = [c for c in index.layout.extra if c not in ("start", "end")]
    shown = ("rank", "score", "cosine", "text", "source", "line", "key", *extra, "id")
    if mode != "dense":
        shown += ("dense_rank", "keyword_rank")
    headers = {"score": SCORE_HEADERS[mode]}
    for query, per_query in zip(texts, results, strict=True):
        rows = [h.as_dict() for h in per_query]
        write_rows(
            rows,
            [c for c in shown if c != "key" or any(r["key"] is not None for r in rows)],
            fmt,
            query,
            headers=headers,
        )
