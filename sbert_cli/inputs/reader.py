"""Read stage: input files (or stdin) -> records of (line, text[, key]), streamed.

Every record carries the 1-based line (or row) number it came from, so errors and stores can
point back at the source. Bad input raises InputError naming the file and line.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from sbert_cli.errors import InputError, located
from sbert_cli.inputs import fields
from sbert_cli.inputs.decoding import decoded_lines, described, open_binary
from sbert_cli.inputs.delimited import CSV_FIELD_LIMIT, column_index, delimited_rows
from sbert_cli.inputs.parquet_reader import PARQUET_ERRORS, column_values, open_parquet, resolve_columns
from sbert_cli.inputs.sources import FORMATS, STDIN, InputSource, ReadOptions, detect_format, expand_inputs
from sbert_cli.inputs.stdin import peeking


@dataclass
class Record:
    line: int
    text: str
    key: str | None = None
    fields: dict | None = None  # --keep-fields values, typed by inputs/fields.py


@dataclass
class ReadStats:
    """Counted while reading; the summary reports them."""

    records: int = 0
    blank: int = 0
    field_types: dict[str, str | None] | None = None  # --keep-fields: each field's type, from the data


def _strip_newline(line: str) -> str:
    return line.rstrip("\r\n")


def _read_txt(source: InputSource, options: ReadOptions, stats: ReadStats) -> Iterator[Record]:
    for lineno, line in decoded_lines(source, options):
        text = _strip_newline(line)
        if not text.strip():
            stats.blank += 1
            continue
        yield Record(lineno, text)


def _json_value(obj: dict, name: str) -> object:
    """A field by name; dotted names reach into nested objects (`meta.title`)."""
    value: object = obj
    for part in name.split("."):
        if not isinstance(value, dict) or part not in value:
            raise KeyError(name)
        value = value[part]
    return value


def json_objects(source: InputSource, options: ReadOptions) -> Iterator[tuple[int, dict | None]]:
    """(line, object) per line of a JSON-lines input; None for a blank line (callers count them)."""
    for lineno, line in decoded_lines(source, options):
        if not line.strip():
            yield lineno, None
            continue
        try:
            obj = json.loads(line)
        except ValueError as exc:  # JSONDecodeError has .msg; an over-long integer only its text
            raise InputError(located(source.name, lineno, f"invalid JSON ({getattr(exc, 'msg', exc)})")) from exc
        except RecursionError:
            raise InputError(located(source.name, lineno, "JSON nested too deeply to read")) from None
        if not isinstance(obj, dict):
            raise InputError(located(source.name, lineno, "expected a JSON object per line"))
        yield lineno, obj


def _read_jsonl(source: InputSource, options: ReadOptions, stats: ReadStats) -> Iterator[Record]:
    for lineno, obj in json_objects(source, options):
        if obj is None:
            stats.blank += 1
            continue
        try:
            text = _json_value(obj, options.text_field)
        except KeyError:
            raise InputError(
                located(source.name, lineno, f"no field {options.text_field!r} (choose one with --text-field)")
            ) from None
        key = None
        if options.id_field:
            try:
                key = _json_key(source, lineno, _json_value(obj, options.id_field), options.id_field)
            except KeyError:
                raise InputError(located(source.name, lineno, f"no field {options.id_field!r} (--id-field)")) from None
        if text is None or (isinstance(text, str) and not text.strip()):
            stats.blank += 1
            continue
        if not isinstance(text, str):
            raise InputError(
                located(source.name, lineno, f"field {options.text_field!r} is {_json_type(text)}, not a string")
            )
        yield Record(lineno, text, key, fields.kept_json(obj, options.keep_fields, _json_value))


def _json_type(value: object) -> str:
    if isinstance(value, bool):
        return "a boolean"
    return {dict: "an object", list: "an array", int: "a number", float: "a number"}.get(type(value), "not text")


def _json_key(source: InputSource, lineno: int, value: object, name: str) -> str | None:
    """Ids are strings or integers in every format (parquet_reader.py): `1.5`, `true` or `{...}`
    as an id is a mistake, not data."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    raise InputError(located(source.name, lineno, f"field {name!r} is {_json_type(value)}, not a string or integer"))


def _read_delimited(source: InputSource, options: ReadOptions, stats: ReadStats) -> Iterator[Record]:
    column = options.text_column or "text"
    has_header = options.header if options.header is not None else not column.isdigit()
    header: list[str] | None = None
    index: int | None = None
    key_index: int | None = None
    for row_line, row in delimited_rows(source, decoded_lines(source, options), source.format == "tsv"):
        if header is None and has_header:
            header = [h.strip() for h in row]
            index = column_index(source, header, column, "--text-column")
            continue
        if index is None:
            index = column_index(source, header, column, "--text-column")
        if options.id_field and key_index is None:
            key_index = column_index(source, header, options.id_field, "--id-field")
        if not row or all(not c.strip() for c in row):
            stats.blank += 1
            continue
        if index >= len(row):
            raise InputError(located(source.name, row_line, f"row has {len(row)} columns, no column {index}"))
        text = row[index]
        if not text.strip():
            stats.blank += 1
            continue
        key = None
        if key_index is not None:
            if key_index >= len(row):
                raise InputError(located(source.name, row_line, f"row has no id column {key_index}"))
            key = row[key_index]
        yield Record(row_line, text, key, fields.kept_cells(source, header, row, options.keep_fields))
    if header is None and has_header:
        raise InputError(located(source.name, None, "empty file (expected a header row)"))


