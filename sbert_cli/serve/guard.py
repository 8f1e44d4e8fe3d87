"""What every request passes through (an ASGI middleware): the API key, errors as JSON, metrics and
the per-request log line.

No traceback ever reaches a client: a refused request (ApiError) gets its status and message, bad
input from the library (InputError) 422 with its one-line message, a runtime failure (SbertError)
500 with its message, anything else 500 with an error id that the log line carries, beside the
traceback.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable

from sbert_cli.errors import InputError, SbertError
from sbert_cli.serve.config import ApiError, error_body
from sbert_cli.serve.metrics import Metrics

log = logging.getLogger("sbert")
ROUTES = ("/", "/page.js", "/v1/embeddings", "/v1/models", "/search", "/health", "/metrics")
OPEN_ROUTES = ("/", "/page.js")  # the page's files hold no data: it asks for the key itself
BATCHED_ROUTES = ("/v1/embeddings", "/search")
Send = Callable[[dict], Awaitable[None]]
_LEADING_OPTION = re.compile(r"^--?([a-z][a-z-]*)(?= )")


def json_bytes(body: object) -> bytes:
    return json.dumps(body, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode("utf-8")


async def send_json(send: Send, status: int, body: dict, headers: list[tuple[bytes, bytes]] = ()) -> None:
    payload = json_bytes(body)
    head = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode()), *headers]
    await send({"type": "http.response.start", "status": status, "headers": head})
    await send({"type": "http.response.body", "body": payload})


def as_parameter(message: str) -> str:
    """The library's message names the command line's option (`--min-score x: ...`, `-k 0: ...`);
    a client sent the request parameter (`min_score`, `k`), so that is the name it reads."""
    return _LEADING_OPTION.sub(lambda m: m.group(1).replace("-", "_"), message, count=1)


def _bearer(scope: dict) -> str | None:
    for name, value in scope.get("headers", ()):
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            return token.strip() if scheme.lower() == "bearer" else None
    return None


class Traffic:
    """Requests to batched routes received and not yet answered: the batcher waits for company
    only while some of them have not reached its queue yet (batcher.py)."""

    def __init__(self) -> None:
        self.arriving = 0

    def others_coming(self, queued: int) -> bool:
        return self.arriving > queued


class Guard:
    def __init__(self, app, *, metrics: Metrics, traffic: Traffic, api_key: str | None, timeout_s: float) -> None:
        self.app = app
        self.metrics = metrics
        self.api_key = api_key
        # The engine's wait is bounded by the request timeout (batcher.py); this bounds the rest,
        # a body that trickles in included, with a second's grace so the engine's answer comes first.
        self.timeout_s, self.grace_s = timeout_s, 1.0
        self.traffic = traffic

    def _authorized(self, scope: dict) -> bool:
        token = _bearer(scope)
        # compare_digest: the time taken says nothing about how much of the key matched.
        return token is not None and hmac.compare_digest(token.encode("utf-8"), self.api_key.encode("utf-8"))

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        path = scope.get("path", "")
        route = path if path in ROUTES else "other"
        state = {"status": 500, "started": False}

        async def watched(message: dict) -> None:
            if message["type"] == "http.response.start":
                state["status"], state["started"] = message["status"], True
            await send(message)

        batched = route in BATCHED_ROUTES
        self.traffic.arriving += batched
        try:
            if self.api_key is not None and route not in OPEN_ROUTES and not self._authorized(scope):
                raise ApiError(401, "a valid API key is required: Authorization: Bearer <key>", "authentication_error")
            await asyncio.wait_for(self.app(scope, receive, watched), self.timeout_s + self.grace_s)
        except asyncio.CancelledError:  # the connection went away (or the server is being stopped)
            if not state["started"]:
                state["status"] = 499  # nginx's "client closed request", so metrics do not count a 500
            raise
        except asyncio.TimeoutError:
            if not state["started"]:
                message = f"the request took longer than {self.timeout_s:g} s"
                await self._answer(ApiError(503, message, "timeout"), scope, watched)
        except Exception as exc:  # every failure becomes a JSON answer; see the module docstring
            if not state["started"]:
                await self._answer(exc, scope, watched)
            else:
                log.error("%s %s failed after its answer began", scope.get("method"), path, exc_info=exc)
        finally:
            self.traffic.arriving -= batched
            seconds = time.perf_counter() - start
            self.metrics.requests.labels(route, str(state["status"])).inc()
            self.metrics.latency.labels(route).observe(seconds)
            client = (scope.get("client") or ("-",))[0]
            log.debug("%s %s %s %d %.1f ms", client, scope.get("method"), path, state["status"], seconds * 1000)

    async def _answer(self, exc: Exception, scope: dict, send: Send) -> None:
        headers = []
        if isinstance(exc, ApiError):
            status, body = exc.status, error_body(exc.message, exc.kind, exc.code)
            if exc.status == 401:
                headers.append((b"www-authenticate", b"Bearer"))
        elif isinstance(exc, InputError):
            status, body = 422, error_body(as_parameter(str(exc)), "invalid_request_error")
        else:
            error_id = uuid.uuid4().hex[:12]
            known = isinstance(exc, SbertError)
            message = str(exc) if known else "internal error; the server log has the details"
            log.error("%s %s: error %s: %s", scope.get("method"), scope.get("path"), error_id, exc, exc_info=not known)
            status, body = 500, error_body(f"{message} (error id {error_id})", "server_error", error_id=error_id)
        await send_json(send, status, body, headers)
