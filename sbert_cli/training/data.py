"""Training data: labelled rows from csv/tsv/jsonl/parquet (gzip allowed), checked before training.

A row is two or three texts and, optionally, a score. Three shapes follow from the columns:

    scored    (sentence1, sentence2, score)   score mapped from --score-range to [0, 1]
    pairs     (anchor, positive)              unscored: in-batch negatives or mined ones
    triplets  (anchor, positive, negative)

Every bad row stops the run with `file:line: message` (exit 2) while reading, so nothing is
trained on half-checked data. Columns are named or given as 0-based indexes; a delimited file
has a header when a column is given by name (or when its first row names the default columns).
"""

from __future__ import annotations

import gzip
import itertools
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from sbert_cli.errors import InputError, located
from sbert_cli.inputs.reader import (
    InputSource,
    ReadOptions,
    column_index,
    decoded_lines,
    delimited_rows,
    detect_format,
    json_objects,
)

SHAPES = ("scored", "pairs", "triplets")
TABLE_FORMATS = ("csv", "tsv", "jsonl", "parquet")
# Column names used when --text-columns is not given, tried in order against a header or JSON keys.
DEFAULT_COLUMNS = (("anchor", "positive", "negative"), ("anchor", "positive"), ("sentence1", "sentence2"))


@dataclass(frozen=True)
class ColumnOptions:
    """Which columns of a file hold the texts and the score, and how to read them."""

    text_columns: tuple[str, ...] | None = None  # 2 or 3, names or 0-based indexes
    score_column: str | None = None
    score_range: tuple[float, float] = (0.0, 1.0)
    header: bool | None = None  # delimited files; None: when a column is given by name
    format: str | None = None  # csv | tsv | jsonl | parquet; None: by extension
    encoding: str = "utf-8"


@dataclass
class TrainingData:
    """Validated rows, column by column, with where each came from."""

    sources: list[str]
    texts: list[list[str]]  # one list per text column
    scores: list[float] | None = None  # in [0, 1]
    origins: list[tuple[int, int]] = field(default_factory=list)  # (index into sources, line)

    def __len__(self) -> int:
        return len(self.origins)

    @property
    def shape(self) -> str:
        if self.scores is not None:
            return "scored"
        return "triplets" if len(self.texts) == 3 else "pairs"

    @property
    def column_names(self) -> tuple[str, ...]:
        if self.shape == "scored":
            return ("sentence1", "sentence2")
        return ("anchor", "positive", "negative")[: len(self.texts)]

    def where(self, row: int) -> str:
        """`file:line` of a row, for messages."""
        source, line = self.origins[row]
        return f"{self.sources[source]}:{line}"

    def as_columns(self) -> dict[str, list]:
        """Columns in the order and names sentence-transformers' losses take them."""
        columns: dict[str, list] = dict(zip(self.column_names, self.texts, strict=True))
        if self.scores is not None:
            columns["score"] = self.scores
        return columns


def parse_text_columns(value: str | None) -> tuple[str, ...] | None:
    """`--text-columns 5,6` or `anchor,positive,negative` -> a tuple of 2 or 3 columns."""
    if value is None:
        return None
    parts = tuple(p.strip() for p in value.split(","))
    if len(parts) not in (2, 3) or not all(parts):
        raise InputError(
            f"--text-columns {value!r}: give two columns (pairs) or three (anchor, positive, negative), "
            "by name or 0-based index"
        )
    return parts


def parse_score_range(value: str) -> tuple[float, float]:
    """`--score-range 0,5` -> (0.0, 5.0)."""
    try:
        low, high = (float(p) for p in value.split(","))
    except ValueError:
        raise InputError(f"--score-range {value!r}: give LO,HI, e.g. 0,5") from None
    if not (math.isfinite(low) and math.isfinite(high) and low < high):
        raise InputError(f"--score-range {value!r}: LO must be below HI")
    return low, high


def _source(path: str, forced: str | None) -> InputSource:
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{path}: no such file")
    fmt, gzipped = detect_format(path, forced)
    if fmt not in TABLE_FORMATS:
        raise InputError(f"{path}: training data must be csv, tsv, jsonl or parquet (got {fmt}); name it with --format")
    return InputSource(path, p, fmt, gzipped)


def _wanted(options: ColumnOptions, names: Sequence[str] | None) -> list[str]:
    """The columns to read, text columns first, the score column last."""
    texts = options.text_columns
    if texts is None:
        found = next((cols for cols in DEFAULT_COLUMNS if names and all(c in names for c in cols)), None)
        texts = found or ("0", "1")
    return [*texts, *([options.score_column] if options.score_column is not None else [])]


