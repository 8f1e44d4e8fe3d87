"""Documents: kept fields typed from the data, stores of format 2 migrated, and resuming in the
middle of a long record (in-process, and kill -9 of a real process); one real-model test that
chunks hold with the real tokenizer."""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fakes import HASH_MODEL, HashEncoder
from typer.testing import CliRunner

from sbert_cli.cli import app
from sbert_cli.store.atomic import sha256_file
from sbert_cli.store.store import Store

runner = CliRunner()
HASH = ["--model", HASH_MODEL]
ROOT = Path(__file__).resolve().parent.parent
PARAGRAPH = (
    "The lighthouse keeper climbed the stairs each night. He trimmed the wick and wound the clock. "
    "Ships passed far out beyond the reef, their lamps small and yellow. In winter the spray froze on the glass."
)


def sbert(*args: str | Path, input: str | None = None):
    return runner.invoke(app, [*map(str, args)], input=input)


def read_store(path: Path) -> pd.DataFrame:
    store = Store.open(path)
    for shard in store.shards:
        assert sha256_file(path / shard.file) == shard.sha256
    return pd.concat([pd.read_parquet(path / s.file) for s in store.shards], ignore_index=True)


def jsonl(path: Path, *objects: dict) -> Path:
    path.write_text("".join(json.dumps(o) + "\n" for o in objects), encoding="utf-8")
    return path


# -- kept fields --------------------------------------------------------------------------------------
def test_kept_fields_are_typed_columns_from_the_data(tmp_path):
    source = jsonl(
        tmp_path / "articles.jsonl",
        {"text": "First.", "title": "A", "year": 2001, "score": 1.5, "draft": True, "at": "2021-03-04T10:00:00Z"},
        {"text": "Second.", "year": 2002, "score": 2, "draft": False, "at": "2021-03-05"},
        {
            "text": "Third.",
            "title": None,
            "year": None,
            "score": None,
            "draft": None,
            "at": "2021-03-06T12:00:00+02:00",
        },
    )
    store = tmp_path / "store"
    result = sbert("encode", source, "-o", store, "--keep-fields", "title,year,score,draft,at", *HASH)
    assert result.exit_code == 0, result.output
    table = pq.read_table(store / Store.open(store).shards[0].file)
    types = {name: str(table.schema.field(name).type) for name in ("title", "year", "score", "draft", "at")}
    assert types == {
        "title": "string",
        "year": "int64",
        "score": "double",
        "draft": "bool",
        "at": "timestamp[us, tz=UTC]",
    }
    utc = dt.UTC
    assert table.select(["title", "year", "score", "draft", "at"]).to_pylist() == [
        {"title": "A", "year": 2001, "score": 1.5, "draft": True, "at": dt.datetime(2021, 3, 4, 10, tzinfo=utc)},
        {"title": None, "year": 2002, "score": 2.0, "draft": False, "at": dt.datetime(2021, 3, 5, tzinfo=utc)},
        {"title": None, "year": None, "score": None, "draft": None, "at": dt.datetime(2021, 3, 6, 10, tzinfo=utc)},
    ]
    manifest = json.loads((store / "manifest.json").read_text())
    assert manifest["kept_fields"] == [
        {"name": "title", "type": "string"},
        {"name": "year", "type": "integer"},
        {"name": "score", "type": "float"},
        {"name": "draft", "type": "boolean"},
        {"name": "at", "type": "timestamp"},
    ]


def test_every_chunk_of_a_record_carries_its_fields(tmp_path):
    source = jsonl(tmp_path / "a.jsonl", {"text": PARAGRAPH, "title": "Keeper", "year": 1901}, {"text": "Short."})
    store = tmp_path / "store"
    result = sbert("encode", source, "-o", store, "--keep-fields", "title,year", "--chunk-size", "12", *HASH)
    assert result.exit_code == 0, result.output
    df = read_store(store)
    assert df.chunk.tolist() == [0, 1, 2, 3, 0]
    assert df.title.tolist()[:4] == ["Keeper"] * 4 and df.title.isna().tolist()[4]
    assert df.year.tolist()[:4] == [1901] * 4


