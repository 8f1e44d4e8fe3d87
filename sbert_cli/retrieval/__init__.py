"""Retrieval: store -> index -> search. `graph` (layout, parameters, checks), `build` (make and
extend the HNSW graph), `exact` (brute force, the reference), `search` (the `Index` users open)."""

from sbert_cli.retrieval.build import BuildSummary, build_index
from sbert_cli.retrieval.exact import exact_search
from sbert_cli.retrieval.search import HIT_COLUMNS, Hit, Index

__all__ = ["HIT_COLUMNS", "BuildSummary", "Hit", "Index", "build_index", "exact_search"]
