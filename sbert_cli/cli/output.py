"""Result output: a table fitted to the terminal for people, jsonl/tsv/csv/json for programs. Always to stdout.

The table is one line per row: text columns share what the terminal width leaves and are cut
with an ellipsis, and the 13-digit row ids are left out where source and line already locate
every row. The other formats keep every column of every row in full.
"""

from __future__ import annotations

import csv
import json
import shutil
import sys
from collections.abc import Iterable, Sequence
from typing import Any, TextIO

OUTPUT_FORMATS = ("table", "jsonl", "tsv", "csv", "json")
# Columns that take the width the others leave, cut to fit; the rest are sized to their content.
FLEXIBLE_COLUMNS = ("text", "sentence", "sentence1", "sentence2", "query")
NUMERIC_COLUMNS = (
    "rank",
    "score",
    "cosine",
    "id",
    "line",
    "chunk",
    "start",
    "end",
    "dense_rank",
    "keyword_rank",
    "#",
    "spearman",
    "pearson",
    "pairs",
    "skipped",
)
_MAX_FIXED = 32  # a source path longer than this is cut too
_GAP = "  "


def default_format(stream: TextIO | None = None) -> str:
    """A table for people, jsonl for programs: decided by whether stdout is a terminal."""
    stream = stream or sys.stdout
    return "table" if stream.isatty() else "jsonl"


def terminal_width(default: int = 100) -> int:
    """The terminal's width ($COLUMNS first, as shells set it), or `default` when there is none."""
    return shutil.get_terminal_size((default, 24)).columns


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    return "" if value is None else str(value)


def _tsv_cell(value: Any) -> str:
    # TSV has no quoting: tabs and newlines inside a text would break the row.
    return _cell(value).replace("\t", " ").replace("\r", " ").replace("\n", " ")


def cut(text: str, width: int, keep_end: bool = False) -> str:
    """`text` on one line, at most `width` characters, an ellipsis marking what was cut (at the
    start with `keep_end`: a path's file name says more than its first directories)."""
    text = " ".join(text.split())
    if len(text) <= width:
        return text
    if width <= 1:
        return "…"[:width]
    return "…" + text[len(text) - width + 1 :].lstrip() if keep_end else text[: width - 1].rstrip() + "…"


def table_columns(rows: list[dict], columns: Sequence[str]) -> list[str]:
    """The columns a table shows: `id` only when some row has no source and line to find it by."""
    located = "source" in columns and "line" in columns
    if "id" in columns and located and all(r.get("source") is not None and r.get("line") is not None for r in rows):
        return [c for c in columns if c != "id"]
    return list(columns)


def format_table(
    rows: list[dict],
    columns: Sequence[str],
    width: int,
    title: str | None = None,
    headers: dict[str, str] | None = None,
) -> list[str]:
    """The lines of a table `width` characters wide at most, one per row; `headers` renames
    columns in the header line (search's `score` says which score it is)."""
    columns = table_columns(rows, columns)
    names = [(headers or {}).get(c, c) for c in columns]
    cells = [[" ".join(_cell(r.get(c)).split()) for c in columns] for r in rows]
    widths = [max([len(names[i])] + [len(row[i]) for row in cells]) for i, c in enumerate(columns)]
    flexible = [i for i, c in enumerate(columns) if c in FLEXIBLE_COLUMNS]
    for i, c in enumerate(columns):
        if i not in flexible and c not in NUMERIC_COLUMNS:
            widths[i] = min(widths[i], _MAX_FIXED)
    if flexible:
        fixed = sum(w for i, w in enumerate(widths) if i not in flexible) + len(_GAP) * (len(columns) - 1)
        share = max((width - fixed) // len(flexible), 10)
        for i in flexible:
            widths[i] = min(widths[i], share)
    lines = [cut(title, width)] if title else []
    for row in [names, *cells]:
        parts = [
            cut(v, w).rjust(w) if columns[i] in NUMERIC_COLUMNS else cut(v, w, columns[i] == "source").ljust(w)
            for i, (v, w) in enumerate(zip(row, widths, strict=True))
        ]
        line = _GAP.join(parts).rstrip()
        lines.append(line if len(line) <= width else line[: width - 1] + "…")
    return lines


def write_rows(
    rows: Iterable[dict],
    columns: Sequence[str],
    fmt: str,
    title: str | None = None,
    stream: TextIO | None = None,
    width: int | None = None,
    headers: dict[str, str] | None = None,
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
        lines = format_table(list(rows), columns, width or terminal_width(), title, headers)
        stream.write("\n".join(lines) + "\n")
    else:
        raise ValueError(f"unknown output format {fmt!r}")
    stream.flush()
