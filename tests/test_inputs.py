"""Bad input is named (file:line, exit 2) before anything is written, never turned into data:
CSV quoting, field types, byte-order marks, encodings that are not ASCII-compatible, damaged
compressed or columnar files, special files in directories. Hash model, real files in tmp_path."""

from __future__ import annotations

import codecs
import gzip
import json
import os
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fakes import HASH_MODEL
from typer.testing import CliRunner

from sbert_cli.cli import app
from sbert_cli.errors import InputError
from sbert_cli.inputs.reader import ReadOptions, expand_inputs, read_records
from sbert_cli.store.store import Store

runner = CliRunner()


def encode(*args: str, input: bytes | None = None):
    return runner.invoke(app, ["encode", *args, "--model", HASH_MODEL], input=input)


def texts(store: Path) -> list[str]:
    frames = [pd.read_parquet(store / s.file) for s in Store.open(store).shards]
    return pd.concat(frames, ignore_index=True)["text"].tolist()


def lines(store: Path) -> list[int]:
    frames = [pd.read_parquet(store / s.file) for s in Store.open(store).shards]
    return pd.concat(frames, ignore_index=True)["line"].tolist()


def refused(result, message: str, store: Path) -> None:
    """Exit 2, exactly one line on stderr holding `message`, no traceback, no store made."""
    assert result.exit_code == 2, result.output
    assert result.stderr.count("\n") == 1, result.stderr
    assert message in result.stderr, result.stderr
    assert "Traceback" not in result.output
    assert not store.exists()


# -- CSV quoting ------------------------------------------------------------------------------------
def test_csv_stray_opening_quote_is_not_swallowed(tmp_path):
    path = tmp_path / "said.csv"
    path.write_text("text\n" + '"He said, hi\n' + "".join(f"line {i}\n" for i in range(100)))
    result = encode(str(path), "-o", str(tmp_path / "s"))
    refused(result, f"{path}:2: a quoted field is never closed", tmp_path / "s")
    assert "--format tsv" in result.stderr


def test_csv_quote_running_over_implausibly_many_lines(tmp_path):
    path = tmp_path / "long.csv"
    body = "".join(f"row {i}\n" for i in range(1500))
    path.write_text('text\nfine\n"He said, hi\n' + body + 'she said "bye"\nlast\n')
    result = encode(str(path), "-o", str(tmp_path / "s"))
    refused(result, f"{path}:3: a quoted field runs over 1502 lines (to line 1504)", tmp_path / "s")


def test_csv_quoted_newlines_and_quotes_still_read(tmp_path):
    path = tmp_path / "ok.csv"
    path.write_text('text,n\n"a poem\nin two lines",1\n"say ""hi""",2\nplain,3\n')
    store = tmp_path / "s"
    assert encode(str(path), "-o", str(store)).exit_code == 0
    assert texts(store) == ["a poem\nin two lines", 'say "hi"', "plain"]
    assert lines(store) == [2, 4, 5]


# -- types --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("values", "arrow_type", "shown"),
    [
        ([b"ok", b"fine"], pa.binary(), "binary"),
        ([[1.0], [2.0]], pa.list_(pa.float64()), "list<element: double>"),
        ([1, 2], pa.int64(), "int64"),
        ([1.5, 2.5], pa.float32(), "float"),
    ],
)
def test_parquet_text_column_must_be_strings(tmp_path, values, arrow_type, shown):
    path = tmp_path / "t.parquet"
    pq.write_table(pa.table({"text": pa.array(values, arrow_type)}), path)
    result = encode(str(path), "-o", str(tmp_path / "s"))
    refused(result, f"{path}: column 'text' is {shown}, not a string column", tmp_path / "s")


