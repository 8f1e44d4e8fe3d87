"""Options that cannot apply are refused in one line (exit 2) before anything is written:
numbers of zero or less, a --max-seq-length the model has no positions for, store-level
settings that differ from the store's, `cluster --sample 0`. And bad input met mid-run (stdin,
or a file changed after it was checked) leaves the store as its last commit left it."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pandas as pd
import pytest
from fakes import HASH_MODEL, HashEncoder
from typer.testing import CliRunner

from sbert_cli.cli import app
from sbert_cli.encoding.runner import EncodeOptions, encode_corpus
from sbert_cli.errors import InputError
from sbert_cli.store.store import Store

runner = CliRunner()


def encode(*args: str, input: bytes | None = None, model: str = HASH_MODEL):
    return runner.invoke(app, ["encode", *args, "--model", model], input=input)


def snapshot(store: Path) -> dict[str, str]:
    return {
        str(p.relative_to(store)): hashlib.sha256(p.read_bytes()).hexdigest() for p in store.rglob("*") if p.is_file()
    }


def one_line_refusal(result, message: str) -> None:
    assert result.exit_code == 2, result.output
    assert result.stderr == f"sbert: error: {message}\n"


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    path = tmp_path / "corpus.txt"
    path.write_text("".join(f"sentence number {i}\n" for i in range(30)))
    return path


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--batch-tokens", "0"], "--batch-tokens 0: must be at least 1"),
        (["--threads", "0"], "--threads 0: must be at least 1"),
        (["--threads", "-2"], "--threads -2: must be at least 1"),
        (["--max-seq-length", "0"], "--max-seq-length 0: must be at least 1"),
        (["--max-seq-length", "-5"], "--max-seq-length -5: must be at least 1"),
        (["--shard-size", "0"], "--shard-size 0: must be at least 1"),
    ],
)
def test_numbers_below_one_are_refused_not_read_as_the_default(corpus, tmp_path, args, message):
    store = tmp_path / "s"
    one_line_refusal(encode(str(corpus), "-o", str(store), *args), message)
    assert not store.exists()


def test_max_seq_length_beyond_the_models_positions(corpus, tmp_path):
    """The real model's config, read without loading the weights: 512 positions."""
    store = tmp_path / "s"
    result = encode(str(corpus), "-o", str(store), "--max-seq-length", "100000", model="all-MiniLM-L6-v2")
    one_line_refusal(
        result, "--max-seq-length 100000: all-MiniLM-L6-v2 takes at most 512 tokens (its position embeddings)"
    )
    assert not store.exists()
    from sbert_cli.encoding.model import load_spec

    assert load_spec(None, max_seq_length=512).max_seq_length == 512
    with pytest.raises(InputError, match="takes at most 512 tokens"):
        load_spec(None, max_seq_length=513)


@pytest.mark.parametrize(
    ("made", "appended", "message"),
    [
        ([], ["--storage-dtype", "float16"], "--storage-dtype float16: {store} keeps float32 vectors"),
        (
            ["--storage-dtype", "float16"],
            ["--storage-dtype", "float32"],
            "--storage-dtype float32: {store} keeps float16",
        ),
        ([], ["--no-text"], "--no-text: {store} keeps its texts"),
        (["--no-text"], ["--text"], "--text: {store} was made with --no-text"),
        (["--shard-size", "10"], ["--shard-size", "20"], "--shard-size 20: {store} has 10 rows per shard"),
    ],
)
def test_store_level_settings_that_differ_are_refused(corpus, tmp_path, made, appended, message):
    store = tmp_path / "s"
    assert encode(str(corpus), "-o", str(store), *made).exit_code == 0
    before = snapshot(store)
    more = tmp_path / "more.txt"
    more.write_text("another sentence\n")
    result = encode(str(more), "-o", str(store), *appended)
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("sbert: error: " + message.format(store=store)), result.stderr
    assert "leave the option out to append, or encode into a new store" in result.stderr
    assert result.stderr.count("\n") == 1
    assert snapshot(store) == before


