"""Records: a store's rows sharing (input, line), as `cluster` and `similarity --store` see them.

The chunking stage writes several rows per long record (shard columns `chunk`, `start`, `end`);
`chunked_store` writes such a store by hand (shards of 2 rows, so records run across shards), and
the tests check each record's vector (the mean of its chunks', normalized) and that outputs carry
`source`, `line` and `key`. Stores without chunk columns: every row is its own record."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from fakes import HASH_MODEL
from test_cluster import PLANTED, jsonl, run

from sbert_cli.store.store import Store

# (record line, its chunks): a long record is several store rows sharing its line.
CHUNKED = [
    (1, ["whale sea ship harpoon", "whale ocean sea storm", "the sea ship and the whale"]),
    (2, ["tea cup milk sugar"]),
    (3, ["a ship on the sea", "whale and harpoon"]),
    (4, ["milk tea in a cup", "sugar for the tea", "a cup of tea with milk"]),
]


def chunked_store(root: Path, model: str = "hash:32") -> Path:
    """A store as the chunking stage writes it: several rows per (input, line), with `chunk`,
    `start`, `end` columns, in shards of 2 rows so records run across shard boundaries."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from sbert_cli.encoding.runner import EncodeOptions, encode_corpus
    from sbert_cli.store.integrity import digest_file
    from sbert_cli.store.manifest import StoreManifest

    chunks = [(line, n, text) for line, texts in CHUNKED for n, text in enumerate(texts)]
    corpus = root / "docs.txt"
    corpus.write_text("".join(text + "\n" for _, _, text in chunks), encoding="utf-8")
    store = root / "chunked"
    encode_corpus([str(corpus)], store, EncodeOptions(model=model, shard_size=2))
    manifest = StoreManifest.load(store)
    for position, shard in enumerate(manifest.shards):
        path = store / shard.file
        table = pq.read_table(path)
        rows = [chunks[line - 1] for line in table.column("line").to_pylist()]
        offsets = [sum(len(t) + 1 for t in texts[:n]) for line, n, _ in rows for texts in [dict(CHUNKED)[line]]]
        table = table.set_column(
            table.schema.get_field_index("line"), "line", pa.array([r[0] for r in rows], pa.int64())
        )
        ends = [o + len(r[2]) for o, r in zip(offsets, rows, strict=True)]
        for name, values in (("chunk", [r[1] for r in rows]), ("start", offsets), ("end", ends)):
            column = pa.array(values, pa.int32())
            at = table.schema.get_field_index(name)
            table = table.set_column(at, name, column) if at >= 0 else table.append_column(name, column)
        pq.write_table(table, path)
        digest = digest_file(path)
        manifest.shards[position] = dataclasses.replace(
            shard, sha256=digest.sha256, bytes=digest.bytes, xxh3=digest.xxh3, page_checksums=False
        )
    manifest.save(store)
    return store


def record_vectors(dim: int = 32) -> np.ndarray:
    """Each record's vector: the mean of its chunks' (unit) vectors, normalized."""
    from fakes import hash_embed

    means = np.stack([np.mean([hash_embed(t, dim) for t in texts], axis=0) for _, texts in CHUNKED])
    return means / np.linalg.norm(means, axis=1, keepdims=True)


def test_cluster_works_on_records_and_on_chunks(tmp_path):
    store = chunked_store(tmp_path)
    result = run("cluster", str(store), "--k", "2", "--format", "jsonl", "-q")
    assert result.exit_code == 0, result.output
    rows = jsonl(result.stdout)
    assert [(r["source"], r["line"], r["key"]) for r in rows] == [
        (str(tmp_path / "docs.txt"), n, None) for n in (1, 2, 3, 4)
    ]
    assert [r["text"] for r in rows] == [texts[0] for _, texts in CHUNKED]  # the record's first chunk
    assert list(rows[0]) == ["id", "source", "line", "key", "cluster", "distance", "text"]
    labels = [r["cluster"] for r in rows]
    assert labels[0] == labels[2] != labels[1] == labels[3]  # whales and tea
    vectors = record_vectors()
    for row, vector in zip(rows, vectors, strict=True):
        members = vectors[[i for i, label in enumerate(labels) if label == row["cluster"]]]
        centre = members.mean(0) / np.linalg.norm(members.mean(0))
        assert row["distance"] == pytest.approx(1 - float(vector @ centre), abs=1e-5)
    per_chunk = run("cluster", str(store), "--k", "2", "--chunks", "--format", "jsonl", "-q")
    assert per_chunk.exit_code == 0, per_chunk.output
    chunk_rows = jsonl(per_chunk.stdout)
    assert list(chunk_rows[0]) == [
        "id",
        "source",
        "line",
        "key",
        "chunk",
        "start",
        "end",
        "cluster",
        "distance",
        "text",
    ]
    assert [(r["line"], r["chunk"]) for r in chunk_rows] == [
        (line, n) for line, texts in CHUNKED for n in range(len(texts))
    ]
    too_many = run("cluster", str(store), "--k", "5")
    assert (too_many.exit_code, too_many.stderr) == (2, "sbert: error: --k 5 is larger than the store (4 records)\n")


def test_store_records_group_rows_across_shards(tmp_path):
    from sbert_cli.analysis.records import StoreRecords

    store = Store.open(chunked_store(tmp_path))
    records = StoreRecords(store)
    assert records.rows == 4 and records.chunk_columns == ["chunk", "start", "end"]
    loaded = records.load()
    np.testing.assert_allclose(loaded.vectors, record_vectors(), atol=1e-6)
    assert loaded.meta["line"] == [1, 2, 3, 4]
    assert StoreRecords(store, chunks=True).rows == store.rows == 9


def test_assignments_carry_source_line_and_key(tmp_path):
    docs = tmp_path / "docs.jsonl"
    docs.write_text(
        "".join(json.dumps({"id": f"doc-{i}", "text": t}) + "\n" for i, t in enumerate(PLANTED[0] + PLANTED[1]))
    )
    store = tmp_path / "store"
    assert run("encode", str(docs), "-o", str(store), "--id-field", "id", "--model", HASH_MODEL).exit_code == 0
    result = run("cluster", str(store), "--k", "2", "--format", "jsonl", "-q")
    assert result.exit_code == 0, result.output
    rows = jsonl(result.stdout)
    assert [(r["source"], r["line"], r["key"]) for r in rows] == [(str(docs), i + 1, f"doc-{i}") for i in range(8)]