def test_jsonl_text_field_types_are_refused_the_same_way(tmp_path):
    for value, words in ((1, "a number"), ([1.0], "an array"), ({"a": 1}, "an object"), (True, "a boolean")):
        path = tmp_path / "t.jsonl"
        path.write_text(json.dumps({"text": "fine"}) + "\n" + json.dumps({"text": value}) + "\n")
        result = encode(str(path), "-o", str(tmp_path / "s"))
        refused(result, f"{path}:2: field 'text' is {words}, not a string", tmp_path / "s")


def test_string_like_parquet_columns_and_integer_ids_are_read(tmp_path):
    path = tmp_path / "t.parquet"
    table = pa.table(
        {
            "text": pa.array(["alpha one", None, "gamma three"]).dictionary_encode(),
            "big": pa.array(["x", "y", "z"], pa.large_string()),
            "doc": pa.array([7, 8, 9], pa.int32()),
        }
    )
    pq.write_table(table, path)
    store = tmp_path / "s"
    assert encode(str(path), "-o", str(store), "--id-field", "doc").exit_code == 0
    frame = pd.concat([pd.read_parquet(store / s.file) for s in Store.open(store).shards])
    assert frame["text"].tolist() == ["alpha one", "gamma three"]
    assert frame["key"].tolist() == ["7", "9"]
    assert encode(str(path), "-o", str(tmp_path / "s2"), "--text-column", "big").exit_code == 0


def test_parquet_column_named_twice(tmp_path):
    path = tmp_path / "dup.parquet"
    pq.write_table(pa.Table.from_arrays([pa.array(["a"]), pa.array(["b"])], names=["text", "text"]), path)
    refused(encode(str(path), "-o", str(tmp_path / "s")), f"{path}: column 'text' appears 2 times", tmp_path / "s")


def test_id_fields_must_be_strings_or_integers(tmp_path):
    parquet = tmp_path / "t.parquet"
    pq.write_table(pa.table({"text": ["a", "b"], "doc": [1.5, 2.5]}), parquet)
    result = encode(str(parquet), "-o", str(tmp_path / "s"), "--id-field", "doc")
    refused(result, f"{parquet}: column 'doc' is double, not a string or integer column", tmp_path / "s")
    jsonl = tmp_path / "t.jsonl"
    jsonl.write_text('{"text": "a", "doc": 1}\n{"text": "b", "doc": 1.5}\n')
    result = encode(str(jsonl), "-o", str(tmp_path / "s"), "--id-field", "doc")
    refused(result, f"{jsonl}:2: field 'doc' is a number, not a string or integer", tmp_path / "s")


# -- byte-order marks and encodings -------------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "content", "extra"),
    [
        ("a.txt", "first\nsecond\n", []),
        ("a.jsonl", '{"text": "first"}\n{"text": "second"}\n', []),
        ("a.csv", "text,n\nfirst,1\nsecond,2\n", []),
        ("a.tsv", "text\tn\nfirst\t1\nsecond\t2\n", []),
        ("a.csv", "n,text\n1,first\n2,second\n", ["--text-column", "text"]),
    ],
)
@pytest.mark.parametrize("gz", [False, True])
def test_utf8_bom_is_dropped(tmp_path, name, content, extra, gz):
    data = codecs.BOM_UTF8 + content.encode()
    path = tmp_path / (name + (".gz" if gz else ""))
    path.write_bytes(gzip.compress(data) if gz else data)
    store = tmp_path / "s"
    result = encode(str(path), "-o", str(store), *extra)
    assert result.exit_code == 0, result.output
    assert texts(store) == ["first", "second"]


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-be", "utf-32", "cp037"])
def test_encodings_that_are_not_ascii_compatible(tmp_path, encoding):
    path = tmp_path / "wide.txt"
    path.write_bytes("première ligne\n\nsecond line\r\nthird\n".encode(encoding))
    store = tmp_path / "s"
    result = encode(str(path), "-o", str(store), "--encoding", encoding)
    assert result.exit_code == 0, result.output
    assert texts(store) == ["première ligne", "second line", "third"]
    assert lines(store) == [1, 3, 4]


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_utf16_structured_formats(tmp_path, fmt):
    content = '{"text": "é one"}\n{"text": "two"}\n' if fmt == "jsonl" else 'text\n"é one"\ntwo\n'
    path = tmp_path / f"wide.{fmt}"
    path.write_bytes(content.encode("utf-16"))
    store = tmp_path / "s"
    assert encode(str(path), "-o", str(store), "--encoding", "utf-16").exit_code == 0
    assert texts(store) == ["é one", "two"]


