"""The `sbert` command line: one thin module per command, each calling library functions.

Only typer is imported here, so `sbert --help` stays fast; torch and transformers load inside
the commands that need them.
"""

from __future__ import annotations

import typer

from sbert_cli.cli.encode import encode

app = typer.Typer(
    name="sbert",
    help="Sentence embeddings from the shell: encode corpora, index and search them, cluster, compare.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.command(no_args_is_help=True)(encode)


def _register_optional() -> None:
    """Commands built in their own modules; registered in the order `sbert --help` lists them."""
    from sbert_cli.cli import cluster, index, search, similarity

    app.command(no_args_is_help=True)(index.index)
    app.command(no_args_is_help=True)(search.search)
    app.command(no_args_is_help=True)(cluster.cluster)
    app.command(no_args_is_help=True)(similarity.similarity)


_register_optional()


def main() -> None:
    app()
