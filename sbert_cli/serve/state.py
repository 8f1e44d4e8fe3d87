"""The store a server answers from, followed while it runs.

`sbert encode` and `sbert index` commit by renaming a manifest into place (store/atomic.py), so
a manifest's (inode, size, mtime) names a committed state. `LiveStore.follow` looks at the three
manifests every `poll_s` seconds; when one changed, it opens the store afresh in a thread of its
own (the engine keeps answering from the old one), warms it, and swaps one reference. A group of
requests takes `current` once and uses that `Snapshot` throughout, so no answer mixes two states.
A served `Index` never reopens itself: when a writer removed a shard it reads (`sbert rm`,
`--sync`), the engine asks `catch_up` for the new commit at once and answers from that, under the
next generation.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from sbert_cli.errors import SbertError
from sbert_cli.retrieval.kept import KeptRows, keep
from sbert_cli.retrieval.keyword import KeywordIndex
from sbert_cli.retrieval.quantized import QuantizedIndex
from sbert_cli.retrieval.search import Index
from sbert_cli.serve.config import ServeOptions
from sbert_cli.store.manifest import MANIFEST, IndexManifest, KeywordManifest
from sbert_cli.store.store import Store

log = logging.getLogger("sbert")


@dataclass(frozen=True)
class Snapshot:
    """One committed state of the store, opened for search."""

    index: Index
    keyword: KeywordIndex | None  # opened where searches default to it (hybrid)
    kept: KeptRows  # the hits' columns, kept for this store (registered: records.fetch_rows uses them)
    generation: int  # 1 at start-up, +1 at every swap
    identity: tuple
    loaded_at: float

    @property
    def rows(self) -> int:
        return self.index.rows

    def summary(self) -> dict:
        """What answers carry about the state they came from."""
        return {"rows": self.rows, "generation": self.generation}

    def health(self) -> dict:
        index = self.index
        manifest = index.manifest
        if index.exact:
            kind = "exact"
        elif isinstance(index.graph, QuantizedIndex):
            kind = f"compressed ({manifest.quantize})"
        else:
            kind = "hnsw (partitioned)" if manifest.partitions else "hnsw"
        keyword = self.keyword
        return {
            "rows": self.rows,
            "generation": self.generation,
            "loaded_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.loaded_at)),
            "model": asdict(index.store.model),
            "index": {
                "kind": kind,
                "space": index.space,
                "indexed_rows": manifest.count if manifest is not None and not index.exact else 0,
                "pending_shards": len(index.pending) if not index.exact else 0,
                "keyword": {"docs": keyword.manifest.docs, "pending_shards": len(keyword.pending)} if keyword else None,
                "default_mode": index.resolve_mode(None),
            },
            "kept_rows": {
                "in_memory": self.kept.in_memory,
                "bytes": self.kept.nbytes,
                "budget_bytes": self.kept.budget,
                "columns": list(self.kept.columns),
            },
        }


def manifest_paths(store: Path) -> list[Path]:
    return [store / MANIFEST, IndexManifest.path_in(store), KeywordManifest.path_in(store)]


def identity(store: Path) -> tuple:
    """What changes whenever `sbert encode` or `sbert index` commits (see the module docstring)."""
    marks = []
    for path in manifest_paths(store):
        try:
            st = os.stat(path)
        except FileNotFoundError:
            marks.append(None)
            continue
        marks.append((st.st_ino, st.st_size, st.st_mtime_ns))
    return tuple(marks)


def open_index(options: ServeOptions, previous: Snapshot | None = None) -> tuple[Index, KeywordIndex | None, KeptRows]:
    """The store opened as `sbert search` opens it, warmed: its query encoder loaded, its keyword
    index opened where searches default to using it, and its hit columns kept in memory
    (retrieval/kept.py; the shards `previous` kept too are not read again). Exact search where
    asked for, or where the store has no index yet (said in the log)."""
    path = Path(options.store)
    # The rows are read (and verified) in a thread while the indexes load: start-up is the longer
    # of the two, not their sum (Parquet, hnswlib and bm25s' loading release the GIL).
    with ThreadPoolExecutor(1, thread_name_prefix="sbert-rows") as pool:
        kept = pool.submit(KeptRows, Store.open(path), options.keep_rows_bytes, previous.kept if previous else None)
        exact = options.exact or (Path(path).is_dir() and IndexManifest.load(path) is None)
        index = Index.open(path, exact=exact, device=options.device)
        if exact and not options.exact:
            log.warning("%s: has no index yet; searching exactly (build one with: sbert index %s)", path, path)
        index.encoder()
        keyword = index.keyword_index() if index.resolve_mode(None) != "dense" else None
        rows = kept.result().for_store(index.store)  # a writer may have committed between the two opens
    index.reopens_itself = False  # a state is one commit: the next is `catch_up`'s (module docstring)
    keep(index.store, rows)
    # One search's worth of reading (the graph, a row's vector, the keyword postings), so the first
    # request after start-up or a swap is as fast as the rest. No query is encoded: the encoder
    # may be running a request in the engine thread meanwhile.
    probe = np.full((1, index.store.dim), index.store.dim**-0.5, dtype=np.float32)
    ids, _ = index.search_vectors(probe, 1)
    found = [int(i) for i in ids[0] if i >= 0]
    index.vectors_of(found)
    rows.fetch(found, rows.columns)
    if keyword is not None:
        keyword.search(["warm"], 1)
    return index, keyword, rows


class LiveStore:
    """The current `Snapshot`, replaced as the store changes on disk."""

    def __init__(self, options: ServeOptions) -> None:
        self.options = options
        self.path = Path(options.store)
        marks = identity(self.path)
        self.current = Snapshot(*open_index(options), 1, marks, time.time())
        self._seen = marks
        # Told of every attempt to follow a change: ("ok", the new Snapshot) or ("failed", None).
        self.listeners: list[Callable[[str, Snapshot | None], None]] = []
        # Why the store's newest commit is not served (health says so), until a later one is.
        self.stale: dict[str, str] | None = None
        self._opening = threading.Lock()  # the poller's thread and the engine's may both catch up

    @property
    def model(self):
        return self.current.index.store.model

    async def follow(self) -> None:
        """Poll the manifests and swap to each newly committed state (runs until cancelled)."""
        while True:
            await asyncio.sleep(self.options.poll_s)
            if identity(self.path) != self._seen:
                await asyncio.to_thread(self.catch_up)

    def catch_up(self) -> Snapshot:
        """Open and swap in the store's newest commit if the manifests changed (any thread, one at a
        time); the state then served. One that cannot be opened leaves the current state served,
        with the reason in the log and /health."""
        with self._opening:
            marks = identity(self.path)
            if marks == self._seen:
                return self.current
            self._seen = marks
            try:
                index, keyword, rows = open_index(self.options, self.current)
                self._check_model(index)
            except SbertError as exc:
                self._failed(str(exc))
                log.warning("the store changed but cannot be served yet (%s); still serving the previous state", exc)
                return self.current
            except Exception as exc:
                self._failed(f"reopening it failed: {type(exc).__name__} (the server's log has the traceback)")
                log.exception("the store changed but reopening it failed; still serving the previous state")
                return self.current
            self.swap(Snapshot(index, keyword, rows, self.current.generation + 1, marks, time.time()))
            return self.current

    def _failed(self, error: str) -> None:
        since = self.stale["since"] if self.stale else time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        self.stale = {"error": error, "since": since}
        self._tell("failed", None)

    def swap(self, snapshot: Snapshot) -> None:
        before = self.current.rows
        self.current, self.stale = snapshot, None
        log.info("the store changed: now serving %s rows (was %s)", f"{snapshot.rows:,}", f"{before:,}")
        self._tell("ok", snapshot)

    def _tell(self, result: str, snapshot: Snapshot | None) -> None:
        for listener in self.listeners:
            listener(result, snapshot)

    def _check_model(self, index: Index) -> None:
        new, old = index.store.model, self.model
        if new.fingerprint != old.fingerprint or new.differences(old):
            raise SbertError(
                f"{self.path} was re-encoded with another model ({new.name}); restart sbert serve to serve it"
            )