def _read_parquet(source: InputSource, options: ReadOptions, stats: ReadStats) -> Iterator[Record]:
    import pyarrow as pa

    pf = open_parquet(source)
    wanted = [options.text_column or "text"]
    if options.id_field:
        wanted.append(options.id_field)
    resolved = resolve_columns(source, pf, wanted, also=options.keep_fields)
    kept = fields.parquet_columns(source, pf.schema_arrow, options.keep_fields)
    row = 0
    try:
        for batch in pf.iter_batches(columns=resolved + [c for c in kept if c not in resolved], batch_size=8192):
            texts = column_values(source, batch.column(0), resolved[0], row + 1, options.errors)
            keys = batch.column(1).to_pylist() if len(resolved) > 1 else [None] * len(texts)
            values = fields.batch_values(batch, kept, len(texts))
            for text, key, kept_values in zip(texts, keys, values, strict=True):
                row += 1
                if text is None or not text.strip():
                    stats.blank += 1
                    continue
                yield Record(row, text, None if key is None else str(key), kept_values)
    except (pa.ArrowException, *PARQUET_ERRORS) as exc:
        raise InputError(located(source.name, row + 1, f"unreadable Parquet data ({described(exc)})")) from exc


_READERS = {
    "txt": _read_txt,
    "jsonl": _read_jsonl,
    "csv": _read_delimited,
    "tsv": _read_delimited,
    "parquet": _read_parquet,
}


def read_records(source: InputSource, options: ReadOptions, stats: ReadStats | None = None) -> Iterator[Record]:
    """Stream the non-blank records of one input, in order; blanks are counted in `stats`."""
    stats = stats if stats is not None else ReadStats()
    records = _READERS[source.format](source, options, stats)
    if options.keep_fields:
        records = fields.typed_records(source, options.keep_fields, records, stats)
    for record in records:
        _check_characters(source, record, options.errors)
        stats.records += 1
        yield record


_SURROGATE = re.compile("[\ud800-\udfff]")


def _check_characters(source: InputSource, record: Record, errors: str) -> None:
    """Text, key and kept strings that UTF-8 cannot hold (a lone surrogate, written `\\ud800` in
    JSON) would fail the Parquet write mid-run: bad input, named here, or replaced under --errors."""
    if not record.text.isascii():
        record.text = _whole_characters(source, record.line, record.text, "text", errors)
    if record.key is not None and not record.key.isascii():
        record.key = _whole_characters(source, record.line, record.key, "the id", errors)
    for name, value in (record.fields or {}).items():
        if isinstance(value, str) and not value.isascii():
            record.fields[name] = _whole_characters(source, record.line, value, f"field {name!r}", errors)


def _whole_characters(source: InputSource, line: int, value: str, what: str, errors: str) -> str:
    try:
        value.encode("utf-8")
        return value
    except UnicodeEncodeError as exc:
        if errors == "strict":
            code = f"U+{ord(value[exc.start]):04X}"
            raise InputError(
                located(source.name, line, f"{what} holds an unpaired surrogate ({code}), which is not valid Unicode")
            ) from None
    return _SURROGATE.sub("\ufffd" if errors == "replace" else "", value)


def scan(source: InputSource, options: ReadOptions) -> ReadStats:
    """Read a whole input once to validate it and count its records, before any store is touched."""
    stats = ReadStats()
    for _ in read_records(source, options, stats):
        pass
    return stats


def has_records(source: InputSource, options: ReadOptions) -> bool:
    """Whether the input holds a non-blank record; stdin is read only up to it (and replayed)."""
    with peeking() if source.is_stdin else contextlib.nullcontext():
        return next(read_records(source, options), None) is not None


def read_text_lines(path: str, encoding: str = "utf-8") -> list[str]:
    """Non-blank lines of a small text file or stdin (queries, sentences), stripped of newlines."""
    source = (
        InputSource("<stdin>", None, "txt", False)
        if path == STDIN
        else InputSource(path, Path(path), "txt", path.endswith(".gz"))
    )
    if source.path is not None and not source.path.is_file():
        raise InputError(f"{path}: no such file")
    return [r.text for r in read_records(source, ReadOptions(encoding=encoding))]


# The names other stages import from here (the pieces live in sources, decoding, delimited, parquet_reader).
__all__ = [
    "CSV_FIELD_LIMIT",
    "FORMATS",
    "STDIN",
    "InputSource",
    "ReadOptions",
    "ReadStats",
    "Record",
    "column_index",
    "decoded_lines",
    "delimited_rows",
    "detect_format",
    "expand_inputs",
    "json_objects",
    "open_binary",
    "read_records",
    "read_text_lines",
    "scan",
]
