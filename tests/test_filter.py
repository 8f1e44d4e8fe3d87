"""`sbert search --where`: filter first, then rank. Every hit satisfies the predicate, k hits come
back whenever k rows match, each path (graph with a filter, exact over the matching rows,
compressed codes, keyword) agrees with brute force over the matching rows, and bad or unsafe
expressions are one-line errors (exit 2)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from fakes import HASH_MODEL, hash_embed
from typer.testing import CliRunner

from sbert_cli.cli import app
from sbert_cli.errors import InputError
from sbert_cli.retrieval import Index, build_index
from sbert_cli.retrieval import filter as row_filters
from sbert_cli.retrieval.filter import filter_rows

runner = CliRunner()
QUERIES = ["a whale hunt at sea", "a student commits a murder", "officers at a ball in Moscow"]


def sbert(*args):
    return runner.invoke(app, [str(a) for a in args])


def jsonl(result) -> list[dict]:
    return [json.loads(line) for line in result.stdout.splitlines()]


@pytest.fixture(scope="module")
def built(tmp_path_factory, sample_store) -> Path:
    path = tmp_path_factory.mktemp("filter") / "store"
    shutil.copytree(sample_store, path)
    build_index(path)
    return path


def brute_force(store: Path, query: str, keep, k: int) -> list[int]:
    """The reference: every stored row the predicate keeps, scored by the hash model directly."""
    index = Index.open(store, exact=True)
    rows = [
        r
        for shard in index.store.shards
        for r in index.store.read_shard(shard, ["id", "text", "source", "line"]).to_pylist()
    ]
    q = hash_embed(query, 64)
    scored = sorted((-float(q @ hash_embed(r["text"], 64)), r["id"]) for r in rows if keep(r))
    return [i for _, i in scored[:k]]


@pytest.mark.parametrize(
    ("where", "keep"),
    [
        ("line % 2 = 0", lambda r: r["line"] % 2 == 0),  # half the rows: the graph's filter
        ("source LIKE '%moby%' AND line < 40", lambda r: "moby" in r["source"] and r["line"] < 40),
        ("line = 7", lambda r: r["line"] == 7),  # one row per input: exact over the matching rows
    ],
)
@pytest.mark.parametrize("how", ["graph", "exact", "int8", "binary"])
def test_every_path_returns_the_filtered_exact_top_k(store, where, keep, how, monkeypatch):
    if how in ("int8", "binary"):
        build_index(store, quantize=how, bm25=False)
    index = Index.open(store, exact=how == "exact")
    matching = filter_rows(index.store, where)
    for query in QUERIES:
        hits = index.search([query], k=10, where=where, mode="dense")[0]
        expected = brute_force(store, query, keep, 10)
        assert len(hits) == min(10, len(matching.ids)) == len(expected)
        assert all(keep({"line": h.line, "source": h.source}) for h in hits)
        assert [h.id for h in hits] == expected, (how, where, query)


def test_the_graph_filter_and_the_exact_path_agree(store, monkeypatch):
    index = Index.open(store)
    where = "line % 3 = 1"
    vectors = index.encode(QUERIES)
    monkeypatch.setattr(row_filters, "EXACT_BELOW", 0.0)  # always the graph's filter
    graph = index.search_vectors(vectors, 10, where=where)
    monkeypatch.setattr(row_filters, "EXACT_BELOW", 1.0)  # always exact over the matching rows
    exact = index.search_vectors(vectors, 10, where=where)
    assert filter_rows(index.store, where).narrow
    assert graph[0].tolist() == exact[0].tolist()
    assert np.allclose(graph[1], exact[1], atol=1e-5)


def test_keyword_and_hybrid_modes_filter_first(store):
    index = Index.open(store)
    where = "source LIKE '%crime%'"
    for mode in ("keyword", "hybrid"):
        hits = index.search(["the old woman and the axe"], k=10, where=where, mode=mode)[0]
        assert len(hits) == 10 and all("crime" in h.source for h in hits)
        unfiltered = index.search(["the old woman and the axe"], k=500, mode=mode)[0]
        expected = [h.id for h in unfiltered if "crime" in h.source][:10]
        if mode == "keyword":  # BM25 scores do not depend on the mask: the same order
            assert [h.id for h in hits] == expected


def test_k_hits_whenever_k_rows_match_from_the_shell(store):
    result = sbert("search", store, "whale", "--where", "line <= 4", "-k", "10", "--format", "jsonl")
    assert result.exit_code == 0, result.output
    hits = jsonl(result)
    matching = filter_rows(Index.open(store, exact=True).store, "line <= 4").ids
    assert len(matching) > 10 and len(hits) == 10
    assert all(h["line"] <= 4 for h in hits)
    assert len({h["id"] for h in hits}) == len(hits)
    # Asking for more than match: every matching row, nothing else.
    result = sbert("search", store, "whale", "--where", "line <= 4", "-k", "50", "--format", "jsonl")
    assert sorted(h["id"] for h in jsonl(result)) == sorted(matching.tolist())


def test_a_filter_that_matches_nothing_is_an_empty_result(store):
    for extra in ([], ["--exact"], ["--mode", "keyword"]):
        result = sbert("search", store, "whale", "--where", "line > 1000000", "--format", "jsonl", *extra)
        assert result.exit_code == 0, result.output
        assert result.stdout == ""


@pytest.mark.parametrize(
    ("where", "message"),
    [
        ("line >", "syntax error"),
        ("nosuch = 1", 'Referenced column "nosuch" not found'),
        ("line > 1; DROP TABLE rows", "one SQL expression only"),
        ("line > 1) OR (1 = 1", "syntax error"),
        ("id IN (SELECT 1 FROM read_csv('/etc/passwd'))", "/etc/passwd"),
        ("'abc'", "Could not convert"),
        ("", "the expression is empty"),
    ],
)
def test_bad_or_unsafe_expressions_are_one_line_and_exit_2(store, where, message):
    result = sbert("search", store, "whale", "--where", where)
    assert result.exit_code == 2, result.output
    assert message in result.stderr and result.stderr.startswith("sbert: error: --where")
    assert len(result.stderr.strip().splitlines()) == 1 and result.stdout == ""


def test_a_semicolon_inside_a_string_is_part_of_the_value(store):
    with pytest.raises(InputError, match="Referenced column"):
        filter_rows(Index.open(store, exact=True).store, "nosuch = 'a;b'")
    assert len(filter_rows(Index.open(store, exact=True).store, "source <> 'a;b'").ids) == 500


def test_kept_and_key_columns_can_be_filtered(tmp_path):
    records = tmp_path / "docs.jsonl"
    rows = [{"id": f"doc-{n}", "text": f"note {n} about {'whales' if n % 2 else 'ships'}"} for n in range(12)]
    records.write_text("".join(json.dumps(r) + "\n" for r in rows))
    store = tmp_path / "store"
    encoded = sbert("encode", records, "-o", store, "--model", HASH_MODEL, "--id-field", "id", "-q")
    assert encoded.exit_code == 0, encoded.output
    result = sbert("search", store, "whales", "--exact", "--where", "key IN ('doc-3', 'doc-4')", "--format", "jsonl")
    assert result.exit_code == 0, result.output
    assert sorted(h["key"] for h in jsonl(result)) == ["doc-3", "doc-4"]


def test_timestamp_fields_print_as_iso_text_and_filter_by_sql(tmp_path):
    records = tmp_path / "events.jsonl"
    rows = [
        {"text": "a whale at sea", "when": "2020-05-01T10:00:00"},
        {"text": "a ball", "when": "2021-01-02T00:00:00"},
    ]
    records.write_text("".join(json.dumps(r) + "\n" for r in rows))
    store = tmp_path / "store"
    encoded = sbert("encode", records, "-o", store, "--model", HASH_MODEL, "--keep-fields", "when", "-q")
    assert encoded.exit_code == 0, encoded.output
    result = sbert("search", store, "whale", "--exact", "--where", 'year("when") = 2020', "--format", "jsonl")
    assert result.exit_code == 0, result.output
    [hit] = jsonl(result)
    assert hit["text"] == "a whale at sea" and hit["when"].startswith("2020-05-01T10:00:00")
