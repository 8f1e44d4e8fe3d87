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
import logging
import math
import os
import re
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from sbert_cli.analysis.similarity import unit_rows
from sbert_cli.errors import InputError, SbertError
from sbert_cli.store.store import Store

log = logging.getLogger("sbert")

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


def _human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024:
            return f"{n:.0f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"


# -- reading --------------------------------------------------------------------------------------------
def sample_store(store: Store, size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A uniform random sample of `size` rows (ids, unit vectors), one shard in memory at a time."""
    rows = store.rows
    rng = np.random.default_rng(seed)
    picks = np.sort(rng.choice(rows, size=min(size, rows), replace=False))
    ids, vectors = [], []
    offset = 0
    for shard_ids, shard_vectors in store.iter_embeddings():
        n = len(shard_ids)
        lo, hi = np.searchsorted(picks, [offset, offset + n])
        local = picks[lo:hi] - offset
        ids.append(shard_ids[local])
        vectors.append(unit_rows(shard_vectors[local]))
        offset += n
    return np.concatenate(ids), np.concatenate(vectors)


def _load_unit(store: Store) -> np.ndarray:
    _, vectors = store.load_embeddings()
    return unit_rows(vectors)


# -- k ------------------------------------------------------------------------------------------------
def _threads_for(rows: int):
    """One thread for small fits: OpenMP start-up and spin-waiting cost more than the work
    (measured: k = 2..20 on 500 rows, 4.5 s with 2 threads on a busy machine, 0.24 s with one)."""
    from threadpoolctl import threadpool_limits

    return threadpool_limits(1) if rows < SMALL_FIT_ROWS else contextlib.nullcontext()


def _kmeans(x: np.ndarray, k: int, seed: int, n_init: int = KMEANS_N_INIT):
    from sklearn.cluster import KMeans
    from sklearn.exceptions import ConvergenceWarning

    with warnings.catch_warnings(), _threads_for(len(x)):
        # Duplicate texts can leave fewer distinct points than k; the fit is still valid.
        warnings.simplefilter("ignore", ConvergenceWarning)
        return KMeans(n_clusters=k, n_init=n_init, random_state=seed).fit(x)


def _agglomerative_labels(x: np.ndarray, k: int, linkage: str) -> np.ndarray:
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
def _centroids(x: np.ndarray, labels: np.ndarray, clusters: int) -> np.ndarray:
    sums = np.zeros((clusters, x.shape[1]), dtype=np.float64)
    np.add.at(sums, labels, x)
    return unit_rows(sums.astype(np.float32))


def _minibatches(store: Store, size: int, min_last: int) -> Iterator[np.ndarray]:
    """Unit vectors of the whole store in batches of `size` rows across shard boundaries; a short
    tail joins the batch before it (MiniBatchKMeans refuses batches smaller than k)."""
    pending: list[np.ndarray] = []
    held = 0
    previous: np.ndarray | None = None
    for _, vectors in store.iter_embeddings():
        pending.append(unit_rows(vectors))
        held += len(vectors)
        while held >= size:
            block = np.concatenate(pending)
            if previous is not None:
                yield previous
            previous, rest = block[:size], block[size:]
            pending, held = [rest], len(rest)
    tail = np.concatenate(pending) if pending else np.empty((0, store.dim), np.float32)
    if previous is None:
        if len(tail):
            yield tail
    elif 0 < len(tail) < max(min_last, 1):
        yield np.concatenate([previous, tail])
    else:
        yield previous
        if len(tail):
            yield tail


def fit_minibatch(store: Store, k: int, seed: int, init_sample: np.ndarray, epochs: int = MINIBATCH_EPOCHS):
    """MiniBatchKMeans fitted shard by shard, started from k-means on a sample so the first
    mini-batches refine good centres instead of finding them."""
    from sklearn.cluster import MiniBatchKMeans

    init = _kmeans(init_sample, k, seed).cluster_centers_
    model = MiniBatchKMeans(n_clusters=k, init=init, n_init=1, random_state=seed, batch_size=MINIBATCH_SIZE)
    with _threads_for(MINIBATCH_SIZE):
        for _ in range(epochs):
            for batch in _minibatches(store, MINIBATCH_SIZE, k):
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


def fit(store: Store, options: ClusterOptions, say: Callable[[str], None] | None = None, plot: bool = False) -> Fitted:
    """Fit the chosen method on the store (validated first: empty store, k, sizes)."""
    say = say or (lambda _m: None)
    if options.method not in METHODS:
        raise InputError(f"--method {options.method}: choose from {', '.join(METHODS)}")
    rows, dim = store.rows, store.dim
    if rows == 0:
        raise InputError(f"{store.path}: the store is empty; there is nothing to cluster")
    if options.k is not None:
        if options.k < 1:
            raise InputError(f"--k {options.k}: give a number of clusters >= 1, or auto")
        if options.k > rows:
            raise InputError(f"--k {options.k} is larger than the store ({rows:,} rows)")
    limit = options.memory_limit or default_memory_limit()
    need = in_memory_bytes(rows, dim)

    if options.method == "community":
        if not 0.0 < options.threshold <= 1.0:
            raise InputError(f"--threshold {options.threshold}: give a cosine in (0, 1]")
        if options.min_size < 1:
            raise InputError(f"--min-size {options.min_size}: give 1 or more")
        if need > limit:
            raise InputError(
                f"{store.path}: {rows:,} rows need about {_human(need)} for community clustering, over the "
                f"{_human(limit)} memory limit; raise --memory-limit or use --method kmeans"
            )
        x = _load_unit(store)
        groups = community_detection(x, options.threshold, options.min_size)
        labels = np.full(rows, NOISE, dtype=np.int64)
        for label, members in enumerate(groups):
            labels[members] = label
        centres = x[[g[0] for g in groups]] if groups else np.empty((0, dim), np.float32)
        return Fitted("community", centres, labels, x, plot_sample=_plot_sample(x, labels, options.seed))

    if options.method == "agglomerative":
        if rows > AGGLOMERATIVE_MAX_ROWS:
            raise InputError(
                f"{store.path}: agglomerative clustering is for stores of up to {AGGLOMERATIVE_MAX_ROWS:,} rows "
                f"(this one has {rows:,}); use --method kmeans or --method community"
            )
        if options.linkage not in LINKAGES:
            raise InputError(f"--linkage {options.linkage}: choose from {', '.join(LINKAGES)}")
        x = _load_unit(store)
        scores: dict[int, float] = {}
        k = options.k
        sample_size = 0
        if k is None:
            sample = _sample_rows(x, options.sample, options.seed)
            sample_size = len(sample)
            k, scores = choose_k(
                sample, options.k_max, options.seed, lambda s, k: _agglomerative_labels(s, k, options.linkage)
            )
            say(f"--k auto: k={k} (silhouette {scores[k]:.3f} on {sample_size:,} sampled rows)")
        labels = _agglomerative_labels(x, k, options.linkage) if k > 1 else np.zeros(rows, dtype=np.int64)
        return Fitted(
            "agglomerative",
            _centroids(x, labels, k),
            labels,
            x,
            silhouettes=scores,
            sample_size=sample_size,
            plot_sample=_plot_sample(x, labels, options.seed),
        )

    # k-means: in memory when it fits, else mini-batch shard by shard.
    streamed = need > limit
    x = None if streamed else _load_unit(store)
    k = options.k
    scores = {}
    sample = None
    sample_size = 0
    if k is None or streamed:
        if streamed:
            _, sample = sample_store(store, max(options.sample, 10 * (k or options.k_max)), options.seed)
        else:
            sample = _sample_rows(x, options.sample, options.seed)
    if k is None:
        assert sample is not None
        auto_sample = _sample_rows(sample, options.sample, options.seed)
        sample_size = len(auto_sample)
        k, scores = choose_k(auto_sample, options.k_max, options.seed, lambda s, k: _kmeans(s, k, options.seed).labels_)
        say(f"--k auto: k={k} (silhouette {scores[k]:.3f} on {len(auto_sample):,} sampled rows)")
    if not streamed:
        assert x is not None
        model = _kmeans(x, k, options.seed)
        labels = model.labels_.astype(np.int64)
        return Fitted(
            "kmeans",
            unit_rows(model.cluster_centers_),
            labels,
            x,
            silhouettes=scores,
            sample_size=sample_size,
            plot_sample=_plot_sample(x, labels, options.seed),
        )
    say(
        f"{rows:,} rows need about {_human(need)} in memory, over the {_human(limit)} limit: "
        f"fitting MiniBatchKMeans shard by shard ({MINIBATCH_EPOCHS} passes)"
    )
    assert sample is not None
    model = fit_minibatch(store, k, options.seed, sample)
    plot_sample = None
    if plot:
        points = sample[:PLOT_MAX_POINTS]
        plot_sample = (points, model.predict(points).astype(np.int64))
    return Fitted(
        "kmeans",
        unit_rows(model.cluster_centers_),
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


# -- assignments --------------------------------------------------------------------------------------
ASSIGNMENT_COLUMNS = ["id", "cluster", "distance", "text"]


class Assigner:
    """Streams one row per store row (`id`, `cluster`, `distance`, `text`), shard by shard, and
    counts cluster sizes and the most central rows as it goes; `summary` is complete once the
    rows are exhausted."""

    def __init__(self, store: Store, fitted: Fitted, top: int = CENTRAL_TEXTS) -> None:
        self.store = store
        self.fitted = fitted
        self.top = top
        self.summary = ClusterSummary(
            fitted.method,
            fitted.clusters,
            silhouettes=fitted.silhouettes,
            sample_size=fitted.sample_size,
            streamed=fitted.streamed,
        )
        self._central: dict[int, list[tuple[float, int, str | None]]] = {}

    def rows(self) -> Iterator[dict]:
        from sbert_cli.store.store import embeddings_to_numpy

        store, fitted = self.store, self.fitted
        in_memory = fitted.labels is not None
        columns = ["id"] + (["text"] if store.has_text else []) + ([] if in_memory else ["embedding"])
        offset = 0
        for shard in store.shards:
            table = store.read_shard(shard, columns)
            ids = table.column("id").to_numpy()
            texts = table.column("text").to_pylist() if store.has_text else [None] * len(ids)
            if in_memory:
                assert fitted.labels is not None and fitted.vectors is not None
                labels = fitted.labels[offset : offset + len(ids)]
                unit = fitted.vectors[offset : offset + len(ids)]
            else:
                unit = unit_rows(embeddings_to_numpy(table.column("embedding"), store.dim))
                with _threads_for(len(unit)):
                    labels = fitted.predictor.predict(unit).astype(np.int64)  # type: ignore[union-attr]
            offset += len(ids)
            distances = self._distances(unit, labels)
            self._count(ids, labels, distances, texts)
            for i, row_id in enumerate(ids.tolist()):
                label = int(labels[i])
                yield {
                    "id": row_id,
                    "cluster": label,
                    "distance": None if label == NOISE else round(float(distances[i]), 6),
                    "text": texts[i],
                }
        self._finish()

    def _distances(self, unit: np.ndarray, labels: np.ndarray) -> np.ndarray:
        distances = np.full(len(labels), np.nan, dtype=np.float64)
        member = labels != NOISE
        if member.any():
            centres = self.fitted.centres[labels[member]]
            cos = np.einsum("ij,ij->i", unit[member], centres)
            distances[member] = np.clip(1.0 - cos, 0.0, 2.0)
        return distances

    def _count(self, ids: np.ndarray, labels: np.ndarray, distances: np.ndarray, texts: list) -> None:
        summary = self.summary
        summary.rows += len(ids)
        values, counts = np.unique(labels, return_counts=True)
        for value, count in zip(values.tolist(), counts.tolist(), strict=True):
            summary.sizes[value] = summary.sizes.get(value, 0) + count
        if self.top <= 0:
            return
        # Per shard, keep only each cluster's `top` nearest rows: the pool stays tiny.
        order = np.lexsort((distances, labels))
        seen: dict[int, int] = {}
        for i in order.tolist():
            label = int(labels[i])
            if label == NOISE or seen.get(label, 0) >= self.top:
                continue
            seen[label] = seen.get(label, 0) + 1
            self._central.setdefault(label, []).append((float(distances[i]), int(ids[i]), texts[i]))

    def _finish(self) -> None:
        for label, pool in self._central.items():
            pool.sort(key=lambda item: (item[0], item[1]))
            self.summary.central[label] = [
                {"id": row_id, "distance": round(d, 6), "text": text} for d, row_id, text in pool[: self.top]
            ]


def write_assignments(path: str, rows: Iterator[dict]) -> int:
    """Write assignment rows to a .parquet or .jsonl file (temp name, then renamed: a crash
    never leaves half a file under the name asked for). Returns the row count."""
    import json

    target = Path(path)
    kind = _output_kind(path)
    if not target.parent.exists():
        raise InputError(f"{path}: directory {target.parent} does not exist")
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    written = 0
    try:
        if kind == "jsonl":
            with open(tmp, "w", encoding="utf-8") as fh:
                for row in rows:
                    fh.write(json.dumps(row, ensure_ascii=False) + "\n")
                    written += 1
        else:
            import pyarrow as pa
            import pyarrow.parquet as pq

            schema = pa.schema(
                [
                    pa.field("id", pa.int64(), nullable=False),
                    pa.field("cluster", pa.int64(), nullable=False),
                    pa.field("distance", pa.float32()),
                    pa.field("text", pa.string()),
                ]
            )
            with pq.ParquetWriter(tmp, schema) as writer:
                batch: list[dict] = []
                for row in rows:
                    batch.append(row)
                    if len(batch) >= 65_536:
                        writer.write_table(pa.Table.from_pylist(batch, schema=schema))
                        written += len(batch)
                        batch = []
                if batch or not written:
                    writer.write_table(pa.Table.from_pylist(batch, schema=schema))
                    written += len(batch)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()
    return written


def _output_kind(path: str) -> str:
    suffix = Path(path).suffix.lower()
    if suffix in (".parquet", ".pq"):
        return "parquet"
    if suffix in (".jsonl", ".ndjson"):
        return "jsonl"
    raise InputError(f"-o {path}: name a .parquet or .jsonl file")


def check_output_path(path: str) -> None:
    """Refuse a bad -o before any work is done."""
    _output_kind(path)
    parent = Path(path).parent
    if not parent.exists():
        raise InputError(f"-o {path}: directory {parent} does not exist")


# -- plot ---------------------------------------------------------------------------------------------
def check_plot_available(path: str) -> None:
    """Fail before clustering, not after, when --plot cannot be honoured."""
    if Path(path).suffix.lower() != ".png":
        raise InputError(f"--plot {path}: name a .png file")
    if not Path(path).parent.exists():
        raise InputError(f"--plot {path}: directory {Path(path).parent} does not exist")
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise SbertError(
            "--plot needs matplotlib, an optional extra: pip install 'sbert-cli[plot]' (or pip install matplotlib)"
        ) from None


def plot_clusters(path: str, vectors: np.ndarray, labels: np.ndarray, title: str, max_legend: int = 20) -> None:
    """A 2-D PCA projection of the (sampled) vectors, coloured by cluster, with a legend."""
    import matplotlib

    matplotlib.use("Agg")  # no display needed; we only write a file
    import matplotlib.pyplot as plt
    from sklearn.decomposition import PCA

    if len(vectors) >= 2 and vectors.shape[1] >= 2:
        points = PCA(n_components=2, random_state=0).fit_transform(vectors)
    else:
        points = np.zeros((len(vectors), 2))
    fig, ax = plt.subplots(figsize=(9, 6.5), dpi=110)
    values, counts = np.unique(labels, return_counts=True)
    by_size = [int(v) for v, _ in sorted(zip(values, counts, strict=True), key=lambda vc: -vc[1])]
    cmap = plt.get_cmap("tab20" if len(by_size) > 10 else "tab10")
    size = max(3.0, min(30.0, 6000.0 / max(len(points), 1)))  # big dots for few points, small for many
    for i, label in enumerate(by_size):
        mask = labels == label
        noise = label == NOISE
        ax.scatter(
            points[mask, 0],
            points[mask, 1],
            s=size,
            alpha=0.35 if noise else 0.75,
            color="lightgrey" if noise else cmap(i % cmap.N),
            label=(f"no cluster ({mask.sum():,})" if noise else f"cluster {label} ({mask.sum():,})")
            if i < max_legend
            else None,
            linewidths=0,
        )
    ax.set_title(title)
    ax.set_xlabel("PC 1")
    ax.set_ylabel("PC 2")
    legend_title = "largest clusters" if len(by_size) > max_legend else None
    ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize="small", markerscale=2, title=legend_title)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def run_cluster(
    store_path: str,
    options: ClusterOptions,
    sink: Callable[[Iterator[dict]], None],
    plot: str | None = None,
    say: Callable[[str], None] | None = None,
) -> ClusterSummary:
    """Open, fit, stream the assignments into `sink`, plot: the whole command as a function."""
    started = time.perf_counter()
    if plot:
        check_plot_available(plot)
    store = Store.open(store_path)
    fitted = fit(store, options, say, plot=bool(plot))
    assigner = Assigner(store, fitted, options.top)
    sink(assigner.rows())
    summary = assigner.summary
    if plot:
        assert fitted.plot_sample is not None
        vectors, labels = fitted.plot_sample
        shown = f", {len(vectors):,} of {summary.rows:,} rows shown" if len(vectors) < summary.rows else ""
        title = f"{Path(store_path).name}: {fitted.method}, {fitted.clusters} clusters{shown} (PCA)"
        plot_clusters(plot, vectors, labels, title)
    summary.elapsed = time.perf_counter() - started
    return summary


def silhouette_text(summary: ClusterSummary) -> str:
    if not summary.silhouettes:
        return ""
    best = summary.silhouettes.get(summary.clusters, math.nan)
    return f"k chosen by silhouette ({best:.3f}, k tried {min(summary.silhouettes)}-{max(summary.silhouettes)})"