def test_a_field_whose_type_changes_is_refused_with_file_and_line(tmp_path):
    source = jsonl(tmp_path / "a.jsonl", {"text": "One.", "year": 2001}, {"text": "Two.", "year": "2002"})
    store = tmp_path / "store"
    result = sbert("encode", source, "-o", store, "--keep-fields", "year", *HASH)
    assert result.exit_code == 2
    assert result.stderr == f"sbert: error: {source}:2: field 'year' was integer, now string\n"
    assert not store.exists()
    nested = jsonl(tmp_path / "b.jsonl", {"text": "One.", "meta": {"a": 1}})
    result = sbert("encode", nested, "-o", store, "--keep-fields", "meta", *HASH)
    assert result.stderr == f"sbert: error: {nested}:1: field 'meta' is an object; keep only scalar fields\n"


def test_csv_cells_and_parquet_columns_are_typed(tmp_path):
    csv_file = tmp_path / "a.csv"
    csv_file.write_text("text,year,rating,ok,day,name\nOne.,2001,4.5,true,2020-01-02,x\nTwo.,,3,FALSE,,y\n")
    store = tmp_path / "csv_store"
    result = sbert("encode", csv_file, "-o", store, "--keep-fields", "year,rating,ok,day,name,absent", *HASH)
    assert result.exit_code == 0, result.output
    df = read_store(store)
    assert df[["year", "rating", "ok", "name"]].astype(object).where(df.notna(), None).values.tolist() == [
        [2001, 4.5, True, "x"],
        [None, 3.0, False, "y"],
    ]
    assert str(df.day.dtype).startswith("datetime64") and df.absent.isna().all()

    parquet_file = tmp_path / "a.parquet"
    pq.write_table(
        pa.table({"text": ["One.", "Two."], "n": pa.array([1, None], pa.int32()), "when": [dt.date(2020, 1, 2)] * 2}),
        parquet_file,
    )
    result = sbert("encode", parquet_file, "-o", tmp_path / "pq_store", "--keep-fields", "n,when", *HASH)
    assert result.exit_code == 0, result.output
    table = pq.read_table(tmp_path / "pq_store" / Store.open(tmp_path / "pq_store").shards[0].file)
    assert str(table.schema.field("n").type) == "int64" and table.column("n").to_pylist() == [1, None]
    assert str(table.schema.field("when").type) == "timestamp[us, tz=UTC]"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--keep-fields", "text"],
            "--keep-fields text: clashes with sbert's own column 'text'; rename it in the data",
        ),
        (["--keep-fields", "a,,b"], "--keep-fields a,,b: empty field name"),
        (["--keep-fields", "a,a"], "--keep-fields a,a: a field is named twice"),
    ],
)
def test_bad_kept_field_names_are_refused(tmp_path, args, message):
    source = jsonl(tmp_path / "a.jsonl", {"text": "One."})
    result = sbert("encode", source, "-o", tmp_path / "store", *args, *HASH)
    assert (result.exit_code, result.stderr) == (2, f"sbert: error: {message}\n")


def test_an_append_keeps_the_stores_fields_and_types(tmp_path):
    store = tmp_path / "store"
    first = jsonl(tmp_path / "a.jsonl", {"text": "One.", "year": 2001})
    assert sbert("encode", first, "-o", store, "--keep-fields", "year", *HASH).exit_code == 0
    other = sbert("encode", jsonl(tmp_path / "b.jsonl", {"text": "Two."}), "-o", store, "--keep-fields", "title", *HASH)
    assert (other.exit_code, other.stderr) == (
        2,
        "sbert: error: this store keeps year; this run asks for --keep-fields title\n",
    )
    wrong = jsonl(tmp_path / "c.jsonl", {"text": "Three.", "year": "MMIII"})
    result = sbert("encode", wrong, "-o", store, *HASH)
    assert (result.exit_code, result.stderr) == (
        2,
        f"sbert: error: {wrong}: field 'year' is string here, but integer in the store; use another store\n",
    )
    same = sbert("encode", jsonl(tmp_path / "d.jsonl", {"text": "Four.", "year": 2004}), "-o", store, *HASH)
    assert same.exit_code == 0, same.output
    assert read_store(store).year.tolist() == [2001, 2004]


