"""Pair files: tsv, csv or jsonl, with or without a header, read into a `PairSet`.

Columns are chosen by name or by 0-based index. TSV is read literally (a `"` is text, not
quoting), because real STS files carry unbalanced quotes that a CSV parser would swallow across
lines. When no column is named and the header has no sentence1/sentence2, columns 0 and 1 are a
guess: `check_guessed_columns` refuses it when they hold numbers, a few repeated labels or file
names (the STS files start with genre and file name), rather than score the wrong text.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from sbert_cli.errors import InputError, located
from sbert_cli.inputs.reader import (
    STDIN,
    InputSource,
    ReadOptions,
    column_index,
    decoded_lines,
    delimited_rows,
    json_objects,
)

PAIR_FORMATS = ("tsv", "csv", "jsonl")
BAD_GOLD_POLICIES = ("stop", "skip")
DEFAULT_NAMES = ("sentence1", "sentence2")
_PAIR_EXTENSIONS = {
    ".tsv": "tsv",
    ".tab": "tsv",
    ".csv": "csv",
    ".txt": "tsv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
}


@dataclass
class PairOptions:
    text_columns: tuple[str, str] | None = None  # names or 0-based indexes; None: sentence1,sentence2 or 0,1
    gold_column: str | None = None
    format: str | None = None  # tsv | csv | jsonl; None: by extension, delimiter sniffed for .csv/.tsv
    header: bool | None = None  # None: when a column is given by name (or the first row names sentence1/2)
    on_bad_gold: str = "stop"
    encoding: str = "utf-8"


@dataclass
class PairSet:
    """The pairs of a pair file, in file order, with the line each came from."""

    source: str
    lines: list[int] = field(default_factory=list)
    sentence1: list[str] = field(default_factory=list)
    sentence2: list[str] = field(default_factory=list)
    gold: list[float] | None = None
    skipped_gold: int = 0  # rows dropped because their gold value was not a number
    first_skipped: int | None = None  # line of the first of them, for the message
    blank: int = 0

    def __len__(self) -> int:
        return len(self.lines)


def parse_columns(value: str | None) -> tuple[str, str] | None:
    """`--text-columns 5,6` or `--text-columns s1,s2` -> ("5", "6")."""
    if value is None:
        return None
    parts = [p.strip() for p in value.split(",")]
    if len(parts) != 2 or not all(parts):
        raise InputError(f"--text-columns {value!r}: give two columns, by name or 0-based index, e.g. 5,6")
    return parts[0], parts[1]


def pair_format(path: str, forced: str | None) -> str:
    if forced:
        if forced not in PAIR_FORMATS:
            raise InputError(f"--pairs-format {forced}: choose from {', '.join(PAIR_FORMATS)}")
        return forced
    name = path.lower().removesuffix(".gz")
    return _PAIR_EXTENSIONS.get(Path(name).suffix, "tsv")


def _gold_value(raw: object) -> float | None:
    """A finite number, or None when the cell is not one."""
    if isinstance(raw, bool) or raw is None:
        return None
    if isinstance(raw, int | float):
        value = float(raw)
    else:
        try:
            value = float(str(raw).strip())
        except ValueError:
            return None
    return value if math.isfinite(value) else None


def _rows_delimited(source: InputSource, fmt: str, options: PairOptions) -> Iterator[tuple[int, list[str]]]:
    """(line, cells) of a tsv or csv file; the first line decides the delimiter unless forced."""
    lines = decoded_lines(source, ReadOptions(encoding=options.encoding))
    first = next(lines, None)
    if first is None:
        return
    if not options.format:
        # Files named .csv are often tab-separated (the STS benchmark is): trust the first line.
        fmt = "tsv" if "\t" in first[1] else "csv"
    yield from delimited_rows(source, itertools.chain([first], lines), fmt == "tsv")


def _is_blank(cells: list[str]) -> bool:
    return not cells or all(not c.strip() for c in cells)


def _choose_columns(
    source: InputSource, lineno: int, cells: list[str], options: PairOptions
) -> tuple[bool, tuple[int, int, int | None], bool]:
    """From the first non-blank row: (it is a header, column indexes (s1, s2, gold), guessed)."""
    columns = options.text_columns
    named = [c for c in (*(columns or ()), options.gold_column or "") if c and not c.isdigit()]
    header_flag = options.header if options.header is not None else bool(named)
    first_names = [c.strip() for c in cells]
    guessed = False
    if columns is None:
        # No columns named: sentence1/sentence2 from a header that has them, else 0 and 1.
        has_defaults = all(n in first_names for n in DEFAULT_NAMES)
        if options.header is not False and has_defaults:
            header_flag = True
        if header_flag and not has_defaults:
            raise InputError(
                located(source.name, lineno, "the header has no sentence1/sentence2; choose with --text-columns")
            )
        guessed = not header_flag
        columns = DEFAULT_NAMES if header_flag else ("0", "1")
    header = first_names if header_flag else None
    gold = options.gold_column
    idx = (
        column_index(source, header, columns[0], "--text-columns"),
        column_index(source, header, columns[1], "--text-columns"),
        column_index(source, header, gold, "--gold-column") if gold is not None else None,
    )
    return header_flag, idx, guessed


def _pairs_delimited(source: InputSource, fmt: str, options: PairOptions, out: PairSet) -> None:
    idx: tuple[int, int, int | None] | None = None
    header_flag, guessed, sample = bool(options.header), False, []
    for lineno, cells in _rows_delimited(source, fmt, options):
        if idx is None:
            if _is_blank(cells):
                out.blank += 1
                continue
            header_flag, idx, guessed = _choose_columns(source, lineno, cells, options)
            if header_flag:
                continue
        if _is_blank(cells):
            out.blank += 1
            continue
        if guessed and len(sample) < GUESS_SAMPLE:
            sample.append(cells)
            if len(sample) == GUESS_SAMPLE:  # decided early: a large file is refused before it is read
                check_guessed_columns(source.name, sample)
        needed = max(i for i in idx if i is not None)
        if needed >= len(cells):
            raise InputError(
                located(source.name, lineno, f"row has {len(cells)} columns, no column {needed} (0-based)")
            )
        _add(out, source, lineno, cells[idx[0]], cells[idx[1]], cells[idx[2]] if idx[2] is not None else None, options)
    if guessed and len(sample) < GUESS_SAMPLE:
        check_guessed_columns(source.name, sample)
    if header_flag and idx is None:
        raise InputError(located(source.name, None, "empty file (expected a header row)"))


# -- is the guess text? ---------------------------------------------------------------------------
GUESS_SAMPLE = 200  # rows that decide whether columns 0 and 1 hold sentences
_FILE_NAME = re.compile(r"^\S*[/\\]\S*$|^[^\s/\\]+\.[A-Za-z][A-Za-z0-9]{0,4}$")


def not_text(values: list[str]) -> str | None:
    """Why a column's cells are not sentences (numbers, file names, a few repeated labels), or None."""
    cells = [v.strip() for v in values if v.strip()]
    if not cells:
        return None
    if sum(_gold_value(v) is not None for v in cells) >= 0.9 * len(cells):
        return "numbers"
    if sum(bool(_FILE_NAME.match(v)) for v in cells) >= 0.9 * len(cells):
        return "file names"
    distinct = sorted(set(cells))
    if len(cells) >= 10 and len(distinct) <= min(10, 0.2 * len(cells)):
        shown = ", ".join(distinct[:4]) + (", ..." if len(distinct) > 4 else "")
        return f"only {len(distinct)} distinct value{'s' if len(distinct) > 1 else ''} in {len(cells)} rows ({shown})"
    return None


