"""Removed rows never come back: every search mode (exact, HNSW, keyword, hybrid, compressed int8
and binary), before and after `sbert index` catches up, and a search running during a sync."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from sbert_cli.cli import app
from sbert_cli.encoding.runner import EncodeOptions, encode_corpus
from sbert_cli.retrieval.search import Index
from sbert_cli.store.manifest import IndexManifest

runner = CliRunner()
HASH = ["--model", "hash:32"]


def sbert(*args: str | Path):
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result


def write(path: Path, lines: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")


@pytest.fixture
def corpus(tmp_path: Path, sample_texts: list[str]) -> tuple[Path, Path]:
    """A folder of eight files of 25 paragraphs, synced into a store."""
    docs = tmp_path / "docs"
    for n in range(8):
        write(docs / f"f{n}.txt", sample_texts[25 * n : 25 * (n + 1)])
    store = tmp_path / "store"
    sbert("encode", docs, "-o", store, "--sync", *HASH, "-q")
    return docs, store


def change(docs: Path, sample_texts: list[str]) -> list[str]:
    """Remove f1.txt, replace two lines of f2.txt; returns the texts no longer in the corpus."""
    (docs / "f1.txt").unlink()
    f2 = sample_texts[50:75]
    gone = [*sample_texts[25:50], f2[3], f2[10]]
    f2[3], f2[10] = "A replacement paragraph about nothing in particular.", "Another new one."
    write(docs / "f2.txt", f2)
    return gone


def hits(store: Path, query: str, k: int, *mode: str) -> list[dict]:
    result = sbert("search", store, query, "-k", k, "--format", "jsonl", *mode)
    return [json.loads(line) for line in result.stdout.splitlines()]


MODES = [["--exact", "--mode", "dense"], ["--mode", "dense"], ["--mode", "keyword"], ["--mode", "hybrid"]]


def check_no_removed_rows(store: Path, docs: Path, gone: list[str], modes) -> None:
    live = pd.read_parquet(store / "shards")
    assert not set(gone) & set(live.text)  # any Parquet reader sees the live rows only
    k = len(live)
    for query in gone[:3] + gone[-2:]:
        for mode in modes:
            found = hits(store, query, k, *mode)
            assert found, (query, mode)
            assert not [h for h in found if h["text"] in gone or h["source"].endswith("f1.txt")], (query, mode)
            assert {h["id"] for h in found} <= set(live.id), (query, mode)


@pytest.mark.parametrize("catch_up", [False, True], ids=["index-behind", "index-updated"])
def test_every_mode_excludes_removed_rows(corpus, sample_texts, catch_up):
    docs, store = corpus
    sbert("index", store, "-q")
    gone = change(docs, sample_texts)
    sbert("encode", docs, "-o", store, "--sync", "-q")
    if catch_up:
        result = sbert("index", store)
        assert "updated the index: added 2 rows from 1 shard(s), removed 27 in" in result.stderr
        manifest = IndexManifest.load(store)
        assert (manifest.count, manifest.deleted) == (175, 27)  # marked deleted: 27 of 202, under 20%
    check_no_removed_rows(store, docs, gone, MODES)


@pytest.mark.parametrize("quantize", ["int8", "binary"])
@pytest.mark.parametrize("catch_up", [False, True], ids=["index-behind", "index-updated"])
def test_compressed_indexes_exclude_removed_rows(corpus, sample_texts, quantize, catch_up):
    docs, store = corpus
    sbert("index", store, "--quantize", quantize, "--no-bm25", "-q")
    gone = change(docs, sample_texts)
    sbert("encode", docs, "-o", store, "--sync", "-q")
    if catch_up:
        sbert("index", store, "--no-bm25", "-q")
        manifest = IndexManifest.load(store)
        assert (manifest.count, manifest.deleted) == (175, 0)  # the codes no longer hold them
    check_no_removed_rows(store, docs, gone, [["--mode", "dense"]])


def test_rm_then_index_compacts_past_the_threshold(corpus):
    docs, store = corpus
    sbert("index", store, "--no-bm25", "-q")
    sbert("rm", store, docs / "f0.txt")
    result = sbert("index", store, "--no-bm25")
    assert "updated the index: removed 25 rows; it holds 175 rows" in result.stderr
    assert (IndexManifest.load(store).count, IndexManifest.load(store).deleted) == (175, 25)
    sbert("rm", store, docs / "f1.txt", docs / "f2.txt")
    result = sbert("index", store, "--no-bm25")
    assert "compacting the index: 75 of its 200 rows are deleted" in result.stderr
    assert (IndexManifest.load(store).count, IndexManifest.load(store).deleted) == (125, 0)


def test_index_compact_on_demand(corpus):
    docs, store = corpus
    sbert("index", store, "--no-bm25", "-q")
    sbert("rm", store, docs / "f3.txt")
    sbert("index", store, "--no-bm25", "-q")
    assert IndexManifest.load(store).deleted == 25
    result = sbert("index", store, "--no-bm25", "--compact")
    assert "rebuilding the index: compacting: 25 deleted rows, asked with --compact" in result.stderr
    manifest = IndexManifest.load(store)
    assert (manifest.count, manifest.deleted) == (175, 0)
    assert "up to date" in sbert("index", store, "--no-bm25", "--compact").stderr


def test_a_search_opened_before_a_sync_sees_the_new_state(corpus, sample_texts):
    """A reader holding the old manifest finds a shard deleted under it, reopens, and answers from
    the committed state after the sync: never from a mix, never an error."""
    docs, store = corpus
    exact = Index.open(store, exact=True)
    gone = change(docs, sample_texts)
    sbert("encode", docs, "-o", store, "--sync", "-q")
    (found,) = exact.search([gone[0]], k=10, mode="dense")
    assert [h for h in found if h.text in gone] == []
    assert exact.rows == 175


def test_searches_during_syncs_see_one_committed_state_or_the_next(corpus, sample_texts):
    docs, store = corpus
    versions = [sample_texts[100 + 10 * n : 110 + 10 * n] for n in range(6)]
    allowed = set(pd.read_parquet(store / "shards").text)
    for lines in versions:
        allowed |= set(lines)
    errors: list[BaseException] = []
    stop = threading.Event()

    def search_loop() -> None:
        index = Index.open(store, exact=True)
        while not stop.is_set():
            try:
                (found,) = index.search(["the old man and the sea"], k=5, mode="dense")
                assert {h.text for h in found} <= allowed
            except BaseException as exc:  # noqa: BLE001 - reported by the main thread
                errors.append(exc)
                return

    reader = threading.Thread(target=search_loop)
    reader.start()
    try:
        for lines in versions:
            write(docs / "f0.txt", lines)
            encode_corpus([str(docs)], store, EncodeOptions(sync=True))
    finally:
        stop.set()
        reader.join()
    assert errors == []


def test_cluster_sees_live_rows_only(corpus, sample_texts):
    docs, store = corpus
    gone = change(docs, sample_texts)
    sbert("encode", docs, "-o", store, "--sync", "-q")
    result = sbert("cluster", store, "--k", "3", "--format", "jsonl")
    clustered = [json.loads(line) for line in result.stdout.splitlines()]
    live = pd.read_parquet(store / "shards")
    assert sorted(r["id"] for r in clustered) == sorted(live.id) and len(clustered) == 175
    assert not {r["text"] for r in clustered} & set(gone)


def test_keyword_search_says_it_is_stale_after_a_sync_until_index_runs(corpus, sample_texts):
    """A changed record's new text is not in the keyword index until `sbert index`: search says
    so on stderr, with the rows it does not search, never returns the old text, and finds the
    new text once the index is built."""
    docs, store = corpus
    sbert("index", store, "-q")
    gone = change(docs, sample_texts)
    sbert("encode", docs, "-o", store, "--sync", *HASH, "-q")
    query = "replacement paragraph"
    behind = sbert("search", store, query, "-k", "3", "--format", "jsonl", "--mode", "keyword")
    assert f"{store}: the keyword index is stale by 25 rows: 1 shard(s) were written after it" in behind.stderr
    texts = [json.loads(line)["text"] for line in behind.stdout.splitlines()]
    assert not set(texts) & set(gone) and "A replacement paragraph about nothing in particular." not in texts
    info = json.loads(sbert("info", store, "--format", "json").stdout)
    assert info["keyword_index"]["state"].startswith("stale by 25 rows")
    sbert("index", store, "-q")
    caught_up = sbert("search", store, query, "-k", "1", "--format", "jsonl", "--mode", "keyword")
    assert "stale" not in caught_up.stderr
    assert json.loads(caught_up.stdout)["text"] == "A replacement paragraph about nothing in particular."
