"""The one place that reads and writes `manifest.json` (a store) and `index/index.json` (its index).

Both are typed dataclasses, validated field by field on read: a damaged or foreign file is a
one-line `InputError` naming it (exit 2), never a KeyError deep inside a command. Each carries a
format version; `_MIGRATIONS` lifts older versions to the current one on read, so stores written
by earlier releases keep opening, and the next save writes the current version.
"""

from __future__ import annotations

import copy
import json
import time
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from sbert_cli.errors import InputError
from sbert_cli.store import jsonio, migrations
from sbert_cli.store.atomic import write_atomic
from sbert_cli.store.jsonio import from_json

STORE_FORMAT = "sbert-store"
STORE_VERSION = 3  # 2: records the sbert version that wrote the store; 3: chunking and kept fields
INDEX_FORMAT = "sbert-hnsw-index"
INDEX_VERSION = 2  # 2: records the dense index's quantization (none, int8, binary) and its further files
KEYWORD_FORMAT = "sbert-bm25-index"
KEYWORD_VERSION = 1
KEYWORD_DIR = "keyword"
KEYWORD_MANIFEST = "keyword.json"
MANIFEST = "manifest.json"
INDEX_DIR = "index"
INDEX_MANIFEST = "index.json"
# What must match for two sets of vectors to be comparable; `dtype` is how they were computed.
COMPAT_KEYS = ("fingerprint", "dim", "pooling", "normalize", "max_seq_length", "dtype", "prompt")

T = TypeVar("T")


def utc_now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def sbert_version() -> str:
    from sbert_cli import __version__

    return __version__


@dataclass
class ModelRecord:
    """How a store's vectors were made: everything that changes them, and nothing machine-local."""

    name: str
    fingerprint: str
    dim: int
    pooling: list[str]
    normalize: bool
    max_seq_length: int
    dtype: str
    backend: str = "torch"
    do_lower_case: bool = False
    hidden_size: int = 0
    prompt: str | None = None
    modules: list[str] = field(default_factory=list)  # extra sentence-transformers modules run

    def differences(self, other: ModelRecord) -> list[str]:
        return [k for k in COMPAT_KEYS if getattr(self, k) != getattr(other, k)]


@dataclass
class InputEntry:
    """One input of a store and how far it is encoded (the resume point)."""

    index: int
    source: str
    path: str | None
    size: int | None
    mtime_ns: int | None
    format: str
    rows_done: int = 0
    last_line: int = 0
    shards: int = 0
    complete: bool = False
    blank: int | None = None
    records_done: int = 0  # records whose rows are all committed (a long record is several rows)
    id_offset: int = 0  # rows beyond one per record so far: a row's id is its line + the offset then
    read: dict | None = None  # the ReadOptions it was read with (`sbert check --repair` re-reads it so)
    # --sync (encoding/sync.py): the file's sha256 when last encoded, and the next free local id
    # (the low LINE_BITS of a row id) for records an edit adds; 0: above every id its shards hold.
    content_sha256: str | None = None
    next_local: int = 0


@dataclass(frozen=True)
class ShardInfo:
    file: str
    input: int
    seq: int
    rows: int
    id_min: int
    id_max: int
    sha256: str
    bytes: int
    # Integrity (store/integrity.py): the fast checksum every read verifies, and whether the
    # shard's Parquet pages carry CRCs (so a partial read, `Store.fetch`, is verified too). A
    # shard written before these were recorded has neither: it is verified by its sha256.
    xxh3: str | None = None
    page_checksums: bool = False
    # The records it holds (`sbert check --repair` re-reads exactly those; None: written before
    # they were recorded), and whether a `--sync` rewrite gave its rows ids that are not their
    # lines (+ offsets), so a repair cannot recompute them and gives fresh ones.
    first_line: int | None = None
    last_line: int | None = None
    rewritten: bool = False


@dataclass
class ChunkingRecord:
    """How records longer than the model reads became rows: "chunk" (overlapping chunks of at
    most `size` tokens, special tokens and prompt included) or "truncate" (one row each, cut at
    `size` tokens by the encoder)."""

    mode: str = "chunk"
    size: int = 0
    overlap: int = 0
    whole: int = 0  # records of at most this many tokens stay one row (0, as stores before it: `size`)


