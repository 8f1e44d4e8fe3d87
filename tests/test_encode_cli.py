"""`sbert encode` through the CLI, on real files in tmp_path: plumbing on the hash model
(tests/fakes.py), one test on the real model (the session's shared load)."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fakes import HASH_MODEL, hash_embed
from typer.testing import CliRunner

from sbert_cli.cli import app
from sbert_cli.store.store import Store, store_lock

runner = CliRunner()
HASH = ["--model", HASH_MODEL]
REAL = ["--device", "cpu", "--dtype", "fp32"]  # the `encoder` fixture's settings: the model is shared
DIM = 64

LINES = [
    "The cat sat on the mat.",
    "",
    "A man is playing a guitar.",
    "   ",
    'She said "hello" to the crowd.',
    "Stocks fell sharply on Monday.",
]


def encode(*args: str, input: str | bytes | None = None, model: list[str] = HASH):
    return runner.invoke(app, ["encode", *args, *model], input=input)


def snapshot(store: Path) -> dict[str, str]:
    return {
        str(p.relative_to(store)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(store.rglob("*"))
        if p.is_file()
    }


def rows(store: Path) -> pd.DataFrame:
    return pd.concat([pd.read_parquet(store / s.file) for s in Store.open(store).shards], ignore_index=True)


@pytest.fixture
def txt(tmp_path: Path) -> Path:
    path = tmp_path / "corpus.txt"
    path.write_text("\n".join(LINES) + "\n", encoding="utf-8")
    return path


def test_encode_txt_writes_store_with_schema(txt, tmp_path):
    store = tmp_path / "store"
    result = encode(str(txt), "-o", str(store))
    assert result.exit_code == 0, result.output
    assert result.stdout == ""  # results to stdout, logs to stderr: encode has no results
    (summary,) = result.stderr.splitlines()
    assert summary.startswith("sbert: encoded 4 texts from 1 input(s) into 1 shard(s) in ")
    assert f"; skipped blank: 2; truncated: 0; store {store} now has 4 rows; stages: read " in summary
    assert re.search(r"; bound by (read|tokenize|model|write)$", summary), summary

    manifest = json.loads((store / "manifest.json").read_text())
    assert (manifest["format"], manifest["version"], manifest["sbert_version"]) == ("sbert-store", 3, "0.1.0")
    assert manifest["model"] == {
        "name": HASH_MODEL,
        "fingerprint": f"hash-v2:{DIM}",
        "dim": DIM,
        "pooling": ["mean"],
        "normalize": True,
        "max_seq_length": 2048,
        "dtype": "fp32",
        "backend": "hash",
        "do_lower_case": False,
        "hidden_size": 0,
        "prompt": None,
        "modules": [],
    }
    (entry,) = manifest["inputs"]
    assert (entry["complete"], entry["blank"], entry["rows_done"], entry["last_line"]) == (True, 2, 4, 6)
    assert entry["path"] == str(txt.resolve()) and entry["format"] == "txt"
    (shard,) = manifest["shards"]
    assert (shard["file"], shard["rows"], shard["input"], shard["seq"]) == ("shards/part-00000-00000.parquet", 4, 0, 0)
    assert shard["sha256"] == "sha256:" + hashlib.sha256((store / shard["file"]).read_bytes()).hexdigest()
    assert sorted(p.name for p in store.iterdir()) == [".lock", "manifest.json", "shards"]

    table = pq.read_table(store / shard["file"])
    assert table.column_names == ["id", "text", "source", "line", "chunk", "start", "end", "embedding"]
    assert table.schema.field("id").type == pa.int64()
    assert table.schema.field("embedding").type == pa.list_(pa.float32(), DIM)
    assert table.column("line").to_pylist() == [1, 3, 5, 6]
    assert table.column("text").to_pylist() == [LINES[0], LINES[2], LINES[4], LINES[5]]
    assert set(table.column("source").to_pylist()) == {str(txt)}
    assert table.column("id").to_pylist() == [1, 3, 5, 6]  # input 0 << 40 | line

    df = pd.read_parquet(store / shard["file"])  # pandas reads it as-is
    vectors = np.stack(df["embedding"].to_numpy())
    np.testing.assert_array_equal(vectors, np.stack([hash_embed(t, DIM) for t in df["text"]]))


def test_encode_with_the_real_model(txt, tmp_path, encoder):
    store = tmp_path / "store"
    result = encode(str(txt), "-o", str(store), model=REAL)
    assert result.exit_code == 0, result.output
    assert "encoded 4 texts" in result.stderr
    assert "skipped blank: 2" in result.stderr
    assert result.stdout == ""

    manifest = json.loads((store / "manifest.json").read_text())
    assert manifest["model"]["name"] == "all-MiniLM-L6-v2"
    assert manifest["model"]["dim"] == 384
    assert manifest["model"]["pooling"] == ["mean"]
    assert manifest["model"]["normalize"] is True
    assert manifest["model"]["dtype"] == "fp32"
    assert manifest["model"]["fingerprint"].startswith("sha256:")
    assert manifest["model"]["fingerprint"] == encoder.describe().fingerprint
    (shard,) = manifest["shards"]
    table = pq.read_table(store / shard["file"])
    assert table.schema.field("embedding").type == pa.list_(pa.float32(), 384)
    df = pd.read_parquet(store / shard["file"])
    vectors = np.stack(df["embedding"].to_numpy())
    np.testing.assert_allclose(vectors, encoder.encode(df["text"].tolist()), atol=1e-5)


def test_stdin_pipeline(tmp_path):
    store = tmp_path / "store"
    result = encode("-", "-o", str(store), input="first line\nsecond line\n\nthird\n")
    assert result.exit_code == 0, result.output
    df = rows(store)
    assert df["text"].tolist() == ["first line", "second line", "third"]
    assert df["source"].unique().tolist() == ["<stdin>"]
    assert df["line"].tolist() == [1, 2, 4]


@pytest.mark.parametrize("gz", [False, True])
def test_each_input_format(tmp_path, gz):
    texts = ["Alpha text about rivers.", "Beta text about mountains.", 'Gamma with "quotes", and commas.']
    files = {
        "a.jsonl": "".join(json.dumps({"body": t, "doc": f"d{i}"}) + "\n" for i, t in enumerate(texts)),
        "b.csv": "doc,body\n" + "".join(f'd{i},"{t.replace(chr(34), chr(34) * 2)}"\n' for i, t in enumerate(texts)),
        "c.tsv": "doc\tbody\n" + "".join(f"d{i}\t{t}\n" for i, t in enumerate(texts)),
    }
    paths = []
    for name, content in files.items():
        path = tmp_path / (name + (".gz" if gz else ""))
        data = content.encode()
        path.write_bytes(gzip.compress(data) if gz else data)
        paths.append(path)
    parquet = tmp_path / "d.parquet"
    pq.write_table(pa.table({"doc": [f"d{i}" for i in range(3)], "body": texts}), parquet)
    for path in [*paths, parquet]:
        store = tmp_path / f"store-{path.name}"
        args = [str(path), "-o", str(store), "--id-field", "doc"]
        args += ["--text-field", "body"] if ".jsonl" in path.name else ["--text-column", "body"]
        result = encode(*args)
        assert result.exit_code == 0, (path.name, result.output)
        df = rows(store)
        assert df["text"].tolist() == texts, path.name
        assert df["key"].tolist() == ["d0", "d1", "d2"], path.name
        expected_lines = [1, 2, 3] if ".jsonl" in path.name or ".parquet" in path.name else [2, 3, 4]
        assert df["line"].tolist() == expected_lines, path.name


def test_tsv_by_column_index_reads_quotes_literally(tmp_path):
    path = tmp_path / "sts.tsv"
    path.write_text('x\t3.5\tA "quoted" word\textra\tcolumns\ny\t1.0\tplain text\n', encoding="utf-8")
    result = encode(str(path), "-o", str(tmp_path / "s"), "--text-column", "2")
    assert result.exit_code == 0, result.output
    assert rows(tmp_path / "s")["text"].tolist() == ['A "quoted" word', "plain text"]


def test_directory_input_with_glob_and_float16_no_text(tmp_path):
    docs = tmp_path / "docs"
    (docs / "sub").mkdir(parents=True)
    (docs / "one.txt").write_text("first doc\n")
    (docs / "sub" / "two.txt").write_text("second doc\n")
    (docs / "skip.md").write_text("not matched\n")
    store = tmp_path / "store"
    result = encode(str(docs), "--glob", "**/*.txt", "-o", str(store), "--storage-dtype", "float16", "--no-text")
    assert result.exit_code == 0, result.output
    s = Store.open(store)
    assert s.rows == 2 and not s.has_text
    table = pq.read_table(store / s.shards[0].file)
    assert "text" not in table.column_names
    assert table.schema.field("embedding").type == pa.list_(pa.float16(), DIM)
    ids, vecs = s.load_embeddings()
    assert vecs.dtype == np.float32 and vecs.shape == (2, DIM)
    want = np.stack([hash_embed("first doc", DIM), hash_embed("second doc", DIM)])
    np.testing.assert_allclose(vecs, want, atol=1e-3)  # float16 on disk


def test_append_skip_and_force(txt, tmp_path):
    store = tmp_path / "store"
    assert encode(str(txt), "-o", str(store)).exit_code == 0
    first_ids = rows(store)["id"].tolist()

    again = encode(str(txt), "-o", str(store))
    assert again.exit_code == 0
    assert again.stderr == (
        f"sbert: {txt}: already encoded, 4 rows; skipping (--force re-encodes it)\n"
        f"sbert: nothing to do; {store} has 4 rows\n"
    )
    assert rows(store)["id"].tolist() == first_ids

    more = tmp_path / "more.txt"
    more.write_text("An extra sentence.\nAnother one.\n")
    appended = encode(str(more), "-o", str(store))
    assert appended.exit_code == 0, appended.output
    df = rows(store)
    assert len(df) == 6
    assert df["id"].is_unique
    assert df["id"].tolist()[:4] == first_ids  # old ids are stable

    forced = encode(str(txt), "-o", str(store), "--force")
    assert forced.exit_code == 0, forced.output
    df2 = rows(store)
    assert sorted(df2["id"].tolist()) == sorted(df["id"].tolist())
    assert len(list((store / "shards").iterdir())) == 2


def test_other_model_settings_are_refused(txt, tmp_path):
    store = tmp_path / "store"
    assert encode(str(txt), "-o", str(store)).exit_code == 0
    before = snapshot(store)
    other = tmp_path / "other.txt"
    other.write_text("something\n")
    result = encode(str(other), "-o", str(store), "--pooling", "max")
    assert result.exit_code == 2
    assert result.stderr == (
        f"sbert: error: {store}: store was made by model '{HASH_MODEL}' and this run's model differs "
        "(pooling: store ['mean'] vs ['max']); use the store's settings or another store\n"
    )
    assert snapshot(store) == before
    other_dim = encode(str(other), "-o", str(store), model=["--model", "hash:32"])
    assert other_dim.exit_code == 2
    assert "(fingerprint: store 'hash-v2:64' vs 'hash-v2:32'; dim: store 64 vs 32)" in other_dim.stderr
    assert snapshot(store) == before


def test_second_writer_is_refused_by_the_lock(txt, tmp_path):
    store = tmp_path / "store"
    assert encode(str(txt), "-o", str(store)).exit_code == 0
    more = tmp_path / "more.txt"
    more.write_text("text\n")
    with store_lock(store):
        result = encode(str(more), "-o", str(store))
    assert result.exit_code == 1
    assert result.stderr == (
        f"sbert: error: {store}: store is being written by another sbert process (pid {os.getpid()}); "
        "wait for it to finish or stop it\n"
    )
    assert Store.open(store).rows == 4


def _bad_inputs(tmp_path: Path) -> dict[str, tuple[list[str], str]]:
    bad_utf8 = tmp_path / "latin1.txt"
    bad_utf8.write_bytes("fine line\nna\xefve caf\xe9\n".encode("latin-1"))
    binary = tmp_path / "blob.txt"
    binary.write_bytes(b"ok line\n\x00\x01\x02\xff binary\n")
    empty = tmp_path / "empty.txt"
    empty.write_text("\n  \n")
    jsonl = tmp_path / "docs.jsonl"
    jsonl.write_text('{"text": "a"}\n{"body": "b"}\n')
    badjson = tmp_path / "bad.jsonl"
    badjson.write_text('{"text": "a"}\n{"text": \n')
    csvfile = tmp_path / "data.csv"
    csvfile.write_text("title,body\nx,y\n")
    parquet = tmp_path / "broken.parquet"
    parquet.write_bytes(b"PAR1 this is not really parquet")
    nodir = tmp_path / "emptydir"
    nodir.mkdir()
    return {
        "missing": ([str(tmp_path / "nope.txt")], "no such file"),
        "empty": ([str(empty)], "empty input"),
        "empty-dir": ([str(nodir)], "has no files"),
        "binary": ([str(binary)], f"{binary}:2: binary data"),
        "utf8": ([str(bad_utf8)], f"{bad_utf8}:2: not valid utf-8"),
        "json-field": ([str(jsonl)], f"{jsonl}:2: no field 'text'"),
        "json-syntax": ([str(badjson)], f"{badjson}:2: invalid JSON"),
        "csv-column": ([str(csvfile), "--text-column", "text"], "no column 'text'"),
        "parquet": ([str(parquet)], "not a readable Parquet file"),
    }


def test_bad_inputs_fail_cleanly_and_leave_the_store_alone(txt, tmp_path):
    store = tmp_path / "store"
    assert encode(str(txt), "-o", str(store)).exit_code == 0
    before = snapshot(store)
    for name, (args, message) in _bad_inputs(tmp_path).items():
        result = encode(*args, "-o", str(store))
        assert result.exit_code == 2, (name, result.output)
        assert message in result.stderr, (name, result.stderr)
        assert "Traceback" not in result.output, name
        assert len(result.stderr.strip().splitlines()) == 1, (name, result.stderr)
        assert snapshot(store) == before, name
        # A new store is not created either.
        fresh = tmp_path / f"fresh-{name}"
        assert encode(*args, "-o", str(fresh)).exit_code == 2
        assert not fresh.exists(), name


def test_errors_replace_goes_on(tmp_path):
    bad = tmp_path / "latin1.txt"
    bad.write_bytes("fine line\nna\xefve caf\xe9\n".encode("latin-1"))
    store = tmp_path / "store"
    result = encode(str(bad), "-o", str(store), "--errors", "replace")
    assert result.exit_code == 0, result.output
    assert rows(store)["text"].tolist()[1] == "na\ufffdve caf\ufffd"
    store2 = tmp_path / "store2"
    assert encode(str(bad), "-o", str(store2), "--encoding", "latin-1").exit_code == 0
    assert rows(store2)["text"].tolist()[1] == "naïve café"


def test_shards_split_by_size_and_fetch_by_id(tmp_path, sample_texts):
    corpus = tmp_path / "c.txt"
    corpus.write_text("\n".join(sample_texts[:25]) + "\n")
    store = tmp_path / "store"
    assert encode(str(corpus), "-o", str(store), "--shard-size", "10").exit_code == 0
    s = Store.open(store)
    assert [sh.rows for sh in s.shards] == [10, 10, 5]
    ids = rows(store)["id"].tolist()
    got = s.fetch([ids[3], ids[24]])
    assert got[ids[3]]["text"] == sample_texts[3]
    assert got[ids[24]]["line"] == 25


def test_not_a_store_directory_is_refused(txt, tmp_path):
    target = tmp_path / "occupied"
    target.mkdir()
    (target / "precious.txt").write_text("keep me")
    result = encode(str(txt), "-o", str(target))
    assert result.exit_code == 2
    assert result.stderr == f"sbert: error: {target}: directory exists, is not empty and is not an sbert store\n"
    assert (target / "precious.txt").read_text() == "keep me"


def test_help_lists_all_commands():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("encode", "index", "search", "cluster", "similarity"):
        assert command in result.output


def test_copy_of_store_is_readable_elsewhere(sample_store, tmp_path):
    moved = tmp_path / "moved"
    shutil.copytree(sample_store, moved)
    s = Store.open(moved)
    ids, vecs = s.load_embeddings()
    assert len(ids) == s.rows == 500
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)