# -- stores of format 2 --------------------------------------------------------------------------------
def make_format_2(store: Path) -> None:
    """Turn a current store into what sbert wrote before chunking: no chunk columns, version 2."""
    manifest = json.loads((store / "manifest.json").read_text())
    for shard in manifest["shards"]:
        path = store / shard["file"]
        pq.write_table(pq.read_table(path).drop_columns(["chunk", "start", "end"]), path)
        shard["sha256"], shard["bytes"] = sha256_file(path), path.stat().st_size
        shard.pop("xxh3", None), shard.pop("page_checksums", None)  # recorded since version 3
    for key in ("chunking", "has_chunks", "kept_fields"):
        del manifest[key]
    for entry in manifest["inputs"]:
        del entry["records_done"], entry["id_offset"]
        entry.pop("read", None)
    manifest["version"] = 2
    (store / "manifest.json").write_text(json.dumps(manifest))


def test_a_format_2_store_opens_searches_and_takes_appends_as_it_was_made(tmp_path):
    store = tmp_path / "store"
    first = jsonl(tmp_path / "a.jsonl", {"text": "The whale rose."}, {"text": "A ship sailed."})
    assert sbert("encode", first, "-o", store, *HASH).exit_code == 0
    make_format_2(store)
    opened = Store.open(store).manifest
    assert (opened.version, opened.chunking.mode, opened.chunking.size, opened.has_chunks) == (
        3,
        "truncate",
        2048,
        False,
    )
    assert [e.records_done for e in opened.inputs] == [2]
    hits = sbert("search", store, "whale", "--exact", "-k", "1", "--format", "jsonl")
    assert hits.exit_code == 0 and json.loads(hits.stdout)["text"] == "The whale rose."

    refused = sbert("encode", jsonl(tmp_path / "b.jsonl", {"text": "x"}), "-o", store, "--chunk-size", "8", *HASH)
    assert (refused.exit_code, refused.stderr) == (
        2,
        "sbert: error: this store was made with --truncate (at 2048 tokens); this run asks for chunks of 8 "
        "tokens overlapping by 2\n",
    )
    more = jsonl(tmp_path / "c.jsonl", {"text": "Rain fell on the deck."})
    appended = sbert("encode", more, "-o", store, *HASH)
    assert appended.exit_code == 0, appended.output
    df = read_store(store)
    assert df.columns.tolist() == ["id", "text", "source", "line", "embedding"]  # every shard alike
    assert df.text.tolist() == ["The whale rose.", "A ship sailed.", "Rain fell on the deck."]
    saved = json.loads((store / "manifest.json").read_text())
    assert (saved["version"], saved["chunking"]["mode"], saved["has_chunks"]) == (3, "truncate", False)


# -- resuming in the middle of a long record ----------------------------------------------------------
DOCS = [{"text": " ".join([PARAGRAPH] * 2), "n": i} for i in range(6)]
CHUNKING = ["--chunk-size", "10", "--chunk-overlap", "2", "--shard-size", "3"]


class DiesOnWindow(HashEncoder):
    def __init__(self, n: int) -> None:
        super().__init__(64, max_tokens=2048)
        self.n = n

    def run(self, window):
        if self.calls + 1 == self.n:
            raise KeyboardInterrupt
        return super().run(window)


def small_windows(monkeypatch) -> None:
    """Windows of 4 rows: a record (9 chunks) spans three windows, so a crash lands inside one."""
    import sbert_cli.encoding.runner as runner_module

    monkeypatch.setattr(runner_module, "window_texts", lambda device: 4)


def test_a_run_interrupted_inside_a_record_resumes_to_the_same_store(tmp_path, monkeypatch):
    from sbert_cli.encoding.runner import EncodeOptions, encode_corpus

    small_windows(monkeypatch)
    source = jsonl(tmp_path / "docs.jsonl", *DOCS)
    options = dict(model=HASH_MODEL, chunk_size=10, chunk_overlap=2, shard_size=3)
    broken = tmp_path / "broken"
    with pytest.raises(KeyboardInterrupt):
        encode_corpus([str(source)], broken, EncodeOptions(**options), encoder=DiesOnWindow(6))
    partial = read_store(broken)
    assert partial.line.tolist() == [1] * 9  # record 1 whole (a shard ends only where a record does)
    entry = Store.open(broken).manifest.inputs[0]
    assert (entry.rows_done, entry.records_done, entry.last_line, entry.id_offset) == (9, 1, 1, 8)

    summary = encode_corpus([str(source)], broken, EncodeOptions(**options))
    assert (summary.records, summary.rows, summary.inputs_resumed) == (5, 45, [str(source)])
    clean = tmp_path / "clean"
    encode_corpus([str(source)], clean, EncodeOptions(**options))
    a, b = read_store(broken), read_store(clean)
    pd.testing.assert_frame_equal(a.drop(columns="embedding"), b.drop(columns="embedding"))
    np.testing.assert_array_equal(np.stack(a.embedding), np.stack(b.embedding))
    assert a.id.is_unique and a.id.is_monotonic_increasing and len(a) == 54


