"""`sbert serve`'s HTTP API through Starlette's TestClient, on hash-model stores made by the CLI:
embeddings, search (equal to `sbert search --format jsonl`), health, metrics, the API key, the
limits and errors. Following the store, batching and the real server: test_serve_live.py."""

from __future__ import annotations

import base64
import json
import shutil

import numpy as np
import pytest
from fakes import words
from serve_support import MODEL, make_store, sbert
from starlette.testclient import TestClient

from sbert_cli.serve import ServeOptions
from sbert_cli.serve import search as serve_search
from sbert_cli.serve.app import create_app
from sbert_cli.store.store import Store

QUERIES = ["a whale hunt at sea", "a student commits a murder", "officers at a ball in Moscow"]


@pytest.fixture(scope="module")
def shared_store(tmp_path_factory):
    return make_store(tmp_path_factory.mktemp("serve") / "store")


@pytest.fixture()
def store(tmp_path, shared_store):
    path = tmp_path / "store"
    shutil.copytree(shared_store, path)
    return path


def client_for(store, poll_s: float = 0, **options) -> TestClient:
    return TestClient(create_app(ServeOptions(str(store), poll_s=poll_s, **options)), raise_server_exceptions=False)


@pytest.fixture()
def client(store):
    with client_for(store) as client:
        yield client


def stored_rows(store, n: int = 6) -> tuple[list[str], np.ndarray]:
    """The first n texts of the store and the vectors `sbert encode` wrote for them."""
    opened = Store.open(store)
    ids, vectors = opened.load_embeddings()
    rows = opened.fetch([int(i) for i in ids[:n]])
    return [rows[int(i)]["text"] for i in ids[:n]], vectors[:n]


def error_of(response, status: int) -> str:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"} and "Traceback" not in response.text
    return body["error"]["message"]


# -- /v1/embeddings -----------------------------------------------------------------------------
def test_embeddings_equal_the_stores_vectors(client, store):
    texts, vectors = stored_rows(store)
    response = client.post("/v1/embeddings", json={"input": texts, "model": MODEL})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["object"] == "list" and body["model"] == MODEL
    assert [d["index"] for d in body["data"]] == list(range(len(texts)))
    assert {d["object"] for d in body["data"]} == {"embedding"}
    got = np.array([d["embedding"] for d in body["data"]], dtype=np.float32)
    assert got.shape == (len(texts), 32)
    np.testing.assert_array_equal(got, vectors)
    tokens = sum(min(len(words(t)), 128) for t in texts)  # the hash model's tokens are words
    assert body["usage"] == {"prompt_tokens": tokens, "total_tokens": tokens}


def test_embeddings_of_one_string_and_base64(client, store):
    texts, vectors = stored_rows(store, 1)
    one = client.post("/v1/embeddings", json={"input": texts[0]}).json()
    assert len(one["data"]) == 1
    np.testing.assert_array_equal(np.float32(one["data"][0]["embedding"]), vectors[0])
    packed = client.post("/v1/embeddings", json={"input": texts, "encoding_format": "base64"}).json()
    decoded = np.frombuffer(base64.b64decode(packed["data"][0]["embedding"]), dtype="<f4")
    np.testing.assert_array_equal(decoded, vectors[0])
    same = client.post("/v1/embeddings", json={"input": texts, "dimensions": 32, "input_type": "store"})
    assert same.status_code == 200
    np.testing.assert_array_equal(np.float32(same.json()["data"][0]["embedding"]), vectors[0])


@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        ({"input": "x", "dimensions": 16}, 422, "cannot shorten"),
        ({"input": "x", "model": "text-embedding-3-small"}, 404, "serves 'hash:32'"),
        ({"input": "x", "encoding_format": "int8"}, 422, "choose float or base64"),
        ({"input": [[1, 2, 3]]}, 422, "token arrays are not supported"),
        ({"input": []}, 422, "non-empty list"),
        ({"input": ["ok", "  "]}, 422, "input[1]: empty"),
        ({"input": "x", "temperature": 1}, 422, "unknown field(s): temperature"),
        ({"text": "x"}, 422, "unknown field(s): text"),
        ([1, 2], 422, "JSON object"),
    ],
)
def test_embeddings_refusals(client, body, status, words):
    assert words in error_of(client.post("/v1/embeddings", json=body), status)


