"""`sbert cluster`: parse arguments, call `sbert_cli.analysis.cluster.run_cluster`, print the summary."""

from __future__ import annotations

from typing import Annotated, Literal

import typer

from sbert_cli.cli._common import OutputFormat, ProgressInterval, Quiet, Verbose, handle_errors, setup_logging


@handle_errors
def cluster(
    store: Annotated[str, typer.Argument(metavar="STORE", help="The store to cluster.", show_default=False)],
    method: Annotated[
        Literal["kmeans", "community", "agglomerative"], typer.Option(help="How to cluster (see README).")
    ] = "kmeans",
    k: Annotated[
        str,
        typer.Option(
            "--k",
            metavar="K|auto",
            help="kmeans/agglomerative: number of clusters, or auto (best silhouette on a sample).",
        ),
    ] = "auto",
    k_max: Annotated[int, typer.Option(help="--k auto tries k = 2 .. this.")] = 20,
    seed: Annotated[int, typer.Option(help="Random seed (k-means init, samples): same seed, same clusters.")] = 0,
    threshold: Annotated[
        float, typer.Option(help="community: cosine to the group's centre text at or above which a text joins.")
    ] = 0.75,
    min_size: Annotated[int, typer.Option(help="community: smallest group kept (centre included).")] = 2,
    linkage: Annotated[
        Literal["ward", "average", "complete", "single"], typer.Option(help="agglomerative: how clusters merge.")
    ] = "ward",
    sample: Annotated[int, typer.Option(help="Rows sampled for --k auto.")] = 5_000,
    memory_limit: Annotated[
        str | None,
        typer.Option(
            metavar="SIZE",
            help="Vectors held in memory at most, e.g. 4G; kmeans on a larger store fits MiniBatchKMeans "
            "shard by shard [default: a quarter of RAM].",
        ),
    ] = None,
    top: Annotated[int, typer.Option(help="Most central texts shown per cluster in the summary.")] = 3,
    chunks: Annotated[
        bool,
        typer.Option(
            "--chunks",
            help="Cluster every chunk of a long record on its own [default: one vector per record, "
            "the mean of its chunks].",
        ),
    ] = False,
    output_format: Annotated[
        OutputFormat | None,
        typer.Option(
            "--format",
            help="Assignments to stdout in this format; table prints the summary only "
            "[default: table on a terminal, else jsonl].",
        ),
    ] = None,
    output: Annotated[
        str | None,
        typer.Option(
            "--output",
            "-o",
            metavar="FILE",
            help="Write the assignments to a .parquet or .jsonl file instead of stdout.",
        ),
    ] = None,
    plot: Annotated[
        str | None,
        typer.Option(
            "--plot",
            metavar="FILE.png",
            help="Write a 2-D PCA plot coloured by cluster to this .png (needs matplotlib).",
        ),
    ] = None,
    progress_interval: ProgressInterval = 5.0,
    quiet: Quiet = False,
    verbose: Verbose = False,
) -> None:
    """Cluster a store's records: assignments (id, source, line, key, cluster, distance, text) and a summary."""
    from sbert_cli.analysis.cluster import (
        ClusterOptions,
        check_output_path,
        parse_size,
        run_cluster,
    )
    from sbert_cli.cli.output import write_rows
    from sbert_cli.cli.progress import CliReporter

    setup_logging(verbose, quiet)
    _check_sample(sample, k_max)
    fmt = _output_format(output, output_format)
    if output is not None:
        check_output_path(output)
    options = ClusterOptions(
        method=method,
        k=_parse_k(k),
        k_max=k_max,
        seed=seed,
        threshold=threshold,
        min_size=min_size,
        linkage=linkage,
        sample=sample,
        memory_limit=parse_size(memory_limit) if memory_limit else None,
        top=top,
        chunks=chunks,
    )
    reporter = CliReporter(quiet=quiet, verbose=verbose, interval=progress_interval)
    say = reporter.message
    written = [0]
    summary_to_stdout = output is None and fmt == "table"

    def sink(rows, columns: list[str]) -> None:
        if output is not None:
            from sbert_cli.analysis.cluster import write_assignments

            written[0] = write_assignments(output, rows, columns)
        elif summary_to_stdout:
            for _ in rows:  # the summary is the result; the rows only feed it
                pass
        else:
            write_rows(rows, columns, fmt)

    summary = run_cluster(store, options, sink, plot=plot, reporter=reporter)
    if summary_to_stdout:
        from rich.console import Console

        _print_summary(Console(highlight=False, soft_wrap=True), summary, store)
        say("assignments of every row: --format jsonl|tsv|csv, or -o FILE.parquet|FILE.jsonl")
    elif not quiet:
        from sbert_cli.cli.progress import stderr_console

        _print_summary(stderr_console(), summary, store)
    if output is not None:
        say(f"wrote {written[0]:,} assignments to {output}")
    if plot:
        say(f"wrote plot to {plot}")


