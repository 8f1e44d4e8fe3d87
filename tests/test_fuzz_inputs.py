"""Fuzzing the readers (slow suite): mutated inputs of every format, plain and gzipped, either
encode or stop with exit 2 and one line naming the file (`file:line` or `file:`); never exit 1,
a traceback or a hang. Hypothesis, derandomized (the same examples on every run), on the hash
model through CliRunner, bounded to about two minutes on a 2-core machine."""

from __future__ import annotations

import gzip
import io
import json
import os
import signal
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from sbert_cli.cli import app
from sbert_cli.store.store import Store

pytestmark = pytest.mark.slow
runner = CliRunner()
SECONDS_PER_EXAMPLE = 30  # a hang fails the example instead of stalling the suite
# SBERT_FUZZ_EXAMPLES=500 SBERT_FUZZ_RANDOM=1 runs a longer campaign with fresh examples.
FUZZ = settings(
    max_examples=int(os.environ.get("SBERT_FUZZ_EXAMPLES", "30")),
    derandomize=not os.environ.get("SBERT_FUZZ_RANDOM"),
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)


def _parquet_bytes(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    pq.write_table(table, sink)
    return sink.getvalue()


SEEDS = {
    "txt": b"The cat sat on the mat.\n\nA man is playing a guitar.\r\nStocks fell on Monday.\n",
    "jsonl": (
        b'{"text": "The cat sat.", "doc": 1}\n{"text": "A man \\u00e9", "meta": {"a": [1, 2]}, "doc": "b"}\n\n'
        b'{"text": null, "doc": 3}\n'
    ),
    "csv": b'doc,text\n1,"The cat, sat"\n2,"multi\nline ""quoted"""\n3,plain text\n',
    "tsv": b'doc\ttext\n1\tThe cat "sat"\n2\tplain text\n\n3\tlast one\n',
    "parquet": _parquet_bytes(pa.table({"doc": [1, 2, 3], "text": ["The cat sat.", None, "A man is playing."]})),
}
# Bytes that matter to some reader: quotes, newlines, NUL, broken UTF-8, a BOM, JSON brackets,
# escapes that decode to lone surrogates, integers too long for Python, Parquet's magic.
INTERESTING = [
    b'"',
    b"\n",
    b"\r",
    b"\0",
    b"\xff",
    b"\xc3",
    b"\xef\xbb\xbf",
    b"{",
    b"[[[[[[[[",
    b"\t",
    b",",
    b"\\",
    b"\\ud800",
    b'""',
    b"9" * 40,
    b"PAR1",
]
position = st.integers(min_value=0, max_value=1 << 20)
mutation = st.one_of(
    st.tuples(st.just("flip"), position, st.integers(1, 255)),
    st.tuples(st.just("insert"), position, st.one_of(st.sampled_from(INTERESTING), st.binary(min_size=1, max_size=8))),
    st.tuples(st.just("delete"), position, st.integers(1, 16)),
    st.tuples(st.just("truncate"), position, st.just(0)),
)
OPTIONS = st.sampled_from(
    [
        [],
        [],
        ["--errors", "replace"],
        ["--encoding", "utf-16"],
        ["--encoding", "latin-1"],
        ["--format", "csv"],
        ["--format", "jsonl"],
        ["--format", "parquet"],
        ["--no-header"],
        ["--text-column", "1"],
        ["--id-field", "doc"],
        ["--keep-fields", "doc"],
    ]
)


def mutate(data: bytes, mutations: list[tuple[str, int, object]]) -> bytes:
    buf = bytearray(data)
    for kind, where, arg in mutations:
        at = where % (len(buf) + 1)
        if kind == "flip" and buf:
            buf[at % len(buf)] ^= arg  # type: ignore[operator]
        elif kind == "insert":
            buf[at:at] = arg  # type: ignore[assignment]
        elif kind == "delete":
            del buf[at : at + arg]  # type: ignore[operator]
        elif kind == "truncate":
            del buf[at:]
    return bytes(buf)


class Hang(Exception):
    pass


@contextmanager
def time_limit(seconds: int) -> Iterator[None]:
    def alarm(signum, frame):
        raise Hang(f"no answer in {seconds} s")

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def check_encode(name: str, data: bytes, options: list[str]) -> None:
    """Encode one file: a store, or exit 2 with one line naming the file."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / name
        path.write_bytes(data)
        store = Path(tmp) / "store"
        with time_limit(SECONDS_PER_EXAMPLE):
            result = runner.invoke(app, ["encode", str(path), "-o", str(store), "--model", "hash:32", *options])
        detail = (name, options, data[:300], result.output)
        assert result.exit_code in (0, 2), detail
        assert "Traceback" not in result.output, detail
        if result.exit_code == 0:
            assert Store.open(store).rows > 0, detail
            return
        assert result.stderr.startswith(f"sbert: error: {path}:"), detail
        assert result.stderr.count("\n") == 1, detail
        assert not store.exists(), detail


@pytest.mark.parametrize("fmt", sorted(SEEDS))
@pytest.mark.parametrize("gz", ["plain", "gzip-content", "gzip-bytes"])
@FUZZ
@given(mutations=st.lists(mutation, min_size=1, max_size=6), options=OPTIONS)
def test_mutated_inputs_encode_or_name_the_file(fmt, gz, mutations, options):
    """gzip-content: the text is damaged, then compressed; gzip-bytes: the .gz itself is damaged."""
    data = SEEDS[fmt]
    if gz == "plain":
        data = mutate(data, mutations)
    elif gz == "gzip-content":
        data = gzip.compress(mutate(data, mutations), mtime=0)
    else:
        data = mutate(gzip.compress(data, mtime=0), mutations)
    check_encode(f"input.{fmt}" + ("" if gz == "plain" else ".gz"), data, options)


# A Parquet text column of any type, with values Hypothesis picks: strings, binary (valid UTF-8
# or not), numbers, lists, nulls; read as text, as the id, or both.
_scalars = {
    "string": (st.text(max_size=20).map(lambda s: s.encode("utf-8", "replace").decode()), pa.string()),
    "large_string": (st.text(max_size=20).map(lambda s: s.encode("utf-8", "replace").decode()), pa.large_string()),
    "binary": (st.binary(max_size=12), pa.binary()),
    "int": (st.integers(-(2**40), 2**40), pa.int64()),
    "float": (st.floats(allow_nan=True), pa.float64()),
    "list": (st.lists(st.floats(allow_nan=False), max_size=3), pa.list_(pa.float64())),
    "bool": (st.booleans(), pa.bool_()),
}


@st.composite
def parquet_tables(draw) -> tuple[bytes, list[str]]:
    kind = draw(st.sampled_from(sorted(_scalars) + ["bad-utf8"]))
    size = draw(st.integers(1, 6))
    if kind == "bad-utf8":
        values = draw(st.lists(st.binary(max_size=8), min_size=size, max_size=size))
        column = pa.array(values, pa.binary()).view(pa.string())
    else:
        values_of, arrow_type = _scalars[kind]
        values = draw(st.lists(st.one_of(st.none(), values_of), min_size=size, max_size=size))
        column = pa.array(values, arrow_type)
    if draw(st.booleans()) and kind in ("string", "bad-utf8"):
        column = column.dictionary_encode() if kind == "string" else column
    table = pa.table({"text": column, "doc": column})
    options = draw(
        st.sampled_from(
            [[], ["--id-field", "doc"], ["--errors", "replace"], ["--text-column", "1"], ["--keep-fields", "doc"]]
        )
    )
    return _parquet_bytes(table), options


@FUZZ
@given(case=parquet_tables())
def test_parquet_columns_of_any_type_encode_or_name_the_file(case):
    data, options = case
    check_encode("typed.parquet", data, options)


@FUZZ
@given(
    value=st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
        lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=3), c, max_size=3),
    )
)
def test_json_values_of_any_type_encode_or_name_the_file(value):
    data = (
        json.dumps({"text": "fine", "doc": "a"})
        + "\n"
        + json.dumps({"text": value, "doc": value, "other": value})
        + "\n"
    ).encode()
    check_encode("typed.jsonl", data, ["--id-field", "doc", "--keep-fields", "other"])
