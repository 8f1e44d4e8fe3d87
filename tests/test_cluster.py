"""`sbert cluster`: every row assigned, distances that mean what they say, planted near-duplicates
found, the streamed k-means path, the plot, and bad input; on stores made with the hash model."""

from __future__ import annotations

import json
import shutil
import sys

import numpy as np
import pytest
from fakes import HASH_MODEL
from typer.testing import CliRunner

from sbert_cli.analysis.cluster import community_detection
from sbert_cli.analysis.cluster.methods import _minibatches
from sbert_cli.analysis.records import StoreRecords
from sbert_cli.cli import app
from sbert_cli.store.store import Store

PLANTED = [
    [
        "The quick brown fox jumps over the lazy dog.",
        "The quick brown fox jumped over the lazy dog.",
        "A quick brown fox jumps over the lazy dog!",
        "the quick brown fox jumps over the lazy dog",
    ],
    [
        "How do I reset my password?",
        "How can I reset my password?",
        "how do i reset my password",
        "How do I reset my account password?",
    ],
    [
        "The stock market fell sharply on Monday.",
        "Stock markets fell sharply on Monday.",
        "The stock market dropped sharply on Monday.",
    ],
]


def run(*args: str):
    return CliRunner().invoke(app, list(args))


def jsonl(output: str) -> list[dict]:
    return [json.loads(line) for line in output.splitlines() if line.strip()]


@pytest.fixture(scope="module")
def planted_store(tmp_path_factory, sample_texts) -> tuple[str, list[str], list[list[int]]]:
    """A store of 3 planted near-duplicate groups among 40 unrelated paragraphs (read-only).
    Returns (store path, the texts in line order, the line numbers of each group)."""
    from sbert_cli.encoding.runner import EncodeOptions, encode_corpus

    unrelated = [t for t in sample_texts if len(t) > 200][:40]
    texts = list(unrelated)
    rng = np.random.default_rng(7)
    for group in PLANTED:
        for text in group:  # scattered, so no group sits in one shard
            texts.insert(int(rng.integers(0, len(texts) + 1)), text)
    groups = [[texts.index(t) + 1 for t in group] for group in PLANTED]
    root = tmp_path_factory.mktemp("planted")
    corpus = root / "corpus.txt"
    corpus.write_text("\n".join(texts) + "\n", "utf-8")
    store = root / "store"
    encode_corpus([str(corpus)], store, EncodeOptions(model=HASH_MODEL, shard_size=16))
    return str(store), texts, groups


# -- kmeans ---------------------------------------------------------------------------------------
def test_kmeans_assigns_every_row_with_distance_to_its_centroid(sample_store):
    result = run("cluster", str(sample_store), "--k", "5", "--format", "jsonl")
    assert result.exit_code == 0, result.output
    rows = jsonl(result.stdout)
    store = Store.open(sample_store)
    ids, vectors = store.load_embeddings()
    assert len(rows) == store.rows == 500
    assert [r["id"] for r in rows] == ids.tolist()
    assert {r["cluster"] for r in rows} == set(range(5))
    assert all(r["text"] for r in rows)
    # distance = 1 - cos(row, centroid of its cluster's unit vectors)
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    labels = np.array([r["cluster"] for r in rows])
    for c in range(5):
        centre = unit[labels == c].mean(0)
        centre /= np.linalg.norm(centre)
        expected = 1 - unit[labels == c] @ centre
        got = [r["distance"] for r in rows if r["cluster"] == c]
        np.testing.assert_allclose(got, expected, atol=2e-4)
    assert "most central texts" in result.stderr  # the summary goes to stderr when rows go to stdout


def test_same_seed_same_clusters(planted_store):
    store, _, _ = planted_store
    first = run("cluster", store, "--k", "4", "--seed", "3", "--format", "jsonl")
    second = run("cluster", store, "--k", "4", "--seed", "3", "--format", "jsonl", "-q")
    assert first.exit_code == second.exit_code == 0
    assert first.stdout == second.stdout
    assert second.stderr == ""  # --quiet: nothing on stderr


def test_streamed_kmeans_when_store_exceeds_memory_limit(sample_store):
    in_memory = jsonl(run("cluster", str(sample_store), "--k", "5", "--format", "jsonl", "-q").stdout)
    result = run("cluster", str(sample_store), "--k", "5", "--format", "jsonl", "--memory-limit", "200K")
    assert result.exit_code == 0, result.output
    assert "fitting MiniBatchKMeans shard by shard" in result.stderr
    streamed = jsonl(result.stdout)
    assert len(streamed) == 500
    assert [r["id"] for r in streamed] == [r["id"] for r in in_memory]
    from sklearn.metrics import adjusted_rand_score

    agreement = adjusted_rand_score([r["cluster"] for r in in_memory], [r["cluster"] for r in streamed])
    assert agreement > 0.5, agreement
    assert all(0.0 <= r["distance"] <= 2.0 for r in streamed)