def test_models_lists_the_stores_model(client):
    assert client.get("/v1/models").json()["data"][0]["id"] == MODEL


# -- /search --------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["dense", "keyword", "hybrid"])
def test_search_equals_sbert_search_jsonl(client, store, mode):
    for query in QUERIES:
        cli = sbert("search", store, query, "-k", "5", "--mode", mode, "--format", "jsonl")
        assert cli.exit_code == 0, cli.output
        served = client.get("/search", params={"q": query, "k": 5, "mode": mode, "format": "jsonl"})
        assert served.status_code == 200 and served.headers["content-type"] == "application/x-ndjson"
        assert served.text == cli.stdout
        as_json = client.get("/search", params={"q": query, "k": 5, "mode": mode}).json()
        assert as_json["mode"] == mode and as_json["store"] == {"rows": 500, "generation": 1}
        assert as_json["results"] == [{"query": query, "hits": [json.loads(x) for x in cli.stdout.splitlines()]}]


def test_post_search_answers_many_queries_as_one_each(client, store):
    body = client.post("/search", json={"queries": QUERIES, "k": 3, "mode": "dense"}).json()
    assert [r["query"] for r in body["results"]] == QUERIES
    for result in body["results"]:
        alone = client.get("/search", params={"q": result["query"], "k": 3, "mode": "dense"}).json()
        assert alone["results"][0] == result
    one = client.post("/search", json={"query": QUERIES[0], "k": 2}).json()
    assert len(one["results"]) == 1 and len(one["results"][0]["hits"]) == 2
    default_mode = client.get("/search", params={"q": QUERIES[0]}).json()
    assert default_mode["mode"] == "hybrid" and len(default_mode["results"][0]["hits"]) == 10


def test_search_parameters_follow_the_librarys_search(client, store):
    assert "unknown_thing: not supported by this sbert" in error_of(
        client.get("/search", params={"q": "x", "unknown_thing": "1"}), 422
    )
    where = "source LIKE '%moby_dick.txt' AND line > 20"
    served = client.get("/search", params={"q": "whale", "k": 5, "where": where, "format": "jsonl"})
    cli = sbert("search", store, "whale", "-k", "5", "--where", where, "--format", "jsonl")
    assert served.status_code == 200 and served.text == cli.stdout
    hits = [json.loads(line) for line in served.text.splitlines()]
    assert len(hits) == 5 and all(h["source"].endswith("moby_dick.txt") and h["line"] > 20 for h in hits)
    assert error_of(client.get("/search", params={"q": "x", "where": "no_such_column = 1"}), 422)
    assert "not an integer" in error_of(client.get("/search", params={"q": "x", "k": "ten"}), 422)
    assert "not an integer" in error_of(client.post("/search", json={"query": "x", "k": 2.5}), 422)
    assert error_of(client.get("/search", params={"q": "x", "mode": "fuzzy"}), 422).startswith(
        "mode fuzzy: choose from"
    )
    assert error_of(client.get("/search", params={"q": "x", "min_score": "nan"}), 422).startswith("min_score nan: must")
    every = client.get("/search", params={"q": "x", "k": 600})  # k beyond the store: the rows there are
    assert every.status_code == 200 and len(every.json()["results"][0]["hits"]) == 500
    assert error_of(client.get("/search", params={"q": "x", "k": 0}), 422) == "k 0: must be at least 1"
    assert "the query is empty" in error_of(client.get("/search", params={"q": "  "}), 422)
    assert "no query given" in error_of(client.get("/search"), 422)
    assert "choose json or jsonl" in error_of(client.get("/search", params={"q": "x", "format": "csv"}), 422)
    assert "not valid JSON" in error_of(client.post("/search", content=b"{not json"), 400)
    deep = b"[" * 100_000 + b"]" * 100_000
    assert "nested too deeply" in error_of(client.post("/v1/embeddings", content=deep), 400)


