"""`sbert check`: verify a store (and repair it with --repair), print one line per problem."""

from __future__ import annotations

import json
from typing import Annotated, Literal

import typer

from sbert_cli.cli._common import DeviceOpt, ProgressInterval, Quiet, Verbose, handle_errors, setup_logging


@handle_errors
def check(
    store: Annotated[
        str, typer.Argument(metavar="STORE", help="Store directory made by `sbert encode`.", show_default=False)
    ],
    repair: Annotated[
        bool,
        typer.Option(
            "--repair",
            help="Re-encode damaged or missing shards from their inputs (when those are unchanged) and rebuild "
            "damaged or stale indexes, then check again.",
        ),
    ] = False,
    output_format: Annotated[
        Literal["text", "json"],
        typer.Option("--format", help="text: one line per problem; json: the whole report, for scripts."),
    ] = "text",
    device: DeviceOpt = "auto",
    progress_interval: ProgressInterval = 5.0,
    quiet: Quiet = False,
    verbose: Verbose = False,
) -> None:
    """Verify every file of a store against its checksums, ids, row counts and index coverage; exit 1 if anything is wrong."""
    from sbert_cli.cli.progress import CliReporter
    from sbert_cli.store.check import check_store
    from sbert_cli.store.repair import repair_store

    setup_logging(verbose, quiet)
    with CliReporter(quiet=quiet, verbose=verbose, interval=progress_interval) as reporter:
        if repair:
            summary = repair_store(store, device=device, reporter=reporter)
            report = summary.after
            for line in _repair_lines(summary):
                reporter.message(line)
        else:
            summary, report = None, check_store(store, reporter)
    if output_format == "json":
        data = report.as_dict()
        if summary is not None:
            data["repaired"] = {
                "reencoded": summary.reencoded,
                "exact": summary.exact,
                "rebuilt": summary.rebuilt,
                "migrated": summary.migrated,
            }
        typer.echo(json.dumps(data, indent=1))
    else:
        for problem in report.problems:
            typer.echo(problem.line)
        for note in report.notes:
            reporter.message(f"note: {note}")
        reporter.message(_summary_line(report))
    if not report.ok:
        raise typer.Exit(1)


def _summary_line(report) -> str:
    found = ", ".join(["manifest", f"{report.shards:,} shard(s) ({report.rows:,} rows)", *report.indexes])
    size = f"{report.files:,} files, {report.bytes / 1e6:,.1f} MB verified"
    if report.ok:
        return f"{report.store}: ok: {found}; {size}"
    return f"{report.store}: {len(report.problems)} problem(s) in {found}; {size}"


def _repair_lines(summary) -> list[str]:
    lines = []
    if summary.reencoded:
        exact = len(summary.exact)
        same = "all" if exact == len(summary.reencoded) else f"{exact}"
        lines.append(
            f"re-encoded {len(summary.reencoded)} shard(s) from their inputs ({same} byte-identical to what was written)"
        )
    if summary.rebuilt:
        lines.append(f"brought the {' and '.join(summary.rebuilt)} index(es) up to date")
    if summary.migrated:
        lines.append(f"recorded the fast checksum (xxh3) of {summary.migrated} older shard(s)")
    if not lines:
        lines.append("nothing to repair")
    return lines
