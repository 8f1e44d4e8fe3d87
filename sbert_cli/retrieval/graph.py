"""Index and search a store: an hnswlib graph kept inside the store, and exact search as reference.

    STORE/index/index.json        commit point: what the graph covers and how it was built
    STORE/index/hnsw-NNNNNN.bin   the graph (hnswlib's own format), one generation per build

Building streams over the shards, so memory is the graph plus one shard. A build writes a new
generation file, fsyncs it, then replaces index.json (atomically) to point at it, and only then
deletes the old generation: a crash at any moment leaves the previous index usable.

index.json lists every shard it covers with its checksum. Shards are only appended to a store,
except by `sbert encode --force`, which rewrites an input's shards under the same names with new
contents; a checksum that no longer matches means the graph holds vectors the store no longer has,
so the index is stale: search refuses it and `sbert index` rebuilds it. Shards added since the
last build are searched exactly next to the graph, so results are never silently incomplete.

Labels in the graph are the store's row ids (int64, non-negative, fit hnswlib's uint64 labels),
so a hit leads straight to its row through the manifest's id ranges.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sbert_cli.errors import InputError, SbertError
from sbert_cli.store.integrity import (
    DamagedFileError,
    Digest,
    check_written,
    expected_of,
    index_fix,
    verify_file,
)
from sbert_cli.store.manifest import INDEX_DIR, CoveredShard, IndexManifest, ShardInfo
from sbert_cli.store.store import Store, embeddings_to_numpy

SPACES = ("auto", "cosine", "ip", "l2")
# Defaults measured on the books corpus (18,340 paragraphs, all-MiniLM-L6-v2; benchmarks/
# bench_search.py), recall@10 against exact search for 500 book fragments / 500 STS sentences:
#   M=16, ef_construction=200: ef=64 0.990 / 0.840, ef=256 0.999 / 0.970, ef=400 1.000 / 0.985
#   M=32, ef_construction=400: ef=64 0.996 / 0.897, ef=256 1.000 / 0.987, ef=400 1.000 / 0.995
# Queries far from every document (STS sentences against novels) are the hard case, so the
# defaults are the larger graph and ef=400 (0.997 overall; 0.990 even counting an identical
# duplicate paragraph as a miss): the search costs ~1.2 ms a query, less than a tenth of encoding
# it, and building costs a few percent of encoding. ef is raised to k when k is larger.
DEFAULT_M = 32
DEFAULT_EF_CONSTRUCTION = 400
DEFAULT_EF = 400
EXACT_CHUNK_ROWS = 16_384  # rows scored at a time in exact search: (queries x chunk) floats


@dataclass
class IndexParams:
    space: str
    M: int = DEFAULT_M
    ef_construction: int = DEFAULT_EF_CONSTRUCTION
    quantize: str = "none"  # none: an hnswlib graph; int8, binary: compressed codes (retrieval/quantized.py)


def index_dir(store_path: Path) -> Path:
    return Path(store_path) / INDEX_DIR


def default_space(store: Store) -> str:
    """Inner product for normalized vectors (equal to cosine, and cheaper); cosine otherwise."""
    return "ip" if store.normalized else "cosine"


def resolve_space(space: str | None, store: Store) -> str:
    if space is None or space == "auto":
        return default_space(store)
    if space not in SPACES:
        raise InputError(f"--space {space}: choose from {', '.join(SPACES)}")
    return space


def staleness(store: Store, manifest: IndexManifest) -> str | None:
    """Why the index no longer describes the store (None if it still does, new shards aside)."""
    diffs = manifest.model.differences(store.model)
    if diffs:
        return f"it was built from another model ({', '.join(diffs)} differ from the store's)"
    if manifest.dim != store.dim:
        return f"its dimension {manifest.dim} is not the store's {store.dim}"
    return shard_change(store, manifest.shards)


def shard_change(store: Store, covered: Sequence[CoveredShard]) -> str | None:
    """Why shards an index covers no longer match the store's (removed, re-encoded), or None."""
    current = {s.file: s.sha256 for s in store.shards}
    for shard in covered:
        sha = current.get(shard.file)
        if sha is None:
            return f"{shard.file} was removed from the store since"
        if sha != shard.sha256:
            return f"{shard.file} was re-encoded since (checksum differs)"
    return None


def uncovered_shards(store: Store, manifest: IndexManifest | None) -> list[ShardInfo]:
    """Store shards the index does not hold yet, in store order."""
    covered = {s.file for s in manifest.shards} if manifest else set()
    return [s for s in store.shards if s.file not in covered]