KILLABLE = """
import sys, time
sys.path.insert(0, {tests!r})
from fakes import HashEncoder
import sbert_cli.encoding.runner as runner_module
from sbert_cli.encoding.loader import ENCODER_FACTORIES
from sbert_cli.cli import app

class Slow(HashEncoder):
    def run(self, window):
        time.sleep(0.25)
        return super().run(window)

ENCODER_FACTORIES["hash"] = lambda settings: Slow(64, max_tokens=2048)
runner_module.window_texts = lambda device: 4
app(sys.argv[1:])
"""


@pytest.mark.slow
def test_kill_9_inside_a_record_then_rerun_gives_the_same_store(tmp_path, monkeypatch):
    source = jsonl(tmp_path / "docs.jsonl", *DOCS)
    killed = tmp_path / "killed"
    script = KILLABLE.format(tests=str(ROOT / "tests"))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    args = ["encode", str(source), "-o", str(killed), *CHUNKING, "-q", *HASH]
    proc = subprocess.Popen([sys.executable, "-c", script, *args], env=env, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while not (killed / "manifest.json").exists() or len(Store.open(killed).shards) < 1:
        assert proc.poll() is None and time.time() < deadline, proc.stderr.read().decode() if proc.stderr else ""
        time.sleep(0.02)
    time.sleep(0.4)  # a window or two into the next record
    assert proc.poll() is None, "the run finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    partial = read_store(killed)
    assert 9 <= len(partial) < 54 and len(partial) % 9 == 0  # whole records only

    small_windows(monkeypatch)
    resumed = sbert("encode", source, "-o", killed, *CHUNKING, *HASH)
    assert resumed.exit_code == 0, resumed.output
    assert "resuming after line" in resumed.stderr
    clean = tmp_path / "clean"
    assert sbert("encode", source, "-o", clean, *CHUNKING, *HASH).exit_code == 0
    a, b = read_store(killed), read_store(clean)
    pd.testing.assert_frame_equal(a.drop(columns="embedding"), b.drop(columns="embedding"))
    np.testing.assert_array_equal(np.stack(a.embedding), np.stack(b.embedding))
    assert sorted(p.name for p in (killed / "shards").iterdir()) == sorted(p.name for p in (clean / "shards").iterdir())


# -- the real tokenizer ----------------------------------------------------------------------------------
@pytest.mark.slow
def test_real_model_chunks_fit_the_model_and_their_offsets_are_exact(tmp_path, encoder, sample_texts):
    from sbert_cli.encoding.runner import EncodeOptions, encode_corpus

    chapter = "\n\n".join(sample_texts[:12]) + "\n\nA last line without an end"
    sentence = " ".join(["extraordinarily unbelievable circumstances"] * 200)  # no sentence end in 600 words
    records = [{"text": chapter}, {"text": "A short sentence."}, {"text": sentence}]
    source = jsonl(tmp_path / "long.jsonl", *records)
    store = tmp_path / "store"
    options = EncodeOptions(device="cpu", dtype="fp32", prompt="passage: ")
    summary = encode_corpus([str(source)], store, options)
    df = read_store(store)
    assert summary.chunking.chunked == 2 and summary.truncated == 0
    tokenizer = encoder.tokenizer
    for line, record in enumerate(records, start=1):
        rows = df[df.line == line]
        assert rows.chunk.tolist() == list(range(len(rows)))
        for start, end, text in zip(rows.start, rows.end, rows.text, strict=True):
            assert record["text"][start:end] == text
            assert len(tokenizer("passage: " + text.strip())["input_ids"]) <= encoder.spec.max_seq_length
        covered = np.zeros(len(record["text"]), dtype=bool)
        for start, end in zip(rows.start, rows.end, strict=True):
            covered[start:end] = True
        assert all(covered[i] or record["text"][i].isspace() for i in range(len(covered)))  # nothing dropped
    # chunk vectors are the model's own vectors of the chunk texts (with the prompt)
    expected = encoder.encode(["passage: " + t for t in df.text[:3]])
    np.testing.assert_allclose(np.stack(df.embedding[:3]), expected, atol=1e-5)
