"""Kept fields (`--keep-fields a,b`): record fields stored as typed Parquet columns.

Types come from the data: JSON booleans, integers, floats and strings (an ISO-8601 date or
date-time string is a timestamp); CSV/TSV cells are read the same way from their text (empty:
null); Parquet columns keep their own type. A missing field is null. Integers and floats mix
into a float field; any other change of type between records is bad input, refused with the
file and line. Timestamps without a zone are taken as UTC.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Sequence
from typing import Any

from sbert_cli.errors import InputError, located

STRING, INTEGER, FLOAT, BOOLEAN, TIMESTAMP = "string", "integer", "float", "boolean", "timestamp"
TYPES = (STRING, INTEGER, FLOAT, BOOLEAN, TIMESTAMP)
# sbert's own columns: a kept field may not take their names.
RESERVED = ("id", "text", "source", "line", "key", "chunk", "start", "end", "embedding")
_TIMESTAMP = re.compile(r"\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?)?(Z|[+-]\d{2}:?\d{2})?")
_INTEGER = re.compile(r"[+-]?\d+")
_FLOAT = re.compile(r"[+-]?(\d+\.\d*|\.\d+|\d+)([eE][+-]?\d+)?|[+-]?(inf|nan)", re.IGNORECASE)


def parse_names(spec: str | None) -> tuple[str, ...]:
    """`a,b` -> ("a", "b"), refusing empty, repeated and reserved names."""
    if not spec:
        return ()
    names = tuple(n.strip() for n in spec.split(","))
    for name in names:
        if not name:
            raise InputError(f"--keep-fields {spec}: empty field name")
        if name in RESERVED:
            raise InputError(f"--keep-fields {name}: clashes with sbert's own column {name!r}; rename it in the data")
    if len(set(names)) != len(names):
        raise InputError(f"--keep-fields {spec}: a field is named twice")
    return names


def parse_timestamp(text: str) -> dt.datetime:
    value = dt.datetime.fromisoformat(text.replace("Z", "+00:00") if text.endswith("Z") else text)
    if value.tzinfo is not None:
        value = value.astimezone(dt.UTC).replace(tzinfo=None)
    return value


def json_value(value: Any) -> tuple[str | None, Any]:
    """(type, value) of a JSON value; (None, None) for null."""
    if value is None:
        return None, None
    if isinstance(value, bool):
        return BOOLEAN, value
    if isinstance(value, int):
        return INTEGER, value
    if isinstance(value, float):
        return FLOAT, value
    if isinstance(value, str):
        if _TIMESTAMP.fullmatch(value):
            try:
                return TIMESTAMP, parse_timestamp(value)
            except ValueError:
                pass
        return STRING, value
    raise ValueError(f"is {'an object' if isinstance(value, dict) else 'a list'}; keep only scalar fields")


def cell_value(cell: str | None) -> tuple[str | None, Any]:
    """(type, value) of a CSV/TSV cell, read from its text."""
    if cell is None or not cell.strip():
        return None, None
    text = cell.strip()
    if _INTEGER.fullmatch(text):
        return INTEGER, int(text)
    if _FLOAT.fullmatch(text):
        return FLOAT, float(text)
    if text.lower() in ("true", "false"):
        return BOOLEAN, text.lower() == "true"
    return json_value(text)


def arrow_type_name(arrow_type: Any) -> str:
    """A Parquet column's type as a kept-field type."""
    import pyarrow.types as pt

    checks = (
        (pt.is_boolean, BOOLEAN),
        (pt.is_integer, INTEGER),
        (pt.is_floating, FLOAT),
        (lambda t: pt.is_timestamp(t) or pt.is_date(t), TIMESTAMP),
        (lambda t: pt.is_string(t) or pt.is_large_string(t), STRING),
    )
    for check, name in checks:
        if check(arrow_type):
            return name
    raise ValueError(f"has Parquet type {arrow_type}, which cannot be kept")


def merge_type(old: str | None, new: str | None) -> str | None:
    """The field's type after one more value; raises ValueError on a change of type."""
    if new is None or old == new:
        return old if new is None else new
    if old is None:
        return new
    if {old, new} == {INTEGER, FLOAT}:
        return FLOAT
    raise ValueError(f"was {old}, now {new}")