def test_minibatches_cover_the_store_in_order(sample_store):
    store = Store.open(sample_store)
    _, vectors = store.load_embeddings()
    batches = list(_minibatches(StoreRecords(store), 64, min_last=10))
    assert all(len(b) >= 10 for b in batches)
    joined = np.concatenate(batches)
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    np.testing.assert_allclose(joined, unit, atol=1e-6)


def test_k_auto_picks_k_by_silhouette(planted_store):
    store, texts, _ = planted_store
    result = run("cluster", store, "--k", "auto", "--k-max", "6", "--format", "jsonl")
    assert result.exit_code == 0, result.output
    assert "--k auto: k=" in result.stderr
    k = int(result.stderr.split("--k auto: k=")[1].split()[0])
    rows = jsonl(result.stdout)
    assert 2 <= k <= 6
    assert len({r["cluster"] for r in rows}) == k
    assert len(rows) == len(texts)


# -- community ------------------------------------------------------------------------------------
def test_community_groups_planted_near_duplicates(planted_store):
    store, texts, groups = planted_store
    result = run("cluster", store, "--method", "community", "--threshold", "0.8", "--format", "jsonl")
    assert result.exit_code == 0, result.output
    rows = jsonl(result.stdout)
    assert len(rows) == len(texts)
    by_line = {r["id"] & ((1 << 40) - 1): r for r in rows}
    labels_of_groups = []
    for lines in groups:
        labels = {by_line[line]["cluster"] for line in lines}
        assert len(labels) == 1, f"group {[texts[i - 1] for i in lines]} split over {labels}"
        assert labels != {-1}
        labels_of_groups.append(labels.pop())
    assert len(set(labels_of_groups)) == len(groups)
    planted_lines = {line for lines in groups for line in lines}
    strays = [r for line, r in by_line.items() if line not in planted_lines and r["cluster"] in labels_of_groups]
    assert not strays
    members = [r for r in rows if r["cluster"] != -1]
    assert all(r["distance"] <= 1 - 0.8 + 1e-6 for r in members)  # within the threshold of the centre
    assert all(r["distance"] is None for r in rows if r["cluster"] == -1)


def test_community_detection_agrees_with_sentence_transformers():
    import torch
    from sentence_transformers import util

    rng = np.random.default_rng(0)
    centres = rng.normal(size=(6, 32))
    sizes = [12, 9, 7, 5, 3, 1]
    points = [c + 0.15 * rng.normal(size=(n, 32)) for c, n in zip(centres, sizes, strict=True)]
    x = np.concatenate(points + [rng.normal(size=(20, 32))]).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    ours = community_detection(x, threshold=0.8, min_size=3, block_bytes=x.shape[0] * 4 * 7)  # 7-row blocks
    theirs = util.community_detection(torch.from_numpy(x), threshold=0.8, min_community_size=3)
    assert sorted(sorted(g.tolist()) for g in ours) == sorted(sorted(g) for g in theirs)
    assert [len(g) for g in ours] == [12, 9, 7, 5, 3]  # the lone point makes no community


# -- agglomerative --------------------------------------------------------------------------------
def test_agglomerative_and_its_size_limit(planted_store, monkeypatch):
    store, texts, _ = planted_store
    result = run("cluster", store, "--method", "agglomerative", "--k", "4", "--format", "jsonl")
    assert result.exit_code == 0, result.output
    rows = jsonl(result.stdout)
    assert len(rows) == len(texts) and {r["cluster"] for r in rows} == set(range(4))

    from sbert_cli.analysis.cluster import methods

    monkeypatch.setattr(methods, "AGGLOMERATIVE_MAX_ROWS", 10)
    too_big = run("cluster", store, "--method", "agglomerative", "--k", "4")
    assert too_big.exit_code == 2
    assert "agglomerative clustering is for stores of up to 10 rows" in too_big.stderr
    assert "Traceback" not in too_big.output


# -- output ---------------------------------------------------------------------------------------
def test_output_files(planted_store, tmp_path):
    import pyarrow.parquet as pq

    store, texts, _ = planted_store
    parquet = tmp_path / "assign.parquet"
    result = run("cluster", store, "--k", "3", "-o", str(parquet))
    assert result.exit_code == 0, result.output
    assert result.stdout == ""
    table = pq.read_table(parquet)
    assert table.column_names == ["id", "source", "line", "key", "cluster", "distance", "text"]
    assert table.num_rows == len(texts)
    assert sorted(table.column("text").to_pylist()) == sorted(texts)
    assert f"wrote {len(texts)} assignments" in result.stderr

    out = tmp_path / "assign.jsonl"
    assert run("cluster", store, "--k", "3", "-o", str(out), "-q").exit_code == 0
    assert len(jsonl(out.read_text("utf-8"))) == len(texts)

    bad = run("cluster", store, "-o", str(tmp_path / "assign.txt"))
    assert bad.exit_code == 2 and "name a .parquet or .jsonl file" in bad.stderr


