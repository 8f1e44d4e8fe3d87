"""CSV and TSV rows from decoded lines, with the line each record starts on.

A stray opening quote makes RFC 4180 CSV read everything after it, newlines included, as one
field: Python's csv module (not strict) returns that field at the end of the file without a
word, which turns a whole file into one "text". So a quoted field still open at the end of the
file is an error, and so is one that runs on over more lines than any real cell does.
"""

from __future__ import annotations

import csv
import sys
from collections.abc import Iterator

from sbert_cli.errors import InputError, located
from sbert_cli.inputs.decoding import described, shown_names
from sbert_cli.inputs.sources import InputSource

# Paragraphs can exceed csv's 128 KiB field limit; raised while a CSV is read, then put back
# (csv keeps it process-wide).
CSV_FIELD_LIMIT = min(sys.maxsize, 2**31 - 1)
# A quoted cell may hold newlines (a paragraph, a poem); one spanning more lines than this is
# taken for a quote opened by mistake, which would swallow the rows after it.
MAX_RECORD_LINES = 1000
_QUOTE_ADVICE = (
    "fix the quote (a quote inside a cell is written twice, in a quoted cell), or read the file with --format tsv"
)


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
            located(source.name, 1, f"no column {column!r} in the header ({shown_names(header)}); choose with {what}")
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
    ended = [False]  # the lines ran out: a record returned after that was cut off inside quotes

    def text() -> Iterator[str]:
        for lineno, line in lines:
            current[0] = lineno
            yield line
        ended[0] = True

    start = 1
    previous_limit = csv.field_size_limit(CSV_FIELD_LIMIT)
    try:
        for row in csv.reader(text()):
            if ended[0]:
                raise InputError(
                    located(
                        source.name,
                        start,
                        f"a quoted field is never closed (it runs to the end of the file); {_QUOTE_ADVICE}",
                    )
                )
            if current[0] - start >= MAX_RECORD_LINES:
                raise InputError(
                    located(
                        source.name,
                        start,
                        f"a quoted field runs over {current[0] - start + 1} lines (to line {current[0]}); {_QUOTE_ADVICE}",
                    )
                )
            yield start, row
            start = current[0] + 1
    except csv.Error as exc:
        raise InputError(located(source.name, current[0], f"malformed CSV ({described(exc)})")) from exc
    finally:
        csv.field_size_limit(previous_limit)
