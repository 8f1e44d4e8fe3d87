"""Clustering a store: k-means, community (threshold) and agglomerative, with readable output.

Every method works on unit-length vectors, so Euclidean geometry is cosine geometry, and every
row's `distance` is the cosine distance (1 - cosine) to its cluster's centre: the k-means
centroid, the community's seed text, or the agglomerative cluster's mean.

Memory: k-means loads the store when it fits in `memory_limit`; past that it fits
MiniBatchKMeans shard by shard (initialised by k-means on a sample), so memory is one shard
plus a mini-batch whatever the store size. Community and agglomerative clustering need every
vector at once and refuse stores that do not fit (agglomerative also has a row limit: its
distance matrix grows with the square of the rows).
"""

from __future__ import annotations

import contextlib
import os
import re
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from sbert_cli.analysis.records import StoreRecords
from sbert_cli.analysis.vectors import unit_rows
from sbert_cli.errors import InputError

METHODS = ("kmeans", "community", "agglomerative")
LINKAGES = ("ward", "average", "complete", "single")
NOISE = -1  # community clustering: rows in no community
AGGLOMERATIVE_MAX_ROWS = 10_000  # its condensed distance matrix is rows^2 / 2 doubles: 400 MB here
# One k-means++ run, scikit-learn's own default ("auto" means 1 with k-means++), so a seed gives
# what `KMeans(n_clusters=k, random_state=seed)` gives on the same vectors. More restarts find
# lower inertia but not better clusters for readers: on the STS-dev genre benchmark 10 restarts
# lowered the mean V-measure over 10 seeds from 0.37 to 0.34 (all seeds land on one optimum).
KMEANS_N_INIT = 1
MINIBATCH_SIZE = 4096
MINIBATCH_EPOCHS = 3  # passes over the store; each reads every shard once
IN_MEMORY_FACTOR = 3  # vectors, their unit copy, and sklearn's working arrays
COMMUNITY_BLOCK_BYTES = 256 << 20  # one block of the similarity matrix
PLOT_MAX_POINTS = 20_000
SMALL_FIT_ROWS = 50_000
CENTRAL_TEXTS = 3


@dataclass
class ClusterOptions:
    method: str = "kmeans"
    k: int | None = None  # None: auto (silhouette on a sample)
    k_max: int = 20
    seed: int = 0
    threshold: float = 0.75
    min_size: int = 2
    linkage: str = "ward"
    sample: int = 5_000
    chunks: bool = False  # cluster every row (chunk) instead of every record
    memory_limit: int | None = None  # bytes; None: default_memory_limit()
    top: int = CENTRAL_TEXTS


@dataclass
class Fitted:
    """A fitted clustering, ready to assign every row of the store."""

    method: str
    centres: np.ndarray  # (clusters, dim), unit rows: distance = 1 - cos(row, centre)
    labels: np.ndarray | None = None  # store order, when fitted in memory
    vectors: np.ndarray | None = None  # unit rows in store order, when fitted in memory
    predictor: object | None = None  # the MiniBatchKMeans of a streamed fit
    streamed: bool = False
    silhouettes: dict[int, float] = field(default_factory=dict)  # k -> silhouette, with --k auto
    sample_size: int = 0
    plot_sample: tuple[np.ndarray, np.ndarray] | None = None  # (unit vectors, labels) for --plot

    @property
    def clusters(self) -> int:
        return int(self.centres.shape[0])


@dataclass
class ClusterSummary:
    method: str
    clusters: int
    rows: int = 0
    sizes: dict[int, int] = field(default_factory=dict)
    central: dict[int, list[dict]] = field(default_factory=dict)  # label -> rows nearest the centre
    silhouettes: dict[int, float] = field(default_factory=dict)
    sample_size: int = 0
    streamed: bool = False
    elapsed: float = 0.0

    @property
    def noise(self) -> int:
        return self.sizes.get(NOISE, 0)


# -- memory --------------------------------------------------------------------------------------------
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)i?b?\s*$", re.IGNORECASE)


def parse_size(value: str) -> int:
    """`512M`, `2G`, `1.5GB`, `1000000` -> bytes."""
    match = _SIZE.match(value)
    if not match:
        raise InputError(f"--memory-limit {value!r}: give a size such as 512M or 4G")
    number, unit = match.groups()
    return int(float(number) * 1024 ** "_kmgt".index(unit.lower() or "_"))


