"""`sbert train`: input checks (exit 2 with file:line, before anything is trained or written),
the loss each data shape gets, and the output directory's identity (resume, refuse, --force).

Slow tests train a tiny random BERT (hidden 32, 2 layers, the bundled model's tokenizer) for a
few steps: the output loads in sentence-transformers and `sbert encode` agrees with it, a rerun
is a no-op, and a run killed with SIGKILL and run again ends where an uninterrupted run does.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from fakes import save_tiny_bert
from typer.testing import CliRunner

from sbert_cli.cli import app
from sbert_cli.errors import InputError
from sbert_cli.training.data import ColumnOptions, TrainingData, read_training_data
from sbert_cli.training.losses import choose_loss
from sbert_cli.training.state import COMMAND_FILE, RECORD_FILE, WORK_DIR, RunDir

STS_SAMPLE = Path(__file__).resolve().parent / "fixtures" / "sts-sample.tsv"
STS_COLUMNS = ["--text-columns", "5,6", "--score-column", "4", "--score-range", "0,5"]
FAST = ["--precision", "fp32", "--threads", "1", "--quiet"]


def run(*args: str):
    return CliRunner().invoke(app, list(args))


def write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


# -- bad input: exit 2, file:line, nothing written -------------------------------------------------
BAD_INPUTS = [
    ("short.tsv", "a\tb\nc\td\n", ["--text-columns", "0,2"], "{path}:1: row has 2 columns, no column 2"),
    ("named.csv", "s1,s2\na,b\nc,d\n", ["--text-columns", "s1,s3"], None),
    ("fields.jsonl", '{"anchor": "a", "positive": "b"}\n{"anchor": "c"}\n', [], None),
    ("words.tsv", "a\tb\t1\nc\td\tmuch\n", ["--score-column", "2"], "{path}:2: score 'much' is not a number"),
    (
        "range.tsv",
        "a\tb\t0.5\nc\td\t4\n",
        ["--score-column", "2"],
        "{path}:2: score 4 is outside --score-range 0,1 (give the scale with --score-range LO,HI)",
    ),
    ("one.tsv", "a\tb\n", [], "{path}:1: 1 row(s) of training data; at least two are needed"),
    ("blank.tsv", "a\tb\n \tc\n", [], "{path}:2: empty text in text 1"),
]
EXPECTED = {
    "named.csv": "{path}:1: no column 's3' in the header (s1, s2); choose with --text-columns",
    "fields.jsonl": "{path}:2: no field 'positive' (choose with --text-columns)",
}


@pytest.mark.parametrize(("name", "text", "extra", "message"), BAD_INPUTS, ids=[b[0] for b in BAD_INPUTS])
def test_bad_input_stops_with_file_and_line_before_training(tmp_path, name, text, extra, message):
    path = write(tmp_path, name, text)
    out = tmp_path / "model"
    result = run("train", path, *extra, "-o", str(out))
    assert result.exit_code == 2, result.output
    assert result.stderr == f"sbert: error: {(message or EXPECTED[name]).format(path=path)}\n"
    assert result.stdout == ""
    assert not out.exists()


def test_bad_eval_file_is_reported_before_training(tmp_path):
    train = write(tmp_path, "train.tsv", "a\tb\t1\nc\td\t0\n")
    dev = write(tmp_path, "dev.tsv", "a\tb\t1\nc\t\t0\n")
    result = run("train", train, "--score-column", "2", "--eval", dev, "-o", str(tmp_path / "m"))
    assert result.exit_code == 2
    assert result.stderr == f"sbert: error: {dev}:2: empty text in text 2\n"


def test_columns_by_index_read_the_sts_layout_and_map_scores():
    options = ColumnOptions(text_columns=("5", "6"), score_column="4", score_range=(0.0, 5.0))
    data = read_training_data([str(STS_SAMPLE)], options)
    assert (len(data), data.shape) == (50, "scored")
    assert data.texts[0][0] == "A toddler walks down a hallway."
    assert data.scores[0] == pytest.approx(3.6 / 5)
    assert data.where(1) == f"{STS_SAMPLE}:2"


def test_jsonl_and_parquet_triplets_by_default_names(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [{"anchor": f"q{i}", "positive": f"p{i}", "negative": f"n{i}"} for i in range(3)]
    jsonl = write(tmp_path, "t.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "t.parquet")
    for path in (jsonl, str(tmp_path / "t.parquet")):
        data = read_training_data([path])
        assert data.shape == "triplets"
        assert data.as_columns() == {k: [r[k] for r in rows] for k in ("anchor", "positive", "negative")}


# -- which loss --------------------------------------------------------------------------------------
def shaped(shape: str, scores: list[float] | None = None) -> TrainingData:
    texts = [["a", "b"], ["c", "d"], ["e", "f"]][: 3 if shape == "triplets" else 2]
    if shape == "scored":
        scores = scores or [0.2, 0.9]
    return TrainingData(sources=["x.tsv"], texts=texts, scores=scores, origins=[(0, 1), (0, 2)])


@pytest.mark.parametrize(
    ("shape", "mine", "loss"),
    [("scored", False, "cosent"), ("pairs", False, "mnrl"), ("triplets", False, "mnrl"), ("pairs", True, "mnrl")],
)
def test_auto_loss_follows_the_data_shape(shape, mine, loss):
    assert choose_loss("auto", shaped(shape), mine) == loss


@pytest.mark.parametrize(
    ("requested", "shape", "mine", "message"),
    [
        ("triplet", "pairs", False, "--loss triplet trains on (anchor, positive, negative) triplets or pairs with"),
        ("cosent", "pairs", False, "--loss cosent trains on scored pairs (--score-column); the data has (anchor"),
        ("mnrl", "scored", False, "--loss mnrl trains on (anchor, positive) pairs or"),
        ("auto", "scored", True, "--mine-hard-negatives needs (anchor, positive) pairs without a score"),
        ("contrastive", "scored", False, "x.tsv:1: --loss contrastive needs scores at the ends of --score-range"),
    ],
)
def test_loss_that_does_not_fit_the_data_is_refused(requested, shape, mine, message):
    with pytest.raises(InputError) as caught:
        choose_loss(requested, shaped(shape), mine)
    assert str(caught.value).startswith(message)


def test_contrastive_takes_binary_labels():
    assert choose_loss("contrastive", shaped("scored", [0.0, 1.0]), False) == "contrastive"


def test_loss_refusal_on_the_command_line_is_exit_2(tmp_path):
    path = write(tmp_path, "pairs.tsv", "a\tb\nc\td\n")
    result = run("train", path, "--loss", "triplet", "-o", str(tmp_path / "m"))
    assert result.exit_code == 2
    assert "--loss triplet trains on" in result.stderr


# -- the output directory ------------------------------------------------------------------------------
def test_run_dir_resumes_the_same_command_and_refuses_another(tmp_path):
    run_dir = RunDir(tmp_path / "m")
    with run_dir.lock():
        assert run_dir.prepare({"a": 1}, force=False) == "fresh"
        assert run_dir.prepare({"a": 1}, force=False) == "resume"
        with pytest.raises(InputError, match=r"different command \(differs in: a\); .* or --force"):
            run_dir.prepare({"a": 2}, force=False)
        assert run_dir.prepare({"a": 2}, force=True) == "fresh"
        assert json.loads((run_dir.work / COMMAND_FILE).read_text()) == {"a": 2}
        (run_dir.output / RECORD_FILE).write_text(json.dumps({"complete": True, "command": {"a": 2}}))
        assert run_dir.prepare({"a": 2}, force=False) == "done"


def test_unmarked_checkpoints_are_not_resumed_from(tmp_path):
    run_dir = RunDir(tmp_path / "m")
    for step in (10, 20):
        (run_dir.checkpoints / f"checkpoint-{step}").mkdir(parents=True)
    run_dir.mark_complete(run_dir.checkpoints / "checkpoint-10")
    assert run_dir.last_checkpoint() == run_dir.checkpoints / "checkpoint-10"
    assert not (run_dir.checkpoints / "checkpoint-20").exists()  # half-written: removed


def test_a_different_command_on_the_same_output_is_refused_without_force(tmp_path):
    out = tmp_path / "m"
    (out / WORK_DIR).mkdir(parents=True)
    (out / WORK_DIR / COMMAND_FILE).write_text(json.dumps({"loss": "mnrl"}))
    result = run("train", str(STS_SAMPLE), *STS_COLUMNS, "-o", str(out))
    assert result.exit_code == 2
    assert "holds a training run of a different command" in result.stderr
    assert "--force" in result.stderr


def test_a_foreign_non_empty_directory_is_refused(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    result = run("train", str(STS_SAMPLE), *STS_COLUMNS, "-o", str(tmp_path))
    assert result.exit_code == 2
    assert result.stderr == f"sbert: error: {tmp_path}: exists and is not empty; use a new directory, or --force\n"
    assert not (tmp_path / WORK_DIR).exists()


def test_pooling_override_is_for_plain_checkpoints_only(tmp_path):
    result = run("train", str(STS_SAMPLE), *STS_COLUMNS, "--pooling", "cls", "-o", str(tmp_path / "m"))
    assert result.exit_code == 2
    assert "--pooling applies to a plain transformers checkpoint" in result.stderr


# -- real training on a tiny model (slow) ----------------------------------------------------------------
@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> dict[str, Path]:
    """A random 2-layer BERT with hidden size 32: `plain` (transformers only) and `st` (with
    mean pooling and normalization), sharing the bundled model's tokenizer."""

    from sbert_cli.training.isolation import import_sentence_transformers

    import_sentence_transformers()
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer

    root = tmp_path_factory.mktemp("tiny")
    save_tiny_bert(root / "plain")
    transformer = Transformer(str(root / "plain"), max_seq_length=64)
    model = SentenceTransformer(modules=[transformer, Pooling(32, "mean"), Normalize()], device="cpu")
    model.save(str(root / "st"), create_model_card=False)
    return {"plain": root / "plain", "st": root / "st"}


