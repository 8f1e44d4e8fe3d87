"""`sbert similarity`: scores against direct computation, pair files, correlations against scipy.

Options, formats and errors run on the hash model; the real model answers the two questions only
it can (a paraphrase beats an unrelated sentence; STS pairs correlate with their gold scores)."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
from fakes import HASH_MODEL
from scipy import stats
from typer.testing import CliRunner

from sbert_cli.analysis.similarity import PairOptions, pearson, rank_average, read_pairs, spearman
from sbert_cli.cli import app
from sbert_cli.errors import InputError

STS_SAMPLE = Path(__file__).resolve().parent / "fixtures" / "sts-sample.tsv"
CPU = ["--device", "cpu", "--dtype", "fp32"]  # the settings of the session's cached real encoder
HASH = ["--model", HASH_MODEL]
EXAMPLE = ["This is a good movie.", "This is a great film.", "The weather is cold today.", "A fine piece of cinema."]


def run(*args: str, input: str | None = None):
    return CliRunner().invoke(app, list(args), input=input)


@pytest.fixture(scope="module")
def hash_encoder():
    from sbert_cli.encoding.loader import cached_encoder

    return cached_encoder(HASH_MODEL)


def jsonl(output: str) -> list[dict]:
    return [json.loads(line) for line in output.splitlines() if line.strip()]


def direct_cosine(encoder, a: list[str], b: list[str]) -> np.ndarray:
    va, vb = encoder.encode(a), encoder.encode(b)
    return np.array([float(x @ y / np.linalg.norm(x) / np.linalg.norm(y)) for x, y in zip(va, vb, strict=True)])


def sts_rows() -> list[list[str]]:
    with open(STS_SAMPLE, encoding="utf-8", newline="") as fh:
        return list(csv.reader(fh, delimiter="\t", quoting=csv.QUOTE_NONE))


# -- sentences ------------------------------------------------------------------------------------
def test_example_scores_equal_direct_computation(encoder):
    result = run("similarity", *EXAMPLE, "--format", "jsonl", *CPU)
    assert result.exit_code == 0, result.output
    rows = jsonl(result.stdout)
    assert [r["sentence2"] for r in rows] == EXAMPLE[1:]
    assert all(r["sentence1"] == EXAMPLE[0] for r in rows)
    expected = direct_cosine(encoder, [EXAMPLE[0]] * 3, EXAMPLE[1:])
    np.testing.assert_allclose([r["score"] for r in rows], expected, atol=1e-5)
    # The paraphrase beats the unrelated sentence by a wide margin.
    assert rows[0]["score"] > 0.8 > 0.3 > rows[1]["score"]


def test_matrix_is_symmetric_with_unit_diagonal(hash_encoder):
    result = run("similarity", *EXAMPLE, "--matrix", "--format", "jsonl", *HASH)
    assert result.exit_code == 0, result.output
    rows = jsonl(result.stdout)
    matrix = np.array([r["scores"] for r in rows])
    assert matrix.shape == (4, 4)
    np.testing.assert_allclose(np.diag(matrix), 1.0, atol=1e-5)
    np.testing.assert_allclose(matrix, matrix.T, atol=1e-6)
    np.testing.assert_allclose(matrix[2, 3], direct_cosine(hash_encoder, [EXAMPLE[2]], [EXAMPLE[3]])[0], atol=1e-5)
    assert [r["sentence"] for r in rows] == EXAMPLE and [r["index"] for r in rows] == [0, 1, 2, 3]

    tsv = run("similarity", *EXAMPLE[:3], "--matrix", "--format", "tsv", *HASH)
    assert tsv.exit_code == 0
    lines = tsv.stdout.splitlines()
    assert lines[0].split("\t") == ["#", "sentence", "0", "1", "2"]
    assert len(lines) == 4


def test_table_and_csv_output(hash_encoder):
    table = run("similarity", *EXAMPLE[:2], "--format", "table", *HASH)
    assert table.exit_code == 0
    assert "This is a great film." in table.stdout and "score" in table.stdout
    out = run("similarity", *EXAMPLE[:3], "--format", "csv", *HASH)
    assert out.exit_code == 0 and out.stderr == ""
    rows = list(csv.DictReader(out.stdout.splitlines()))
    assert [r["sentence2"] for r in rows] == EXAMPLE[1:3]
    assert list(rows[0]) == ["sentence1", "sentence2", "score"]
    expected = direct_cosine(hash_encoder, [EXAMPLE[0]] * 2, EXAMPLE[1:3])
    np.testing.assert_allclose([float(r["score"]) for r in rows], expected, atol=1e-5)


@pytest.mark.parametrize("args", [["one sentence only"], []])
def test_fewer_than_two_sentences_is_a_usage_error(args):
    result = run("similarity", *args, "--format", "jsonl", *HASH) if args else run("similarity", "--format", "jsonl")
    assert result.exit_code == 2
    assert result.stderr == (
        f"sbert: error: need at least two sentences to compare (got {len(args)}); or score a pair file with "
        "--pairs, or one sentence against a store's records with --store STORE\n"
    )
    assert result.stdout == ""


# -- pair files -----------------------------------------------------------------------------------
STS_ARGS = ["--pairs", str(STS_SAMPLE), "--text-columns", "5,6", "--gold-column", "4"]


def test_sts_pair_file_with_quotes_and_extra_columns(hash_encoder):
    rows = sts_rows()
    assert any('"' in r[5] + r[6] for r in rows), "the fixture must hold sentences with literal quotes"
    assert any(len(r) > 7 for r in rows), "the fixture must hold rows with extra columns"
    result = run("similarity", *STS_ARGS, "--format", "jsonl", *HASH)
    assert result.exit_code == 0, result.output
    out = jsonl(result.stdout)
    assert len(out) == len(rows)
    assert [(o["sentence1"], o["sentence2"]) for o in out] == [(r[5], r[6]) for r in rows]
    assert [o["gold"] for o in out] == [float(r[4]) for r in rows]
    assert [o["line"] for o in out] == list(range(1, len(rows) + 1))
    expected = direct_cosine(hash_encoder, [r[5] for r in rows], [r[6] for r in rows])
    np.testing.assert_allclose([o["score"] for o in out], expected, atol=1e-5)
    assert "spearman" in result.stderr

    summary = run("similarity", *STS_ARGS, "--format", "json", *HASH)
    assert summary.exit_code == 0, summary.output
    obj = json.loads(summary.stdout)
    gold = [float(r[4]) for r in rows]
    assert (obj["pairs"], obj["skipped"]) == (len(rows), 0)
    assert obj["spearman"] == pytest.approx(stats.spearmanr(expected, gold).statistic, abs=1e-5)
    assert obj["pearson"] == pytest.approx(stats.pearsonr(expected, gold).statistic, abs=1e-5)


def test_real_model_scores_sts_pairs_as_direct_computation_and_correlates(encoder):
    rows = sts_rows()
    result = run("similarity", *STS_ARGS, "--format", "jsonl", *CPU)
    assert result.exit_code == 0, result.output
    out = jsonl(result.stdout)
    assert [(o["sentence1"], o["sentence2"]) for o in out] == [(r[5], r[6]) for r in rows]
    expected = direct_cosine(encoder, [r[5] for r in rows], [r[6] for r in rows])
    np.testing.assert_allclose([o["score"] for o in out], expected, atol=1e-5)
    gold = [float(r[4]) for r in rows]
    spearman = stats.spearmanr(expected, gold).statistic
    assert 0.6 < spearman <= 1.0  # a real model on real STS pairs correlates well
    assert f"spearman {spearman * 100:.2f} x100" in result.stderr


def test_tsv_is_read_literally(tmp_path):
    path = tmp_path / "pairs.tsv"
    path.write_text('"Unbalanced quote\tsecond "one"\t1.5\n"\tplain\t2\nthird\t"fourth\t3\textra\tcols\n', "utf-8")
    pairs = read_pairs(str(path), PairOptions(gold_column="2"))
    assert pairs.sentence1 == ['"Unbalanced quote', '"', "third"]
    assert pairs.sentence2 == ['second "one"', "plain", '"fourth']
    assert pairs.gold == [1.5, 2.0, 3.0]
    assert pairs.lines == [1, 2, 3]


def test_csv_with_header_and_jsonl_pairs(tmp_path, hash_encoder):
    csv_path = tmp_path / "pairs.csv"
    csv_path.write_text(
        'id,sentence1,sentence2,label\n1,"A man, eating.",A man is eating food.,4.2\n2,x,y,0\n', "utf-8"
    )
    pairs = read_pairs(str(csv_path), PairOptions(gold_column="label"))
    assert pairs.sentence1 == ["A man, eating.", "x"] and pairs.gold == [4.2, 0.0] and pairs.lines == [2, 3]

    jsonl_path = tmp_path / "pairs.jsonl"
    jsonl_path.write_text(
        "\n".join(json.dumps({"a": a, "b": b, "gold": g}) for a, b, g in [("cat", "kitten", 4), ("cat", "car", 1)])
        + "\n",
        "utf-8",
    )
    result = run("similarity", "--pairs", str(jsonl_path), "--text-columns", "a,b", "--format", "jsonl", *HASH)
    assert result.exit_code == 0, result.output
    out = jsonl(result.stdout)
    assert [(o["sentence1"], o["sentence2"]) for o in out] == [("cat", "kitten"), ("cat", "car")]
    assert [o["line"] for o in out] == [1, 2]
    np.testing.assert_allclose(
        [o["score"] for o in out], direct_cosine(hash_encoder, ["cat", "cat"], ["kitten", "car"]), atol=1e-5
    )


def test_default_columns_from_header_or_first_two(tmp_path):
    headed = tmp_path / "h.tsv"
    headed.write_text("score\tsentence1\tsentence2\n1\ta\tb\n", "utf-8")
    assert read_pairs(str(headed)).sentence1 == ["a"]
    bare = tmp_path / "b.tsv"
    bare.write_text("a\tb\nc\td\n", "utf-8")
    pairs = read_pairs(str(bare))
    assert pairs.sentence1 == ["a", "c"] and pairs.sentence2 == ["b", "d"]


def test_missing_column_is_a_one_line_error(tmp_path):
    path = tmp_path / "short.tsv"
    path.write_text("a\tb\t1\nc\td\n", "utf-8")
    result = run("similarity", "--pairs", str(path), "--gold-column", "2", *HASH)
    assert result.exit_code == 2
    assert f"{path}:2: row has 2 columns, no column 2" in result.stderr
    assert "Traceback" not in result.output
    by_name = run("similarity", "--pairs", str(STS_SAMPLE), "--text-columns", "s1,s2", *HASH)
    assert by_name.exit_code == 2 and f"{STS_SAMPLE}:1: no column 's1' in the header" in by_name.stderr
    no_header = run("similarity", "--pairs", str(STS_SAMPLE), "--text-columns", "s1,s2", "--no-header", *HASH)
    assert no_header.exit_code == 2 and "given by name, but the file has no header" in no_header.stderr


def test_non_numeric_gold_stops_or_skips_with_a_count(tmp_path):
    path = tmp_path / "gold.tsv"
    path.write_text("a cat\ta kitten\t4\na dog\ta car\tn/a\nthe sun\tthe moon\t2\nrain\tsnow\t3\n", "utf-8")
    stop = run("similarity", "--pairs", str(path), "--gold-column", "2", "--format", "json", *HASH)
    assert stop.exit_code == 2
    assert f"{path}:2: gold value 'n/a' is not a number" in stop.stderr
    assert "--on-bad-gold skip" in stop.stderr

    skip = run(
        "similarity", "--pairs", str(path), "--gold-column", "2", "--on-bad-gold", "skip", "--format", "json", *HASH
    )
    assert skip.exit_code == 0, skip.output
    obj = json.loads(skip.stdout)
    assert obj["pairs"] == 3 and obj["skipped"] == 1
    assert "skipped 1 pair(s) with a non-numeric gold value (first at" in skip.stderr


def test_pair_file_errors(tmp_path):
    missing = run("similarity", "--pairs", str(tmp_path / "nope.tsv"), *HASH)
    assert missing.exit_code == 2 and "no such file" in missing.stderr
    empty = tmp_path / "empty.tsv"
    empty.write_text("\n\n", "utf-8")
    result = run("similarity", "--pairs", str(empty), *HASH)
    assert result.exit_code == 2 and "no pairs to score" in result.stderr
    both = run("similarity", "a", "b", "--pairs", str(STS_SAMPLE), *HASH)
    assert both.exit_code == 2 and "not both" in both.stderr
    gold_alone = run("similarity", "a", "b", "--gold-column", "4", *HASH)
    assert gold_alone.exit_code == 2 and "--pairs FILE only" in gold_alone.stderr
    bad_json = tmp_path / "bad.jsonl"
    bad_json.write_text('{"sentence1": "a", "sentence2": "b"}\n{"sentence1": "a"}\n', "utf-8")
    result = run("similarity", "--pairs", str(bad_json), *HASH)
    assert result.exit_code == 2 and f"{bad_json}:2: no field 'sentence2'" in result.stderr


def test_store_model_is_used(tmp_path):
    from sbert_cli.encoding.runner import EncodeOptions, encode_corpus

    corpus = tmp_path / "few.txt"
    corpus.write_text("one text\nanother text\n", "utf-8")
    store = tmp_path / "store"
    # A store of 32-dimensional max-pooled hash vectors: --store must reproduce those settings.
    encode_corpus([str(corpus)], store, EncodeOptions(model="hash:32", pooling="max"))
    result = run("similarity", *EXAMPLE[:2], "--store", str(store), "--device", "cpu", "--format", "jsonl")
    assert result.exit_code == 0, result.output
    from sbert_cli.encoding.loader import cached_encoder

    expected = direct_cosine(cached_encoder("hash:32", pooling="max"), EXAMPLE[:1], EXAMPLE[1:2])
    default = direct_cosine(cached_encoder("hash:32"), EXAMPLE[:1], EXAMPLE[1:2])
    assert abs(expected[0] - default[0]) > 0.01  # so the check below tells the two settings apart
    assert jsonl(result.stdout)[0]["score"] == pytest.approx(expected[0], abs=1e-5)
    clash = run("similarity", *EXAMPLE[:2], "--store", str(store), "--pooling", "max")
    assert clash.exit_code == 2 and "--store uses the store's model settings" in clash.stderr


# -- correlations ---------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_correlations_match_scipy(seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=200)
    y = 0.6 * x + rng.normal(size=200)
    # Ties on both sides, as STS gold scores have (0.2 steps) and rounded scores can have.
    x_tied, y_tied = np.round(x, 1), np.round(y * 5) / 5
    for a, b in [(x, y), (x_tied, y_tied), (y_tied, x)]:
        assert spearman(a, b) == pytest.approx(stats.spearmanr(a, b).statistic, abs=1e-12)
        assert pearson(a, b) == pytest.approx(stats.pearsonr(a, b).statistic, abs=1e-12)
    np.testing.assert_allclose(rank_average(x_tied), stats.rankdata(x_tied))


def test_correlation_edge_cases():
    assert spearman([1, 2, 3], [1, 2, 3]) == pytest.approx(1.0)
    assert spearman([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert math.isnan(pearson([1, 1, 1], [1, 2, 3]))  # undefined for constant input, as in scipy
    assert math.isnan(pearson([1], [2]))
    with pytest.raises(InputError, match="at least two"):
        from sbert_cli.analysis.similarity import correlate

        correlate([0.5], [1.0])


def test_one_sentence_against_a_stores_records(tmp_path):
    """`--store STORE SENTENCE`: the sentence against every record (the mean of its chunks'
    vectors, normalized), or every chunk with --chunks; rows carry source, line and key."""
    from fakes import hash_embed
    from test_records import CHUNKED, chunked_store, record_vectors

    store = chunked_store(tmp_path)
    sentence = "a whale under the ship"
    result = run("similarity", "--store", str(store), sentence, "--format", "jsonl")
    assert result.exit_code == 0, result.output
    rows = jsonl(result.stdout)
    assert [list(r) for r in rows[:1]] == [["id", "source", "line", "key", "score", "text"]]
    assert [(r["source"], r["line"], r["key"], r["text"]) for r in rows] == [
        (str(tmp_path / "docs.txt"), line, None, texts[0]) for line, texts in CHUNKED
    ]
    expected = record_vectors() @ hash_embed(sentence, 32)
    np.testing.assert_allclose([r["score"] for r in rows], expected, atol=1e-5)
    chunks = jsonl(run("similarity", "--store", str(store), sentence, "--chunks", "--format", "jsonl").stdout)
    texts = [t for _, group in CHUNKED for t in group]
    assert [(r["line"], r["chunk"], r["text"]) for r in chunks] == [
        (line, n, t) for line, group in CHUNKED for n, t in enumerate(group)
    ]
    np.testing.assert_allclose(
        [r["score"] for r in chunks], [hash_embed(t, 32) @ hash_embed(sentence, 32) for t in texts], atol=1e-5
    )
    for args, message in [
        (
            ["--chunks", "a", "b"],
            "--chunks applies to one sentence scored against a store's records (--store STORE SENTENCE)",
        ),
        (
            ["--store", str(store), "a", "--matrix"],
            "--matrix compares sentences given on the command line, not a store's records",
        ),
    ]:
        bad = run("similarity", *args)
        assert (bad.exit_code, bad.stderr) == (2, f"sbert: error: {message}\n")
