"""Similarity: cosine of sentences, pair files scored pair by pair, and STS-style correlations.

Pair files are tsv, csv or jsonl, with or without a header; columns are chosen by name or by
0-based index. TSV is read literally (a `"` is text, not quoting), because real STS files carry
unbalanced quotes that a CSV parser would swallow across lines. The correlations are computed
here with numpy (scipy is not a runtime dependency): Spearman is Pearson of average ranks.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

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


# -- cosine -----------------------------------------------------------------------------------------
def unit_rows(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to length 1 (zero rows stay zero), so a dot product is a cosine whatever the
    encoder's normalize setting was."""
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)


def cosine_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine of every row of `a` with every row of `b`: (len(a), len(b))."""
    return unit_rows(a) @ unit_rows(b).T


def cosine_pairs(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine of row i of `a` with row i of `b`."""
    return np.einsum("ij,ij->i", unit_rows(a), unit_rows(b))


def encode_unique(encoder, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Embed each distinct text once: STS files repeat sentences, and the model is the cost.
    Returns (embeddings of the distinct texts, index of each input text into them)."""
    positions: dict[str, int] = {}
    index = np.fromiter((positions.setdefault(t, len(positions)) for t in texts), dtype=np.int64, count=len(texts))
    return encoder.encode(list(positions)), index


def score_sentences(encoder, sentences: Sequence[str]) -> list[dict]:
    """Cosine of the first sentence to each of the others, in the order given."""
    if len(sentences) < 2:
        raise InputError(f"need at least two sentences to compare (got {len(sentences)})")
    vectors = encoder.encode(list(sentences))
    scores = cosine_matrix(vectors[:1], vectors[1:])[0]
    return [
        {"sentence1": sentences[0], "sentence2": s, "score": round(float(v), 6)}
        for s, v in zip(sentences[1:], scores, strict=True)
    ]


def similarity_matrix(encoder, sentences: Sequence[str]) -> np.ndarray:
    """The full pairwise cosine matrix of `sentences`."""
    if len(sentences) < 2:
        raise InputError(f"need at least two sentences to compare (got {len(sentences)})")
    vectors = encoder.encode(list(sentences))
    return cosine_matrix(vectors, vectors)


# -- correlations -----------------------------------------------------------------------------------
def rank_average(values: Sequence[float] | np.ndarray) -> np.ndarray:
    """1-based ranks, ties sharing the average of the ranks they span (scipy's `rankdata`)."""
    x = np.asarray(values, dtype=np.float64)
    n = x.shape[0]
    if n == 0:
        return np.empty(0, dtype=np.float64)
    order = np.argsort(x, kind="mergesort")
    ordered = x[order]
    starts_group = np.empty(n, dtype=bool)
    starts_group[0] = True
    starts_group[1:] = ordered[1:] != ordered[:-1]
    group = np.cumsum(starts_group) - 1
    starts = np.flatnonzero(starts_group)
    ends = np.append(starts[1:], n)  # exclusive
    average = (starts + ends + 1) / 2.0  # mean of the 1-based ranks start+1 .. end
    ranks = np.empty(n, dtype=np.float64)
    ranks[order] = average[group]
    return ranks


def pearson(x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray) -> float:
    """Pearson correlation; NaN when either side is constant (it is undefined there)."""
    a = np.asarray(x, dtype=np.float64)
    b = np.asarray(y, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError("pearson needs two 1-D sequences of the same length")
    if a.shape[0] < 2:
        return math.nan
    a = a - a.mean()
    b = b - b.mean()
    denominator = math.sqrt(float(a @ a) * float(b @ b))
    if denominator == 0.0:
        return math.nan
    # Rounding can push |r| a hair past 1 for perfectly correlated data.
    return float(np.clip((a @ b) / denominator, -1.0, 1.0))


def spearman(x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray) -> float:
    """Spearman rank correlation: Pearson of average ranks (ties handled as scipy does)."""
    return pearson(rank_average(x), rank_average(y))


@dataclass
class Correlation:
    spearman: float
    pearson: float
    pairs: int

    def as_dict(self) -> dict:
        """Coefficients in [-1, 1]; an undefined one (constant scores or gold) is null, not NaN,
        so the JSON stays valid."""
        return {
            "spearman": None if math.isnan(self.spearman) else round(self.spearman, 6),
            "pearson": None if math.isnan(self.pearson) else round(self.pearson, 6),
            "pairs": self.pairs,
        }


def correlate(scores: Sequence[float] | np.ndarray, gold: Sequence[float] | np.ndarray) -> Correlation:
    if len(scores) < 2:
        raise InputError(f"need at least two scored pairs with a gold value for a correlation (got {len(scores)})")
    return Correlation(spearman(scores, gold), pearson(scores, gold), len(scores))


# -- pair files -------------------------------------------------------------------------------------
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


def _pairs_delimited(source: InputSource, fmt: str, options: PairOptions, out: PairSet) -> None:
    columns = options.text_columns
    named = [c for c in (*(columns or ()), options.gold_column or "") if c and not c.isdigit()]
    header_flag = options.header if options.header is not None else bool(named)
    header: list[str] | None = None
    idx: tuple[int, int, int | None] | None = None
    for lineno, cells in _rows_delimited(source, fmt, options):
        if idx is None:
            if _is_blank(cells):
                out.blank += 1
                continue
            first_names = [c.strip() for c in cells]
            if columns is None:
                # No columns named: sentence1/sentence2 from a header that has them, else 0 and 1.
                has_defaults = all(n in first_names for n in DEFAULT_NAMES)
                if options.header is not False and has_defaults:
                    header_flag = True
                if header_flag and not has_defaults:
                    raise InputError(
                        located(
                            source.name, lineno, "the header has no sentence1/sentence2; choose with --text-columns"
                        )
                    )
                cols = DEFAULT_NAMES if header_flag else ("0", "1")
            else:
                cols = columns
            if header_flag:
                header = first_names
            gold = options.gold_column
            idx = (
                column_index(source, header, cols[0], "--text-columns"),
                column_index(source, header, cols[1], "--text-columns"),
                column_index(source, header, gold, "--gold-column") if gold is not None else None,
            )
            if header_flag:
                continue
        if _is_blank(cells):
            out.blank += 1
            continue
        needed = max(i for i in idx if i is not None)
        if needed >= len(cells):
            raise InputError(
                located(source.name, lineno, f"row has {len(cells)} columns, no column {needed} (0-based)")
            )
        _add(out, source, lineno, cells[idx[0]], cells[idx[1]], cells[idx[2]] if idx[2] is not None else None, options)
    if header_flag and idx is None:
        raise InputError(located(source.name, None, "empty file (expected a header row)"))


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


def score_pairs(encoder, pairs: PairSet) -> np.ndarray:
    """Cosine of each pair, each distinct sentence embedded once."""
    if not len(pairs):
        return np.empty(0, dtype=np.float32)
    vectors, index = encode_unique(encoder, pairs.sentence1 + pairs.sentence2)
    n = len(pairs)
    return cosine_pairs(vectors[index[:n]], vectors[index[n:]])


def pair_rows(pairs: PairSet, scores: np.ndarray) -> Iterator[dict]:
    """Output rows: line, sentence1, sentence2, score (and gold when there is one)."""
    for i, line in enumerate(pairs.lines):
        row = {
            "line": line,
            "sentence1": pairs.sentence1[i],
            "sentence2": pairs.sentence2[i],
            "score": round(float(scores[i]), 6),
        }
        if pairs.gold is not None:
            row["gold"] = pairs.gold[i]
        yield row
