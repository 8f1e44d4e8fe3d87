"""`sbert info STORE`: what a store holds, what made it, and how its indexes stand.

Read-only and lock-free: it reads the committed manifests (and the shards' `line` column, to
count records), so it can run while a writer works and reports the last committed state.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sbert_cli.errors import InputError
from sbert_cli.store.manifest import IndexManifest, InputEntry, KeywordManifest
from sbert_cli.store.store import Store

READERS = (
    "shards hold live rows only: a removal or an edit rewrites the input's shards (copy-on-write), "
    "so any Parquet reader of STORE/shards sees exactly the store's rows"
)


def input_state(entry: InputEntry) -> str:
    """ok, incomplete, missing (the file is gone) or changed (its size or mtime differ now)."""
    if entry.path is None:
        return "ok" if entry.complete else "incomplete"
    path = Path(entry.path)
    if not path.is_file():
        return "missing"
    st = path.stat()
    if (st.st_size, st.st_mtime_ns) != (entry.size, entry.mtime_ns):
        return "changed"
    return "ok" if entry.complete else "incomplete"


def _records(store: Store) -> int:
    """Records (rows sharing input and line: one row each unless chunking split them)."""
    total = 0
    for shard in store.shards:
        lines = store.read_shard(shard, ["line"]).column("line").to_numpy()
        total += int((lines[1:] != lines[:-1]).sum()) + 1 if len(lines) else 0
    return total


def _disk_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _pending(store: Store, covered_files: set[str]) -> tuple[int, int]:
    """(rows in shards the index lacks, rows of covered shards the store no longer lists)."""
    current = {s.file for s in store.shards}
    new_rows = sum(s.rows for s in store.shards if s.file not in covered_files)
    return new_rows, len(covered_files - current)


def _state(store: Store, covered_shards) -> str:
    """Whether an index is up to date, or how far it lags behind the store's shards."""
    new_rows, gone = _pending(store, {s.file for s in covered_shards})
    if not (new_rows or gone):
        return "up to date"
    return f"stale by {new_rows:,} rows" + (f" and {gone} removed shard(s)" if gone else "")


def _loaded(load: Callable[[Path], Any], store: Store) -> tuple[Any, dict | None]:
    """(an index's manifest or None, None), or (None, its state) when the manifest is damaged."""
    try:
        return load(store.path), None
    except InputError as exc:
        return None, {"state": f"damaged: {exc}"}


def _index_info(store: Store) -> dict | None:
    manifest, damaged = _loaded(IndexManifest.load, store)
    if manifest is None:
        return damaged
    state = _state(store, manifest.shards)
    total = manifest.count + manifest.deleted
    return {
        "kind": "hnsw" if manifest.quantize == "none" else f"{manifest.quantize} codes",
        "rows": manifest.count,
        "deleted": manifest.deleted,
        "deleted_fraction": round(manifest.deleted / total, 4) if total else 0.0,
        "partitions": len(manifest.partitions) or 1,
        "space": manifest.space,
        "state": state,
        "updated": manifest.updated,
    }


def _keyword_info(store: Store) -> dict | None:
    manifest, damaged = _loaded(KeywordManifest.load, store)
    if manifest is None:
        return damaged
    state = _state(store, manifest.shards)
    return {"rows": manifest.docs, "terms": manifest.terms, "state": state, "updated": manifest.updated}


def store_info(store_path: str | Path) -> dict:
    """Everything `sbert info` shows, as plain data (the CLI renders it as text or JSON)."""
    store = Store.open(store_path)
    m = store.manifest
    inputs = [
        {"source": e.source, "path": e.path, "rows": e.rows_done, "state": input_state(e), "index": e.index}
        for e in m.inputs
    ]
    return {
        "store": str(store.path),
        "rows": store.rows,
        "records": _records(store),
        "inputs": len(inputs),
        "inputs_missing": [i["source"] for i in inputs if i["state"] == "missing"],
        "inputs_changed": [i["source"] for i in inputs if i["state"] == "changed"],
        "inputs_incomplete": [i["source"] for i in inputs if i["state"] == "incomplete"],
        "model": m.model.name,
        "fingerprint": m.model.fingerprint,
        "dim": m.model.dim,
        "dtype": m.model.dtype,
        "storage_dtype": m.storage_dtype,
        "pooling": m.model.pooling,
        "normalize": m.model.normalize,
        "prompt": m.model.prompt,
        "chunking": dataclasses.asdict(m.chunking),
        "kept_fields": {k.name: k.type for k in m.kept_fields},
        "shards": len(m.shards),
        "bytes": _disk_bytes(store.path),
        "has_text": m.has_text,
        "readers": READERS,
        "index": _index_info(store),
        "keyword_index": _keyword_info(store),
        "created": m.created,
        "updated": m.updated,
        "sbert_version": m.sbert_version,
        "input_list": inputs,
    }