def test_table_format_prints_the_summary(planted_store):
    store, _, _ = planted_store
    result = run("cluster", store, "--method", "community", "--threshold", "0.8", "--format", "table")
    assert result.exit_code == 0, result.output
    assert "most central texts" in result.stdout
    assert "How do I reset my password?" in result.stdout or "how do i reset my password" in result.stdout
    tsv = run("cluster", store, "--k", "2", "--format", "tsv", "-q")
    assert tsv.stdout.splitlines()[0] == "id\tsource\tline\tkey\tcluster\tdistance\ttext"


def test_plot_writes_a_png(planted_store, tmp_path):
    store, _, _ = planted_store
    png = tmp_path / "clusters.png"
    result = run("cluster", store, "--k", "3", "--plot", str(png), "--format", "jsonl", "-q")
    assert result.exit_code == 0, result.output
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5_000


def test_plot_without_matplotlib_says_how_to_get_it(planted_store, tmp_path, monkeypatch):
    store, _, _ = planted_store
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    result = run("cluster", store, "--k", "3", "--plot", str(tmp_path / "x.png"))
    assert result.exit_code == 2  # the rule for every missing extra (sbert_cli/extras.py)
    assert result.stderr == "sbert: error: --plot needs matplotlib, an optional extra: pip install 'sbert-cli[plot]'\n"
    assert not (tmp_path / "x.png").exists()


# -- bad input ------------------------------------------------------------------------------------
def test_bad_input_is_a_one_line_error(planted_store, tmp_path):
    store, texts, _ = planted_store
    cases = [
        (["--k", str(len(texts) + 1)], f"--k {len(texts) + 1} is larger than the store ({len(texts)} records)"),
        (["--k", "three"], "--k three: give a number of clusters or auto"),
        (["--method", "community", "--threshold", "1.5"], "--threshold 1.5"),
        (["--memory-limit", "lots"], "--memory-limit 'lots'"),
    ]
    for args, message in cases:
        result = run("cluster", store, *args)
        assert result.exit_code == 2, (args, result.output)
        assert message in result.stderr, (args, result.stderr)
        assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.output

    unknown = run("cluster", store, "--method", "dbscan")  # a choice click checks: its usage error
    assert unknown.exit_code == 2 and unknown.stdout == ""
    assert unknown.stderr.endswith(
        "Error: Invalid value for '--method': 'dbscan' is not one of 'kmeans', 'community', 'agglomerative'.\n"
    )

    missing = run("cluster", str(tmp_path / "nowhere"))
    assert missing.exit_code == 2 and "no such store" in missing.stderr

    empty = tmp_path / "empty"
    shutil.copytree(store, empty)
    manifest = json.loads((empty / "manifest.json").read_text())
    manifest["shards"] = []
    (empty / "manifest.json").write_text(json.dumps(manifest))
    result = run("cluster", str(empty))
    assert result.exit_code == 2 and "the store is empty" in result.stderr


def test_plot_legend_names_each_cluster_by_its_most_central_record(planted_store, tmp_path, monkeypatch):
    from sbert_cli.analysis.cluster.plot import cluster_label

    central = [
        {
            "source": "books/moby.txt",
            "line": 12,
            "text": "Call me Ishmael.  Some years ago, never mind how long precisely",
        }
    ]
    assert cluster_label(3, 120, central) == 'cluster 3 (120): moby.txt:12 "Call me Ishmael. Some years ago, never…"'
    assert cluster_label(-1, 7, []) == "no cluster (7)"
    assert cluster_label(0, 5, []) == "cluster 0 (5)"
    seen = {}
    monkeypatch.setattr(
        "sbert_cli.analysis.cluster.plot_clusters", lambda path, vectors, labels, title, central: seen.update(central)
    )
    store, texts, _ = planted_store
    result = run("cluster", store, "--k", "3", "--plot", str(tmp_path / "c.png"), "--format", "jsonl", "-q")
    assert result.exit_code == 0, result.output
    rows = jsonl(result.stdout)
    assert sorted(seen) == [0, 1, 2]
    for label, best in seen.items():
        nearest = min((r for r in rows if r["cluster"] == label), key=lambda r: (r["distance"], r["id"]))
        assert (best[0]["source"], best[0]["line"], best[0]["text"]) == (
            nearest["source"],
            nearest["line"],
            nearest["text"],
        )