def default_memory_limit() -> int:
    """A quarter of the memory this process may use (the machine's, or its cgroup's if lower):
    the rest stays for the model, the page cache and other processes."""
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = Path(path).read_text().strip()
        except OSError:
            continue
        if text.isdigit():
            total = min(total, int(text))
    return total // 4


def in_memory_bytes(rows: int, dim: int) -> int:
    return rows * dim * 4 * IN_MEMORY_FACTOR


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024:
            return f"{n:.0f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"


# -- reading --------------------------------------------------------------------------------------------
def sample_store(records: StoreRecords, size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A uniform random sample of `size` records (ids, unit vectors), one shard in memory at a time."""
    rows = records.rows
    rng = np.random.default_rng(seed)
    picks = np.sort(rng.choice(rows, size=min(size, rows), replace=False))
    ids, vectors = [], []
    offset = 0
    for block in records.blocks():
        n = len(block)
        lo, hi = np.searchsorted(picks, [offset, offset + n])
        local = picks[lo:hi] - offset
        ids.append(np.asarray(block.meta["id"], dtype=np.int64)[local])
        vectors.append(block.vectors[local])
        offset += n
    return np.concatenate(ids), np.concatenate(vectors)


def load_unit(records: StoreRecords) -> np.ndarray:
    vectors = records.load().vectors
    assert vectors is not None
    return vectors


# -- k ------------------------------------------------------------------------------------------------
def threads_for(rows: int):
    """One thread for small fits: OpenMP start-up and spin-waiting cost more than the work
    (measured: k = 2..20 on 500 rows, 4.5 s with 2 threads on a busy machine, 0.24 s with one)."""
    from threadpoolctl import threadpool_limits

    return threadpool_limits(1) if rows < SMALL_FIT_ROWS else contextlib.nullcontext()


def kmeans(x: np.ndarray, k: int, seed: int, n_init: int = KMEANS_N_INIT):
    from sklearn.cluster import KMeans
    from sklearn.exceptions import ConvergenceWarning

    with warnings.catch_warnings(), threads_for(len(x)):
        # Duplicate texts can leave fewer distinct points than k; the fit is still valid.
        warnings.simplefilter("ignore", ConvergenceWarning)
        return KMeans(n_clusters=k, n_init=n_init, random_state=seed).fit(x)


def agglomerative_labels(x: np.ndarray, k: int, linkage: str) -> np.ndarray:
    from sklearn.cluster import AgglomerativeClustering

    # Ward needs Euclidean distances; on unit vectors they order pairs as cosine does.
    metric = "euclidean" if linkage == "ward" else "cosine"
    return AgglomerativeClustering(n_clusters=k, linkage=linkage, metric=metric).fit_predict(x)


def choose_k(
    sample: np.ndarray, k_max: int, seed: int, labels_for: Callable[[np.ndarray, int], np.ndarray]
) -> tuple[int, dict[int, float]]:
    """The k in 2..k_max whose clustering of `sample` has the highest (cosine) silhouette."""
    from sklearn.metrics import silhouette_score

    n = len(sample)
    candidates = range(2, min(k_max, n - 1) + 1)
    if not candidates:
        raise InputError(f"--k auto needs at least 3 rows (and --k-max >= 2); the store has {n}: pass --k")
    scores: dict[int, float] = {}
    for k in candidates:
        labels = labels_for(sample, k)
        if len(np.unique(labels)) < 2:
            continue  # identical vectors: no second cluster to compare with
        scores[k] = float(silhouette_score(sample, labels, metric="cosine", random_state=seed))
    if not scores:
        raise InputError("--k auto: the sampled vectors are all identical; there is nothing to cluster")
    best = max(scores, key=lambda k: (scores[k], -k))
    return best, scores


# -- methods ------------------------------------------------------------------------------------------
def centroids(x: np.ndarray, labels: np.ndarray, clusters: int) -> np.ndarray:
    sums = np.zeros((clusters, x.shape[1]), dtype=np.float64)
    np.add.at(sums, labels, x)
    return unit_rows(sums.astype(np.float32))


def _minibatches(records: StoreRecords, size: int, min_last: int) -> Iterator[np.ndarray]:
    """Unit vectors of the whole store in batches of `size` rows across shard boundaries; a short
    tail joins the batch before it (MiniBatchKMeans refuses batches smaller than k)."""
    pending: list[np.ndarray] = []
    held = 0
    previous: np.ndarray | None = None
    for block in records.blocks():
        assert block.vectors is not None
        pending.append(block.vectors)
        held += len(block)
        while held >= size:
            block = np.concatenate(pending)
            if previous is not None:
                yield previous
            previous, rest = block[:size], block[size:]
            pending, held = [rest], len(rest)
    tail = np.concatenate(pending) if pending else np.empty((0, records.dim), np.float32)
    if previous is None:
        if len(tail):
            yield tail
    elif 0 < len(tail) < max(min_last, 1):
        yield np.concatenate([previous, tail])
    else:
        yield previous
        if len(tail):
            yield tail


def fit_minibatch(records: StoreRecords, k: int, seed: int, init_sample: np.ndarray, epochs: int = MINIBATCH_EPOCHS):
    """MiniBatchKMeans fitted shard by shard, started from k-means on a sample so the first
    mini-batches refine good centres instead of finding them."""
    from sklearn.cluster import MiniBatchKMeans

    init = kmeans(init_sample, k, seed).cluster_centers_
    model = MiniBatchKMeans(n_clusters=k, init=init, n_init=1, random_state=seed, batch_size=MINIBATCH_SIZE)
    with threads_for(MINIBATCH_SIZE):
        for _ in range(epochs):
            for batch in _minibatches(records, MINIBATCH_SIZE, k):
                model.partial_fit(batch)
    return model


def community_detection(
    x: np.ndarray, threshold: float, min_size: int, block_bytes: int = COMMUNITY_BLOCK_BYTES
) -> list[np.ndarray]:
    """Groups of rows whose cosine to a centre row is >= threshold, largest first; each group's
    first element is its centre, the others follow closest first. `x` must hold unit rows.

    The idea is sentence-transformers' `community_detection`: every row with at least
    `min_size` neighbours at or above the threshold (itself included) proposes its
    neighbourhood; proposals are taken largest first, each keeping the rows no earlier group
    took. Unlike it, a proposal is dropped when its own centre was taken, so every member of a
    group is within the threshold of the group's centre. And unlike it, neighbourhoods are not
    kept between the two steps (for 50,000 near-duplicates of 50 texts they would be 50 million
    entries): the first pass only counts neighbours, a block of rows at a time; the second
    recomputes the rows of the centres still free, in order, a block at a time.
    """
    n = len(x)
    block = max(1, min(n, block_bytes // max(1, n * 4)))
    counts = np.empty(n, dtype=np.int64)
    for start in range(0, n, block):
        sims = x[start : start + block] @ x.T
        counts[start : start + len(sims)] = (sims >= threshold).sum(axis=1)
        # A row is always in its own neighbourhood, even when rounding puts its self-cosine a
        # hair under a threshold of 1.
        counts[start : start + len(sims)] += sims[np.arange(len(sims)), np.arange(start, start + len(sims))] < threshold
    candidates = np.flatnonzero(counts >= min_size)
    candidates = candidates[np.argsort(-counts[candidates], kind="stable")]  # equal sizes keep row order
    taken = np.zeros(n, dtype=bool)
    groups: list[np.ndarray] = []
    pos = 0
    while pos < len(candidates):
        # The next block of centres not taken yet; earlier ones in the block may still take later ones.
        chunk = []
        while pos < len(candidates) and len(chunk) < block:
            if not taken[candidates[pos]]:
                chunk.append(int(candidates[pos]))
            pos += 1
        if not chunk:
            break
        sims = x[chunk] @ x.T
        for row, centre in zip(sims, chunk, strict=True):
            if taken[centre]:
                continue
            row[centre] = 2.0  # the centre first, whatever rounding says
            members = np.flatnonzero((row >= threshold) & ~taken)
            if len(members) < min_size:
                continue
            members = members[np.argsort(-row[members], kind="stable")]
            groups.append(members.astype(np.int64))
            taken[members] = True
    groups.sort(key=lambda g: -len(g))
    return groups
