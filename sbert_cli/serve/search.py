"""GET and POST /search: `Index.search` over HTTP, hits as `sbert search --format jsonl` writes them.

The parameters are `Index.search`'s keyword arguments, read from its signature, so whatever the
library's search takes, the server takes too (k, mode, ef, min_score, ...); one it does not take
is refused with 422 "not supported by this sbert".
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from sbert_cli.retrieval.search import Index
from sbert_cli.serve.config import ApiError, ServeOptions

_QUERY_FIELDS = ("q", "query", "queries")
_OWN_FIELDS = {*_QUERY_FIELDS, "format"}


def _search_parameters() -> dict[str, str]:
    """Keyword arguments of `Index.search` and their annotations, as text."""
    signature = inspect.signature(Index.search)
    skip = {"self", "queries"}
    return {name: str(p.annotation) for name, p in signature.parameters.items() if name not in skip}


SEARCH_PARAMETERS = _search_parameters()
DEFAULT_K = inspect.signature(Index.search).parameters["k"].default  # a search that does not say k


@dataclass(frozen=True)
class SearchRequest:
    queries: list[str]
    params: tuple[tuple[str, Any], ...]  # sorted (name, value): hashable, the batching key
    jsonl: bool


def _converter(annotation: str) -> Callable[[str, Any], Any]:
    def to_bool(name: str, value: Any) -> bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("1", "true", "yes", "on", "0", "false", "no", "off"):
            return value.lower() in ("1", "true", "yes", "on")
        raise ApiError(422, f"{name}: {value!r} is not true or false")

    def to_number(kind: type) -> Callable[[str, Any], Any]:
        def convert(name: str, value: Any) -> Any:
            if isinstance(value, str):
                try:
                    return kind(value)
                except ValueError:
                    pass
            elif isinstance(value, int | float) and not isinstance(value, bool):
                if kind is float or float(value).is_integer():
                    return kind(value)
            raise ApiError(422, f"{name}: {value!r} is not {'an integer' if kind is int else 'a number'}")

        return convert

    def to_text(name: str, value: Any) -> str:
        if not isinstance(value, str):
            raise ApiError(422, f"{name}: {value!r} is not a string")
        return value

    for word, convert in (("bool", to_bool), ("int", to_number(int)), ("float", to_number(float))):
        if word in annotation:
            return convert
    return to_text


def parse_params(fields: Mapping[str, Any], options: ServeOptions) -> tuple[tuple[str, Any], ...]:
    params = {}
    for name, value in fields.items():
        if name in _OWN_FIELDS or value is None or value == "":
            continue
        if name not in SEARCH_PARAMETERS:
            known = ", ".join(sorted(SEARCH_PARAMETERS))
            raise ApiError(422, f"{name}: not supported by this sbert (search takes: {known})")
        params[name] = _converter(SEARCH_PARAMETERS[name])(name, value)
        if isinstance(params[name], str) and len(params[name]) > options.max_text_chars:
            raise ApiError(422, f"{name}: {len(params[name]):,} characters; at most {options.max_text_chars:,}")
    k = params.get("k")
    if k is not None and k > options.max_k:
        raise ApiError(422, f"k {k}: at most {options.max_k:,} hits per query")
    return tuple(sorted(params.items()))


def check_queries(queries: Any, options: ServeOptions) -> list[str]:
    if isinstance(queries, str):
        queries = [queries]
    if not isinstance(queries, list) or not queries:
        raise ApiError(422, "no query given (q=... or a JSON body with query or queries)")
    if len(queries) > options.max_batch:
        raise ApiError(422, f"{len(queries):,} queries; at most {options.max_batch:,} per request")
    for n, query in enumerate(queries):
        if not isinstance(query, str):
            raise ApiError(422, f"queries[{n}]: not a string")
        if not query.strip():
            raise ApiError(422, "the query is empty" if len(queries) == 1 else f"queries[{n}]: empty")
        if len(query) > options.max_text_chars:
            raise ApiError(422, f"a query of {len(query):,} characters; at most {options.max_text_chars:,}")
    return queries


def _wants_jsonl(value: Any) -> bool:
    if value in (None, "json"):
        return False
    if value == "jsonl":
        return True
    raise ApiError(422, f"format {value!r}: choose json or jsonl")


def parse_get(query_params, options: ServeOptions) -> SearchRequest:
    """GET /search?q=...&k=...: `q` may repeat, one query each."""
    fields = {name: query_params.get(name) for name in query_params}
    return build_request(fields, query_params.getlist("q") or query_params.getlist("query"), options)


def build_request(fields: Mapping[str, Any], queries: Any, options: ServeOptions) -> SearchRequest:
    queries, params = check_queries(queries, options), parse_params(fields, options)
    k = dict(params).get("k", DEFAULT_K)
    if len(queries) * k > options.max_hits:  # one answer's size (and the server's memory for it)
        raise ApiError(
            422,
            f"{len(queries):,} queries x k {k:,} = {len(queries) * k:,} hits; at most {options.max_hits:,} a request",
        )
    return SearchRequest(queries, params, _wants_jsonl(fields.get("format")))


def parse_post(body: Any, options: ServeOptions) -> SearchRequest:
    """POST /search {"query": "..."} or {"queries": [...]}, with the same parameters as GET."""
    if not isinstance(body, dict):
        raise ApiError(422, "the body must be a JSON object")
    given = [f for f in _QUERY_FIELDS if f in body]
    if len(given) > 1:
        raise ApiError(422, f"give one of {', '.join(_QUERY_FIELDS)}, not {' and '.join(given)}")
    queries = body.get(given[0]) if given else None
    return build_request(body, queries, options)


def search_group(index: Index, params: dict, payloads: list[list[str]]) -> tuple[str, list[list[list[dict]]]]:
    """One `Index.search` over every request's queries: (mode, hits per query per request)."""
    mode = index.resolve_mode(params.get("mode"))
    queries = [q for qs in payloads for q in qs]
    results = index.search(queries, **params)
    columns = index.columns(mode)  # the keys `sbert search --format jsonl` writes, in its order
    rows = [[_ordered(h.as_dict(), columns) for h in per] for per in results]
    out, start = [], 0
    for qs in payloads:
        out.append(rows[start : start + len(qs)])
        start += len(qs)
    return mode, out


def _ordered(hit: dict, columns: tuple[str, ...]) -> dict:
    return {c: hit.get(c) for c in columns}


def jsonl_body(hits: list[list[dict]]) -> str:
    """Exactly the lines `sbert search --format jsonl` prints for these hits."""
    return "".join(json.dumps(h, ensure_ascii=False) + "\n" for per in hits for h in per)


def estimated_cost(queries: list[str]) -> int:
    return sum(len(q) // 4 + 2 for q in queries)
