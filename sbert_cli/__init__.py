"""sbert: sentence embeddings for corpora, from the shell or from Python.

from sbert_cli import Encoder, Store
vectors = Encoder().encode(["A man is eating food."])
"""

from __future__ import annotations

from typing import TYPE_CHECKING

__version__ = "0.1.0"

if TYPE_CHECKING:
    from sbert_cli.encoding.encoder import Encoder
    from sbert_cli.encoding.runner import EncodeOptions, encode_corpus
    from sbert_cli.store.store import Store

_LAZY = {
    "Encoder": "sbert_cli.encoding.encoder",
    "Store": "sbert_cli.store.store",
    "EncodeOptions": "sbert_cli.encoding.runner",
    "encode_corpus": "sbert_cli.encoding.runner",
}


def __getattr__(name: str):
    # Lazy: importing sbert_cli must not import torch (the CLI's --help stays fast).
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(name)


__all__ = ["Encoder", "Store", "EncodeOptions", "encode_corpus", "__version__"]