@dataclass
class KeptField:
    """A record field stored as a typed column (`--keep-fields`): string, integer, float,
    boolean or timestamp; None while every value so far was null."""

    name: str
    type: str | None = None


@dataclass
class StoreManifest:
    model: ModelRecord
    storage_dtype: str = "float32"
    has_text: bool = True
    has_key: bool = False
    shard_size: int = 20_000
    chunking: ChunkingRecord = field(default_factory=ChunkingRecord)
    has_chunks: bool = True  # shards have the chunk, start and end columns (stores since version 3)
    kept_fields: list[KeptField] = field(default_factory=list)
    # Shards have the record_hash column (--sync). False for stores written before it (a missing
    # key reads False); `encode` sets it on the stores it creates.
    has_record_hash: bool = False
    inputs: list[InputEntry] = field(default_factory=list)
    shards: list[ShardInfo] = field(default_factory=list)
    next_input: int = 0  # the next input index: removed inputs' indexes (and so their ids) are never reused
    format: str = STORE_FORMAT
    version: int = STORE_VERSION
    created: str = field(default_factory=utc_now)
    updated: str = field(default_factory=utc_now)
    sbert_version: str | None = field(default_factory=sbert_version)

    @property
    def rows(self) -> int:
        return sum(s.rows for s in self.shards)

    def copy(self) -> StoreManifest:
        return copy.deepcopy(self)

    @classmethod
    def load(cls, store_path: str | Path) -> StoreManifest:
        path = Path(store_path) / MANIFEST
        data = _read_json(path, "manifest")
        return _parse(cls, data, path, STORE_FORMAT, STORE_VERSION, "sbert store manifest")

    def save(self, store_path: str | Path) -> None:
        self.updated = utc_now()
        self.version = STORE_VERSION
        self.sbert_version = sbert_version()
        _write(Path(store_path) / MANIFEST, self)


@dataclass(frozen=True)
class CoveredShard:
    file: str
    sha256: str
    rows: int


@dataclass(frozen=True)
class IndexFile:
    """One further file of an index, checked like the main one: its name in the index folder."""

    name: str
    bytes: int
    sha256: str
    xxh3: str | None = None  # what a read verifies (store/integrity.py); None: written before, sha256 is


@dataclass
class IndexPartition:
    """One graph of a partitioned HNSW index (retrieval/partitions.py) and the shards it holds;
    every shard is in exactly one partition."""

    file: str
    bytes: int
    sha256: str
    count: int
    shards: list[str] = field(default_factory=list)  # shard files, as the store's manifest names them
    xxh3: str | None = None  # what a read verifies (store/integrity.py); None: written before, sha256 is
    deleted: int = 0  # rows marked deleted in this graph (removed from the store); `count` is the live ones


@dataclass
class IndexManifest:
    """What the dense index in `STORE/index/` covers and how it was built; its commit point.

    `quantize` says what `file` is: "none", an hnswlib graph of the vectors; "int8" or "binary",
    a faiss flat index of compressed codes whose hits are rescored against full-precision vectors
    (`parts`: row ids and the vectors, memory-mapped), with M/ef_construction 0 (no graph)."""

    generation: int
    file: str
    bytes: int
    sha256: str
    space: str
    M: int
    ef_construction: int
    dim: int
    count: int
    model: ModelRecord
    shards: list[CoveredShard] = field(default_factory=list)
    library: str = "hnswlib"
    quantize: str = "none"
    parts: list[IndexFile] = field(default_factory=list)
    calibration_rows: int = 0  # int8: rows the per-dimension ranges were measured on
    xxh3: str | None = None  # `file`'s, what a read verifies (store/integrity.py); None: sha256 is
    # Empty: one graph. Else the graphs searched together; `file` is the first one's and `parts`
    # the others', so the checks every index file gets cover them all.
    partitions: list[IndexPartition] = field(default_factory=list)
    deleted: int = 0  # rows marked deleted in the graph (removed from the store); `count` is the live ones
    format: str = INDEX_FORMAT
    version: int = INDEX_VERSION
    updated: str = field(default_factory=utc_now)
    sbert_version: str | None = field(default_factory=sbert_version)

    @staticmethod
    def path_in(store_path: str | Path) -> Path:
        return Path(store_path) / INDEX_DIR / INDEX_MANIFEST

    @classmethod
    def load(cls, store_path: str | Path) -> IndexManifest | None:
        """The index manifest, or None when the store has no index."""
        return _load_index_manifest(cls, store_path, cls.path_in(store_path), INDEX_FORMAT, INDEX_VERSION, "index")

    def save(self, store_path: str | Path) -> None:
        self.updated = utc_now()
        self.version = INDEX_VERSION
        self.sbert_version = sbert_version()
        _write(self.path_in(store_path), self)


