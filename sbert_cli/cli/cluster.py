"""`sbert cluster`: not built yet (see the project's open issues)."""

from __future__ import annotations

from sbert_cli.cli._common import error


def cluster(store: str = "") -> None:
    """(coming soon) This command is not available yet."""
    import typer

    error("sbert cluster is not available yet")
    raise typer.Exit(1)