def check_graph_file(store_path: Path, manifest: IndexManifest) -> Path:
    """The graph file named by the manifest, verified (size and checksum, store/integrity.py)
    before any library reads it, and the same for every further file of the index: hnswlib's
    loader trusts its input, and damaged link lists crash it."""
    folder = index_dir(store_path)
    for part in manifest.parts:
        check_index_file(folder / part.name, part, store_path)
    return check_index_file(folder / manifest.file, manifest, store_path)


def check_index_file(path: Path, record, store_path: Path) -> Path:
    """Refuse a missing, resized or altered index file; `record` has its `bytes`, `sha256` and
    `xxh3` (hashed once per process)."""
    return verify_file(path, expected_of(record, "index file", index_fix(store_path)))


def load_graph(path: Path, space: str, dim: int, max_elements: int):
    """An hnswlib graph from a file its caller verified (check_graph_file)."""
    import hnswlib

    graph = hnswlib.Index(space=space, dim=dim)
    try:
        graph.load_index(str(path), max_elements=max_elements)
    except (RuntimeError, ValueError, MemoryError) as exc:
        store_path = path.parent.parent
        raise DamagedFileError(f"{path}: unreadable index file ({exc}); {index_fix(store_path)}") from exc
    return graph


# hnswlib's file: a header (6 size_t, int maxlevel, uint32 entry point, 3 size_t, double mult,
# size_t ef_construction), the base layer (count x size_data_per_element), then per element a
# uint32 byte count and its upper-layer links. Everything is 4-byte aligned.
_HNSW_HEADER = np.dtype(
    [(n, "<u8") for n in ("offset0", "max_elements", "count", "element_bytes", "label_offset", "data_offset")]
    + [("maxlevel", "<i4"), ("entry", "<u4"), ("maxM", "<u8"), ("maxM0", "<u8"), ("M", "<u8")]
    + [("mult", "<f8"), ("ef_construction", "<u8")]
)


def graph_file_size(path: Path, count: int, dim: int) -> int:
    """The size an hnswlib file of `count` elements of `dim` floats must have, walked from its own
    header and link-list sizes; the file's size when it is whole. Raises ValueError otherwise."""
    header = np.fromfile(path, dtype=_HNSW_HEADER, count=1)
    if len(header) != 1:
        raise ValueError("no header")
    h = header[0]
    element_bytes = int(h["maxM0"]) * 4 + 4 + dim * 4 + 8
    if int(h["count"]) != count or int(h["element_bytes"]) != element_bytes:
        raise ValueError(f"header says {int(h['count']):,} elements of {int(h['element_bytes'])} bytes")
    start = _HNSW_HEADER.itemsize + count * element_bytes
    words = np.fromfile(path, dtype="<u4", offset=start) if path.stat().st_size > start else np.empty(0, "<u4")
    position, seen = 0, 0
    while seen < count:  # jump over the (mostly empty) link lists, a window at a time
        window = words[position : position + min(count - seen, 4096)]
        if len(window) == 0:
            raise ValueError(f"ends after {seen:,} of {count:,} link lists")
        nonzero = np.flatnonzero(window)
        if len(nonzero) == 0:
            position, seen = position + len(window), seen + len(window)
            continue
        first = int(nonzero[0])
        position += first + 1 + int(window[first]) // 4
        seen += first + 1
    return start + position * 4


def check_graph_written(tmp: Path, final: Path, count: int, dim: int) -> Digest:
    """hnswlib writes through a stream whose errors it never checks: read the file back and
    require the size its own structure implies, before it is committed as `final`."""
    try:
        size = graph_file_size(tmp, count, dim)
    except (ValueError, OSError) as exc:
        raise SbertError(
            f"{final}: the graph read back is incomplete ({exc}; is the disk full?); nothing was committed, "
            "the previous index stays in use"
        ) from exc
    return check_written(tmp, final, size)


def iter_shard_vectors(store: Store, shards: Sequence[ShardInfo]) -> Iterator[tuple[ShardInfo, np.ndarray, np.ndarray]]:
    """(shard, ids, float32 vectors) one shard at a time, checking that each is the listed one."""
    for shard in shards:
        table = store.read_shard(shard, ["id", "embedding"])
        ids = table.column("id").to_numpy()
        if len(ids) != shard.rows:  # Store.read_shard checks this too: keep the guard where it is used
            raise DamagedFileError(
                f"{store.shard_path(shard)}: has {len(ids)} rows, the manifest says {shard.rows}; "
                f"repair with: sbert check --repair {store.path}"
            )
        yield shard, ids, embeddings_to_numpy(table.column("embedding"), store.dim)
