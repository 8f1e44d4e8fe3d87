"""`sbert search`: gather queries, call `Index.search`, print the hits."""

from __future__ import annotations

from typing import Annotated, Literal

import typer

from sbert_cli.cli._common import DeviceOpt, OutputFormat, Quiet, Verbose, handle_errors, setup_logging

SEARCH_FORMATS = ("table", "jsonl", "tsv", "csv", "json")
# The table's name for the score column: what the mode ranks by.
SCORE_HEADERS = {"dense": "score:dense", "keyword": "score:bm25", "hybrid": "score:fused"}


StoreOpt = Annotated[
    str, typer.Argument(metavar="STORE", help="Store directory made by `sbert encode`.", show_default=False)
]

QueriesOpt = Annotated[
    list[str] | None,
    typer.Argument(metavar="QUERY", help="Queries; - reads them from stdin, one a line.", show_default=False),
]

QueriesFileOpt = Annotated[
    str | None,
    typer.Option("--queries-file", "-f", metavar="FILE", help="File of queries, one a line (- for stdin)."),
]

KOpt = Annotated[int, typer.Option("-k", "--top-k", help="Hits (records) per query; fewer only when fewer match.")]

EfOpt = Annotated[
    int | None, typer.Option(help="HNSW search breadth: higher is better recall, slower [default: 400, >= k].")
]

ExactOpt = Annotated[
    bool, typer.Option("--exact", help="Brute-force search over every row (no index needed; the reference).")
]

MinScoreOpt = Annotated[
    float | None,
    typer.Option(
        help="Drop hits whose mode score is below this. Scales: dense cosine (-1 to 1); keyword BM25 "
        "(0 up, unbounded); hybrid convex fusion (0 to 1), rrf (at most 2 / (rrf_k + 1)).",
    ),
]

MinCosineOpt = Annotated[
    float | None,
    typer.Option(help="Drop hits whose dense cosine similarity to the query (-1 to 1) is below this, any mode."),
]

ModeOpt = Annotated[
    Literal["dense", "keyword", "hybrid"] | None,
    typer.Option(
        help="dense: vectors; keyword: BM25 over the texts; hybrid: both, fused [default: hybrid when the "
        "store has a keyword index, else dense].",
    ),
]

FusionOpt = Annotated[
    Literal["convex", "rrf"] | None,
    typer.Option(
        help="Hybrid: convex = alpha x dense + (1 - alpha) x BM25, each list's scores normalized per query "
        "(mean +- 3 sd to 0..1, DBSF); rrf = reciprocal rank fusion [default: convex].",
    ),
]

AlphaOpt = Annotated[
    float | None,
    typer.Option(
        help="Hybrid convex: the dense weight, 0 to 1 [default: per query, from how sharply each list's best "
        "scores stand out; measured].",
    ),
]

RrfKOpt = Annotated[
    int | None, typer.Option(help="Hybrid rrf: 1 / (rrf_k + rank) per list [default: 60]; implies --fusion rrf.")
]

WhereOpt = Annotated[
    str | None,
    typer.Option(
        metavar="SQL",
        help="Only rows for which this SQL boolean expression holds, over the stored columns (source, line, "
        "key, text, chunk and kept fields), e.g. \"year >= 2020 AND source LIKE '%news%'\" (DuckDB).",
    ),
]

ChunksOpt = Annotated[
    bool,
    typer.Option(
        "--chunks",
        help="Return chunk rows; by default hits are records, each ranked by and showing its best chunk.",
    ),
]

RescoreOpt = Annotated[
    int | None,
    typer.Option(
        help="Compressed index: rescore this many x k candidates at full precision [default: int8 4, binary 120]."
    ),
]

OutputFormatOpt = Annotated[
    OutputFormat | None,
    typer.Option(
        "--format",
        help="table: one line a hit, cut to the terminal's width; the others keep every field in full "
        "[default: table on a terminal, else jsonl].",
    ),
]


@handle_errors
def search(
    store: StoreOpt,
    queries: QueriesOpt = None,
    queries_file: QueriesFileOpt = None,
    k: KOpt = 10,
    ef: EfOpt = None,
    exact: ExactOpt = False,
    min_score: MinScoreOpt = None,
    min_cosine: MinCosineOpt = None,
    mode: ModeOpt = None,
    fusion: FusionOpt = None,
    alpha: AlphaOpt = None,
    rrf_k: RrfKOpt = None,
    where: WhereOpt = None,
    chunks: ChunksOpt = False,
    rescore: RescoreOpt = None,
    output_format: OutputFormatOpt = None,
    device: DeviceOpt = "auto",
    quiet: Quiet = False,
    verbose: Verbose = False,
) -> None:
    """Search a store: the records closest in meaning (dense), sharing rare words (keyword), or both (hybrid).

    Every hit has `score` (the mode's) and `cosine` (the dense similarity, whatever the mode)."""
    from sbert_cli.cli.output import default_format, write_rows
    from sbert_cli.errors import InputError
    from sbert_cli.retrieval import Index

    setup_logging(verbose, quiet)
    fmt = output_format or default_format()
    if fmt not in SEARCH_FORMATS:
        raise InputError(f"--format {fmt}: choose from {', '.join(SEARCH_FORMATS)}")
    texts = gather_queries(queries, queries_file)

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
    # On a terminal: one table per query, titled with it, its score column named.
    headers = {"score": SCORE_HEADERS[mode]}
    for query, per_query in zip(texts, results, strict=True):
        rows = [h.as_dict() for h in per_query]
        write_rows(rows, table_columns(index, mode, rows), fmt, query, headers=headers)


def gather_queries(queries: list[str] | None, queries_file: str | None) -> list[str]:
    """The queries given as arguments (- reads stdin) and in --queries-file, in that order."""
    from sbert_cli.errors import InputError
    from sbert_cli.inputs.reader import STDIN, read_text_lines

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
    return texts


def table_columns(index, mode: str, rows: list[dict]) -> list[str]:
    """What the table shows: the other formats keep every column; the table gives its width to
    the text, so it leaves out the passage's offsets, a cosine equal to the dense score (dense
    mode on normalized vectors), and key and chunk columns that say nothing (no key; one chunk)."""
    same = mode == "dense" and (index.space == "cosine" or (index.space == "ip" and index.store.normalized))
    shown = ["rank", "score"] + ([] if same else ["cosine"]) + ["text", "source", "line", "key"]
    shown += [c for c in index.layout.extra if c not in ("start", "end")] + ["id"]
    if mode != "dense":
        shown += ["dense_rank", "keyword_rank"]
    if all(r.get("key") is None for r in rows):
        shown.remove("key")
    if "chunk" in shown and all(not r.get("chunk") for r in rows):
        shown.remove("chunk")
    return shown
