"""`sbert similarity`: scores against direct computation, pair files, correlations against scipy."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
from scipy import stats
from typer.testing import CliRunner

from sbert_cli.cli import app
from sbert_cli.errors import InputError
from sbert_cli.analysis.similarity import PairOptions, pearson, rank_average, read_pairs, spearman

STS_SAMPLE = Path(__file__).resolve().parent / "fixtures" / "sts-sample.tsv"
CPU = ["--device", "cpu", "--dtype", "fp32"]  # the settings of the session's cached encoder
EXAMPLE = ["This is a good movie.", "This is a great film.", "The weather is cold today.", "A fine piece of cinema."]


def run(*args: str, input: str | None = None):
    return CliRunner().invoke(app, list(args), input=input)


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


def test_matrix_is_symmetric_with_unit_diagonal(encoder):
    result = run("similarity", *EXAMPLE, "--matrix", "--format", "jsonl", *CPU)
    assert result.exit_code == 0, result.output
    rows = jsonl(result.stdout)
    matrix = np.array([r["scores"] for r in rows])
    assert matrix.shape == (4, 4)
    np.testing.assert_allclose(np.diag(matrix), 1.0, atol=1e-5)
    np.testing.assert_allclose(matrix, matrix.T, atol=1e-6)
    np.testing.assert_allclose(matrix[2, 3], direct_cosine(encoder, [EXAMPLE[2]], [EXAMPLE[3]])[0], atol=1e-5)

    tsv = run("similarity", *EXAMPLE[:3], "--matrix", "--format", "tsv", *CPU)
    assert tsv.exit_code == 0
    lines = tsv.stdout.splitlines()
    assert lines[0].split("\t") == ["#", "sentence", "0", "1", "2"]
    assert len(lines) == 4


def test_table_and_csv_output(encoder):
    table = run("similarity", *EXAMPLE[:2], "--format", "table", *CPU)
    assert table.exit_code == 0
    assert "This is a great film." in table.stdout and "score" in table.stdout
    out = run("similarity", *EXAMPLE[:3], "--format", "csv", *CPU)
    rows = list(csv.DictReader(out.stdout.splitlines()))
    assert [r["sentence2"] for r in rows] == EXAMPLE[1:3]


@pytest.mark.parametrize("args", [["one sentence only"], []])
def test_fewer_than_two_sentences_is_a_usage_error(args):
    result = run("similarity", *args, "--format", "jsonl", *CPU) if args else run("similarity", "--format", "jsonl")
    assert result.exit_code == 2
    assert "at least two sentences" in result.stderr
    assert "Traceback" not in result.output
    assert len(result.stderr.strip().splitlines()) == 1


# -- pair files -----------------------------------------------------------------------------------
def test_sts_pair_file_with_quotes_and_extra_columns(encoder):
    rows = sts_rows()
    assert any('"' in r[5] + r[6] for r in rows), "the fixture must hold sentences with literal quotes"
    assert any(len(r) > 7 for r in rows), "the fixture must hold rows with extra columns"
    result = run(
        "similarity",
        "--pairs",
        str(STS_SAMPLE),
        "--text-columns",
        "5,6",
        "--gold-column",
        "4",
        "--format",
        "jsonl",
        *CPU,
    )
    assert result.exit_code == 0, result.output
    out = jsonl(result.stdout)
    assert len(out) == len(rows)
    assert [(o["sentence1"], o["sentence2"]) for o in out] == [(r[5], r[6]) for r in rows]
    assert [o["gold"] for o in out] == [float(r[4]) for r in rows]
    expected = direct_cosine(encoder, [r[5] for r in rows], [r[6] for r in rows])
    np.testing.assert_allclose([o["score"] for o in out], expected, atol=1e-5)
    assert "spearman" in result.stderr

    summary = run(
        "similarity",
        "--pairs",
        str(STS_SAMPLE),
        "--text-columns",
        "5,6",
        "--gold-column",
        "4",
        "--format",
        "json",
        *CPU,
    )
    assert summary.exit_code == 0, summary.output
    obj = json.loads(summary.stdout)
    gold = [float(r[4]) for r in rows]
    assert obj["pairs"] == len(rows)
    assert obj["spearman"] == pytest.approx(stats.spearmanr(expected, gold).statistic, abs=1e-5)
    assert obj["pearson"] == pytest.approx(stats.pearsonr(expected, gold).statistic, abs=1e-5)
    assert 0.6 < obj["spearman"] <= 1.0  # a real model on real STS pairs correlates well


def test_tsv_is_read_literally(tmp_path):
    path = tmp_path / "pairs.tsv"
    path.write_text('"Unbalanced quote\tsecond "one"\t1.5\n"\tplain\t2\nthird\t"fourth\t3\textra\tcols\n', "utf-8")
    pairs = read_pairs(str(path), PairOptions(gold_column="2"))
    assert pairs.sentence1 == ['"Unbalanced quote', '"', "third"]
    assert pairs.sentence2 == ['second "one"', "plain", '"fourth']
    assert pairs.gold == [1.5, 2.0, 3.0]
    assert pairs.lines == [1, 2, 3]


def test_csv_with_header_and_jsonl_pairs(tmp_path, encoder):
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
    result = run("similarity", "--pairs", str(jsonl_path), "--text-columns", "a,b", "--format", "jsonl", *CPU)
    assert result.exit_code == 0, result.output
    out = jsonl(result.stdout)
    assert [(o["sentence1"], o["sentence2"]) for o in out] == [("cat", "kitten"), ("cat", "car")]
    np.testing.assert_allclose(
        [o["score"] for o in out], direct_cosine(encoder, ["cat", "cat"], ["kitten", "car"]), atol=1e-5
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
    result = run("similarity", "--pairs", str(path), "--gold-column", "2", *CPU)
    assert result.exit_code == 2
    assert f"{path}:2: row has 2 columns, no column 2" in result.stderr
    assert "Traceback" not in result.output
    by_name = run("similarity", "--pairs", str(STS_SAMPLE), "--text-columns", "s1,s2", *CPU)
    assert by_name.exit_code == 2 and f"{STS_SAMPLE}:1: no column 's1' in the header" in by_name.stderr
    no_header = run("similarity", "--pairs", str(STS_SAMPLE), "--text-columns", "s1,s2", "--no-header", *CPU)
    assert no_header.exit_code == 2 and "given by name, but the file has no header" in no_header.stderr


def test_non_numeric_gold_stops_or_skips_with_a_count(tmp_path, encoder):
    path = tmp_path / "gold.tsv"
    path.write_text("a cat\ta kitten\t4\na dog\ta car\tn/a\nthe sun\tthe moon\t2\nrain\tsnow\t3\n", "utf-8")
    stop = run("similarity", "--pairs", str(path), "--gold-column", "2", "--format", "json", *CPU)
    assert stop.exit_code == 2
    assert f"{path}:2: gold value 'n/a' is not a number" in stop.stderr
    assert "--on-bad-gold skip" in stop.stderr

    skip = run(
        "similarity", "--pairs", str(path), "--gold-column", "2", "--on-bad-gold", "skip", "--format", "json", *CPU
    )
    assert skip.exit_code == 0, skip.output
    obj = json.loads(skip.stdout)
    assert obj["pairs"] == 3 and obj["skipped"] == 1
    assert "skipped 1 pair(s) with a non-numeric gold value (first at" in skip.stderr


def test_pair_file_errors(tmp_path):
    missing = run("similarity", "--pairs", str(tmp_path / "nope.tsv"), *CPU)
    assert missing.exit_code == 2 and "no such file" in missing.stderr
    empty = tmp_path / "empty.tsv"
    empty.write_text("\n\n", "utf-8")
    result = run("similarity", "--pairs", str(empty), *CPU)
    assert result.exit_code == 2 and "no pairs to score" in result.stderr
    both = run("similarity", "a", "b", "--pairs", str(STS_SAMPLE), *CPU)
    assert both.exit_code == 2 and "not both" in both.stderr
    gold_alone = run("similarity", "a", "b", "--gold-column", "4", *CPU)
    assert gold_alone.exit_code == 2 and "--pairs FILE only" in gold_alone.stderr
    bad_json = tmp_path / "bad.jsonl"
    bad_json.write_text('{"sentence1": "a", "sentence2": "b"}\n{"sentence1": "a"}\n', "utf-8")
    result = run("similarity", "--pairs", str(bad_json), *CPU)
    assert result.exit_code == 2 and f"{bad_json}:2: no field 'sentence2'" in result.stderr


def test_store_model_is_used(tmp_path, encoder):
    from sbert_cli.encoding.runner import EncodeOptions, encode_corpus

    corpus = tmp_path / "few.txt"
    corpus.write_text("one text\nanother text\n", "utf-8")
    store = tmp_path / "store"
    encode_corpus([str(corpus)], store, EncodeOptions(device="cpu", dtype="fp32"), quiet=True)
    result = run("similarity", *EXAMPLE[:2], "--store", str(store), "--device", "cpu", "--format", "jsonl")
    assert result.exit_code == 0, result.output
    expected = direct_cosine(encoder, EXAMPLE[:1], EXAMPLE[1:2])
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
