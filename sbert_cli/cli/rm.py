"""`sbert rm STORE INPUT...`: remove inputs and their rows from a store."""

from __future__ import annotations

from typing import Annotated

import typer

from sbert_cli.cli._common import Quiet, Verbose, handle_errors, messenger, setup_logging


@handle_errors
def rm(
    store: Annotated[str, typer.Argument(metavar="STORE", help="Store directory.", show_default=False)],
    inputs: Annotated[
        list[str],
        typer.Argument(
            metavar="INPUT", help="Inputs to remove: a path, or the source name the store shows.", show_default=False
        ),
    ],
    quiet: Quiet = False,
    verbose: Verbose = False,
) -> None:
    """Remove inputs and their rows from a store (its shards are rewritten; run `sbert index` after)."""
    from sbert_cli.store.delete import remove_inputs

    setup_logging(verbose, quiet)
    summary = remove_inputs(store, inputs)
    messenger(quiet)(
        f"removed {len(summary.inputs)} input(s) ({', '.join(summary.inputs)}), {summary.rows:,} rows; "
        f"store {summary.store} now has {summary.store_rows:,} rows (run `sbert index {summary.store}` to update its index)"
    )