def check_guessed_columns(name: str, rows: list[list[str]]) -> None:
    """Refuse guessed columns 0 and 1 that do not hold sentences: scoring them would print a
    plausible-looking but meaningless correlation (exit code 2, with the first row and a hint)."""
    reasons = [(i, not_text([r[i] for r in rows if i < len(r)])) for i in (0, 1)]
    reasons = [(i, why) for i, why in reasons if why]
    if not reasons or not rows:
        return
    what = "; ".join(f"column {i} holds {why}" for i, why in reasons)
    first = "  ".join(f"{i}={_short(cell)}" for i, cell in enumerate(rows[0]))
    raise InputError(
        f"{name}: no --text-columns given, and columns 0 and 1 do not look like sentences: {what}; "
        f"first row: {first}; name the two sentence columns, e.g. --text-columns {_suggest(rows)}"
    )


def _short(cell: str, width: int = 40) -> str:
    cell = " ".join(cell.split())
    return cell if len(cell) <= width else cell[: width - 1] + "…"


def _suggest(rows: list[list[str]]) -> str:
    """The two columns with the most multi-word cells, in file order (or A,B when none has any)."""
    width = max(len(r) for r in rows)
    wordy = [sum(len(r[i].split()) > 1 for r in rows if i < len(r)) for i in range(width)]
    best = sorted(sorted(range(width), key=lambda i: -wordy[i])[:2])
    return ",".join(map(str, best)) if len(best) == 2 and min(wordy[i] for i in best) > 0 else "A,B"