# -- health, metrics ------------------------------------------------------------------------------
def test_health_says_rows_model_and_index(client):
    body = client.get("/health").json()
    assert body["status"] == "ok" and body["rows"] == 500 and body["generation"] == 1
    assert body["model"]["name"] == MODEL and body["model"]["dim"] == 32
    index = body["index"]
    assert index["kind"] == "hnsw" and index["indexed_rows"] == 500 and index["pending_shards"] == 0
    assert index["keyword"] == {"docs": 500, "pending_shards": 0} and index["default_mode"] == "hybrid"
    kept = body["kept_rows"]
    assert kept["in_memory"] and 0 < kept["bytes"] <= kept["budget_bytes"] and "embedding" not in kept["columns"]
    client.post("/v1/embeddings", json={"input": "load the model"})
    engine = client.get("/health").json()["engine"]
    assert engine["embeddings"]["dtype"] == body["model"]["dtype"] and engine["embeddings"]["device"] == "cpu"
    assert engine["queries"] == "HashEncoder"


def test_health_of_a_store_without_index_searches_exactly(tmp_path, shared_store):
    bare = make_store(tmp_path / "bare", index=False)
    with client_for(bare) as client:
        assert client.get("/health").json()["index"]["kind"] == "exact"
        served = client.get("/search", params={"q": QUERIES[0], "k": 3, "format": "jsonl"})
        cli = sbert("search", bare, QUERIES[0], "-k", "3", "--exact", "--format", "jsonl")
        assert served.text == cli.stdout


def test_metrics_count_requests_batches_and_rows(client):
    for query in QUERIES:
        client.get("/search", params={"q": query, "k": 2})
    client.post("/v1/embeddings", json={"input": ["a", "b", "c"]})
    client.get("/search", params={"q": "x", "k": 0})
    text = client.get("/metrics").text
    assert 'sbert_requests_total{route="/search",status="200"} 3.0' in text
    assert 'sbert_requests_total{route="/search",status="422"} 1.0' in text
    assert 'sbert_requests_total{route="/v1/embeddings",status="200"} 1.0' in text
    assert 'sbert_request_duration_seconds_count{route="/search"} 4.0' in text
    assert 'sbert_batch_texts_sum{kind="embeddings"} 3.0' in text
    assert 'sbert_batch_requests_count{kind="search"}' in text
    assert "sbert_store_rows 500.0" in text and "sbert_store_generation 1.0" in text


# -- the API key, limits, errors -------------------------------------------------------------------
def test_api_key_is_required_where_set(store):
    with client_for(store, api_key="s3cret") as client:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic s3cret"}):
            response = client.get("/search", params={"q": "whale"}, headers=headers)
            assert "API key is required" in error_of(response, 401)
            assert response.headers["www-authenticate"] == "Bearer"
        assert client.post("/v1/embeddings", json={"input": "x"}).status_code == 401
        assert client.get("/health").status_code == 401 and client.get("/metrics").status_code == 401
        ok = {"Authorization": "Bearer s3cret"}
        assert client.get("/search", params={"q": "whale"}, headers=ok).status_code == 200
        assert client.get("/health", headers=ok).status_code == 200
        page = client.get("/")  # the page holds no data; it asks for the key
        assert page.status_code == 200 and "sbert search" in page.text


def test_limits_are_refused_with_json(store):
    limits = {"max_body_bytes": 2000, "max_batch": 4, "max_k": 20, "max_hits": 50, "max_text_chars": 100}
    with client_for(store, **limits) as client:
        big = {"input": ["word " * 19] * 30}
        assert "at most 2,000" in error_of(client.post("/v1/embeddings", json=big), 413)
        chunks = (b'{"input": "' + b"x" * 500 for _ in range(6))  # no content-length: counted as read
        assert "over 2,000 bytes" in error_of(client.post("/v1/embeddings", content=chunks), 413)
        assert "at most 4 per request" in error_of(client.post("/v1/embeddings", json={"input": ["a"] * 5}), 422)
        assert "at most 100 per text" in error_of(client.post("/v1/embeddings", json={"input": "a" * 101}), 422)
        assert "at most 20 hits" in error_of(client.get("/search", params={"q": "x", "k": 21}), 422)
        assert "at most 100" in error_of(client.get("/search", params={"q": "y" * 101}), 422)
        assert "at most 4 per request" in error_of(client.post("/search", json={"queries": ["a"] * 5}), 422)
        assert client.get("/search", params={"q": "whale", "k": 20}).status_code == 200
        many = {"queries": ["a", "b", "c"], "k": 17}
        assert error_of(client.post("/search", json=many), 422) == "3 queries x k 17 = 51 hits; at most 50 a request"
        assert client.post("/search", json={**many, "k": 16}).status_code == 200
        four = [("q", q) for q in "abcd"]
        assert client.get("/search", params=four).status_code == 200  # k 10 when not given: 40 hits
        assert "= 52 hits" in error_of(client.get("/search", params=[*four, ("k", "13")]), 422)