def _output_format(output: str | None, output_format: str | None) -> str:
    from sbert_cli.cli.output import OUTPUT_FORMATS, default_format
    from sbert_cli.errors import InputError

    if output is not None and output_format is not None:
        raise InputError("-o writes the file its extension names; --format is for stdout (use one of them)")
    fmt = output_format or default_format()
    if fmt not in OUTPUT_FORMATS:
        raise InputError(f"--format {fmt}: choose from {', '.join(OUTPUT_FORMATS)}")
    return fmt


def _parse_k(k: str) -> int | None:
    from sbert_cli.errors import InputError

    if k == "auto":
        return None
    if k.isdigit():
        return int(k)
    raise InputError(f"--k {k}: give a number of clusters or auto")


def _print_summary(console, summary, store: str) -> None:
    from rich.table import Table

    from sbert_cli.analysis.cluster import NOISE, silhouette_text

    parts = [f"{summary.method}: {summary.clusters:,} clusters over {summary.rows:,} rows"]
    if summary.noise:
        parts.append(f"{summary.noise:,} rows in no cluster")
    if summary.streamed:
        parts.append("fitted shard by shard (MiniBatchKMeans)")
    if summary.silhouettes:
        parts.append(silhouette_text(summary))
    parts.append(f"{summary.elapsed:.1f} s")
    table = Table(title=f"{store}: " + "; ".join(parts), title_justify="left", show_lines=True)
    table.add_column("cluster", justify="right")
    table.add_column("size", justify="right")
    table.add_column("share", justify="right")
    table.add_column("most central texts (cosine distance to the centre, source:line)", overflow="fold")
    ordered = sorted(summary.sizes.items(), key=lambda kv: (kv[0] == NOISE, -kv[1], kv[0]))
    for label, size in ordered:
        central = summary.central.get(label, [])
        lines = [f"{row['distance']:.3f}  {_where(row)}  {_short(row['text'])}" for row in central]
        table.add_row(
            "none" if label == NOISE else str(label),
            f"{size:,}",
            f"{size / max(summary.rows, 1):.1%}",
            "\n".join(lines),
        )
    console.print(table)


def _where(row: dict) -> str:
    """`source:line`, and the key when the store has one: where the record came from."""
    key = f" [{row['key']}]" if row.get("key") is not None else ""
    return f"{row['source']}:{row['line']}{key}"


def _short(text: str | None, width: int = 110) -> str:
    if text is None:
        return "(the store has no text)"
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def _check_sample(sample: int, k_max: int) -> None:
    """Refused here, in words about the option: a zero sample used to read as an empty store."""
    from sbert_cli.errors import InputError

    if sample < 3:
        raise InputError(f"--sample {sample}: must be at least 3 rows (a silhouette compares 2 clusters or more)")
    if k_max < 2:
        raise InputError(f"--k-max {k_max}: must be at least 2")
