"""`sbert index`: not built yet (see the project's open issues)."""

from __future__ import annotations

from sbert_cli.cli._common import error


def index(store: str = "") -> None:
    """(coming soon) This command is not available yet."""
    import typer

    error("sbert index is not available yet")
    raise typer.Exit(1)
