"""A partitioned index (`sbert index --partitions N`) follows `sbert rm` and `encode --sync` the
way one graph does: rows of removed or rewritten inputs are marked deleted in the partition that
holds them, only rows no graph has are added, and a partition is rebuilt only when its deleted
fraction passes the threshold or `--compact` asks.

How a test tells that nothing was rebuilt: the summary line says "updated the index" (never
"rebuilding the index" nor "built"), and a partition the change did not touch keeps its graph
file (the file name carries the generation that wrote it)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from sbert_cli.cli import app
from sbert_cli.retrieval.search import Index, exact_search
from sbert_cli.store.manifest import IndexManifest

runner = CliRunner()
HASH = ["--model", "hash:32"]
FILES, LINES = 16, 10


def sbert(*args: str | Path):
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result


def write(path: Path, lines: list[str]) -> None:
    path.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")


@pytest.fixture
def corpus(tmp_path: Path, sample_texts: list[str]) -> tuple[Path, Path]:
    """16 files of 10 paragraphs synced into a store, indexed as 2 partitions of 80 rows."""
    docs = tmp_path / "docs"
    docs.mkdir()
    for n in range(FILES):
        write(docs / f"f{n:02d}.txt", sample_texts[LINES * n : LINES * (n + 1)])
    store = tmp_path / "store"
    sbert("encode", docs, "-o", store, "--sync", *HASH, "-q")
    built = sbert("index", store, "--partitions", "2")
    assert "built the index: added 160 rows from 16 shard(s)" in built.output
    return docs, store


def partitions(store: Path) -> list[dict]:
    return json.loads((store / "index" / "index.json").read_text())["partitions"]


def holder(store: Path, name: str) -> int:
    """The partition holding input `name`'s shard(s)."""
    manifest = json.loads((store / "manifest.json").read_text())
    source = next(i["index"] for i in manifest["inputs"] if Path(i["path"]).name == name)
    files = {s["file"] for s in manifest["shards"] if s["input"] == source}
    return next(p for p, part in enumerate(partitions(store)) if files & set(part["shards"]))


def hits(store: Path, query: str, k: int, *mode: str) -> list[dict]:
    result = sbert("search", store, query, "-k", k, "--format", "jsonl", *mode)
    return [json.loads(line) for line in result.stdout.splitlines()]


def assert_only_live_rows(store: Path, queries: list[str], *extra: str) -> None:
    """Dense and hybrid search return live rows only, and dense equals exact search's top k."""
    live = pd.read_parquet(store / "shards")
    for query in queries:
        for mode in (["--mode", "dense"], ["--mode", "hybrid"]):
            found = hits(store, query, 20, *mode, *extra)
            assert found and {h["id"] for h in found} <= set(live.id), (query, mode)
    index = Index.open(store)
    vectors = index.encode(queries)
    graph_ids, _ = index.search_vectors(vectors, 10)
    exact_ids, _ = exact_search(index.store, vectors, 10)
    assert graph_ids.tolist() == exact_ids.tolist()
    assert not index.pending and not index.gone  # the index covers the store: nothing filtered or scanned


def test_rm_marks_rows_deleted_in_one_partition_without_rebuilding(corpus, sample_texts):
    docs, store = corpus
    before = partitions(store)
    home = holder(store, "f03.txt")
    sbert("rm", store, docs / "f03.txt")
    (docs / "f03.txt").unlink()

    updated = sbert("index", store)
    assert "rebuilding the index" not in updated.output and "compacted" not in updated.output
    assert "updated the index: removed 10 rows; it holds 150 rows" in updated.output
    after = partitions(store)
    other = 1 - home
    assert after[other] == before[other]  # the untouched partition keeps its graph file
    assert after[home]["file"] != before[home]["file"] and after[home]["deleted"] == 10
    assert after[home]["count"] == before[home]["count"] - 10
    assert IndexManifest.load(store).deleted == 10
    removed = sample_texts[30:40]
    assert_only_live_rows(store, removed[:4])
    # a filter (hnswlib's filtered search) skips deleted rows as well
    for query in removed[:2]:
        found = hits(store, query, 20, "--mode", "dense", "--where", "line <= 6")
        assert found and not set(h["text"] for h in found) & set(removed)
    assert "index is up to date: 150 rows" in sbert("index", store).output


