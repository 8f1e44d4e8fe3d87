"""The `sbert` command line: one thin module per command, each calling library functions.

Only typer is imported here, so `sbert --help` stays fast; torch and transformers load inside
the commands that need them.
"""

from __future__ import annotations

from typing import Annotated

import typer

from sbert_cli.cli import check, cluster, encode, index, search, similarity, train
from sbert_cli.cli import eval as eval_cli
from sbert_cli.cli import serve as serve_cli
from sbert_cli.cli._common import SbertCommand


class _Typer(typer.Typer):
    """Every command, however added, writes its help and usage as Click does (INPUT..., TEXT, [a|b])."""

    def command(self, *args, cls=None, **kwargs):
        return super().command(*args, cls=cls or SbertCommand, **kwargs)

    def add_typer(self, typer_instance: typer.Typer, **kwargs) -> None:
        for info in typer_instance.registered_commands:
            info.cls = info.cls or SbertCommand
        super().add_typer(typer_instance, **kwargs)


app = _Typer(
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
app.command(no_args_is_help=True)(train.train)
app.add_typer(eval_cli.app, name="eval")
app.command(no_args_is_help=True)(check.check)
app.command(no_args_is_help=True)(serve_cli.serve)


def _print_version(value: bool) -> None:
    if value:
        from sbert_cli.cli._common import version_line

        typer.echo(version_line())
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            callback=_print_version,
            is_eager=True,
            help="Print the sbert version (and its engines') and exit.",
        ),
    ] = False,
) -> None:
    """Sentence embeddings from the shell: encode corpora, index and search them, cluster, compare."""


def main() -> None:
    app()