def _json_field(obj: dict, column: str) -> object:
    if column in obj:
        return obj[column]
    if column.isdigit():
        keys = list(obj)
        if int(column) < len(keys):
            return obj[keys[int(column)]]
    raise KeyError(column)


def _pairs_jsonl(source: InputSource, options: PairOptions, out: PairSet) -> None:
    cols = options.text_columns or DEFAULT_NAMES
    for lineno, obj in json_objects(source, ReadOptions(encoding=options.encoding)):
        if obj is None:
            out.blank += 1
            continue
        values = []
        for column, what in ((cols[0], "--text-columns"), (cols[1], "--text-columns"), (options.gold_column, None)):
            if column is None:
                values.append(None)
                continue
            try:
                values.append(_json_field(obj, column))
            except KeyError:
                what = what or "--gold-column"
                raise InputError(located(source.name, lineno, f"no field {column!r} (choose with {what})")) from None
        for text in values[:2]:
            if not isinstance(text, str):
                raise InputError(located(source.name, lineno, f"field value {text!r} is not a string"))
        _add(out, source, lineno, values[0], values[1], values[2], options)


def _add(
    out: PairSet, source: InputSource, lineno: int, s1: str, s2: str, raw_gold: object, options: PairOptions
) -> None:
    if options.gold_column is not None:
        value = _gold_value(raw_gold)
        if value is None:
            if options.on_bad_gold == "stop":
                raise InputError(
                    located(
                        source.name,
                        lineno,
                        f"gold value {raw_gold!r} is not a number (a header row? pass --header; "
                        "or --on-bad-gold skip to leave such pairs out)",
                    )
                )
            out.skipped_gold += 1
            if out.first_skipped is None:
                out.first_skipped = lineno
            return
        assert out.gold is not None
        out.gold.append(value)
    out.lines.append(lineno)
    out.sentence1.append(s1)
    out.sentence2.append(s2)


def read_pairs(path: str, options: PairOptions | None = None) -> PairSet:
    """Read every pair of a pair file (or `-` for stdin); bad rows raise InputError with file:line."""
    options = options or PairOptions()
    if options.on_bad_gold not in BAD_GOLD_POLICIES:
        raise InputError(f"--on-bad-gold {options.on_bad_gold}: choose stop or skip")
    fmt = pair_format("stdin.tsv" if path == STDIN else path, options.format)
    if path == STDIN:
        source = InputSource("<stdin>", None, fmt, False)
    else:
        p = Path(path)
        if not p.is_file():
            raise InputError(f"{path}: no such file")
        source = InputSource(path, p, fmt, path.lower().endswith(".gz"))
    out = PairSet(source=source.name, gold=[] if options.gold_column is not None else None)
    if fmt == "jsonl":
        _pairs_jsonl(source, options, out)
    else:
        _pairs_delimited(source, fmt, options, out)
    return out
