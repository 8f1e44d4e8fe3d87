"""The Starlette app: routes, the engine that answers groups of requests, start-up and shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Hashable
from importlib.resources import files
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from sbert_cli.errors import SbertError
from sbert_cli.retrieval.live import READ_RETRIES
from sbert_cli.serve import embeddings, search
from sbert_cli.serve.batcher import Batcher, Job
from sbert_cli.serve.config import ApiError, ServeOptions, error_body
from sbert_cli.serve.guard import Guard, Traffic, json_bytes
from sbert_cli.serve.metrics import Metrics
from sbert_cli.serve.state import LiveStore, Snapshot
from sbert_cli.store.store import ShardGone

log = logging.getLogger("sbert")
# The page may load only its own script and call only this server; nothing from elsewhere.
PAGE_HEADERS = {
    "content-security-policy": "default-src 'none'; script-src 'self'; style-src 'unsafe-inline'; "
    "connect-src 'self'; form-action 'self'; base-uri 'none'",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
}


class Engine:
    """Runs a group of same-key requests in the engine thread (see batcher.py); one result, or
    one exception, per request. A group that fails is retried request by request, so one bad
    request's error is its own."""

    def __init__(self, live: LiveStore, embedders: embeddings.Embedders) -> None:
        self.live = live
        self.embedders = embedders

    def run_group(self, key: Hashable, payloads: list[Any]) -> list[Any]:
        kind, detail = key
        if kind == "embed":
            encoder = self.embedders.loaded(detail)
            return self._each(payloads, lambda group: embeddings.embed_group(encoder, group))
        params = dict(detail)

        def run(group: list[list[str]]) -> list[tuple[Snapshot, str, list]]:
            for _ in range(READ_RETRIES):
                snapshot = self.live.current  # one state for the whole group
                try:
                    mode, hits = search.search_group(snapshot.index, params, group)
                except ShardGone:  # a writer committed: answer from its commit (state.py's docstring)
                    if self.live.catch_up() is snapshot:
                        raise
                    continue
                return [(snapshot, mode, h) for h in hits]
            raise SbertError(f"{self.live.path}: writers kept committing; try again")

        return self._each(payloads, run)

    @staticmethod
    def _each(payloads: list[Any], run) -> list[Any]:
        try:
            return run(payloads)
        except Exception as exc:
            if len(payloads) == 1:
                return [exc]
        results = []
        for payload in payloads:
            try:
                results.extend(run([payload]))
            except Exception as exc:
                results.append(exc)
        return results


class Server:
    """What the routes share: options, the live store, the batcher, the embedders, the metrics."""

    def __init__(self, options: ServeOptions) -> None:
        self.options = options
        self.metrics = Metrics()
        self.traffic = Traffic()
        self.live = LiveStore(options)
        self.embedders = embeddings.Embedders(self.live.model, options.device)
        self.engine = Engine(self.live, self.embedders)
        self.batcher: Batcher | None = None
        self.live.listeners.append(self._reloaded)
        self._reloaded("start", self.live.current)

    def _reloaded(self, result: str, snapshot: Snapshot | None) -> None:
        if result != "start":
            self.metrics.reloads.labels(result).inc()
        if snapshot is not None:
            self.metrics.rows.set(snapshot.rows)
            self.metrics.generation.set(snapshot.generation)

    def _observe(self, key: Hashable, group: list[Job]) -> None:
        kind = "embeddings" if key[0] == "embed" else "search"
        self.metrics.observe_batch(kind, len(group), sum(len(j.payload) for j in group))

    async def submit(self, key: Hashable, payload: list[str], cost: int) -> Any:
        self.metrics.queued.set(self.batcher.queued + 1)
        return await self.batcher.submit(key, payload, cost, self.options.timeout_s)

    @contextlib.asynccontextmanager
    async def lifespan(self, app: Starlette):
        options = self.options
        self.batcher = Batcher(
            self.engine.run_group,
            wait_s=options.batch_wait_ms / 1000,
            budget=options.batch_tokens,
            max_queue=options.max_queue,
            company=self.traffic.others_coming,
        )
        self.batcher.observers.append(self._observe)
        self.batcher.start()
        tasks = [asyncio.create_task(self._warm())]
        if options.poll_s > 0:
            tasks.append(asyncio.create_task(self.live.follow()))
        snapshot = self.live.current
        where = f" on {options.listen_url}" if options.listen_url else ""
        log.info(
            "serving %s (%s rows, %s, %s)%s",
            options.store,
            f"{snapshot.rows:,}",
            self.live.model.name,
            snapshot.health()["index"]["kind"],
            where,
        )
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            await self.batcher.stop()
            log.info("stopped")

    async def _warm(self) -> None:
        """Load the embeddings model in the background, so the first /v1/embeddings is fast."""
        try:
            await self.embedders.get(None)
        except Exception as exc:  # said now; the first request will say it again
            log.warning("the embeddings model did not load: %s", exc)


