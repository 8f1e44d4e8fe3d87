"""What a server is told: where the store is, the limits on requests, batching, following the store."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class ServeOptions:
    store: str
    exact: bool = False  # brute-force search, no graph loaded (also used when the store has no index)
    device: str = "auto"
    api_key: str | None = None  # required as `Authorization: Bearer <key>` when set
    # Limits: a request over one is refused (413 for the body, 422 for the rest) with a JSON error.
    max_body_bytes: int = 4 * 1024 * 1024
    max_batch: int = 2048  # texts per /v1/embeddings request, queries per POST /search
    max_k: int = 1000
    max_hits: int = 100_000  # queries x k in one search request: what one answer may hold
    max_text_chars: int = 65_536  # one input or query
    timeout_s: float = 30.0  # per request, queueing included
    max_queue: int = 4096  # requests waiting for the model; more are answered 429
    # Batching across requests: the model waits up to `batch_wait_ms` for company when idle and
    # takes at most `batch_tokens` tokens (embeddings) or `max_batch` queries (search) at once.
    batch_wait_ms: float = 5.0
    batch_tokens: int = 16_384
    # Following the store: its manifests are looked at this often (seconds; 0: never).
    poll_s: float = 1.0
    # The hits' columns (text, source, line, key, chunk, kept fields) kept in memory up to this
    # many bytes; a larger store's row groups are read as hits need them, the latest kept.
    keep_rows_bytes: int = 1 << 30
    listen_url: str = ""  # for the start-up line, filled in by the server


class ApiError(Exception):
    """A request the server refuses: answered with `status` and a JSON error, never a traceback."""

    def __init__(self, status: int, message: str, kind: str = "invalid_request_error", code: str | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.kind = kind
        self.code = code


def error_body(message: str, kind: str, code: str | None = None, error_id: str | None = None) -> dict:
    """OpenAI's error shape, which its clients parse: {"error": {"message", "type", "code"}}."""
    error = {"message": message, "type": kind, "code": code}
    if error_id is not None:
        error["id"] = error_id
    return {"error": error}