def sentences() -> list[str]:
    return [line.split("\t")[5] for line in STS_SAMPLE.read_text(encoding="utf-8").splitlines()[:20]]


def st_vectors(model_dir: Path) -> np.ndarray:
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(model_dir), device="cpu").encode(sentences(), convert_to_numpy=True)


def min_cosine(a: np.ndarray, b: np.ndarray) -> float:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return float(np.min(np.sum(a * b, axis=1)))


@pytest.mark.slow
def test_trained_model_loads_in_sentence_transformers_and_sbert_encode_agrees(tiny_models, tmp_path):
    out = tmp_path / "model"
    args = ["train", str(STS_SAMPLE), *STS_COLUMNS, "--model", str(tiny_models["st"]), "-o", str(out)]
    args += ["--eval", str(STS_SAMPLE), "--epochs", "2", "--batch-size", "8", "--save-steps", "4", *FAST]
    result = run(*args, "--format", "json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert (summary["status"], summary["steps"], summary["loss"]) == ("trained", 14, "cosent")
    assert [s["epoch"] for s in summary["scores"]] == [1, 2]
    assert summary["kept"]["spearman"] == max(s["spearman"] for s in summary["scores"])
    record = json.loads((out / RECORD_FILE).read_text())
    assert record["complete"] and record["loss_class"] == "CoSENTLoss" and record["rows"] == 50
    assert record["data"][0]["sha256"].startswith("sha256:") and record["base_model"]["fingerprint"]
    assert "CoSENTLoss" in (out / "README.md").read_text() and not (out / WORK_DIR).exists()

    (tmp_path / "s.txt").write_text("\n".join(sentences()) + "\n", encoding="utf-8")
    encoded = run(
        "encode", str(tmp_path / "s.txt"), "-o", str(tmp_path / "store"), "--model", str(out), "--dtype", "fp32"
    )
    assert encoded.exit_code == 0, encoded.output
    from sbert_cli.store.store import Store

    _ids, ours = Store.open(tmp_path / "store").load_embeddings()
    assert min_cosine(ours, st_vectors(out)) >= 0.9999

    again = run(*args, "--format", "json")
    assert again.exit_code == 0 and json.loads(again.stdout)["status"] == "done"
    other = run(*[a if a != "2" else "3" for a in args])  # --epochs 3: another command
    assert other.exit_code == 2 and "differs in: hyperparameters" in other.stderr


@pytest.mark.slow
def test_plain_checkpoint_with_pooling_override_trains_on_pairs(tiny_models, tmp_path):
    pairs = write(
        tmp_path, "pairs.jsonl", "".join(json.dumps({"anchor": a, "positive": p}) + "\n" for a, p in sts_pairs())
    )
    out = tmp_path / "model"
    args = ["train", pairs, "--model", str(tiny_models["plain"]), "--pooling", "cls", "--epochs", "1"]
    result = run(*args, "--batch-size", "8", "-o", str(out), "--format", "json", *FAST)
    assert result.exit_code == 0, result.output
    record = json.loads((out / RECORD_FILE).read_text())
    assert (record["shape"], record["loss_class"], record["kept"]["step"]) == (
        "pairs",
        "MultipleNegativesRankingLoss",
        record["steps"],
    )
    from sbert_cli.encoding.model import load_spec

    assert load_spec(str(out)).pooling == ("cls",)
    assert st_vectors(out).shape == (20, 32)


def sts_pairs() -> list[tuple[str, str]]:
    rows = [line.split("\t") for line in STS_SAMPLE.read_text(encoding="utf-8").splitlines()]
    return [(r[5], r[6]) for r in rows]


@pytest.mark.slow
def test_mined_negatives_rank_just_below_the_positive_outside_the_margin():
    """With the real model: each pair's negatives are the best-scoring other positives that stay
    below 95% of the positive's score, best first."""
    from datasets import Dataset
    from sentence_transformers import SentenceTransformer

    from sbert_cli.encoding.model import resolve_model_path
    from sbert_cli.training.mining import RELATIVE_MARGIN, mine_negatives

    anchors, positives = (list(c) for c in zip(*sts_pairs(), strict=True))
    model = SentenceTransformer(str(resolve_model_path(None)[1]), device="cpu")
    mined, summary = mine_negatives(Dataset.from_dict({"anchor": anchors, "positive": positives}), model, 2, "mnrl")
    assert summary.rows == len(mined) > 40 and mined.column_names == ["anchor", "positive", "negative_1", "negative_2"]
    candidates = list(dict.fromkeys(positives))
    cand_vectors = model.encode(candidates, normalize_embeddings=True)
    for row in mined:
        anchor = model.encode([row["anchor"]], normalize_embeddings=True)[0]
        positive_score = float(cand_vectors[candidates.index(row["positive"])] @ anchor)
        allowed = sorted(
            (float(v @ anchor), c)
            for c, v in zip(candidates, cand_vectors, strict=True)
            if c != row["positive"] and float(v @ anchor) <= positive_score * (1 - RELATIVE_MARGIN)
        )
        assert [row["negative_1"], row["negative_2"]] == [allowed[-1][1], allowed[-2][1]]


def train_command(data: str, model: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "sbert_cli", "train", data, *STS_COLUMNS, "--model", str(model), "-o", str(out)]


@pytest.mark.slow
def test_kill_9_and_rerun_ends_with_the_uninterrupted_model(tiny_models, tmp_path):
    data = write(tmp_path, "train.tsv", STS_SAMPLE.read_text(encoding="utf-8") * 8)  # 400 rows, 200 steps
    settings = ["--epochs", "2", "--batch-size", "4", "--save-steps", "10", *FAST]
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    subprocess.run([*train_command(data, tiny_models["st"], whole), *settings], check=True)

    proc = subprocess.Popen([*train_command(data, tiny_models["st"], killed), *settings])
    checkpoints = killed / WORK_DIR / "checkpoints"
    deadline = time.monotonic() + 300
    while not list(checkpoints.glob("checkpoint-*/sbert-complete")) and proc.poll() is None:
        assert time.monotonic() < deadline, "no checkpoint within 5 minutes"
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (killed / RECORD_FILE).exists(), "the run finished before it could be killed"

    resumed = subprocess.run(
        [*train_command(data, tiny_models["st"], killed), *settings, "--format", "json"],
        capture_output=True,
        text=True,
        check=True,
    )
    summary = json.loads(resumed.stdout)
    assert summary["status"] == "resumed" and summary["resumed_from"] >= 10 and summary["steps"] == 200
    assert min_cosine(st_vectors(killed), st_vectors(whole)) >= 0.9999


def process_state() -> tuple:
    import logging
    import random
    import warnings

    import torch

    loggers = [logging.getLogger(n) for n in ("", "transformers", "sentence_transformers", "datasets")]
    return (
        dict(os.environ),
        torch.get_num_threads(),
        random.getstate(),
        np.random.get_state()[1].tolist(),
        torch.get_rng_state().tolist(),
        list(warnings.filters),
        [(lg.level, list(lg.handlers)) for lg in loggers],
    )


@pytest.mark.slow
def test_training_from_python_leaves_the_process_as_it_was_and_prints_nothing(tiny_models, tmp_path, capfd):
    from sbert_cli.training import TrainOptions, train_model

    columns = ColumnOptions(text_columns=("5", "6"), score_column="4", score_range=(0.0, 5.0))
    options = TrainOptions(model=str(tiny_models["st"]), columns=columns, epochs=1, threads=1, precision="fp32")
    capfd.readouterr()
    before = process_state()
    summary = train_model([str(STS_SAMPLE)], tmp_path / "m", options)
    assert process_state() == before
    assert capfd.readouterr() == ("", "")
    assert (summary.status, summary.steps, summary.rows) == ("trained", 4, 50)
