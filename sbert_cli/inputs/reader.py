"""Read stage: input files (or stdin) -> records of (line, text[, key]), streamed.

Every record carries the 1-based line (or row) number it came from, so errors and stores can
point back at the source. Bad input raises InputError naming the file and line.
"""

from __future__ import annotations

import csv
import gzip
import json
import sys
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from sbert_cli.errors import InputError, located
from sbert_cli.inputs import fields

FORMATS = ("txt", "jsonl", "csv", "tsv", "parquet")
_EXTENSIONS = {
    ".txt": "txt",
    ".text": "txt",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
    ".csv": "csv",
    ".tsv": "tsv",
    ".tab": "tsv",
    ".parquet": "parquet",
    ".pq": "parquet",
}
STDIN = "-"
# Paragraphs can exceed csv's 128 KiB field limit; raised while a CSV is read, then put back
# (csv keeps it process-wide).
CSV_FIELD_LIMIT = min(sys.maxsize, 2**31 - 1)


@dataclass(frozen=True)
class InputSource:
    """One input as the user named it: a file path, or `-` for standard input."""

    name: str  # what messages and the `source` column show
    path: Path | None  # None for stdin
    format: str
    gzipped: bool

    @property
    def is_stdin(self) -> bool:
        return self.path is None


@dataclass
class ReadOptions:
    format: str | None = None
    text_field: str = "text"
    id_field: str | None = None
    text_column: str | None = None
    header: bool | None = None
    encoding: str = "utf-8"
    errors: str = "strict"
    keep_fields: tuple[str, ...] = ()  # stored as typed columns (inputs/fields.py)


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


def detect_format(path: str, forced: str | None) -> tuple[str, bool]:
    lower = path.lower()
    gzipped = lower.endswith(".gz")
    if gzipped:
        lower = lower[:-3]
    if forced:
        if forced not in FORMATS:
            raise InputError(f"--format {forced}: choose from {', '.join(FORMATS)}")
        return forced, gzipped
    return _EXTENSIONS.get(Path(lower).suffix, "txt"), gzipped


def _known_extension(path: Path) -> bool:
    name = path.name.lower()
    if name.endswith(".gz"):
        name = name[:-3]
    return Path(name).suffix in _EXTENSIONS


def expand_inputs(inputs: list[str], glob: str | None = None, forced_format: str | None = None) -> list[InputSource]:
    """Turn the command line's INPUT... into sources: files, directory members, or stdin."""
    if not inputs:
        raise InputError("no input given (name files or directories, or - for stdin)")
    sources: list[InputSource] = []
    for given in inputs:
        if given == STDIN:
            fmt, gz = detect_format("stdin.txt", forced_format)
            sources.append(InputSource("<stdin>", None, fmt, gz))
            continue
        path = Path(given)
        if path.is_dir():
            members = sorted(
                p
                for p in (path.glob(glob) if glob else path.rglob("*"))
                if p.is_file() and not p.name.startswith(".") and (glob or _known_extension(p))
            )
            if not members:
                what = f"matching {glob!r}" if glob else "with a known extension (.txt, .jsonl, .csv, .tsv, .parquet)"
                raise InputError(f"{given}: directory has no files {what}")
            for member in members:
                fmt, gz = detect_format(str(member), forced_format)
                sources.append(InputSource(str(member), member, fmt, gz))
        elif path.is_file():
            fmt, gz = detect_format(given, forced_format)
            sources.append(InputSource(given, path, fmt, gz))
        elif path.exists():
            raise InputError(f"{given}: not a regular file")
        else:
            raise InputError(f"{given}: no such file or directory")
    return sources


def _open_binary(source: InputSource) -> BinaryIO:
    try:
        raw: BinaryIO = sys.stdin.buffer if source.path is None else open(source.path, "rb")
    except OSError as exc:
        raise InputError(located(source.name, None, f"cannot open ({exc.strerror})")) from exc
    if source.gzipped:
        return gzip.GzipFile(fileobj=raw, mode="rb")  # type: ignore[return-value]
    return raw


