"""The `sbert` command line: one thin module per command, each calling library functions.

Only typer is imported here, so `sbert --help` stays fast; torch and transformers load inside
the commands that need them.
"""

from __future__ import annotations

import typer

from sbert_cli.cli import cluster, encode, index, search, similarity

app = typer.Typer(
    name="sbert",
    help="Sentence embeddings from the shell: encode corpora, index and search them, cluster, compare.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)
# In the order `sbert --help` lists them: the data flow, encode -> index -> search, then the rest.
app.command(no_args_is_help=True)(encode.encode)
app.command(no_args_is_help=True)(index.index)
app.command(no_args_is_help=True)(search.search)
app.command(no_args_is_help=True)(cluster.cluster)
app.command(no_args_is_help=True)(similarity.similarity)


def main() -> None:
    app()
