"""`sbert serve`: one process that holds a store's model and indexes and answers over HTTP.

    app.py       routes (/v1/embeddings, /search, /health, /metrics, the page at /), start-up, shutdown
    batcher.py   batching across requests: one engine thread, groups of same-kind requests
    state.py     the store being served, followed on disk and swapped atomically
    embeddings.py, search.py   the two APIs: parsing, checks, answers
    guard.py     API key, errors as JSON, metrics and the log line per request
    server.py    uvicorn: the socket, graceful shutdown
    protocol.py  uvicorn's HTTP protocol with a deadline for a request's headers

It calls the library the CLI calls (`retrieval.search.Index`, `encoding.loader`), nothing else.
"""

from sbert_cli.serve.config import ServeOptions

__all__ = ["ServeOptions"]