def decoded_lines(source: InputSource, options: ReadOptions) -> Iterator[tuple[int, str]]:
    """(line number, decoded line with its newline) for line-oriented formats."""
    fh = _open_binary(source)
    lineno = 0
    try:
        for lineno, raw in enumerate(fh, start=1):  # noqa: B007 - lineno is used after an error too
            if b"\0" in raw and options.encoding.lower().replace("-", "") in ("utf8", "ascii", "latin1"):
                raise InputError(located(source.name, lineno, "binary data (NUL byte); is this a text file?"))
            try:
                yield lineno, raw.decode(options.encoding, options.errors)
            except UnicodeDecodeError as exc:
                raise InputError(
                    located(
                        source.name,
                        lineno,
                        f"not valid {options.encoding} (byte {exc.start + 1} of the line); "
                        "use --encoding to name the right one or --errors replace to go on",
                    )
                ) from exc
            except LookupError as exc:
                raise InputError(f"--encoding {options.encoding}: unknown encoding") from exc
    except (gzip.BadGzipFile, EOFError, zlib.error) as exc:
        raise InputError(located(source.name, lineno + 1, f"corrupt gzip data ({exc})")) from exc
    except OSError as exc:
        raise InputError(located(source.name, lineno + 1, f"read error ({exc})")) from exc
    finally:
        if source.path is not None:
            fh.close()


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
        except ValueError as exc:
            raise InputError(located(source.name, lineno, f"invalid JSON ({exc.msg})")) from exc
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
                key = str(_json_value(obj, options.id_field))
            except KeyError:
                raise InputError(located(source.name, lineno, f"no field {options.id_field!r} (--id-field)")) from None
        if text is None or (isinstance(text, str) and not text.strip()):
            stats.blank += 1
            continue
        if not isinstance(text, str):
            raise InputError(located(source.name, lineno, f"field {options.text_field!r} is not a string"))
        yield Record(lineno, text, key, fields.kept_json(obj, options.keep_fields, _json_value))


def column_index(source: InputSource, header: list[str] | None, column: str, what: str) -> int:
    """A column given by 0-based index or by header name; `what` names the option in errors."""
    if column.isdigit():
        return int(column)
    if header is None:
        raise InputError(located(source.name, 1, f"{what} {column!r} given by name, but the file has no header"))
    try:
        return header.index(column)
    except ValueError:
        raise InputError(
            located(source.name, 1, f"no column {column!r} in the header ({', '.join(header)}); choose with {what}")
        ) from None


def delimited_rows(source: InputSource, lines: Iterator[tuple[int, str]], tsv: bool) -> Iterator[tuple[int, list[str]]]:
    """(line where the record starts, cells) from decoded lines.

    TSV is split on tabs and nothing else: quotes are text (real STS files contain `"`). CSV
    follows RFC 4180 quoting, so one record may span several lines.
    """
    if tsv:
        for lineno, line in lines:
            yield lineno, line.rstrip("\r\n").split("\t")
        return
    current = [0]

    def text() -> Iterator[str]:
        for lineno, line in lines:
            current[0] = lineno
            yield line

    start = 1
    previous_limit = csv.field_size_limit(CSV_FIELD_LIMIT)
    try:
        for row in csv.reader(text()):
            yield start, row
            start = current[0] + 1
    except csv.Error as exc:
        raise InputError(located(source.name, current[0], f"malformed CSV ({exc})")) from exc
    finally:
        csv.field_size_limit(previous_limit)


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
    import pyarrow.parquet as pq

    if source.path is None:
        data = pa.BufferReader(sys.stdin.buffer.read())
    else:
        data = source.path if not source.gzipped else pa.BufferReader(gzip.decompress(source.path.read_bytes()))
    try:
        pf = pq.ParquetFile(data)
    except (pa.ArrowException, OSError) as exc:
        raise InputError(located(source.name, None, f"not a readable Parquet file ({exc})")) from exc
    names = pf.schema_arrow.names
    column = options.text_column or "text"
    wanted = [column]
    if options.id_field:
        wanted.append(options.id_field)
    kept = fields.parquet_columns(source, pf.schema_arrow, options.keep_fields)
    resolved = []
    for name in wanted:
        if name.isdigit() and int(name) < len(names):
            name = names[int(name)]
        if name not in names:
            raise InputError(located(source.name, None, f"no column {name!r} (columns: {', '.join(names)})"))
        resolved.append(name)
    row = 0
    try:
        for batch in pf.iter_batches(columns=resolved + [c for c in kept if c not in resolved], batch_size=8192):
            texts = batch.column(0).to_pylist()
            keys = batch.column(1).to_pylist() if len(resolved) > 1 else [None] * len(texts)
            values = fields.batch_values(batch, kept, len(texts))
            for text, key, kept_values in zip(texts, keys, values, strict=True):
                row += 1
                if text is None or not str(text).strip():
                    stats.blank += 1
                    continue
                yield Record(row, str(text), None if key is None else str(key), kept_values)
    except (pa.ArrowException, OSError) as exc:
        raise InputError(located(source.name, row + 1, f"unreadable Parquet data ({exc})")) from exc


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
        stats.records += 1
        yield record


def scan(source: InputSource, options: ReadOptions) -> ReadStats:
    """Read a whole input once to validate it and count its records, before any store is touched."""
    stats = ReadStats()
    for _ in read_records(source, options, stats):
        pass
    return stats


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


__all__ = ["InputSource", "ReadOptions", "Record", "ReadStats", "expand_inputs", "read_records", "scan"]