@dataclass(frozen=True)
class TokenizerRecord:
    """How texts become BM25 terms; queries must be cut the same way."""

    lower: bool
    pattern: str
    stopwords: str
    stemmer: str | None


@dataclass
class KeywordManifest:
    """What the BM25 index in `STORE/keyword/` covers and how it was built; its commit point."""

    generation: int
    folder: str  # bm25-NNNNNN, inside STORE/keyword/
    files: list[IndexFile]
    docs: int
    terms: int
    method: str
    k1: float
    b: float
    tokenizer: TokenizerRecord
    shards: list[CoveredShard] = field(default_factory=list)
    library: str = "bm25s"
    library_version: str = ""
    format: str = KEYWORD_FORMAT
    version: int = KEYWORD_VERSION
    updated: str = field(default_factory=utc_now)
    sbert_version: str | None = field(default_factory=sbert_version)

    @staticmethod
    def path_in(store_path: str | Path) -> Path:
        return Path(store_path) / KEYWORD_DIR / KEYWORD_MANIFEST

    @classmethod
    def load(cls, store_path: str | Path) -> KeywordManifest | None:
        """The keyword index manifest, or None when the store has no keyword index."""
        path = cls.path_in(store_path)
        return _load_index_manifest(cls, store_path, path, KEYWORD_FORMAT, KEYWORD_VERSION, "keyword index")

    def save(self, store_path: str | Path) -> None:
        self.updated = utc_now()
        self.sbert_version = sbert_version()
        _write(self.path_in(store_path), self)


# -- reading and writing ---------------------------------------------------------------------------
_MIGRATIONS: dict[tuple[str, int], typing.Callable[[dict], dict]] = {
    (STORE_FORMAT, 1): migrations.store_v1,
    (STORE_FORMAT, 2): migrations.store_v2,
    (INDEX_FORMAT, 1): migrations.index_v1,
}


def _load_index_manifest(
    cls: type[T], store_path: str | Path, path: Path, fmt: str, version: int, what: str
) -> T | None:
    """An index's manifest (None when there is none); a bad one says how to rebuild it."""
    if not path.is_file():
        return None
    try:
        return _parse(cls, _read_json(path, f"{what} manifest"), path, fmt, version, f"sbert {what}")
    except InputError as exc:
        raise InputError(f"{exc}; rebuild with: sbert index {store_path} --rebuild") from exc


def _read_json(path: Path, what: str) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: unreadable {what} ({exc})") from exc


def _parse(cls: type[T], data: Any, path: Path, fmt: str, version: int, what: str) -> T:
    if not isinstance(data, dict) or data.get("format") != fmt:
        raise InputError(f"{path}: not an {what} (format is not {fmt!r})")
    found = data.get("version")
    if not isinstance(found, int) or isinstance(found, bool):
        raise InputError(f"{path}: damaged {what} (no version)")
    if found > version:
        raise InputError(f"{path}: format version {found} is newer than this sbert reads ({version}); upgrade sbert")
    while found < version:
        migrate = _MIGRATIONS.get((fmt, found))
        if migrate is None:  # version 0 or negative: no release wrote it
            raise InputError(f"{path}: damaged {what} (unknown version {found})")
        data = migrate(data)
        found = data["version"]
    try:
        return from_json(cls, data)
    except ValueError as exc:
        raise InputError(f"{path}: damaged {what} ({exc})") from exc


def _write(path: Path, obj: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, jsonio.dumps(obj).encode())
