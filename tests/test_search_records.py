"""Record-level search over chunked stores: hits are records ranked by their best chunk (max-sim),
no record twice, k counts records (the lists are searched deeper until k records are found),
each hit shows its best chunk with its offsets, key and kept fields; `--chunks` gives the rows."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from fakes import HASH_MODEL, hash_embed
from typer.testing import CliRunner

from sbert_cli.cli import app
from sbert_cli.retrieval import Index

runner = CliRunner()
WHALE = "The whale swam in the deep sea. "
DOCS = [
    # Many near-identical chunks: a chunk-level top 8 is this record alone.
    {"id": "a", "year": 2020, "title": "Whales", "text": WHALE * 12 + "In the end the captain gave up the hunt."},
    {"id": "b", "year": 2021, "title": "Moscow", "text": "Officers danced at a ball in Moscow. The sea was far. " * 2},
    {"id": "c", "year": 2019, "title": "Crime", "text": "A student killed an old pawnbroker with an axe by the sea."},
    {"id": "d", "year": 2022, "title": "Ships", "text": "Old ships sail the deep sea and the whale follows them. " * 3},
]
QUERY = "the whale in the deep sea"


def sbert(*args):
    return runner.invoke(app, [str(a) for a in args])


def jsonl(result) -> list[dict]:
    return [json.loads(line) for line in result.stdout.splitlines()]


@pytest.fixture(scope="module")
def chunked(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("records")
    source = folder / "docs.jsonl"
    source.write_text("".join(json.dumps(d) + "\n" for d in DOCS))
    store = folder / "store"
    args = ["--model", HASH_MODEL, "--chunk-size", "12", "--chunk-overlap", "2", "--keep-fields", "year,title"]
    result = sbert("encode", source, "-o", store, *args, "--id-field", "id", "-q")
    assert result.exit_code == 0, result.output
    assert sbert("index", store, "-q").exit_code == 0
    return store


def chunk_rows(store: Path) -> list[dict]:
    index = Index.open(store, exact=True)
    return [r for s in index.store.shards for r in index.store.read_shard(s).drop(["embedding"]).to_pylist()]


def test_the_store_has_several_chunks_per_record(chunked):
    rows = chunk_rows(chunked)
    per_record = {line: sum(r["line"] == line for r in rows) for line in range(1, 5)}
    assert per_record[1] >= 9 and per_record[2] >= 2
    for row in rows:
        assert DOCS[row["line"] - 1]["text"][row["start"] : row["end"]] == row["text"]


@pytest.mark.parametrize("mode", ["dense", "keyword", "hybrid"])
@pytest.mark.parametrize("exact", [False, True])
def test_hits_are_records_ranked_by_their_best_chunk(chunked, mode, exact):
    args = ["--exact"] if exact else []
    result = sbert("search", chunked, QUERY, "-k", "3", "--mode", mode, "--format", "jsonl", *args)
    assert result.exit_code == 0, result.output
    hits = jsonl(result)
    assert len(hits) == 3  # k counts records, though record a alone has more than 3 x 4 chunk rows
    assert len({(h["source"], h["line"]) for h in hits}) == 3
    rows = chunk_rows(chunked)
    q = hash_embed(QUERY, 64)
    for hit in hits:
        doc = DOCS[hit["line"] - 1]
        assert (hit["key"], hit["year"], hit["title"]) == (doc["id"], doc["year"], doc["title"])
        assert doc["text"][hit["start"] : hit["end"]] == hit["text"]
        assert hit["cosine"] == pytest.approx(float(q @ hash_embed(hit["text"], 64)), abs=1e-5)
        if mode == "dense":  # max-sim: the passage shown is the record's best chunk
            best = max(float(q @ hash_embed(r["text"], 64)) for r in rows if r["line"] == hit["line"])
            assert hit["score"] == pytest.approx(best, abs=1e-5)


def test_the_dense_record_ranking_is_max_sim_over_chunks(chunked):
    rows = chunk_rows(chunked)
    q = hash_embed(QUERY, 64)
    best: dict[int, float] = {}
    for r in rows:
        best[r["line"]] = max(best.get(r["line"], -2.0), float(q @ hash_embed(r["text"], 64)))
    expected = sorted(best, key=lambda line: -best[line])
    hits = Index.open(chunked).search([QUERY], k=10, mode="dense")[0]
    assert [h.line for h in hits] == expected  # all 4 records, once each, k larger than them
    assert [h.rank for h in hits] == [1, 2, 3, 4]


@pytest.mark.parametrize("mode", ["dense", "keyword", "hybrid"])
def test_k_records_come_back_when_the_first_rows_are_one_record(chunked, mode):
    # The first lists are k x 4 rows deep (hybrid: 100); when one record fills them the search
    # goes deeper until k records are found.
    query = "whale swam in the deep sea"
    index = Index.open(chunked)
    first = index.search([query], k=8 if mode == "dense" else 9, mode=mode, chunks=True)[0]
    if mode == "dense":
        assert {h.line for h in first} == {1}
    records = index.search([query], k=2, mode=mode)[0]  # dense: a first list of 8 rows, all record a
    assert len(records) == 2 and len({h.line for h in records}) == 2 and records[0].line == 1


def test_chunks_returns_the_rows(chunked):
    result = sbert("search", chunked, QUERY, "-k", "6", "--mode", "dense", "--chunks", "--format", "jsonl")
    assert result.exit_code == 0, result.output
    hits = jsonl(result)
    assert len(hits) == 6 and len({h["id"] for h in hits}) == 6
    assert sum(h["line"] == 1 for h in hits) > 1  # record a's chunks, each its own hit


def test_where_filters_records_by_a_kept_field(chunked):
    result = sbert("search", chunked, QUERY, "--where", "year >= 2021", "--format", "jsonl")
    assert result.exit_code == 0, result.output
    hits = jsonl(result)
    assert sorted(h["key"] for h in hits) == ["b", "d"]
    result = sbert("search", chunked, QUERY, "--where", "chunk > 0 AND title = 'Whales'", "--format", "jsonl")
    assert [h["key"] for h in jsonl(result)] == ["a"] and jsonl(result)[0]["chunk"] > 0


def test_as_dict_is_the_jsonl_line(chunked):
    for mode in ("dense", "hybrid"):
        index = Index.open(chunked)
        hits = index.search([QUERY], k=2, mode=mode, where="year > 2000")[0]
        result = sbert(
            "search", chunked, QUERY, "-k", "2", "--mode", mode, "--where", "year > 2000", "--format", "jsonl"
        )
        assert result.stdout == "".join(json.dumps(h.as_dict(), ensure_ascii=False) + "\n" for h in hits)
        assert list(hits[0].as_dict()) == list(index.columns(mode))


def test_table_names_its_score_and_shows_the_passage(chunked):
    result = sbert("search", chunked, QUERY, "-k", "2", "--format", "table")
    assert result.exit_code == 0, result.output
    header = result.stdout.splitlines()[1]
    assert header.split()[:3] == ["rank", "score:fused", "cosine"] and "chunk" in header
    result = sbert("search", chunked, QUERY, "-k", "2", "--mode", "dense", "--format", "table")
    assert result.stdout.splitlines()[1].split()[:3] == ["rank", "score:dense", "text"]  # cosine = score here


def test_min_cosine_and_min_score_name_their_scale(chunked):
    hybrid = Index.open(chunked).search([QUERY], k=4)[0]
    assert all(0.0 <= h.score <= 1.0 for h in hybrid) and hybrid[0].score > 0.5  # dbsf: 0 to 1
    result = sbert("search", chunked, QUERY, "--min-score", "0.5", "--format", "jsonl")  # hybrid: 0 to 1
    hits = jsonl(result)
    assert result.exit_code == 0 and hits and all(h["score"] >= 0.5 for h in hits)
    result = sbert("search", chunked, QUERY, "--mode", "keyword", "--min-cosine", "0.3", "--format", "jsonl")
    cos = [h["cosine"] for h in jsonl(result)]
    assert cos and all(c >= 0.3 for c in cos)
    everything = [h.cosine for h in Index.open(chunked).search([QUERY], k=4, mode="keyword")[0]]
    assert len(cos) == sum(c >= 0.3 for c in everything) < len(everything)
    assert np.isfinite(cos).all()