async def read_json(request: Request, limit: int) -> Any:
    """The request body as JSON, refused (413) past `limit` bytes, announced or not."""
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > limit:
        raise ApiError(413, f"the request body is {int(length):,} bytes; at most {limit:,}", code="too_large")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise ApiError(413, f"the request body is over {limit:,} bytes", code="too_large")
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(400, f"the body is not valid JSON ({exc})") from None
    except RecursionError:  # [[[[...: the decoder's recursion is the interpreter's
        raise ApiError(400, "the body is not valid JSON (nested too deeply)") from None


class JSON(JSONResponse):
    def render(self, content: Any) -> bytes:
        return json_bytes(content)


def routes(server: Server) -> list[Route]:
    options = server.options

    async def embed(request: Request) -> Response:
        record = server.live.model
        parsed = embeddings.parse_request(await read_json(request, options.max_body_bytes), record, options)
        await server.embedders.get(parsed.input_type)
        cost = embeddings.estimated_tokens(parsed.texts)
        vectors, tokens = await server.submit(("embed", parsed.input_type), parsed.texts, cost)
        return Response(embeddings.response(record, vectors, tokens, parsed.base64), media_type="application/json")

    async def models(request: Request) -> Response:
        data = [{"id": server.live.model.name, "object": "model", "owned_by": "sbert"}]
        return JSON({"object": "list", "data": data})

    async def search_route(request: Request) -> Response:
        if request.method == "GET":
            parsed = search.parse_get(request.query_params, options)
        else:
            parsed = search.parse_post(await read_json(request, options.max_body_bytes), options)
        key = ("search", parsed.params)
        snapshot, mode, hits = await server.submit(key, parsed.queries, search.estimated_cost(parsed.queries))
        if parsed.jsonl:
            return Response(search.jsonl_body(hits), media_type="application/x-ndjson")
        results = [{"query": q, "hits": h} for q, h in zip(parsed.queries, hits, strict=True)]
        return JSON({"object": "search", "mode": mode, "store": snapshot.summary(), "results": results})

    async def health(request: Request) -> Response:
        snapshot = server.live.current
        engine = {"embeddings": server.embedders.engine(), "queries": type(snapshot.index.encoder()).__name__}
        # "stale": the store's newest commit could not be opened (damaged, another model...); the
        # state before it is still served, and `stale` says why and since when.
        status = {"status": "stale", "stale": server.live.stale} if server.live.stale else {"status": "ok"}
        return JSON({**status, "store": options.store, **snapshot.health(), "engine": engine})

    async def metrics(request: Request) -> Response:
        server.metrics.queued.set(server.batcher.queued if server.batcher else 0)
        return Response(server.metrics.render(), media_type=server.metrics.content_type)

    async def page(request: Request) -> Response:
        html = files("sbert_cli.serve").joinpath("page.html").read_text(encoding="utf-8")
        return Response(html, media_type="text/html; charset=utf-8", headers=PAGE_HEADERS)

    async def script(request: Request) -> Response:
        js = files("sbert_cli.serve").joinpath("page.js").read_text(encoding="utf-8")
        return Response(js, media_type="text/javascript; charset=utf-8", headers=PAGE_HEADERS)

    return [
        Route("/", page, methods=["GET"]),
        Route("/page.js", script, methods=["GET"]),
        Route("/v1/embeddings", embed, methods=["POST"]),
        Route("/v1/models", models, methods=["GET"]),
        Route("/search", search_route, methods=["GET", "POST"]),
        Route("/health", health, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
    ]


async def http_error(request: Request, exc: HTTPException) -> Response:
    """Starlette's own refusals (404, 405) as JSON errors too."""
    return JSON(error_body(str(exc.detail), "invalid_request_error"), status_code=exc.status_code, headers=exc.headers)


def create_app(options: ServeOptions) -> Starlette:
    """The app for a store, opened now (InputError if it cannot be served); the engine, batcher
    and store follower start with the app's lifespan."""
    server = Server(options)
    app = Starlette(
        routes=routes(server),
        middleware=[
            Middleware(
                Guard,
                metrics=server.metrics,
                traffic=server.traffic,
                api_key=options.api_key,
                timeout_s=options.timeout_s,
            )
        ],
        lifespan=server.lifespan,
        exception_handlers={HTTPException: http_error},
    )
    app.state.server = server
    return app
