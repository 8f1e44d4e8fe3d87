"""`from sbert_cli.index import Index`: the import path sbert 0.1's README documents; the code
lives in `sbert_cli.retrieval`."""

from sbert_cli.retrieval import HIT_COLUMNS, BuildSummary, Hit, Index, build_index, exact_search

__all__ = ["HIT_COLUMNS", "BuildSummary", "Hit", "Index", "build_index", "exact_search"]