def test_appending_inherits_the_stores_layout(corpus, tmp_path):
    store = tmp_path / "s"
    made = encode(str(corpus), "-o", str(store), "--storage-dtype", "float16", "--no-text", "--shard-size", "7")
    assert made.exit_code == 0, made.output
    more = tmp_path / "more.txt"
    more.write_text("".join(f"more text {i}\n" for i in range(10)))
    same = encode(str(more), "-o", str(store), "--storage-dtype", "float16", "--no-text")
    assert same.exit_code == 0, same.output
    s = Store.open(store)
    assert (s.storage_dtype, s.has_text, s.manifest.shard_size) == ("float16", False, 7)
    assert [sh.rows for sh in s.shards] == [7, 7, 7, 7, 2, 7, 3]  # the new input cut at 7 too
    third = tmp_path / "third.txt"
    third.write_text("one more\n")
    assert encode(str(third), "-o", str(store)).exit_code == 0  # nothing given: the store's
    assert "text" not in pd.read_parquet(store / Store.open(store).shards[-1].file).columns


def test_ids_given_to_a_store_made_without_them_are_refused(tmp_path):
    first = tmp_path / "a.jsonl"
    first.write_text('{"text": "one", "doc": "d1"}\n')
    store = tmp_path / "s"
    assert encode(str(first), "-o", str(store)).exit_code == 0
    second = tmp_path / "b.jsonl"
    second.write_text('{"text": "two", "doc": "d2"}\n')
    one_line_refusal(
        encode(str(second), "-o", str(store), "--id-field", "doc"),
        f"{store}: --id-field given, but this store was made without ids; use a new store",
    )


@pytest.mark.parametrize("sample", ["0", "-3", "2"])
def test_cluster_sample_below_three_is_refused(sample_store, sample):
    result = runner.invoke(app, ["cluster", str(sample_store), "--sample", sample])
    one_line_refusal(result, f"--sample {sample}: must be at least 3 rows (a silhouette compares 2 clusters or more)")


# -- bad input met mid-run ----------------------------------------------------------------------------------
def test_bad_stdin_mid_run_keeps_the_committed_shards(tmp_path):
    store = tmp_path / "s"
    data = b"".join(b"line %d words here\n" % i for i in range(1, 501)) + b"bad \xff byte\nafter\n"
    result = encode("-", "-o", str(store), "--shard-size", "100", input=data)
    one_line_refusal(
        result,
        "<stdin>:501: not valid utf-8 (byte 5 of the line); use --encoding to name the right one "
        "or --errors replace to go on",
    )
    s = Store.open(store)
    # How many shards were committed before the bad line was read depends on how far reading runs
    # ahead of the model; what must hold is that every committed shard is whole and readable.
    committed = [sh.rows for sh in s.shards]
    assert committed and committed == [100] * len(committed)
    ids, vectors = s.load_embeddings()
    assert len(set(ids.tolist())) == vectors.shape[0] == 100 * len(committed)
    assert not [p for p in (store / "shards").iterdir() if f"shards/{p.name}" not in {x.file for x in s.shards}]
    search = runner.invoke(app, ["search", str(store), "line 7 words", "--exact", "--mode", "dense", "-k", "1"])
    assert search.exit_code == 0 and '"line": 7' in search.stdout


def test_bad_stdin_before_the_first_commit_leaves_no_store(tmp_path):
    store = tmp_path / "s"
    result = encode("-", "-o", str(store), input=b"good line\n{\xff}\n")
    assert result.exit_code == 2 and "<stdin>:2: not valid utf-8" in result.stderr
    assert not store.exists()


class _SpoilingEncoder(HashEncoder):
    """Appends undecodable bytes to the input once the first window reaches the model: the file
    passed the full check before the run, and goes bad while it is being encoded."""

    def __init__(self, path: Path) -> None:
        super().__init__(32)
        self.path = path

    def run(self, window):
        if self.calls == 0:
            with self.path.open("ab") as fh:
                fh.write(b"spoiled \xff\n")
        return super().run(window)


def test_file_spoiled_mid_run_keeps_the_committed_shards(tmp_path):
    path = tmp_path / "big.txt"
    path.write_text("".join(f"row {i}\n" for i in range(1, 2001)))
    store = tmp_path / "s"
    options = EncodeOptions(model="hash:32", shard_size=100)
    with pytest.raises(InputError, match=rf"^{path}:2001: not valid utf-8"):
        encode_corpus([str(path)], store, options, encoder=_SpoilingEncoder(path))
    s = Store.open(store)
    # Reading runs ahead of the model, so the bad line may be met before the last windows are
    # committed: every committed shard is whole, and the resume point matches what is stored.
    assert s.rows >= 100 and [sh.rows for sh in s.shards] == [100] * len(s.shards)
    assert s.manifest.inputs[0].rows_done == s.rows and not s.manifest.inputs[0].complete
    ids, _ = s.load_embeddings()
    assert sorted(ids.tolist()) == sorted(set(ids.tolist()))
