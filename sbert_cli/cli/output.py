"""Result output: a rich table on a terminal, jsonl/tsv/csv/json for pipes. Always to stdout."""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Iterable, Sequence
from typing import Any, TextIO

OUTPUT_FORMATS = ("table", "jsonl", "tsv", "csv", "json")


def default_format(stream: TextIO | None = None) -> str:
    """A table for people, jsonl for programs: decided by whether stdout is a terminal."""
    stream = stream or sys.stdout
    return "table" if stream.isatty() else "jsonl"


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    return "" if value is None else str(value)


def _tsv_cell(value: Any) -> str:
    # TSV has no quoting: tabs and newlines inside a text would break the row.
    return _cell(value).replace("\t", " ").replace("\r", " ").replace("\n", " ")


def write_rows(
    rows: Iterable[dict],
    columns: Sequence[str],
    fmt: str,
    title: str | None = None,
    stream: TextIO | None = None,
) -> None:
    """Write dict rows in `fmt`; `columns` fixes the order (and the table/tsv/csv header)."""
    stream = stream or sys.stdout
    if fmt == "jsonl":
        for row in rows:
            stream.write(json.dumps({c: row.get(c) for c in columns}, ensure_ascii=False) + "\n")
    elif fmt == "json":
        json.dump([{c: row.get(c) for c in columns} for row in rows], stream, ensure_ascii=False, indent=1)
        stream.write("\n")
    elif fmt == "tsv":
        stream.write("\t".join(columns) + "\n")
        for row in rows:
            stream.write("\t".join(_tsv_cell(row.get(c)) for c in columns) + "\n")
    elif fmt == "csv":
        writer = csv.writer(stream, lineterminator="\n")
        writer.writerow(columns)
        for row in rows:
            writer.writerow(["" if row.get(c) is None else row.get(c) for c in columns])
    elif fmt == "table":
        from rich.console import Console
        from rich.table import Table

        table = Table(title=title, show_lines=False)
        for c in columns:
            table.add_column(c, overflow="fold", justify="right" if c in ("rank", "score", "id", "line") else "left")
        for row in rows:
            table.add_row(*(_cell(row.get(c)) for c in columns))
        Console(file=stream).print(table)
    else:
        raise ValueError(f"unknown output format {fmt!r}")
    stream.flush()