class FieldChecker:
    """Types each kept field as records are read, refusing a change with the file and line."""

    def __init__(self, source: str, names: Sequence[str], types: dict[str, str | None] | None = None) -> None:
        self.source = source
        self.names = tuple(names)
        self.types: dict[str, str | None] = dict(types or dict.fromkeys(self.names))

    def typed(self, line: int, raw: dict[str, Any], reader) -> dict[str, Any]:
        """Kept values of one record; `reader` gives (type, value) for a raw value."""
        values = {}
        for name in self.names:
            try:
                kind, value = reader(raw.get(name))
                self.types[name] = merge_type(self.types.get(name), kind)
            except ValueError as exc:
                raise InputError(located(self.source, line, f"field {name!r} {exc}")) from None
            values[name] = value
        return values


def arrow_column(name: str, kind: str | None, values: list[Any]):
    """A typed Arrow array for one kept field (all nulls and no type yet: a string column)."""
    import pyarrow as pa

    arrow = {
        STRING: pa.string(),
        INTEGER: pa.int64(),
        FLOAT: pa.float64(),
        BOOLEAN: pa.bool_(),
        TIMESTAMP: pa.timestamp("us", tz="UTC"),
        None: pa.string(),
    }[kind]
    if kind == FLOAT:
        values = [None if v is None else float(v) for v in values]
    elif kind == TIMESTAMP:
        values = [_utc(v) for v in values]
    try:
        return pa.array(values, arrow)
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, OverflowError) as exc:
        raise InputError(f"field {name!r}: a value does not fit the field's type {kind} ({exc})") from None


def _utc(value: Any) -> dt.datetime | None:
    if value is None:
        return None
    if not isinstance(value, dt.datetime):  # a date
        return dt.datetime.combine(value, dt.time())
    return value.astimezone(dt.UTC).replace(tzinfo=None) if value.tzinfo is not None else value


def python_value(value: Any) -> tuple[str | None, Any]:
    """(type, value) of a value Arrow read from a Parquet column (its strings stay strings)."""
    if isinstance(value, dt.date):
        return TIMESTAMP, _utc(value)
    if isinstance(value, str):
        return STRING, value
    return json_value(value)


# -- the reader's hooks ---------------------------------------------------------------------------
def kept_json(obj: dict, names: Sequence[str], get) -> dict[str, Any] | None:
    """Raw values of the kept fields of a JSON object (dotted names reach inside); missing: None."""
    if not names:
        return None
    values = {}
    for name in names:
        try:
            values[name] = get(obj, name)
        except KeyError:
            values[name] = None
    return values


def kept_cells(source, header: list[str] | None, row: list[str], names: Sequence[str]) -> dict[str, Any] | None:
    """Raw cells of the kept columns of a CSV/TSV row; a column the file lacks is null."""
    if not names:
        return None
    if header is None:
        raise InputError(located(source.name, None, "--keep-fields names header columns, but the file has no header"))
    return {n: row[header.index(n)] if n in header and header.index(n) < len(row) else None for n in names}


def parquet_columns(source, schema, names: Sequence[str]) -> list[str]:
    """The kept fields a Parquet file has (the others are null), refusing types that cannot be kept."""
    present = [n for n in names if n in schema.names]
    for name in present:
        try:
            arrow_type_name(schema.field(name).type)
        except ValueError as exc:
            raise InputError(located(source.name, None, f"field {name!r} {exc}")) from None
    return present


def batch_values(batch, present: Sequence[str], rows: int) -> list[dict[str, Any] | None]:
    """Raw kept values per row of a Parquet record batch."""
    if not present:
        return [None] * rows
    columns = {name: batch.column(batch.schema.get_field_index(name)).to_pylist() for name in present}
    return [{name: values[i] for name, values in columns.items()} for i in range(rows)]


def typed_records(source, names: Sequence[str], records, stats):
    """Records with their kept values typed, and each field's type kept in `stats.field_types`."""
    if source.format == "txt":
        raise InputError(f"{source.name}: --keep-fields needs JSON lines, CSV/TSV or Parquet input, not text lines")
    reader = {"jsonl": json_value, "parquet": python_value}.get(source.format, cell_value)
    checker = FieldChecker(source.name, names, stats.field_types)
    stats.field_types = checker.types
    for record in records:
        record.fields = checker.typed(record.line, record.fields or {}, reader)
        yield record
