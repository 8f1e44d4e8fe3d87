"""The index library: building, incremental updates, staleness, crash safety, exact search, fetch
(on stores made with the hash model)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from fakes import HASH_MODEL, hash_embed

from sbert_cli.encoding.runner import EncodeOptions, encode_corpus
from sbert_cli.errors import InputError
from sbert_cli.retrieval import BuildSummary, Index, build_index, exact_search
from sbert_cli.retrieval.exact import _top_k
from sbert_cli.retrieval.graph import DEFAULT_EF_CONSTRUCTION, DEFAULT_M, index_dir
from sbert_cli.store.integrity import DamagedFileError
from sbert_cli.store.manifest import INDEX_MANIFEST, IndexManifest
from sbert_cli.store.store import Store

FIXTURES = Path(__file__).resolve().parent / "fixtures"


def encode(inputs: list[Path], store: Path, **kw) -> None:
    encode_corpus([str(p) for p in inputs], store, EncodeOptions(model=HASH_MODEL, **kw))


def build(store: Path, **kw) -> BuildSummary:
    """The dense index alone: these tests are about it (the keyword index has tests/test_keyword.py)."""
    return build_index(store, bm25=False, **kw)


def read_index_manifest(store: Path) -> IndexManifest:
    manifest = IndexManifest.load(store)
    assert manifest is not None
    return manifest


@pytest.fixture()
def store(tmp_path, sample_store) -> Path:
    """A private copy of the sample store (500 rows in 3 inputs, shards of 200)."""
    path = tmp_path / "store"
    shutil.copytree(sample_store, path)
    return path


@pytest.fixture(scope="module")
def books_store(tmp_path_factory) -> Path:
    """2,000 book paragraphs (not in the sample corpus), in shards of 500."""
    path = tmp_path_factory.mktemp("books") / "store"
    encode([FIXTURES / "books_2k.txt"], path, shard_size=500)
    build(path)
    return path


def brute_force(store: Store, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    ids, vecs = store.load_embeddings()
    scores = queries @ vecs.T
    order = np.lexsort((np.broadcast_to(ids, scores.shape), -scores), axis=1)[:, :k]
    return ids[order], np.take_along_axis(scores, order, 1)


def test_exact_search_in_chunks_equals_brute_force(sample_store):
    store = Store.open(sample_store)
    texts = ["a ship sails to hunt whales", "a young man in debt", "a ball in St Petersburg"]
    queries = np.stack([hash_embed(t, store.dim) for t in texts])
    want_ids, want_scores = brute_force(store, queries, 7)
    for chunk in (7, 64, 100_000):  # chunks smaller than k, than a shard, larger than the store
        ids, scores = exact_search(store, queries, 7, chunk_rows=chunk)
        assert (ids == want_ids).all(), chunk
        np.testing.assert_allclose(scores, want_scores, rtol=1e-5, atol=1e-6)


def test_top_k_breaks_ties_by_id():
    ids = np.array([[9, 3, 7, 1, 5]])
    scores = np.array([[0.5, 0.9, 0.5, 0.5, 0.1]], dtype=np.float32)
    got_ids, got_scores = _top_k(ids, scores, 3)
    assert got_ids.tolist() == [[3, 1, 7]]
    assert got_scores.tolist()[0][0] == pytest.approx(0.9)


def test_build_writes_manifest_and_finds_stored_texts(store, sample_texts):
    summary = build(store)
    assert (summary.added, summary.count, summary.shards_added) == (500, 500, len(Store.open(store).shards))
    manifest = read_index_manifest(store)
    files = {s.file: s.sha256 for s in Store.open(store).shards}
    assert {s.file: s.sha256 for s in manifest.shards} == files
    assert (manifest.space, manifest.M, manifest.ef_construction) == ("ip", DEFAULT_M, DEFAULT_EF_CONSTRUCTION)
    assert (manifest.generation, manifest.file, manifest.count, manifest.dim) == (1, "hnsw-000001.bin", 500, 64)
    assert manifest.model == Store.open(store).model
    assert (index_dir(store) / manifest.file).stat().st_size == manifest.bytes

    index = Index.open(store)
    unique = [t for t in sample_texts if sample_texts.count(t) == 1][::40]
    hits = index.search(unique, k=3)
    for text, per_query in zip(unique, hits, strict=True):
        assert per_query[0].text == text
        assert per_query[0].score == pytest.approx(1.0, abs=1e-3)
        assert [h.rank for h in per_query] == [1, 2, 3]
        assert per_query[0].source.endswith(".txt") and per_query[0].line >= 1
    assert build(store).added == 0  # up to date: nothing to do


def test_hnsw_agrees_with_exact_on_2000_rows(books_store):
    index = Index.open(books_store)
    exact = Index.open(books_store, exact=True)
    lines = (FIXTURES / "books_2k.txt").read_text(encoding="utf-8").splitlines()
    # Halves of paragraphs: close to a row but not equal to one, like real queries.
    queries = [" ".join(t.split()[: len(t.split()) // 2]) for t in lines[::20]]
    vectors = index.encode(queries)
    found, found_scores = index.search_vectors(vectors, 10)
    truth, truth_scores = exact.search_vectors(vectors, 10)
    recall = np.mean([len(set(f) & set(t)) / 10 for f, t in zip(found, truth, strict=True)])
    assert recall >= 0.99
    assert (found[:, 0] == truth[:, 0]).mean() >= 0.99
    # Scores are cosine similarities on both paths.
    np.testing.assert_allclose(found_scores[:, 0], truth_scores[:, 0], atol=1e-4)


def test_incremental_index_adds_only_new_rows(store, tmp_path):
    build(store)
    extra = tmp_path / "extra.txt"
    extra.write_text("The harpooneer slept in my bed at the inn.\nA cold soup of beetroot and kvass.\n")
    encode([extra], store)

    # Before re-indexing, the new shard is searched exactly next to the graph: nothing is missed.
    index = Index.open(store)
    assert [s.file for s in index.pending] == ["shards/part-00003-00000.parquet"]
    assert index.search(["A cold soup of beetroot and kvass."], k=1)[0][0].source == str(extra)

    first = read_index_manifest(store)
    summary = build(store)
    assert (summary.added, summary.shards_added, summary.count, summary.rebuilt) == (2, 1, 502, False)
    manifest = read_index_manifest(store)
    assert manifest.generation == first.generation + 1
    assert sorted(p.name for p in index_dir(store).iterdir()) == [manifest.file, INDEX_MANIFEST]
    index = Index.open(store)
    assert not index.pending
    hit = index.search(["The harpooneer slept in my bed at the inn."], k=1)[0][0]
    assert (hit.source, hit.line, hit.score) == (str(extra), 1, pytest.approx(1.0, abs=1e-3))


def test_reencoded_shards_make_the_index_stale(store, tmp_path):
    extra = tmp_path / "extra.txt"
    extra.write_text("First version of a line.\n")
    encode([extra], store)
    build(store)
    extra.write_text("Second, different version of the line.\n")
    encode([extra], store, force=True)  # same shard file name, new contents

    with pytest.raises(InputError, match="stale.*re-encoded since.*sbert index"):
        Index.open(store)
    # --exact does not need the index and still answers.
    assert (
        Index.open(store, exact=True)
        .search(["Second, different version of the line."], k=1)[0][0]
        .text.startswith("Second")
    )
    summary = build(store)
    assert summary.rebuilt and "re-encoded" in summary.reason and summary.count == 501
    assert Index.open(store).search(["Second, different version of the line."], k=1)[0][0].text.startswith("Second")


def test_index_from_another_model_is_refused_then_rebuilt(store):
    build(store)
    path = index_dir(store) / INDEX_MANIFEST
    manifest = json.loads(path.read_text())
    manifest["model"]["fingerprint"] = "sha256:0000"
    path.write_text(json.dumps(manifest))
    with pytest.raises(InputError, match="another model"):
        Index.open(store)
    summary = build(store)
    assert summary.rebuilt and "another model" in summary.reason
    Index.open(store)


@pytest.mark.parametrize("damage", ["truncate", "delete"])
def test_damaged_index_file_is_refused(store, damage):
    build(store)
    graph = index_dir(store) / read_index_manifest(store).file
    if damage == "truncate":
        graph.write_bytes(graph.read_bytes()[:1000])
    else:
        graph.unlink()
    with pytest.raises(DamagedFileError, match="--rebuild"):
        Index.open(store)
    assert build(store).rebuilt
    assert Index.open(store).search(["whale"], k=1)


def test_crash_before_commit_leaves_old_index_usable(store, tmp_path, monkeypatch):
    build(store)
    before = read_index_manifest(store)
    extra = tmp_path / "extra.txt"
    extra.write_text("A line that arrives later.\n")
    encode([extra], store)

    def crash(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(IndexManifest, "save", crash)  # die after the new graph file is written
    with pytest.raises(KeyboardInterrupt):
        build(store)
    monkeypatch.undo()
    assert read_index_manifest(store) == before
    hits = Index.open(store).search(["A line that arrives later."], k=1)  # old graph + exact over the new shard
    assert hits[0][0].text == "A line that arrives later."
    summary = build(store)  # the leftover generation file is never reused or trusted
    assert summary.added == 1 and not summary.rebuilt
    assert len(list(index_dir(store).iterdir())) == 2


def test_parameters_and_spaces(store):
    summary = build(store, M=8, ef_construction=50, threads=1)
    assert (summary.params["M"], summary.params["ef_construction"]) == (8, 50)
    # Asking for other parameters rebuilds rather than mixing graphs.
    summary = build(store, space="l2")
    assert summary.rebuilt and "space changes" in summary.reason
    assert (summary.params["M"], summary.params["ef_construction"]) == (8, 50)  # kept unless given
    index = Index.open(store)
    exact = Index.open(store, exact=True)
    assert exact.space == "l2"  # exact search ranks like the current index
    vec = index.encode(["a whale"])
    ids, scores = index.search_vectors(vec, 5)
    want_ids, want_scores = exact.search_vectors(vec, 5)
    assert ids[0, 0] == want_ids[0, 0]
    assert (scores <= 0).all()  # l2 scores are negative distances: higher is closer
    np.testing.assert_allclose(scores[0, 0], want_scores[0, 0], atol=1e-3)
    with pytest.raises(InputError, match="--space"):
        build(store, space="hamming")
    with pytest.raises(InputError, match="--M"):
        build(store, M=1)


def test_fetch_finds_rows_when_shards_are_not_in_id_order(tmp_path):
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    a.write_text("alpha one\nalpha two\n")
    b.write_text("beta one\n")
    path = tmp_path / "store"
    encode([a, b], path)
    a.write_text("alpha uno\nalpha dos\nalpha tres\n")
    encode([a], path, force=True)  # input 0's shard is now listed after input 1's
    store = Store.open(path)
    assert [s.input for s in store.shards] == [1, 0]
    ids, _ = store.load_embeddings()
    rows = store.fetch(ids)
    assert sorted(r["text"] for r in rows.values()) == ["alpha dos", "alpha tres", "alpha uno", "beta one"]
    build(path)
    assert Index.open(path).search(["alpha tres"], k=1)[0][0].text == "alpha tres"


def test_bad_search_arguments(store):
    build(store)
    index = Index.open(store)
    assert len(index.search(["whale"], k=501)[0]) == 500  # more than the store: every row
    with pytest.raises(InputError, match="-k 0: must be at least 1"):
        index.search(["whale"], k=0)
    with pytest.raises(InputError, match="empty"):
        index.search(["   "])
    with pytest.raises(InputError, match="no query"):
        index.search([])
    hits = index.search(["whale"], k=20, ef=5)  # ef below k is raised to k
    assert len(hits[0]) == 20
    assert all(h.score >= 0.3 for h in index.search(["whale"], k=20, min_score=0.3)[0])
    with pytest.raises(InputError, match="no such store"):
        Index.open(store.parent / "missing")
    shutil.rmtree(index_dir(store))
    with pytest.raises(InputError, match="no index yet.*sbert index.*--exact"):
        Index.open(store)