def test_sync_follows_edits_renames_and_appends_without_rebuilding(corpus, sample_texts):
    docs, store = corpus
    homes = {name: holder(store, name) for name in ("f05.txt", "f06.txt", "f07.txt")}
    edited = sample_texts[60:70]
    old_line = edited[1]
    edited[1] = "a totally new second line about lighthouses"
    write(docs / "f06.txt", edited)  # one record changes: 9 kept rows, 1 new
    write(docs / "f05.txt", [*sample_texts[50:60], "an appended line about whales"])  # kept shard linked
    (docs / "f07.txt").rename(docs / "g07.txt")  # renamed: nothing to encode or add
    (docs / "f03.txt").unlink()
    sbert("encode", docs, "-o", store, "--sync", "-q")

    updated = sbert("index", store)
    assert "rebuilding the index" not in updated.output and "compacted" not in updated.output
    # only the two new records are added; f03's 10 rows and f06's replaced line are deleted
    assert "updated the index: added 2 rows from" in updated.output and "removed 11" in updated.output
    after = partitions(store)
    assert sum(p["deleted"] for p in after) == 11 and sum(p["count"] for p in after) == 151
    for name in ("f05.txt", "f06.txt", "g07.txt"):  # a rewritten input stays where its rows were
        assert holder(store, name) == homes[name.replace("g07", "f07")]
    top = hits(store, "a totally new second line about lighthouses", 1, "--mode", "dense")[0]
    assert top["text"] == "a totally new second line about lighthouses" and top["source"].endswith("f06.txt")
    top = hits(store, "an appended line about whales", 1, "--mode", "hybrid")[0]
    assert top["text"] == "an appended line about whales"
    renamed = hits(store, sample_texts[72], 1, "--mode", "dense")[0]
    assert renamed["source"].endswith("g07.txt")
    assert_only_live_rows(store, [old_line, *sample_texts[30:33], sample_texts[62]])


def test_compact_rebuilds_partitions_holding_deleted_rows(corpus, sample_texts):
    docs, store = corpus
    sbert("rm", store, docs / "f03.txt")
    sbert("index", store, "-q")
    before = partitions(store)
    home = next(p for p, part in enumerate(before) if part["deleted"])

    compacted = sbert("index", store, "--compact")
    assert f"compacted partition {home}: dropped its 10 deleted rows" in compacted.output
    after = partitions(store)
    assert after[1 - home] == before[1 - home]  # nothing deleted there: not rewritten
    assert after[home]["deleted"] == 0 and after[home]["count"] == before[home]["count"]
    assert after[home]["file"] != before[home]["file"] and IndexManifest.load(store).deleted == 0
    assert_only_live_rows(store, sample_texts[30:33])


def test_a_partition_is_compacted_by_itself_past_the_threshold(corpus, sample_texts):
    docs, store = corpus
    home = holder(store, "f00.txt")
    names = [p.name for p in sorted(docs.iterdir()) if holder(store, p.name) == home][:2]  # 20 of its 80 rows
    sbert("rm", store, *(docs / name for name in names))
    out = sbert("index", store).output
    assert f"compacted partition {home}: dropped its 20 deleted rows" in out
    assert "rebuilding the index" not in out and partitions(store)[home]["deleted"] == 0
    assert_only_live_rows(store, sample_texts[:3])


def test_every_input_of_a_partition_removed(corpus, sample_texts):
    docs, store = corpus
    home = holder(store, "f00.txt")
    names = [p.name for p in sorted(docs.iterdir()) if holder(store, p.name) == home]
    sbert("rm", store, *(docs / name for name in names))
    for name in names:
        (docs / name).unlink()
    sbert("index", store, "-q")
    assert partitions(store)[home]["count"] == 0
    assert_only_live_rows(store, sample_texts[:3])
    # new inputs fill the empty partition first
    write(docs / "new.txt", ["a fresh paragraph about the sea", "and another about the sky"])
    sbert("encode", docs, "-o", store, "--sync", "-q")
    sbert("index", store, "-q")
    assert partitions(store)[home]["count"] == 2
    assert hits(store, "and another about the sky", 1, "--mode", "dense")[0]["text"] == "and another about the sky"


def test_index_manifest_from_before_deletions_still_loads(corpus, sample_texts):
    docs, store = corpus
    path = store / "index" / "index.json"
    manifest = json.loads(path.read_text())
    for part in manifest["partitions"]:
        del part["deleted"]
    path.write_text(json.dumps(manifest))
    assert [p.deleted for p in IndexManifest.load(store).partitions] == [0, 0]
    assert hits(store, sample_texts[5], 1, "--mode", "dense")[0]["text"] == sample_texts[5]
    sbert("rm", store, docs / "f03.txt")
    assert "removed 10 rows" in sbert("index", store).output


def test_a_crash_before_the_commit_leaves_the_previous_index(corpus, sample_texts, monkeypatch):
    docs, store = corpus
    before = (store / "index" / "index.json").read_text()
    sbert("rm", store, docs / "f03.txt")

    def crash(self, store_path):
        raise OSError("simulated crash before index.json is replaced")

    with monkeypatch.context() as patch:
        patch.setattr(IndexManifest, "save", crash)
        result = runner.invoke(app, ["index", str(store), "--no-bm25"])
    assert result.exit_code == 1
    assert (store / "index" / "index.json").read_text() == before  # not committed: the old index stands
    removed = sample_texts[30:40]
    found = hits(store, removed[0], 20, "--mode", "dense")  # the old graph, removed rows filtered out
    assert found and not set(h["text"] for h in found) & set(removed)
    sbert("index", store, "-q")  # the same command again ends as an uninterrupted run does
    assert sum(p["deleted"] for p in partitions(store)) == 10
    names = {p["file"] for p in partitions(store)} | {"index.json"}
    assert {p.name for p in (store / "index").iterdir()} == names  # the crashed run's file is gone
    assert_only_live_rows(store, removed[:3])
    assert np.isfinite(hits(store, removed[1], 1, "--mode", "dense")[0]["score"])
