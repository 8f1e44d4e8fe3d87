"""`sbert index`: parse arguments, call `index.build_index`, print the summary."""

from __future__ import annotations

from typing import Annotated

import typer

from sbert_cli.cli._common import Quiet, Verbose, handle_errors, setup_logging


@handle_errors
def index(
    store: Annotated[str, typer.Argument(help="Store directory made by `sbert encode`.", show_default=False)],
    space: Annotated[
        str,
        typer.Option(help="auto | cosine | ip | l2. auto: ip (= cosine) for normalized vectors, else cosine."),
    ] = "auto",
    m: Annotated[
        int | None, typer.Option("--M", help="Graph links per node: more is better recall, more memory [default: 32].")
    ] = None,
    ef_construction: Annotated[
        int | None, typer.Option(help="Build-time candidate list: more is a better graph, slower build [default: 400].")
    ] = None,
    threads: Annotated[int | None, typer.Option(help="Threads adding to the graph [default: all cores].")] = None,
    rebuild: Annotated[bool, typer.Option("--rebuild", help="Start over instead of adding new shards.")] = False,
    quiet: Quiet = False,
    verbose: Verbose = False,
) -> None:
    """Build or update the HNSW index inside a store; run again after encoding more to add the new rows."""
    from sbert_cli.cli.progress import CliReporter
    from sbert_cli.retrieval.build import build_index

    setup_logging(verbose, quiet)
    with CliReporter(quiet=quiet, verbose=verbose) as reporter:
        summary = build_index(
            store,
            space=None if space == "auto" else space,
            M=m,
            ef_construction=ef_construction,
            threads=threads,
            rebuild=rebuild,
            reporter=reporter,
        )
    say = reporter.message
    p = summary.params
    settings = f"space {p['space']}, M={p['M']}, ef_construction={p['ef_construction']}"
    if not summary.added:
        say(f"index is up to date: {summary.count:,} rows ({settings}) in {summary.path}")
        return
    what = "built" if summary.rebuilt or summary.added == summary.count else "updated"
    say(
        f"{what} the index: added {summary.added:,} rows from {summary.shards_added} shard(s) in "
        f"{summary.elapsed:.1f} s ({summary.added / max(summary.elapsed, 1e-9):,.0f} rows/s); "
        f"it holds {summary.count:,} rows ({settings}) in {summary.path}"
    )
