"""Retrieval evaluation in the BEIR layout, scored with pytrec_eval (trec_eval's own measures).

    corpus.jsonl    {"_id": "d1", "title": "...", "text": "..."}   a document is title + " " + text
    queries.jsonl   {"_id": "q1", "text": "..."}
    qrels.tsv       query-id <tab> corpus-id <tab> score             (header optional; score > 0: relevant)

Only queries that have judgements are run and averaged, as BEIR does. Retrieval goes 100 deep
(the deepest cut-off reported); MRR@10 is reciprocal rank over the first ten results.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sbert_cli.errors import InputError, located
from sbert_cli.inputs.reader import InputSource, ReadOptions, decoded_lines, delimited_rows, json_objects

DEPTH = 100
METRIC_COLUMNS = ("ndcg@10", "mrr@10", "recall@1", "recall@10", "recall@100", "map@100")
# pytrec_eval measure -> our column; recip_rank is computed on the top 10 only (MRR@10).
_MEASURES = {
    "ndcg_cut_10": "ndcg@10",
    "recall_1": "recall@1",
    "recall_10": "recall@10",
    "recall_100": "recall@100",
    "map_cut_100": "map@100",
}


@dataclass
class Judged:
    """The queries to run (those with judgements) and their judgements."""

    query_ids: list[str]
    query_texts: list[str]
    qrels: dict[str, dict[str, int]]


def _source(path: str, fmt: str) -> InputSource:
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{path}: no such file")
    return InputSource(path, p, fmt, p.name.lower().endswith(".gz"))


def _field(source: InputSource, line: int, obj: dict, name: str, required: bool = True) -> str:
    value = obj.get(name)
    if value is None and not required:
        return ""
    if not isinstance(value, str | int):
        raise InputError(located(source.name, line, f"field {name!r} is missing or not a string"))
    return str(value)


def read_jsonl_texts(path: str, with_title: bool) -> tuple[list[str], list[str]]:
    """(ids, texts) of a BEIR corpus (title + " " + text) or queries file."""
    source = _source(path, "jsonl")
    ids, texts, seen = [], [], set()
    for line, obj in json_objects(source, ReadOptions()):
        if obj is None:
            continue
        row_id = _field(source, line, obj, "_id")
        text = _field(source, line, obj, "text")
        if with_title:
            text = f"{_field(source, line, obj, 'title', required=False)} {text}".strip()
        if not text.strip():
            raise InputError(located(source.name, line, f"empty text for _id {row_id!r}"))
        if row_id in seen:
            raise InputError(located(source.name, line, f"_id {row_id!r} appears twice"))
        seen.add(row_id)
        ids.append(row_id)
        texts.append(text)
    if not ids:
        raise InputError(f"{path}: no rows")
    return ids, texts


def read_qrels(path: str) -> dict[str, dict[str, int]]:
    """query-id -> {corpus-id: relevance}, from a BEIR qrels TSV (with or without its header)."""
    source = _source(path, "tsv")
    qrels: dict[str, dict[str, int]] = {}
    rows = delimited_rows(source, decoded_lines(source, ReadOptions()), tsv=True)
    for line, cells in rows:
        if not cells or all(not c.strip() for c in cells):
            continue
        if len(cells) < 3:
            raise InputError(located(source.name, line, "expected query-id, corpus-id and score, tab-separated"))
        try:
            relevance = int(float(cells[2]))
        except ValueError:
            if line == 1:  # the header: query-id corpus-id score
                continue
            raise InputError(located(source.name, line, f"score {cells[2]!r} is not a number")) from None
        qrels.setdefault(cells[0].strip(), {})[cells[1].strip()] = relevance
    if not qrels:
        raise InputError(f"{path}: no judgements")
    return qrels


def judged_queries(queries_path: str, qrels_path: str) -> Judged:
    query_ids, query_texts = read_jsonl_texts(queries_path, with_title=False)
    qrels = read_qrels(qrels_path)
    known = set(query_ids)
    missing = [q for q in qrels if q not in known]
    if missing:
        raise InputError(f"{qrels_path}: query {missing[0]!r} is not in {queries_path} ({len(missing)} missing)")
    keep = [i for i, q in enumerate(query_ids) if q in qrels]
    return Judged([query_ids[i] for i in keep], [query_texts[i] for i in keep], qrels)


def top_k(query_vectors: np.ndarray, corpus_vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact cosine top-k: (indexes, scores), best first, ties to the lower index."""
    from sbert_cli.analysis.similarity import cosine_matrix

    k = min(k, len(corpus_vectors))
    indexes, scores = [], []
    for start in range(0, len(query_vectors), 256):
        block = cosine_matrix(query_vectors[start : start + 256], corpus_vectors)
        order = np.lexsort((np.broadcast_to(np.arange(block.shape[1]), block.shape), -block), axis=1)[:, :k]
        indexes.append(order)
        scores.append(np.take_along_axis(block, order, 1))
    return np.concatenate(indexes), np.concatenate(scores)


def run_from_hits(query_ids: Sequence[str], hits: Sequence[Sequence[tuple[str, float]]]) -> dict[str, dict[str, float]]:
    """pytrec_eval's run: query -> {doc: score}. Ranks become strictly decreasing scores, so
    trec_eval's own tie-break (by document id) cannot reorder what the search returned."""
    return {
        q: {doc: float(len(ranked) - r) for r, (doc, _s) in enumerate(ranked)}
        for q, ranked in zip(query_ids, hits, strict=True)
    }


def retrieval_metrics(qrels: dict[str, dict[str, int]], run: dict[str, dict[str, float]]) -> dict[str, float]:
    """Mean nDCG@10, MRR@10, Recall@1/10/100 and MAP@100 over the judged queries (a query
    without results counts as 0)."""
    import pytrec_eval

    deep = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut.10", "recall.1,10,100", "map_cut.100"})
    shallow = pytrec_eval.RelevanceEvaluator(qrels, {"recip_rank"})
    top10 = {q: dict(itertools.islice(sorted(docs.items(), key=lambda d: -d[1]), 10)) for q, docs in run.items()}
    per_query_deep = deep.evaluate(run)
    per_query_rr = shallow.evaluate(top10)
    totals = dict.fromkeys(METRIC_COLUMNS, 0.0)
    for query in qrels:
        for measure, column in _MEASURES.items():
            totals[column] += per_query_deep.get(query, {}).get(measure, 0.0)
        totals["mrr@10"] += per_query_rr.get(query, {}).get("recip_rank", 0.0)
    return {column: value / len(qrels) for column, value in totals.items()}
