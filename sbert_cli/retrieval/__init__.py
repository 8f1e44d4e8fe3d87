"""Retrieval: store -> index -> search. `graph` (layout, parameters, checks), `build` (make and
extend the indexes), `quantized` (int8/binary codes with rescoring), `keyword` (BM25), `fusion`
(modes, hybrid fusion), `exact` (brute force, the reference), `search` (the `Index` users open)."""

from sbert_cli.retrieval.build import BuildSummary, build_index
from sbert_cli.retrieval.exact import exact_search
from sbert_cli.retrieval.fusion import DEFAULT_MODE, MODES, fuse
from sbert_cli.retrieval.search import FUSION_COLUMNS, HIT_COLUMNS, Hit, Index

__all__ = [
    "DEFAULT_MODE",
    "FUSION_COLUMNS",
    "HIT_COLUMNS",
    "MODES",
    "BuildSummary",
    "Hit",
    "Index",
    "build_index",
    "exact_search",
    "fuse",
]
