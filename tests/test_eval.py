"""`sbert eval`: STS numbers equal `sbert similarity`'s, retrieval metrics on a hand-computed case,
BEIR files and stores, several models side by side. All on the hash model: no weights load."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fakes import HASH_MODEL
from typer.testing import CliRunner

from sbert_cli.cli import app
from sbert_cli.errors import InputError
from sbert_cli.evaluation.retrieval import read_qrels, retrieval_metrics, run_from_hits

STS_SAMPLE = Path(__file__).resolve().parent / "fixtures" / "sts-sample.tsv"
STS_ARGS = ["--text-columns", "5,6", "--gold-column", "4"]
DOCS = {
    "d1": "The cat sat on the warm mat.",
    "d2": "Stock markets fell sharply on Monday.",
    "d3": "A recipe for tomato soup with basil.",
    "d4": "The football match ended in a draw.",
}


def run(*args: str):
    return CliRunner().invoke(app, list(args))


def jsonl(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


# -- metrics ---------------------------------------------------------------------------------------
def test_metrics_equal_a_hand_computed_case():
    """q1: its one relevant document at rank 2. q2: two relevant, at ranks 1 and 3. q3: its
    relevant document at rank 11, past MRR@10's cut-off but inside Recall@100."""
    qrels = {"q1": {"d1": 1}, "q2": {"d3": 1, "d4": 1, "d9": 0}, "q3": {"d11": 2}}
    hits = [
        [("d2", 0.9), ("d1", 0.8), ("d3", 0.7)],
        [("d3", 0.9), ("d1", 0.8), ("d4", 0.7)],
        [(f"d{i}", 1.0 - i / 100) for i in range(12) if i != 11][:10] + [("d11", 0.5)],
    ]
    metrics = retrieval_metrics(qrels, run_from_hits(["q1", "q2", "q3"], hits))
    ndcg_q1 = 1 / 1.5849625007211563  # DCG 1/log2(3) over ideal 1
    ndcg_q2 = (1 + 1 / 2) / (1 + 1 / 1.5849625007211563)  # ranks 1 and 3 vs 1 and 2
    expected = {
        "ndcg@10": (ndcg_q1 + ndcg_q2 + 0) / 3,
        "mrr@10": (1 / 2 + 1 + 0) / 3,
        "recall@1": (0 + 1 / 2 + 0) / 3,
        "recall@10": (1 + 1 + 0) / 3,
        "recall@100": (1 + 1 + 1) / 3,
        "map@100": (1 / 2 + (1 + 2 / 3) / 2 + 1 / 11) / 3,
    }
    assert metrics == pytest.approx(expected, abs=1e-9)


def test_a_judged_query_without_results_counts_as_zero():
    metrics = retrieval_metrics({"q1": {"d1": 1}, "q2": {"d2": 1}}, {"q1": {"d1": 1.0}})
    assert metrics["ndcg@10"] == pytest.approx(0.5) and metrics["mrr@10"] == pytest.approx(0.5)


def test_qrels_header_is_skipped_and_a_bad_score_is_located(tmp_path):
    good = tmp_path / "qrels.tsv"
    good.write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\nq1\td2\t0\n")
    assert read_qrels(str(good)) == {"q1": {"d1": 1, "d2": 0}}
    bad = tmp_path / "bad.tsv"
    bad.write_text("q1\td1\t1\nq1\td2\thigh\n")
    with pytest.raises(InputError, match=rf"^{bad}:2: score 'high' is not a number$"):
        read_qrels(str(bad))


# -- sts -------------------------------------------------------------------------------------------
def test_eval_sts_gives_the_numbers_similarity_gives():
    similarity = run("similarity", "--pairs", str(STS_SAMPLE), *STS_ARGS, "--model", HASH_MODEL, "--format", "json")
    evaluated = run("eval", "sts", str(STS_SAMPLE), *STS_ARGS, "--model", HASH_MODEL, "--format", "json")
    assert similarity.exit_code == 0 and evaluated.exit_code == 0, evaluated.output
    expected = json.loads(similarity.stdout)
    [row] = json.loads(evaluated.stdout)
    assert (row["spearman"], row["pearson"], row["pairs"]) == (expected["spearman"], expected["pearson"], 50)
    assert row["model"] == HASH_MODEL and row["texts_per_s"] > 0


