"""Fitting the chosen method: validated options in, a `Fitted` clustering out."""

from __future__ import annotations

import numpy as np

import sbert_cli.analysis.cluster.methods as methods
from sbert_cli.analysis.cluster.methods import (
    LINKAGES,
    METHODS,
    MINIBATCH_EPOCHS,
    NOISE,
    PLOT_MAX_POINTS,
    ClusterOptions,
    Fitted,
    agglomerative_labels,
    centroids,
    choose_k,
    community_detection,
    default_memory_limit,
    fit_minibatch,
    human_bytes,
    in_memory_bytes,
    kmeans,
    load_unit,
    sample_store,
)
from sbert_cli.analysis.records import StoreRecords
from sbert_cli.analysis.vectors import unit_rows
from sbert_cli.errors import InputError
from sbert_cli.progress import NullReporter, Reporter


def _check(records: StoreRecords, options: ClusterOptions) -> None:
    if options.method not in METHODS:
        raise InputError(f"--method {options.method}: choose from {', '.join(METHODS)}")
    if records.rows == 0:
        raise InputError(f"{records.path}: the store is empty; there is nothing to cluster")
    if options.k is not None and options.k < 1:
        raise InputError(f"--k {options.k}: give a number of clusters >= 1, or auto")
    if options.k is not None and options.k > records.rows:
        raise InputError(f"--k {options.k} is larger than the store ({records.rows:,} {records.kind})")


def fit(records: StoreRecords, options: ClusterOptions, reporter: Reporter | None = None, plot: bool = False) -> Fitted:
    """Fit the chosen method on the store (validated first: empty store, k, sizes)."""
    reporter = reporter or NullReporter()
    _check(records, options)
    limit = options.memory_limit or default_memory_limit()
    need = in_memory_bytes(records.rows, records.dim)
    if options.method == "community":
        return _fit_community(records, options, need, limit)
    if options.method == "agglomerative":
        return _fit_agglomerative(records, options, reporter)
    return _fit_kmeans(records, options, reporter, need, limit, plot)


def _fit_community(records: StoreRecords, options: ClusterOptions, need: int, limit: int) -> Fitted:
    if not 0.0 < options.threshold <= 1.0:
        raise InputError(f"--threshold {options.threshold}: give a cosine in (0, 1]")
    if options.min_size < 1:
        raise InputError(f"--min-size {options.min_size}: give 1 or more")
    if need > limit:
        raise InputError(
            f"{records.path}: {records.rows:,} {records.kind} need about {human_bytes(need)} for community clustering, over the "
            f"{human_bytes(limit)} memory limit; raise --memory-limit or use --method kmeans"
        )
    x = load_unit(records)
    groups = community_detection(x, options.threshold, options.min_size)
    labels = np.full(records.rows, NOISE, dtype=np.int64)
    for label, members in enumerate(groups):
        labels[members] = label
    centres = x[[g[0] for g in groups]] if groups else np.empty((0, records.dim), np.float32)
    return Fitted("community", centres, labels, x, plot_sample=_plot_sample(x, labels, options.seed))


def _auto_k(sample: np.ndarray, options: ClusterOptions, labels_for, reporter: Reporter) -> tuple[int, dict, int]:
    """--k auto: the best silhouette on a sample; returns (k, scores, sample size)."""
    sample = _sample_rows(sample, options.sample, options.seed)
    k, scores = choose_k(sample, options.k_max, options.seed, labels_for)
    reporter.message(f"--k auto: k={k} (silhouette {scores[k]:.3f} on {len(sample):,} sampled rows)")
    return k, scores, len(sample)


def _fit_agglomerative(records: StoreRecords, options: ClusterOptions, reporter: Reporter) -> Fitted:
    # Read through the module so tests can lower the limit.
    if records.rows > methods.AGGLOMERATIVE_MAX_ROWS:
        raise InputError(
            f"{records.path}: agglomerative clustering is for stores of up to {methods.AGGLOMERATIVE_MAX_ROWS:,} rows "
            f"(this one has {records.rows:,} {records.kind}); use --method kmeans or --method community"
        )
    if options.linkage not in LINKAGES:
        raise InputError(f"--linkage {options.linkage}: choose from {', '.join(LINKAGES)}")
    x = load_unit(records)
    k, scores, sample_size = options.k, {}, 0
    if k is None:
        k, scores, sample_size = _auto_k(x, options, lambda s, k: agglomerative_labels(s, k, options.linkage), reporter)
    labels = agglomerative_labels(x, k, options.linkage) if k > 1 else np.zeros(records.rows, dtype=np.int64)
    plot_sample = _plot_sample(x, labels, options.seed)
    return Fitted(
        "agglomerative",
        centroids(x, labels, k),
        labels,
        x,
        silhouettes=scores,
        sample_size=sample_size,
        plot_sample=plot_sample,
    )


def _fit_kmeans(
    records: StoreRecords, options: ClusterOptions, reporter: Reporter, need: int, limit: int, plot: bool
) -> Fitted:
    """k-means in memory when the store fits in `limit`, else mini-batch shard by shard."""
    streamed = need > limit
    x = None if streamed else load_unit(records)
    k, scores, sample_size = options.k, {}, 0
    if streamed:
        _, sample = sample_store(records, max(options.sample, 10 * (k or options.k_max)), options.seed)
    else:
        sample = x
    if k is None:
        k, scores, sample_size = _auto_k(sample, options, lambda s, k: kmeans(s, k, options.seed).labels_, reporter)
    if x is not None:
        model = kmeans(x, k, options.seed)
        labels = model.labels_.astype(np.int64)
        plot_sample = _plot_sample(x, labels, options.seed)
        centres = unit_rows(model.cluster_centers_)
        return Fitted(
            "kmeans", centres, labels, x, silhouettes=scores, sample_size=sample_size, plot_sample=plot_sample
        )
    reporter.message(
        f"{records.rows:,} {records.kind} need about {human_bytes(need)} in memory, over the {human_bytes(limit)} limit: "
        f"fitting MiniBatchKMeans shard by shard ({MINIBATCH_EPOCHS} passes)"
    )
    model = fit_minibatch(records, k, options.seed, sample)
    points = sample[:PLOT_MAX_POINTS]
    plot_sample = (points, model.predict(points).astype(np.int64)) if plot else None
    centres = unit_rows(model.cluster_centers_)
    return Fitted(
        "kmeans",
        centres,
        predictor=model,
        streamed=True,
        silhouettes=scores,
        sample_size=sample_size,
        plot_sample=plot_sample,
    )


def _sample_rows(x: np.ndarray, size: int, seed: int) -> np.ndarray:
    if len(x) <= size:
        return x
    rng = np.random.default_rng(seed)
    return x[np.sort(rng.choice(len(x), size=size, replace=False))]


def _plot_sample(x: np.ndarray, labels: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    if len(x) <= PLOT_MAX_POINTS:
        return x, labels
    rng = np.random.default_rng(seed)
    pick = np.sort(rng.choice(len(x), size=PLOT_MAX_POINTS, replace=False))
    return x[pick], labels[pick]