def test_utf16_line_numbers_survive_chunk_boundaries(tmp_path, monkeypatch):
    from sbert_cli.inputs import decoding

    monkeypatch.setattr(decoding, "READ_CHUNK", 7)  # odd: chunks end inside characters and lines
    path = tmp_path / "wide.txt"
    good = "".join(f"ligne numéro {i}\n" for i in range(1, 40))
    path.write_bytes(good.encode("utf-16-le") + b"\x00\xdc" + "tail\n".encode("utf-16-le"))
    source = expand_inputs([str(path)])[0]
    records = read_records(source, ReadOptions(encoding="utf-16-le", errors="replace"))
    assert [(r.line, r.text) for r in records][-2:] == [(39, "ligne numéro 39"), (40, "\ufffdtail")]
    with pytest.raises(InputError, match=rf"^{path}:40: not valid utf-16-le; use --encoding"):
        list(read_records(source, ReadOptions(encoding="utf-16-le")))


def test_utf16_read_as_utf8_says_which_encoding(tmp_path):
    path = tmp_path / "wide.txt"
    path.write_bytes("one\ntwo\n".encode("utf-16"))
    result = encode(str(path), "-o", str(tmp_path / "s"))
    refused(result, f"{path}:1: not utf-8 text; it starts with a UTF-16/32 byte-order mark", tmp_path / "s")


@pytest.mark.parametrize(("encoding", "message"), [("klingon", "unknown encoding"), ("rot13", "not a text encoding")])
def test_bad_encoding_names(tmp_path, encoding, message):
    path = tmp_path / "a.txt"
    path.write_text("x\n")
    refused(encode(str(path), "-o", str(tmp_path / "s"), "--encoding", encoding), message, tmp_path / "s")


