"""The chunking stage: records longer than the model reads become overlapping chunks."""

from sbert_cli.chunking.stage import (
    CHUNK,
    DEFAULT_OVERLAP,
    TRUNCATE,
    Chunker,
    ChunkPlan,
    ChunkRow,
    ChunkStats,
)
from sbert_cli.chunking.tokens import FastTokenCounter, TokenCounter, Tokenized

__all__ = [
    "CHUNK",
    "DEFAULT_OVERLAP",
    "TRUNCATE",
    "ChunkPlan",
    "ChunkRow",
    "ChunkStats",
    "Chunker",
    "FastTokenCounter",
    "TokenCounter",
    "Tokenized",
]
