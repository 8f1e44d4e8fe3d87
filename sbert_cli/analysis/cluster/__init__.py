"""Clustering a store: `methods` (k-means, community, agglomerative and their helpers), `fit`
(options -> a fitted clustering), `assign` (every row's cluster and distance, streamed), `plot`.
`run_cluster` is the whole `sbert cluster` command as a function."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from sbert_cli.analysis.cluster.assign import (
    ASSIGNMENT_COLUMNS,
    Assigner,
    assignment_columns,
    check_output_path,
    write_assignments,
)
from sbert_cli.analysis.cluster.fit import fit
from sbert_cli.analysis.cluster.methods import (
    LINKAGES,
    METHODS,
    NOISE,
    ClusterOptions,
    ClusterSummary,
    Fitted,
    community_detection,
    parse_size,
)
from sbert_cli.analysis.cluster.plot import check_plot_available, plot_clusters
from sbert_cli.analysis.records import StoreRecords
from sbert_cli.progress import Reporter
from sbert_cli.store.store import Store

__all__ = [
    "ASSIGNMENT_COLUMNS",
    "LINKAGES",
    "METHODS",
    "NOISE",
    "Assigner",
    "assignment_columns",
    "ClusterOptions",
    "ClusterSummary",
    "Fitted",
    "check_output_path",
    "check_plot_available",
    "community_detection",
    "fit",
    "parse_size",
    "plot_clusters",
    "run_cluster",
    "silhouette_text",
    "write_assignments",
]


def run_cluster(
    store_path: str,
    options: ClusterOptions,
    sink: Callable[[Iterator[dict], list[str]], None],
    plot: str | None = None,
    reporter: Reporter | None = None,
) -> ClusterSummary:
    """Open, fit, stream the assignments into `sink` (rows, their columns), plot: the whole
    command as a function. Records are clustered (rows with `options.chunks`): analysis/records.py."""
    started = time.perf_counter()
    if plot:
        check_plot_available(plot)
    records = StoreRecords(Store.open(store_path), options.chunks)
    fitted = fit(records, options, reporter, plot=bool(plot))
    assigner = Assigner(records, fitted, options.top)
    sink(assigner.rows(), assigner.columns)
    summary = assigner.summary
    if plot:
        assert fitted.plot_sample is not None
        vectors, labels = fitted.plot_sample
        kind = records.kind
        shown = f", {len(vectors):,} of {summary.rows:,} {kind} shown" if len(vectors) < summary.rows else ""
        title = f"{Path(store_path).name}: {fitted.method}, {fitted.clusters} clusters{shown} (PCA)"
        plot_clusters(plot, vectors, labels, title, summary.central)
    summary.elapsed = time.perf_counter() - started
    return summary


def silhouette_text(summary: ClusterSummary) -> str:
    if not summary.silhouettes:
        return ""
    best = summary.silhouettes.get(summary.clusters, math.nan)
    return f"k chosen by silhouette ({best:.3f}, k tried {min(summary.silhouettes)}-{max(summary.silhouettes)})"