# -- raw rows per format: (line, [cell per wanted column]) ----------------------------------------
def _delimited(source: InputSource, options: ColumnOptions) -> Iterator[tuple[int, list[object]]]:
    lines = decoded_lines(source, ReadOptions(encoding=options.encoding))
    first = next(lines, None)
    if first is None:
        return
    tsv = source.format == "tsv" or (options.format is None and "\t" in first[1])  # STS's .csv files are TSV
    rows = delimited_rows(source, itertools.chain([first], lines), tsv)
    first_row = next(rows)
    names = [c.strip() for c in first_row[1]]
    wanted = _wanted(options, names)
    header = options.header
    if header is None:
        header = any(not c.isdigit() for c in wanted)
    indexes = [column_index(source, names if header else None, c, _option_for(c, options)) for c in wanted]
    for line, cells in rows if header else itertools.chain([first_row], rows):
        if not cells or all(not c.strip() for c in cells):
            continue
        if max(indexes) >= len(cells):
            raise InputError(located(source.name, line, f"row has {len(cells)} columns, no column {max(indexes)}"))
        yield line, [cells[i] for i in indexes]


def _option_for(column: str, options: ColumnOptions) -> str:
    return "--score-column" if column == options.score_column else "--text-columns"


def _jsonl(source: InputSource, options: ColumnOptions) -> Iterator[tuple[int, list[object]]]:
    wanted: list[str] | None = None
    for line, obj in json_objects(source, ReadOptions(encoding=options.encoding)):
        if obj is None:
            continue
        keys = list(obj)
        wanted = wanted or _wanted(options, keys)
        cells: list[object] = []
        for column in wanted:
            if column in obj:
                cells.append(obj[column])
            elif column.isdigit() and int(column) < len(keys):
                cells.append(obj[keys[int(column)]])
            else:
                raise InputError(
                    located(source.name, line, f"no field {column!r} (choose with {_option_for(column, options)})")
                )
        yield line, cells


def _parquet(source: InputSource, options: ColumnOptions) -> Iterator[tuple[int, list[object]]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    assert source.path is not None
    data = pa.BufferReader(gzip.decompress(source.path.read_bytes())) if source.gzipped else source.path
    try:
        table = pq.read_table(data)
    except (pa.ArrowException, OSError) as exc:
        raise InputError(located(source.name, None, f"not a readable Parquet file ({exc})")) from exc
    names = table.column_names
    resolved = []
    for column in _wanted(options, names):
        name = names[int(column)] if column.isdigit() and int(column) < len(names) else column
        if name not in names:
            raise InputError(located(source.name, 1, f"no column {column!r} (columns: {', '.join(names)})"))
        resolved.append(table.column(name).to_pylist())
    for row, cells in enumerate(zip(*resolved, strict=True), start=1):
        yield row, list(cells)


_ROWS = {"csv": _delimited, "tsv": _delimited, "jsonl": _jsonl, "parquet": _parquet}


# -- checking --------------------------------------------------------------------------------------
def _text(source: InputSource, line: int, value: object, column: str) -> str:
    if value is None or (isinstance(value, str) and not value.strip()):
        raise InputError(located(source.name, line, f"empty text in {column}"))
    if not isinstance(value, str):
        raise InputError(located(source.name, line, f"{column} holds {value!r}, not a string"))
    return value


def _score(source: InputSource, line: int, value: object, options: ColumnOptions) -> float:
    """The score mapped from --score-range to [0, 1]; a non-number or one outside the range stops."""
    number = None
    if not isinstance(value, bool) and value is not None:
        try:
            number = float(str(value).strip()) if not isinstance(value, int | float) else float(value)
        except ValueError:
            number = None
    if number is None or not math.isfinite(number):
        raise InputError(located(source.name, line, f"score {value!r} is not a number"))
    low, high = options.score_range
    if not low <= number <= high:
        raise InputError(
            located(
                source.name,
                line,
                f"score {number:g} is outside --score-range {low:g},{high:g} (give the scale with --score-range LO,HI)",
            )
        )
    return (number - low) / (high - low)


def read_training_data(paths: Sequence[str], options: ColumnOptions | None = None) -> TrainingData:
    """Read and check every row of every file; InputError names the first bad one as file:line."""
    options = options or ColumnOptions()
    if not paths:
        raise InputError("no training data given")
    text_count = len(options.text_columns) if options.text_columns else None
    if text_count == 3 and options.score_column is not None:
        raise InputError("a score goes with two text columns; triplets (anchor, positive, negative) take no score")
    data = TrainingData(sources=[], texts=[], scores=[] if options.score_column is not None else None)
    last: tuple[str, int] = (paths[-1], 1)
    for index, path in enumerate(paths):
        source = _source(path, options.format)
        data.sources.append(source.name)
        for line, cells in _ROWS[source.format](source, options):
            texts = cells[: len(cells) - (data.scores is not None)]
            if not data.texts:
                data.texts = [[] for _ in texts]
            elif len(texts) != len(data.texts):
                raise InputError(
                    located(source.name, line, f"{len(texts)} text columns here, {len(data.texts)} before")
                )
            for position, value in enumerate(texts):
                column = (
                    f"column {options.text_columns[position]!r}" if options.text_columns else f"text {position + 1}"
                )
                data.texts[position].append(_text(source, line, value, column))
            if data.scores is not None:
                data.scores.append(_score(source, line, cells[-1], options))
            data.origins.append((index, line))
            last = (source.name, line)
    if len(data) < 2:
        raise InputError(located(last[0], last[1], f"{len(data)} row(s) of training data; at least two are needed"))
    return data