# -- damaged data: exit 2 naming the file ---------------------------------------------------------------
def _parquet_bytes(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    return sink.getvalue().to_pybytes()


def test_corrupt_and_truncated_gzip(tmp_path):
    data = gzip.compress(_parquet_bytes(pa.table({"text": [f"row {i}" for i in range(500)]})))
    (tmp_path / "cut.parquet.gz").write_bytes(data[: len(data) // 2])
    (tmp_path / "junk.parquet.gz").write_bytes(b"\x1f\x8b" + b"\x00" * 40)
    text = gzip.compress("".join(f"line {i}\n" for i in range(20000)).encode())
    (tmp_path / "cut.txt.gz").write_bytes(text[: len(text) // 2])
    for name in ("cut.parquet.gz", "junk.parquet.gz", "cut.txt.gz"):
        path = tmp_path / name
        result = encode(str(path), "-o", str(tmp_path / "s"))
        refused(result, f"{path}:", tmp_path / "s")
        assert "corrupt gzip data" in result.stderr


def test_damaged_parquet_page_with_a_checksum(tmp_path):
    sink = pa.BufferOutputStream()
    pq.write_table(
        pa.table({"text": [f"sentence {i}" for i in range(200)]}), sink, write_page_checksum=True, compression="none"
    )
    data = bytearray(sink.getvalue().to_pybytes())
    data[data.find(b"sentence 100") + 2] ^= 0x20  # a flipped bit in a page: still valid UTF-8
    path = tmp_path / "flipped.parquet"
    path.write_bytes(data)
    result = encode(str(path), "-o", str(tmp_path / "s"))
    refused(result, f"{path}:1: unreadable Parquet data (could not verify page integrity", tmp_path / "s")


def test_invalid_utf8_in_a_parquet_string_column(tmp_path):
    path = tmp_path / "bad.parquet"
    column = pa.array([b"fine", b"bad \xff byte", b"also fine"], pa.binary()).view(pa.string())
    pq.write_table(pa.table({"text": column}), path)
    result = encode(str(path), "-o", str(tmp_path / "s"))
    refused(result, f"{path}:2: column 'text': not valid UTF-8 (byte 5 of the value)", tmp_path / "s")
    store = tmp_path / "replaced"
    assert encode(str(path), "-o", str(store), "--errors", "replace").exit_code == 0
    assert texts(store) == ["fine", "bad \ufffd byte", "also fine"]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"text": ' + "[" * 100_000 + "]" * 100_000 + "}", "JSON nested too deeply"),
        ('{"text": "a", "n": ' + "1" * 5000 + "}", "invalid JSON (Exceeds the limit"),
        ('{"text": "lone \\ud800 half"}', "text holds an unpaired surrogate (U+D800)"),
    ],
)
def test_json_that_python_cannot_hold(tmp_path, line, message):
    path = tmp_path / "deep.jsonl"
    path.write_text('{"text": "fine"}\n' + line + "\n")
    refused(encode(str(path), "-o", str(tmp_path / "s")), f"{path}:2: {message}", tmp_path / "s")


@pytest.mark.parametrize(
    ("args", "what"), [(["--keep-fields", "tag"], "field 'tag'"), (["--id-field", "tag"], "the id")]
)
def test_lone_surrogates_in_ids_and_kept_fields(tmp_path, args, what):
    path = tmp_path / "half.jsonl"
    path.write_text('{"text": "a", "tag": "b"}\n{"text": "c", "tag": "x\\udc00"}\n')
    result = encode(str(path), "-o", str(tmp_path / "s"), *args)
    refused(result, f"{path}:2: {what} holds an unpaired surrogate (U+DC00)", tmp_path / "s")


def test_kept_parquet_column_named_twice(tmp_path):
    path = tmp_path / "dup.parquet"
    columns = [pa.array(["a"]), pa.array(["b"]), pa.array(["c"])]
    pq.write_table(pa.Table.from_arrays(columns, names=["text", "tag", "tag"]), path)
    result = encode(str(path), "-o", str(tmp_path / "s"), "--keep-fields", "tag")
    refused(result, f"{path}: column 'tag' appears 2 times", tmp_path / "s")


def test_lone_surrogate_is_replaced_under_errors_replace(tmp_path):
    path = tmp_path / "half.jsonl"
    path.write_text('{"text": "lone \\ud800 half"}\n')
    store = tmp_path / "s"
    assert encode(str(path), "-o", str(store), "--errors", "replace").exit_code == 0
    assert texts(store) == ["lone \ufffd half"]


# -- special files ------------------------------------------------------------------------------------
@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_fifo_in_a_directory_is_refused_not_skipped(tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.txt").write_text("a text\n")
    os.mkfifo(docs / "pipe.txt")
    result = encode(str(docs), "-o", str(tmp_path / "s"))
    refused(
        result,
        f"{docs / 'pipe.txt'}: a FIFO, not a regular file; directory inputs read regular files only",
        tmp_path / "s",
    )
    store = tmp_path / "s2"  # a name that would not be read anyway stays ignored; --glob chooses
    os.rename(docs / "pipe.txt", docs / "pipe")
    assert encode(str(docs), "-o", str(store)).exit_code == 0
    assert texts(store) == ["a text"]
    result = encode(str(docs / "pipe"), "-o", str(tmp_path / "s3"))
    refused(result, "pipe: a FIFO, not a regular file (pipe it to stdin instead", tmp_path / "s3")


def test_broken_link_in_a_directory_is_refused(tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.txt").write_text("a text\n")
    (docs / "gone.txt").symlink_to(tmp_path / "nowhere.txt")
    refused(encode(str(docs), "-o", str(tmp_path / "s")), "gone.txt: a broken symbolic link", tmp_path / "s")
