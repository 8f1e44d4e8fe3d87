"""The hits' columns a server keeps in memory (retrieval/kept.py): the same rows as the store's,
verified when first read, and following the store through `sbert rm` and appends."""

from __future__ import annotations

import json
import shutil
import time

import numpy as np
import pytest
from serve_support import MODEL, SAMPLE_CORPUS, make_store, sbert
from test_serve import client_for

from sbert_cli.retrieval.kept import KeptRows, kept_for
from sbert_cli.store.integrity import DamagedFileError, forget_verified
from sbert_cli.store.store import Store

COLUMNS = ("text", "source", "line", "key", "chunk", "start", "end")


@pytest.fixture(scope="module")
def chunked_store(tmp_path_factory):
    """A store of the sample corpus with chunk rows (several rows per record)."""
    path = tmp_path_factory.mktemp("kept") / "store"
    result = sbert("encode", SAMPLE_CORPUS, "-o", path, "--model", MODEL, "--chunk-size", "32", "-q")
    assert result.exit_code == 0, result.output
    assert sbert("index", path, "-q").exit_code == 0
    return path


@pytest.fixture()
def store(tmp_path, tmp_path_factory):
    path = tmp_path / "store"
    shutil.copytree(make_store(tmp_path_factory.mktemp("plain") / "store"), path)
    return path


def sample_ids(store: Store) -> list[int]:
    ids = [int(i) for i in store.load_embeddings()[0]]
    return ids[::7] + [ids[-1], ids[-1] + 12345]  # the last one is in no shard


@pytest.mark.parametrize("budget, in_memory", [(1 << 30, True), (0, False), (40_000, False)])
def test_kept_rows_are_the_stores_rows(chunked_store, budget, in_memory):
    store = Store.open(chunked_store)
    kept = KeptRows(store, budget)
    assert kept.in_memory is in_memory
    assert "embedding" not in kept.columns and "chunk" in kept.columns
    ids = sample_ids(store)
    for _ in range(2):  # the second time from what was kept
        assert kept.fetch(ids, COLUMNS) == store.fetch(ids, COLUMNS)
        assert kept.fetch(ids[:3], ("line",)) == store.fetch(ids[:3], ("line",))
    if not in_memory and budget:
        assert 0 < kept.nbytes <= budget or len(kept._lru) == 1
    lines = kept.lines_of(np.array(ids, dtype=np.int64))  # a record's key without row dicts
    if in_memory:
        expected = store.fetch(ids, ("line",))
        assert lines.tolist() == [expected[i]["line"] if i in expected else -1 for i in ids] and lines[-1] == -1
    else:
        assert lines is None  # rows not all kept: the caller fetches


def test_a_damaged_shard_is_an_error_naming_it_when_rows_are_first_kept(store):
    opened = Store.open(store)
    shard = opened.shard_path(opened.shards[0])
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size: only the checksum can tell
    shard.write_bytes(bytes(data))
    forget_verified()
    with pytest.raises(DamagedFileError, match=str(shard)):
        KeptRows(Store.open(store))


def served_jsonl(client, query: str, **params) -> str:
    response = client.get("/search", params={"q": query, "format": "jsonl", **params})
    assert response.status_code == 200, response.text
    return response.text


def wait_for_generation(client, generation: int) -> dict:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        health = client.get("/health").json()
        if health["generation"] == generation:
            return health
        time.sleep(0.05)
    raise AssertionError(f"the server did not reach generation {generation}: {health}")


def test_kept_rows_follow_rm_and_append_as_sbert_search_sees_them(store, tmp_path, monkeypatch):
    query = "the white whale and the sea"
    reads = []
    read_shard = Store.read_shard
    monkeypatch.setattr(
        Store, "read_shard", lambda self, shard, *a, **k: reads.append(shard.file) or read_shard(self, shard, *a, **k)
    )
    with client_for(store, poll_s=0.05) as client:
        server = client.app.state.server
        before = server.live.current.kept
        assert before.in_memory and kept_for(server.live.current.index.store) is before
        health = client.get("/health").json()
        assert health["kept_rows"]["in_memory"] and health["kept_rows"]["bytes"] > 0
        hits = [json.loads(x) for x in served_jsonl(client, query, k=500, mode="dense").splitlines()]
        removed = hits[0]["source"]
        assert removed in {h["source"] for h in hits}

        reads.clear()
        assert sbert("rm", store, removed, "-q").exit_code == 0
        wait_for_generation(client, 2)
        after = server.live.current.kept
        assert after is not before and kept_for(server.live.current.index.store) is after
        # The shards both states list were not read again.
        common = {file for file, _ in set(before._tables) & set(after._tables)}
        assert common and not common & set(reads)
        cli = sbert("search", store, query, "-k", "500", "--mode", "dense", "--format", "jsonl")
        assert cli.exit_code == 0, cli.output
        served = served_jsonl(client, query, k=500, mode="dense")
        assert served == cli.stdout and removed not in {json.loads(x)["source"] for x in served.splitlines()}

        extra = tmp_path / "added.txt"
        extra.write_text("a brand new line about a lighthouse keeper\nand another about a quiet harbour\n")
        assert sbert("encode", extra, "-o", store, "--model", MODEL, "-q").exit_code == 0
        wait_for_generation(client, 3)
        for mode in ("dense", "hybrid"):
            cli = sbert("search", store, "a lighthouse keeper", "-k", "5", "--mode", mode, "--format", "jsonl")
            assert cli.exit_code == 0, cli.output
            served = served_jsonl(client, "a lighthouse keeper", k=5, mode=mode)
            assert served == cli.stdout and "a brand new line about a lighthouse keeper" in served
