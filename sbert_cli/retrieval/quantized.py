"""Compressed dense indexes: int8 or binary codes searched by faiss, hits rescored at full precision.

    STORE/index/index.json                    commit point (IndexManifest, quantize int8 | binary)
    STORE/index/Q-NNNNNN.faiss                the codes (faiss's own format), in memory at search
    STORE/index/Q-NNNNNN.ids.npy              the store row id of each code, in order
    STORE/index/Q-NNNNNN.vectors.npy          the stored full-precision vectors, same order,
                                              memory-mapped: rescoring reads only candidate rows

int8: faiss's scalar quantizer QT_8bit, one range per dimension measured on (a sample of up to
CALIBRATION_ROWS of) the store's rows, 1 byte a dimension: 4x smaller than float32.
binary: the sign bit of each dimension, compared by Hamming distance (faiss IndexBinaryFlat):
32x smaller. Either way search scans every code (faiss's SIMD kernels: popcount for Hamming,
8-bit dot products for int8), takes the best `rescore` x k candidates, and ranks those by the
exact score (cosine, ip or l2) against their stored vectors, so scores are exact and only the
candidate list is approximate.

Why faiss: it has both quantizers, trained per dimension, with fast flat scans and its own
well-tested file format. hnswlib has neither int8 nor binary vectors. A graph (faiss HNSW over
codes, usearch) would make each search sub-linear but its links (2 x M x 4 bytes a row at the
base layer: 256 bytes at M=32) cost more than the 48 bytes of a 384-d binary code, which would
defeat the point: memory. The flat scan is what keeps the compression; at 100k rows a query
costs ~0.8 ms binary, ~8 ms int8, against ~2 ms for the HNSW graph (benchmarks/README.md), and
it grows with the store: past a few million rows an IVF variant would be the next step.

Adding shards appends codes with the ranges measured at the first build. Those ranges come from
a sample, so they are refreshed (a rebuild) while the store is small enough that the sample
grew: when fewer than min(CALIBRATION_ROWS, half the store's rows) were measured.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sbert_cli.errors import InputError, SbertError
from sbert_cli.progress import ProgressUpdate, Reporter
from sbert_cli.retrieval.exact import _top_k, prepare_queries
from sbert_cli.retrieval.graph import gone_inputs, index_dir, iter_shard_vectors, uncovered_shards
from sbert_cli.store.atomic import atomic_path
from sbert_cli.store.integrity import DamagedFileError, Digest, check_written, hash_view, index_fix
from sbert_cli.store.manifest import INDEX_MANIFEST, CoveredShard, IndexFile, IndexManifest
from sbert_cli.store.store import LINE_BITS, Store

# faiss's loader logs at INFO which CPU build it picked, which the CLI's logging would print.
logging.getLogger("faiss").setLevel(logging.WARNING)

QUANTIZE = ("none", "int8", "binary")
# Candidates rescored, as a multiple of k, measured per query kind in benchmarks/
# bench_quantized.py (100k all-MiniLM-L6-v2 vectors, recall@10 against exact search, STS-dev
# sentences / single words): int8 0.989 / 0.986 at 1, 1.000 / 1.000 from 2 on; binary 0.996 /
# 0.883 at 30, 1.000 / 0.945 at 80, 1.000 / 0.964 at 120, 1.000 / 0.980 at 200. Single words are
# the hard kind: their neighbours' sign bits differ from the query's in nearly as many places as
# anything else's, so the right rows sit deeper in the Hamming order. 120 keeps both kinds above
# 0.95. Fixed, not set per query from the candidates' score spread: such a rule needs a threshold
# fitted to one model's scores, and a query of a kind it misjudges would be rescored too shallow.
DEFAULT_RESCORE = {"int8": 4, "binary": 120}
CALIBRATION_ROWS = 100_000
RESCORE_ROWS = 65_536  # candidate rows gathered at a time while rescoring: bounds the memory
# Below this many queries faiss scans on one thread: splitting one query's scan across threads
# costs a fork and join per query, which made single queries 3 to 30x slower on the shared 2-core
# benchmark machine (1.6 ms on one thread, 4 to 80 ms on two, 100k binary codes).
FEW_QUERIES = 16


def check_quantize(quantize: str, space: str) -> None:
    if quantize not in QUANTIZE:
        raise InputError(f"--quantize {quantize}: choose from {', '.join(QUANTIZE)}")
    if quantize == "binary" and space == "l2":
        raise InputError("--quantize binary: sign bits approximate angles, not l2 distances; use --space cosine or ip")


def recalibration_reason(store: Store, old: IndexManifest) -> str | None:
    """Why an int8 index's ranges should be measured again (see the module docstring)."""
    if old.quantize == "int8" and old.calibration_rows < min(CALIBRATION_ROWS, store.rows // 2):
        return f"its int8 ranges were measured on {old.calibration_rows:,} rows and the store now has {store.rows:,}"
    return None


def file_names(quantize: str, generation: int) -> tuple[str, str, str]:
    stem = f"{quantize}-{generation:06d}"
    return f"{stem}.faiss", f"{stem}.ids.npy", f"{stem}.vectors.npy"


def _unit(vectors: np.ndarray, space: str) -> np.ndarray:
    """What the codes are made from: unit vectors for cosine (scored as inner products)."""
    return prepare_queries(vectors, space)


def binary_codes(vectors: np.ndarray) -> np.ndarray:
    """Sign bits, 8 dimensions a byte (the last byte zero-padded)."""
    return np.packbits(vectors > 0, axis=1)


def _new_codes(store: Store, space: str, quantize: str):
    """An empty faiss index for the store's vectors, trained (int8) on a sample of its rows."""
    import faiss

    if quantize == "binary":
        return faiss.IndexBinaryFlat(-(-store.dim // 8) * 8), 0
    metric = faiss.METRIC_L2 if space == "l2" else faiss.METRIC_INNER_PRODUCT
    codes = faiss.IndexScalarQuantizer(store.dim, faiss.ScalarQuantizer.QT_8bit, metric)
    step = max(1, -(-store.rows // CALIBRATION_ROWS))
    sample = np.concatenate([_unit(v[::step], space) for _, _, v in iter_shard_vectors(store, store.shards)])
    codes.train(sample)
    return codes, len(sample)


def _load_codes(path: Path, quantize: str):
    import faiss

    try:
        return faiss.read_index_binary(str(path)) if quantize == "binary" else faiss.read_index(str(path))
    except RuntimeError as exc:
        detail = str(exc).strip().splitlines()[-1]
        raise DamagedFileError(f"{path}: unreadable index file ({detail}); {index_fix(path.parent.parent)}") from exc


@dataclass
class _Generation:
    """The files one build writes, and the previous generation's, if it is being extended."""

    directory: Path
    generation: int
    quantize: str

    @property
    def names(self) -> tuple[str, str, str]:
        return file_names(self.quantize, self.generation)


def _next_generation(store: Store, old: IndexManifest | None, quantize: str) -> _Generation:
    directory = index_dir(store.path)
    directory.mkdir(exist_ok=True)
    generation = (old.generation + 1) if old else 1
    while any((directory / name).exists() for name in file_names(quantize, generation)):
        generation += 1  # left by a crashed build: never overwrite a file something may point at
    return _Generation(directory, generation, quantize)


@contextlib.contextmanager
def _faiss_threads(threads: int | None) -> Iterator[None]:
    """faiss's OpenMP threads for a block, restored after: the setting is process-wide."""
    import faiss

    before = faiss.omp_get_max_threads()
    if threads is not None:
        faiss.omp_set_num_threads(threads)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)


def extend_quantized(
    store: Store,
    base: IndexManifest | None,
    old: IndexManifest | None,
    params,
    threads: int,
    summary,
    reporter: Reporter,
) -> int:
    """Add the shards `base` (None: start afresh) lacks to a compressed index, commit, return its size."""
    with _faiss_threads(threads):
        return _grow(store, base, old, params, summary, reporter)


def _grow(
    store: Store, base: IndexManifest | None, old: IndexManifest | None, params, summary, reporter: Reporter
) -> int:
    todo = uncovered_shards(store, base)
    gone = gone_inputs(store, base.shards) if base else set()
    if not todo and not gone:
        return base.count
    new_rows = sum(s.rows for s in todo)
    gen = _next_generation(store, old, params.quantize)
    if base is None:
        codes, calibration = _new_codes(store, params.space, params.quantize)
        old_ids, old_vectors = np.empty(0, np.int64), None
    else:
        codes, calibration = _load_codes(gen.directory / base.file, base.quantize), base.calibration_rows
        old_ids = np.load(gen.directory / base.parts[0].name)
        old_vectors = np.load(gen.directory / base.parts[1].name, mmap_mode="r")
    keep, present = _drop_gone(codes, old_ids, store, todo, gone, summary)
    old_ids = old_ids[keep]
    count = len(old_ids) + new_rows - len(present)
    started = time.perf_counter()
    dtype = np.float16 if store.storage_dtype == "float16" else np.float32
    ids = [old_ids]
    with atomic_path(gen.directory / gen.names[2]) as tmp:
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=dtype, shape=(count, store.dim))
        # Reserve the blocks now: writing through a map into a full disk is a SIGBUS, not an error.
        with open(tmp, "rb+") as fh:
            os.posix_fallocate(fh.fileno(), 0, out.offset + out.nbytes)
        row = _copy_rows(old_vectors, out, keep)
        for _, shard_ids, vectors in iter_shard_vectors(store, todo):
            fresh = ~np.isin(shard_ids, present)  # rows a rewrite kept are coded already
            shard_ids, vectors = shard_ids[fresh], vectors[fresh]
            unit = _unit(vectors, params.space)
            codes.add(binary_codes(unit) if params.quantize == "binary" else unit)
            out[row : row + len(vectors)] = vectors
            row += len(vectors)
            ids.append(shard_ids.astype(np.int64))
            summary.added += len(shard_ids)
            summary.shards_added += 1
            elapsed = time.perf_counter() - started
            reporter.progress(ProgressUpdate("indexing", summary.added, new_rows, elapsed, unit="rows"))
        out.flush()
        vectors_size = out.offset + out.nbytes
        del out
        vectors_digest = check_written(tmp, gen.directory / gen.names[2], vectors_size)
    if codes.ntotal != count:
        raise SbertError(f"{store.path}: the index holds {codes.ntotal:,} rows but the shards list {count:,}")
    live = {s.file for s in store.shards}
    covered = [c for c in (base.shards if base else []) if c.file in live]
    covered += [CoveredShard(s.file, s.sha256, s.rows) for s in todo]
    _commit(store, gen, codes, np.concatenate(ids), params, covered, (calibration, vectors_digest))
    reporter.progress(
        ProgressUpdate("indexing", summary.added, new_rows, time.perf_counter() - started, final=True, unit="rows")
    )
    return count


def _drop_gone(
    codes, old_ids: np.ndarray, store: Store, todo, gone: set[int], summary
) -> tuple[np.ndarray, np.ndarray]:
    """Remove from the codes the rows of `gone` inputs (removed or rewritten) that no new shard
    still holds; returns the mask of old rows kept and the ids of new shards' rows already coded."""
    keep = np.ones(len(old_ids), dtype=bool)
    if not gone:
        return keep, np.empty(0, np.int64)
    new_ids = np.concatenate(
        [store.read_shard(s, ["id"]).column("id").to_numpy() for s in todo] or [np.empty(0, np.int64)]
    )
    dead = np.isin(old_ids >> LINE_BITS, np.array(sorted(gone), dtype=np.int64)) & ~np.isin(old_ids, new_ids)
    if dead.any():
        codes.remove_ids(np.flatnonzero(dead).astype(np.int64))  # a flat index: ids are positions
    summary.deleted += int(dead.sum())
    keep = ~dead
    return keep, old_ids[keep & np.isin(old_ids, new_ids)]


def _copy_rows(source: np.ndarray | None, out: np.ndarray, keep: np.ndarray) -> int:
    """Copy the previous generation's kept vectors to the start of `out`, a slice at a time."""
    if source is None:
        return 0
    row = 0
    for start in range(0, len(source), RESCORE_ROWS):
        end = min(start + RESCORE_ROWS, len(source))
        block = np.asarray(source[start:end])[keep[start:end]]
        out[row : row + len(block)] = block
        row += len(block)
    return row


def _commit(store: Store, gen: _Generation, codes, ids: np.ndarray, params, covered, written) -> None:
    """Write the codes and ids beside the vectors, each read back before it is committed, then
    point index.json at them, then drop the rest. `written`: (calibration rows, vectors' digest)."""
    import faiss

    calibration, vectors_digest = written
    main, ids_name, vectors_name = gen.names
    with atomic_path(gen.directory / ids_name) as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, ids)
            size = fh.tell()
        ids_digest = check_written(tmp, gen.directory / ids_name, size)
    # faiss does not check that its file was flushed whole: serialize in memory, write, read back.
    serialize = faiss.serialize_index_binary if params.quantize == "binary" else faiss.serialize_index
    data = serialize(codes)
    with atomic_path(gen.directory / main) as tmp:
        tmp.write_bytes(data.tobytes())
        record = check_written(tmp, gen.directory / main, len(data), hash_view(data, sha=False)[0])
    parts = [_record(ids_name, ids_digest), _record(vectors_name, vectors_digest)]
    IndexManifest(
        generation=gen.generation,
        file=main,
        bytes=record.bytes,
        sha256=record.sha256,
        xxh3=record.xxh3,
        space=params.space,
        M=0,
        ef_construction=0,
        dim=store.dim,
        count=len(ids),
        model=store.model,
        shards=covered,
        library="faiss",
        quantize=params.quantize,
        parts=parts,
        calibration_rows=calibration,
    ).save(store.path)
    for path in gen.directory.iterdir():
        if path.name not in (*gen.names, INDEX_MANIFEST):
            path.unlink(missing_ok=True)


def _record(name: str, digest: Digest) -> IndexFile:
    return IndexFile(name, digest.bytes, digest.sha256, digest.xxh3)


class QuantizedIndex:
    """A compressed index opened for search: codes in memory, vectors memory-mapped."""

    def __init__(self, manifest: IndexManifest, codes, ids: np.ndarray, vectors: np.ndarray) -> None:
        self.manifest = manifest
        self.codes = codes
        self.ids = ids
        self.vectors = vectors
        self.default_rescore = DEFAULT_RESCORE[manifest.quantize]
        self._order: np.ndarray | None = None  # argsort of ids, made on first use

    @classmethod
    def load(cls, store_path: Path, manifest: IndexManifest) -> QuantizedIndex:
        directory = index_dir(store_path)
        codes = _load_codes(directory / manifest.file, manifest.quantize)
        try:
            ids = np.load(directory / manifest.parts[0].name)
            vectors = np.load(directory / manifest.parts[1].name, mmap_mode="r")
        except (OSError, ValueError, IndexError) as exc:
            raise DamagedFileError(f"{directory}: unreadable index file ({exc}); {index_fix(store_path)}") from exc
        if not codes.ntotal == len(ids) == len(vectors) == manifest.count:
            raise DamagedFileError(
                f"{directory / manifest.file}: holds {codes.ntotal:,} rows, index.json says {manifest.count:,}; "
                f"rebuild it with: sbert index {store_path} --rebuild"
            )
        return cls(manifest, codes, ids, vectors)

    def search(
        self, vectors: np.ndarray, k: int, rescore: int | None = None, allowed: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(ids, exact scores), each (queries, k), best first, for query vectors like the store's.
        With `allowed` (sorted row ids: a `--where` filter's) only those rows are returned: the
        scan takes candidates in proportion to 1 / the share allowed, deeper until k are found."""
        rescore = self.default_rescore if rescore is None else rescore
        queries = prepare_queries(vectors, self.manifest.space)
        keep = None if allowed is None else np.isin(self.ids, allowed)
        share = 1.0 if keep is None else max(float(keep.mean()), 1.0 / max(self.manifest.count, 1))
        candidates = min(self.manifest.count, int(np.ceil(max(k, rescore * k) / share)))
        while True:
            ids, scores = self._scan(queries, k, candidates, keep)
            found = int(np.isfinite(scores).sum(1).min()) if len(scores) else k
            if keep is None or found >= min(k, int(keep.sum())) or candidates >= self.manifest.count:
                return ids, scores
            candidates = min(self.manifest.count, candidates * 4)

    def vectors_of(self, ids: np.ndarray) -> np.ndarray:
        """The full-precision vectors of the given row ids (all in the index), float32."""
        if self._order is None:
            self._order = np.argsort(self.ids, kind="stable")
        positions = self._order[np.searchsorted(self.ids[self._order], ids)]
        order = np.argsort(positions)  # read the memory-mapped file in its order
        out = np.empty((len(ids), self.vectors.shape[1]), dtype=np.float32)
        out[order] = self.vectors[positions[order]]
        return out

    def _scan(
        self, queries: np.ndarray, k: int, candidates: int, keep: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray]:
        found = binary_codes(queries) if self.manifest.quantize == "binary" else queries
        with _faiss_threads(1 if len(queries) < FEW_QUERIES else None):
            _, positions = self.codes.search(found, candidates)
        step = max(1, RESCORE_ROWS // candidates)
        parts = [
            self._rescore(queries[i : i + step], positions[i : i + step], k, keep) for i in range(0, len(queries), step)
        ]
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])

    def _rescore(
        self, queries: np.ndarray, positions: np.ndarray, k: int, keep: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """The k best of each query's candidates by exact score, on exact search's scale (rows
        a filter does not keep score -inf)."""
        # Each distinct candidate row is read once, in file order (the vectors are memory-mapped),
        # and scored against every query in one matrix product; each query then picks its own
        # candidates' scores (a (queries, candidates, dim) gather ran 20-50 ms at 1,200).
        rows, inverse = np.unique(positions, return_inverse=True)
        vectors = np.asarray(self.vectors[rows], dtype=np.float32)
        space = self.manifest.space
        if space == "cosine":
            vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        pick = (inverse.reshape(positions.shape), np.arange(len(queries))[:, None])
        # A few queries are scored without BLAS: their product (1,200 x 384 at 120 x k) crosses
        # OpenBLAS's threading threshold, and two threads took 40 ms under load where numpy's
        # own loop takes under 1 ms (the same reason faiss scans them on one thread).
        few = len(queries) < FEW_QUERIES
        dots = (np.einsum("rd,qd->rq", vectors, queries) if few else vectors @ queries.T)[pick]
        if space == "l2":
            squared = (queries * queries).sum(1)[:, None] - 2 * dots + (vectors * vectors).sum(1)[pick[0]]
            dots = -np.sqrt(np.maximum(squared, 0.0))
        if keep is not None:
            dots = np.where(keep[positions], dots, -np.inf)
        return _top_k(self.ids[positions], dots.astype(np.float32), k)
