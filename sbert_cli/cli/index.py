"""`sbert index`: parse arguments, call `index.build_index`, print the summary."""

from __future__ import annotations

import functools
from typing import Annotated, Literal

import typer

from sbert_cli.cli._common import ProgressInterval, Quiet, Verbose, handle_errors, prepare_fast_queries, setup_logging


@handle_errors
def index(
    store: Annotated[
        str, typer.Argument(metavar="STORE", help="Store directory made by `sbert encode`.", show_default=False)
    ],
    space: Annotated[
        Literal["auto", "cosine", "ip", "l2"],
        typer.Option(help="auto: ip (= cosine) for normalized vectors, else cosine."),
    ] = "auto",
    m: Annotated[
        int | None, typer.Option("--M", help="Graph links per node: more is better recall, more memory [default: 32].")
    ] = None,
    ef_construction: Annotated[
        int | None, typer.Option(help="Build-time candidate list: more is a better graph, slower build [default: 400].")
    ] = None,
    threads: Annotated[
        int | None, typer.Option(metavar="N", help="Threads adding to the graph [default: all cores].")
    ] = None,
    rebuild: Annotated[bool, typer.Option("--rebuild", help="Start over instead of adding new shards.")] = False,
    compact: Annotated[
        bool,
        typer.Option(
            "--compact",
            help="Rebuild the HNSW graph (each partition's) without the rows marked deleted by --sync or sbert rm "
            "(done by itself when they pass 20% of a graph).",
        ),
    ] = False,
    quantize: Annotated[
        Literal["none", "int8", "binary"] | None,
        typer.Option(
            help="Dense index: none is an HNSW graph of the vectors; int8 (4x smaller) and binary (32x) are "
            "compressed codes scanned by faiss, their best candidates rescored at full precision "
            "[default: as last built, else none].",
        ),
    ] = None,
    bm25: Annotated[
        bool, typer.Option("--bm25/--no-bm25", help="Also build or update the keyword (BM25) index of the texts.")
    ] = True,
    partitions: Annotated[
        int | None,
        typer.Option(
            min=1,
            metavar="N",
            help="Split the HNSW index into N graphs over disjoint shards, built in parallel (local processes, "
            "or Ray with --ray); search asks them all and merges [default: as last built, else 1].",
        ),
    ] = None,
    ray: Annotated[
        str | None,
        typer.Option(
            "--ray",
            metavar="[ADDRESS]",
            help="Build the partitions as Ray tasks. Alone: a local Ray runtime; auto, HOST:PORT or "
            "ray://HOST:PORT: that cluster. Needs: pip install 'sbert-cli[ray]'.",
        ),
    ] = None,
    progress_interval: ProgressInterval = 5.0,
    quiet: Quiet = False,
    verbose: Verbose = False,
) -> None:
    """Build or update the store's indexes (dense: HNSW or compressed; keyword: BM25); run again after encoding more."""
    from sbert_cli.cli.progress import CliReporter
    from sbert_cli.retrieval.build import build_index
    from sbert_cli.retrieval.partitions import build_partitioned_index, is_partitioned

    setup_logging(verbose, quiet)
    build = functools.partial(build_index, compact=compact)
    if partitions is not None or ray is not None or is_partitioned(store):
        build = functools.partial(
            build_partitioned_index, partitions=partitions, executor=_executor(store, ray, partitions), compact=compact
        )
    with CliReporter(quiet=quiet, verbose=verbose, interval=progress_interval) as reporter:
        summary = build(
            store,
            space=None if space == "auto" else space,
            M=m,
            ef_construction=ef_construction,
            threads=threads,
            rebuild=rebuild,
            quantize=quantize,
            bm25=bm25,
            reporter=reporter,
        )
    say = reporter.message
    say(_dense_line(summary))
    if summary.keyword is not None:
        say(_keyword_line(summary.keyword))
    prepare_fast_queries(store)


def _executor(store: str, ray: str | None, partitions: int | None):
    """Where partitions are built: Ray tasks with --ray, else local processes (None)."""
    from sbert_cli.errors import InputError
    from sbert_cli.retrieval.partitions import is_partitioned

    if ray is None:
        return None
    if partitions is None and not is_partitioned(store):
        raise InputError("--ray builds the graphs of a partitioned index; add --partitions N (e.g. the workers' count)")
    from sbert_cli.distributed.ray_index import ray_executor

    return ray_executor(ray)


def _dense_line(summary) -> str:
    p = summary.params
    if p["quantize"] == "none":
        settings = f"space {p['space']}, M={p['M']}, ef_construction={p['ef_construction']}"
    else:
        settings = f"space {p['space']}, {p['quantize']} codes with rescoring"
    if p.get("partitions", 1) > 1:
        settings += f", {p['partitions']} partitions"
    deleted = getattr(summary, "deleted", 0)
    if deleted and not summary.added:
        return f"updated the index: removed {deleted:,} rows; it holds {summary.count:,} rows ({settings}) in {summary.path}"
    if not summary.added:
        return f"index is up to date: {summary.count:,} rows ({settings}) in {summary.path}"
    what = "built" if summary.rebuilt or summary.added == summary.count else "updated"
    return (
        f"{what} the index: added {summary.added:,} rows from {summary.shards_added} shard(s)"
        f"{f', removed {deleted:,}' if deleted else ''} in "
        f"{summary.elapsed:.1f} s ({summary.added / max(summary.elapsed, 1e-9):,.0f} rows/s); "
        f"it holds {summary.count:,} rows ({settings}) in {summary.path}"
    )


def _keyword_line(keyword) -> str:
    if keyword.skipped:
        return f"no keyword index: {keyword.skipped}"
    if not keyword.built:
        return f"keyword index is up to date: {keyword.docs:,} texts (BM25) in {keyword.path}"
    if keyword.added == keyword.docs:
        how = f"built over {keyword.docs:,} texts"
    elif keyword.added:
        # Say why adding a few texts took a whole build.
        how = f"added {keyword.added:,} texts, {keyword.docs:,} in all (rebuilt whole: BM25 statistics are corpus-wide)"
    else:
        how = f"rebuilt over {keyword.docs:,} texts"
    return f"keyword index (BM25): {how} in {keyword.elapsed:.1f} s, in {keyword.path}"