def test_several_models_one_row_each_in_order():
    result = run("eval", "sts", str(STS_SAMPLE), *STS_ARGS, "-m", "hash:16", "-m", "hash:64", "--format", "tsv")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == "model\tdtype\tspearman\tpearson\tpairs\ttexts_per_s"
    assert [line.split("\t")[0] for line in lines[1:]] == ["hash:16", "hash:64"]


def test_eval_sts_bad_gold_is_exit_2_with_file_and_line(tmp_path):
    pairs = tmp_path / "p.tsv"
    pairs.write_text("a\tb\t1\nc\td\tx\n")
    result = run("eval", "sts", str(pairs), "--gold-column", "2", "--model", HASH_MODEL)
    assert result.exit_code == 2
    assert result.stderr.startswith(f"sbert: error: {pairs}:2: gold value 'x' is not a number")


@pytest.mark.parametrize("dtype", ["fp64", "int4"])
def test_unknown_dtype_is_exit_2(dtype):
    result = run("eval", "sts", str(STS_SAMPLE), *STS_ARGS, "--model", HASH_MODEL, "--dtype", dtype)
    assert result.exit_code == 2 and f"--dtype {dtype}: choose from" in result.stderr


# -- retrieval -------------------------------------------------------------------------------------
@pytest.fixture
def beir(tmp_path) -> dict[str, str]:
    """Queries that repeat a document's text word for word: the hash model ranks it first."""
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"_id": k, "text": v}) + "\n" for k, v in DOCS.items()))
    queries = tmp_path / "queries.jsonl"
    queries.write_text(
        json.dumps({"_id": "q1", "text": DOCS["d2"]})
        + "\n"
        + json.dumps({"_id": "q2", "text": DOCS["d4"]})
        + "\n"
        + json.dumps({"_id": "q-unjudged", "text": "never asked"})
        + "\n"
    )
    qrels = tmp_path / "qrels.tsv"
    qrels.write_text("query-id\tcorpus-id\tscore\nq1\td2\t1\nq2\td4\t1\n")
    return {"corpus": str(corpus), "queries": str(queries), "qrels": str(qrels), "dir": str(tmp_path)}


PERFECT = {"ndcg@10": 1.0, "mrr@10": 1.0, "recall@1": 1.0, "recall@10": 1.0, "recall@100": 1.0, "map@100": 1.0}


def test_retrieval_on_beir_files(beir):
    args = ["eval", "retrieval", "--corpus", beir["corpus"], "--queries", beir["queries"], "--qrels", beir["qrels"]]
    result = run(*args, "--model", HASH_MODEL, "--format", "jsonl")
    assert result.exit_code == 0, result.output
    [row] = jsonl(result.stdout)
    assert {k: row[k] for k in PERFECT} == PERFECT
    assert (row["search"], row["queries"], row["model"]) == ("exact", 2, HASH_MODEL)


def test_retrieval_on_a_store_exact_and_through_its_index(beir):
    store = str(Path(beir["dir"]) / "store")
    encoded = run("encode", beir["corpus"], "--id-field", "_id", "--model", HASH_MODEL, "-o", store, "-q")
    assert encoded.exit_code == 0, encoded.output
    assert run("index", store, "-q").exit_code == 0
    args = ["eval", "retrieval", "--store", store, "--queries", beir["queries"], "--qrels", beir["qrels"]]
    for extra, search in (([], "exact"), (["--index"], "hnsw")):
        result = run(*args, *extra, "--format", "json")
        assert result.exit_code == 0, result.output
        [row] = json.loads(result.stdout)
        assert row["search"] == search and {k: row[k] for k in PERFECT} == PERFECT


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ([], "give --corpus JSONL (each model encodes it) or --store STORE"),
        (["--corpus", "{corpus}", "--index"], "--index measures a store's HNSW index"),
    ],
)
def test_retrieval_argument_errors_are_exit_2(beir, extra, message):
    extra = [e.format(**beir) for e in extra]
    result = run("eval", "retrieval", "--queries", beir["queries"], "--qrels", beir["qrels"], *extra)
    assert result.exit_code == 2 and message in result.stderr


def test_qrels_naming_an_unknown_query_is_refused(beir):
    Path(beir["qrels"]).write_text("q1\td2\t1\nq9\td1\t1\n")
    args = ["eval", "retrieval", "--corpus", beir["corpus"], "--queries", beir["queries"], "--qrels", beir["qrels"]]
    result = run(*args, "--model", HASH_MODEL)
    assert result.exit_code == 2 and "query 'q9' is not in" in result.stderr
