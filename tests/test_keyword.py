"""Keyword (BM25) and hybrid search: the rare term dense search misses, fusion as documented,
scores equal to a fresh build after shards are added, and damaged or stale indexes refused."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from sbert_cli.cli import app
from sbert_cli.encoding.runner import EncodeOptions, encode_corpus
from sbert_cli.errors import InputError
from sbert_cli.retrieval import Index, build_index, fuse
from sbert_cli.retrieval.fusion import Fusion
from sbert_cli.retrieval.keyword import keyword_dir
from sbert_cli.store.manifest import KeywordManifest

FIXTURES = Path(__file__).resolve().parent / "fixtures"
HASH = "hash:64"
RARE = "Zorblaxian"
runner = CliRunner()


def sbert(*args):
    return runner.invoke(app, [str(a) for a in args])


def encode(store: Path, *inputs: Path, **options) -> None:
    encode_corpus([str(p) for p in inputs], store, EncodeOptions(model=HASH, **options))


def book_lines(start: int, stop: int) -> list[str]:
    lines = [line for line in (FIXTURES / "books_2k.txt").read_text(encoding="utf-8").splitlines() if line.strip()]
    return lines[start:stop]


@pytest.fixture(scope="module")
def rare_doc() -> str:
    # Past the stand-in model's 128 words, the rare term is invisible to dense search, as the end
    # of a long text is to a real model: only the keyword index sees it.
    filler = " ".join(" ".join(book_lines(200, 220)).split()[:140])
    return f"{filler} and the {RARE} treaty was signed."


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, rare_doc) -> Path:
    path = tmp_path_factory.mktemp("corpus") / "a.txt"
    path.write_text("\n".join([*book_lines(0, 150), rare_doc]) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def built(tmp_path_factory, corpus) -> Path:
    """151 texts, indexed (dense and keyword) once; tests take a copy."""
    path = tmp_path_factory.mktemp("built") / "store"
    encode(path, corpus)
    build_index(path)
    return path


def jsonl(result) -> list[dict]:
    return [json.loads(line) for line in result.stdout.splitlines()]


def test_keyword_finds_a_rare_term_that_dense_ranks_low(store, rare_doc):
    index = Index.open(store)
    keyword = index.search([RARE], k=5, mode="keyword")[0]
    assert [h.text for h in keyword] == [rare_doc]  # only texts sharing a term are keyword hits
    assert keyword[0].keyword_rank == 1 and keyword[0].score > 0
    dense = index.search([RARE], k=index.rows, mode="dense")[0]
    dense_rank = next(h.rank for h in dense if h.text == rare_doc)
    assert dense_rank > 10
    hybrid = index.search([RARE], k=10, mode="hybrid")[0]
    found = next(h for h in hybrid if h.text == rare_doc)
    assert found.rank <= 2 and found.keyword_rank == 1
    assert found.dense_rank == (dense_rank if dense_rank <= 100 else None)


def test_fusion_is_computed_as_documented():
    dense = (np.array([1, 2, 3]), np.array([0.9, 0.5, 0.1], dtype=np.float32))
    keyword = (np.array([3, 4, -1]), np.array([4.0, 2.0, -np.inf], dtype=np.float32))
    rrf = fuse(dense, keyword, k=4, fusion=Fusion("rrf"))
    # 3: 1/63 + 1/61; 1: 1/61; 2 and 4 tie at 1/62 with best rank 2: the smaller id first.
    assert [r.id for r in rrf] == [3, 1, 2, 4]
    assert [r.score for r in rrf] == pytest.approx([1 / 63 + 1 / 61, 1 / 61, 1 / 62, 1 / 62])
    assert (rrf[0].dense_rank, rrf[0].keyword_rank, rrf[0].keyword_score) == (3, 1, pytest.approx(4.0))
    assert (rrf[1].keyword_rank, rrf[1].keyword_score) == (None, None)
    assert [r.score for r in fuse(dense, keyword, k=1, rrf_k=0)] == pytest.approx([1 / 3 + 1])
    # Convex, mm+tmm (the default before dbsf): dense min-max to 1, .5, 0; BM25 / its max: 1, .5.
    # alpha .5: 1 -> .5, 3 -> .5 (tie: both best rank 1, smaller id first), 2 -> .25, 4 -> .25.
    weighted = fuse(dense, keyword, k=4, fusion=Fusion("convex", alpha=0.5, norm="mm+tmm"))
    assert [r.id for r in weighted] == [1, 3, 2, 4]
    assert [r.score for r in weighted] == pytest.approx([0.5, 0.5, 0.25, 0.25])
    at_04 = fuse(dense, keyword, k=4, fusion=Fusion("convex", alpha=0.4, norm="mm+tmm"))
    assert [r.id for r in at_04] == [3, 1, 4, 2]
    assert [r.score for r in at_04] == pytest.approx([0.6, 0.4, 0.3, 0.2])
    assert [r.id for r in fuse(dense, keyword, k=4, alpha=1.0)][:3] == [1, 2, 3]
    # A lone document in a list normalizes to 1 (span 0).
    lone = fuse((np.array([7]), np.array([0.3])), keyword, k=1, fusion=Fusion("convex", alpha=0.9, norm="mm+tmm"))
    assert [r.score for r in lone] == pytest.approx([0.9])
    # Plain min-max (the first version) maps the weaker of two BM25 matches to 0, like no match.
    minmax = fuse(dense, keyword, k=4, fusion=Fusion("convex", alpha=0.5, norm="minmax"))
    assert [r.score for r in minmax] == pytest.approx([0.5, 0.5, 0.25, 0.0])
    # Theoretical minimum for both (tmm): cosine from -1, BM25 from 0.
    tmm = fuse(dense, keyword, k=1, fusion=Fusion("convex", alpha=0.5, norm="tmm"))
    assert tmm[0].id == 3 and tmm[0].score == pytest.approx(0.5 * (0.1 + 1) / 1.9 + 0.5)


def test_hybrid_hits_report_both_ranks_from_the_shell(store):
    result = sbert("search", store, "the old prince", "a letter", "-k", "5", "--mode", "hybrid", "--format", "jsonl")
    assert result.exit_code == 0, result.output
    hits = jsonl(result)
    assert len(hits) == 10 and {"dense_rank", "dense_score", "keyword_rank", "keyword_score"} <= set(hits[0])
    for hit in hits:  # convex (dbsf, adaptive alpha): every fused score is from 0 to 1, and in order
        assert 0.0 <= hit["score"] <= 1.0 and -1.0 <= hit["cosine"] <= 1.0
    for per in (hits[:5], hits[5:]):
        assert [h["score"] for h in per] == sorted((h["score"] for h in per), reverse=True)
    result = sbert("search", store, "the old prince", "--mode", "hybrid", "--alpha", "1", "--format", "jsonl")
    assert [h["dense_rank"] for h in jsonl(result)] == list(range(1, 11))
    result = sbert("search", store, "the old prince", "--mode", "hybrid", "--rrf-k", "5", "--format", "jsonl")
    top = jsonl(result)[0]
    assert top["score"] == pytest.approx(sum(1 / (5 + r) for r in (top["dense_rank"], top["keyword_rank"]) if r))
    rrf = jsonl(sbert("search", store, "the old prince", "--fusion", "rrf", "--format", "jsonl"))
    assert rrf[0]["score"] == pytest.approx(
        sum(1 / (60 + r) for r in (rrf[0]["dense_rank"], rrf[0]["keyword_rank"]) if r)
    )
    # Hybrid is the default where the store has a keyword index (benchmarks/README.md says why).
    default = jsonl(sbert("search", store, "the old prince", "--format", "jsonl"))
    assert [(h["id"], h["score"]) for h in default[:5]] == [(h["id"], h["score"]) for h in hits[:5]]
    # Dense results keep their columns; the table shows the ranks too, and names its score.
    dense = jsonl(sbert("search", store, "the old prince", "--mode", "dense", "--format", "jsonl"))
    assert list(dense[0]) == ["query", "rank", "id", "score", "cosine", "text", "source", "line", "key"] + [
        "chunk",
        "start",
        "end",
    ]
    assert all(h["score"] == pytest.approx(h["cosine"], abs=1e-5) for h in dense)
    table = sbert("search", store, "the old prince", "--mode", "hybrid", "--format", "table")
    assert table.exit_code == 0 and "the old prince" in table.stdout and "dense" in table.stdout
    assert "score:fused" in table.stdout and "cosine" in table.stdout


def test_adding_shards_gives_the_scores_of_a_fresh_build(tmp_path):
    first, second = tmp_path / "a.txt", tmp_path / "b.txt"
    first.write_text("\n".join(book_lines(0, 120)) + "\n", encoding="utf-8")
    second.write_text("\n".join(book_lines(120, 200)) + "\n", encoding="utf-8")
    grown, fresh = tmp_path / "grown", tmp_path / "fresh"
    encode(grown, first)
    build_index(grown)
    encode(grown, second)
    summary = build_index(grown).keyword
    assert summary.built and summary.added == 80 and summary.docs == 200
    encode(fresh, first, second)
    build_index(fresh)
    queries = ["the prince said", "a letter from Moscow", "war"]
    a = Index.open(grown).keyword_index().search(queries, 20)
    b = Index.open(fresh).keyword_index().search(queries, 20)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_allclose(a[1], b[1], rtol=1e-6)
    again = build_index(grown).keyword
    assert not again.built and again.docs == 200


def test_no_text_store_has_no_keyword_index(tmp_path, corpus):
    store = tmp_path / "store"
    assert sbert("encode", corpus, "-o", store, "--model", HASH, "--no-text", "-q").exit_code == 0
    result = sbert("index", store)
    assert result.exit_code == 0, result.output
    assert "no keyword index" in result.stderr and "--no-text" in result.stderr
    assert not keyword_dir(store).exists()
    result = sbert("search", store, RARE, "--mode", "keyword")
    assert result.exit_code == 2 and len(result.stderr.strip().splitlines()) == 1
    assert "--no-text" in result.stderr and "--mode dense" in result.stderr
    result = sbert("search", store, RARE, "--format", "jsonl")  # the default falls back to dense
    assert result.exit_code == 0 and "dense_rank" not in result.stdout


def test_no_bm25_skips_the_keyword_index(tmp_path, corpus):
    store = tmp_path / "store"
    encode(store, corpus)
    assert sbert("index", store, "--no-bm25").exit_code == 0
    assert not keyword_dir(store).exists()
    result = sbert("search", store, RARE, "--format", "jsonl")
    assert result.exit_code == 0 and "dense_rank" not in result.stdout
    result = sbert("search", store, RARE, "--mode", "hybrid")
    assert result.exit_code == 2 and "has no keyword index yet" in result.stderr


@pytest.mark.parametrize("damage", ["truncate", "remove ids", "garbage manifest", "bad array"])
def test_damaged_keyword_index_is_refused_then_rebuilt(store, damage):
    manifest = KeywordManifest.load(store)
    folder = keyword_dir(store) / manifest.folder
    if damage == "truncate":
        victim = folder / "data.csc.index.npy"
        victim.write_bytes(victim.read_bytes()[:-9])
    elif damage == "remove ids":
        victim = folder / "ids.npy"
        victim.unlink()
    elif damage == "garbage manifest":
        victim = KeywordManifest.path_in(store)
        victim.write_text("{not json")
    else:  # same size, other bytes: the checksum verified as it is loaded tells
        victim = folder / "indptr.csc.index.npy"
        data = bytearray(victim.read_bytes())
        data[-4:] = b"\xff\xff\xff\x7f"
        victim.write_bytes(bytes(data))
    result = sbert("search", store, RARE, "--mode", "keyword")
    assert result.exit_code == (2 if damage == "garbage manifest" else 1), result.output  # damage: exit 1
    assert len(result.stderr.strip().splitlines()) == 1 and "--rebuild" in result.stderr
    assert str(victim) in result.stderr
    rebuilt = sbert("index", store)
    assert rebuilt.exit_code == 0 and "rebuilding the keyword index" in rebuilt.stderr
    assert jsonl(sbert("search", store, RARE, "--mode", "keyword", "--format", "jsonl"))[0]["text"].endswith("signed.")


def test_stale_keyword_index_is_refused_and_pending_shards_are_named(store, tmp_path):
    extra = tmp_path / "extra.txt"
    extra.write_text("First version of a line.\n")
    encode(store, extra)
    result = sbert("search", store, "version", "--mode", "keyword", "--format", "jsonl")
    assert result.exit_code == 0 and "not searched by keyword" in result.stderr and result.stdout == ""
    build_index(store)
    extra.write_text("Second, different version of the line.\n")
    encode(store, extra, force=True)
    result = sbert("search", store, "version", "--mode", "keyword")
    assert result.exit_code == 2 and "keyword.json" in result.stderr
    assert "stale" in result.stderr and "re-encoded" in result.stderr and "sbert index" in result.stderr
    with pytest.raises(InputError, match="keyword index is stale"):
        Index.open(store, exact=True).search(["version"], k=1, mode="hybrid")
    assert build_index(store).keyword.reason.endswith("re-encoded since (checksum differs)")
    assert Index.open(store).search(["version"], k=1, mode="keyword")[0][0].text.startswith("Second")


def test_crash_before_commit_leaves_the_old_keyword_index(store, tmp_path, monkeypatch, rare_doc):
    extra = tmp_path / "extra.txt"
    extra.write_text(f"Another {RARE} line.\n")
    encode(store, extra)

    def crash(self, store_path):
        raise OSError("disk full")

    monkeypatch.setattr(KeywordManifest, "save", crash)
    with pytest.raises(OSError):
        build_index(store)
    monkeypatch.undo()
    hits = Index.open(store).search([RARE], k=5, mode="keyword")[0]
    assert [h.text for h in hits] == [rare_doc]  # the old generation, still whole
    build_index(store)
    assert sorted(p.name for p in keyword_dir(store).iterdir()) == [KeywordManifest.load(store).folder, "keyword.json"]
    assert len(Index.open(store).search([RARE], k=5, mode="keyword")[0]) == 2


def test_keyword_manifest_records_the_index(store):
    data = json.loads(KeywordManifest.path_in(store).read_text())
    assert data["format"] == "sbert-bm25-index" and data["library"] == "bm25s" and data["library_version"]
    assert (data["method"], data["k1"], data["b"]) == ("lucene", 1.2, 0.75)
    assert data["tokenizer"]["stemmer"] == "english" and data["docs"] == 151
    assert all(s["sha256"].startswith("sha256:") for s in data["shards"] + data["files"])
    assert {f["name"] for f in data["files"]} >= {"ids.npy", "vocab.index.json", "data.csc.index.npy"}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--alpha", "1.5"], "--alpha 1.5: must be from 0 to 1"),
        (["--rrf-k", "-1"], "--rrf-k -1: must be 0 or more"),
        (["--mode", "dense", "--alpha", "0.5"], "--alpha applies to --mode hybrid only"),
        (["--alpha", "0.5", "--rrf-k", "10"], "give one of them"),
        (["--fusion", "rrf", "--alpha", "0.5"], "--alpha goes with --fusion convex"),
        (["--mode", "keyword", "--fusion", "rrf"], "--fusion applies to --mode hybrid only"),
        (["--alpha", "nan"], "--alpha nan: must be from 0 to 1"),
        (["--min-score", "nan"], "--min-score nan: must be a finite number"),
        (["--min-cosine", "inf"], "--min-cosine inf: must be a finite number"),
    ],
)
def test_bad_fusion_arguments_are_one_line_and_exit_2(store, args, message):
    result = sbert("search", store, "a query", *args)
    assert result.exit_code == 2 and message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