def test_failures_are_json_with_an_id_and_the_server_carries_on(client, monkeypatch, caplog):
    real = serve_search.search_group

    def failing(index, params, payloads):
        if any("explode" in q for qs in payloads for q in qs):
            raise RuntimeError("a bug with a secret path /etc/x")
        return real(index, params, payloads)

    monkeypatch.setattr(serve_search, "search_group", failing)
    response = client.get("/search", params={"q": "explode now"})
    message = error_of(response, 500)
    assert "internal error" in message and "secret" not in response.text
    error_id = response.json()["error"]["id"]
    assert error_id in caplog.text and "a bug with a secret path" in caplog.text  # the detail is in the log
    assert client.get("/search", params={"q": "whale"}).status_code == 200
    assert error_of(client.get("/nowhere"), 404) == "Not Found"
    assert error_of(client.delete("/search"), 405) == "Method Not Allowed"


def test_a_slow_request_times_out_as_json(store, monkeypatch):
    import time

    real = serve_search.search_group

    def slow(index, params, payloads):
        time.sleep(3)
        return real(index, params, payloads)

    with client_for(store, timeout_s=1) as quick:
        monkeypatch.setattr(serve_search, "search_group", slow)
        assert "longer than 1 s" in error_of(quick.get("/search", params={"q": "whale"}), 503)
        monkeypatch.setattr(serve_search, "search_group", real)
        deadline = time.monotonic() + 30  # once the engine is done with the abandoned search
        while (status := quick.get("/search", params={"q": "whale"}).status_code) != 200:
            assert status == 503 and time.monotonic() < deadline


# -- the real model (parity) ----------------------------------------------------------------------
@pytest.mark.slow
def test_real_model_embeddings_and_search_equal_the_clis(real_sample_store, tmp_path):
    store = tmp_path / "real"
    shutil.copytree(real_sample_store, store)
    assert sbert("index", store, "-q").exit_code == 0
    texts, vectors = stored_rows(store, 8)
    with client_for(store) as client:
        body = client.post("/v1/embeddings", json={"input": texts, "model": "all-MiniLM-L6-v2"}).json()
        got = np.float32([d["embedding"] for d in body["data"]])
        cosines = np.sum(got * vectors, axis=1) / np.linalg.norm(got, axis=1) / np.linalg.norm(vectors, axis=1)
        assert got.shape == (8, 384) and cosines.min() >= 0.99999  # batch padding differs: rounding only
        assert body["usage"]["prompt_tokens"] > sum(len(t.split()) for t in texts) * 0.9
        refused = client.post("/v1/embeddings", json={"input": "x", "input_type": "no-such-prompt"})
        assert "has no such prompt" in error_of(refused, 422)
        for query in QUERIES:
            served = client.get("/search", params={"q": query, "k": 5, "format": "jsonl"})
            assert served.text == sbert("search", store, query, "-k", "5", "--format", "jsonl").stdout


@pytest.mark.parametrize(
    ("recorded", "device", "installed", "expected"),
    [
        ("openvino", "auto", True, "openvino"),  # the engine `sbert encode` measured and recorded
        ("onnx", "cpu", True, "onnx"),
        ("openvino", "auto", False, "auto"),  # not installed here: the loader's choice for the dtype
        ("openvino", "cuda", True, "auto"),  # a GPU asked for: not a CPU engine
        ("torch", "auto", True, "auto"),
    ],
)
def test_embeddings_use_the_engine_the_store_records(shared_store, monkeypatch, recorded, device, installed, expected):
    from dataclasses import replace

    from sbert_cli.encoding import onnx_backend, openvino_backend
    from sbert_cli.encoding.loader import recorded_engine, settings_for_record

    monkeypatch.setattr(openvino_backend, "available", lambda: installed)
    monkeypatch.setattr(onnx_backend, "available", lambda: installed)
    record = replace(Store.open(shared_store).model, dtype="bf16", backend=recorded)
    assert recorded_engine(settings_for_record(record, device), record).backend == expected
