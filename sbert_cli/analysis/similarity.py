"""Similarity: cosine of sentences, pair files scored pair by pair, and STS-style correlations.

Pair files are read by `analysis/pairs.py` (re-exported here). The correlations are computed
here with numpy (scipy is not a runtime dependency): Spearman is Pearson of average ranks.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from sbert_cli.analysis.pairs import PairOptions, PairSet, parse_columns, read_pairs
from sbert_cli.analysis.vectors import unit_rows
from sbert_cli.errors import InputError

if TYPE_CHECKING:
    from sbert_cli.analysis.records import StoreRecords

__all__ = [
    "PairOptions",
    "PairSet",
    "correlate",
    "cosine_matrix",
    "pair_rows",
    "parse_columns",
    "pearson",
    "read_pairs",
    "score_pairs",
    "score_records",
    "spearman",
]


# -- cosine -----------------------------------------------------------------------------------------
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


def record_score_columns(records: StoreRecords) -> list[str]:
    return [*records.columns[:-1], "score", "text"]


def score_records(encoder, sentence: str, records: StoreRecords) -> Iterator[dict]:
    """The cosine of `sentence` to every record of a store (to every chunk with `chunks`), in
    store order: each row carries the record's id, source, line, key and text."""
    query = unit_rows(encoder.encode([sentence]))[0]
    columns = record_score_columns(records)
    for block in records.blocks():
        assert block.vectors is not None
        scores = block.vectors @ query
        for row, score in zip(block.rows(), scores.tolist(), strict=True):
            row["score"] = round(score, 6)
            yield {c: row[c] for c in columns}


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
