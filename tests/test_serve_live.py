"""`sbert serve` while things happen: the store changing under it, concurrent requests batched
together, the command line's refusals, and a real server process (start-up line, request log,
graceful SIGTERM)."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
from fakes import hash_embed
from serve_support import MODEL, ROOT, SAMPLE_CORPUS, make_store, running_server, sbert
from test_serve import client_for

from sbert_cli.encoding.runner import EncodeOptions, encode_corpus
from sbert_cli.retrieval.build import build_index

NEW_LINES = [f"zanzibar quokka number {n} sails round the harbour at dawn" for n in range(40)]


@pytest.fixture(scope="module")
def shared_store(tmp_path_factory):
    return make_store(tmp_path_factory.mktemp("serve-live") / "store")


@pytest.fixture()
def store(tmp_path, shared_store):
    import shutil

    path = tmp_path / "store"
    shutil.copytree(shared_store, path)
    return path


# -- following the store -------------------------------------------------------------------------
def test_follows_appends_and_reindexing_without_a_failed_or_mixed_answer(store, tmp_path):
    extra = tmp_path / "extra.txt"
    extra.write_text("\n".join(NEW_LINES) + "\n", encoding="utf-8")
    failures: list[str] = []
    seen: list[list[tuple[int, int, bool, bool]]] = [[] for _ in range(3)]
    stop = threading.Event()

    def search_loop(client, mine: list) -> None:
        while not stop.is_set():
            for mode in ("dense", "hybrid"):
                response = client.get("/search", params={"q": NEW_LINES[7], "k": 3, "mode": mode})
                if response.status_code != 200:
                    failures.append(response.text)
                    continue
                body = response.json()
                hits = body["results"][0]["hits"]
                new = any(h["source"].endswith("extra.txt") for h in hits)
                top = hits[0]["text"] == NEW_LINES[7]
                mine.append((body["store"]["rows"], body["store"]["generation"], new, top))

    with client_for(store, poll_s=0.1) as client:
        threads = [threading.Thread(target=search_loop, args=(client, mine)) for mine in seen]
        for thread in threads:
            thread.start()
        time.sleep(0.3)
        encode_corpus([str(extra)], store, EncodeOptions(model=MODEL))  # `sbert encode extra.txt -o store`
        time.sleep(0.5)
        build_index(store)  # `sbert index store`
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and client.get("/health").json()["index"]["pending_shards"]:
            time.sleep(0.1)
        time.sleep(0.3)
        stop.set()
        for thread in threads:
            thread.join()
        health = client.get("/health").json()

    assert failures == []
    answers = [a for mine in seen for a in mine]
    assert {rows for rows, *_ in answers} == {500, 540}
    for rows, _generation, new, _top in answers:
        assert rows == 540 or not new  # no answer from the old state holds a new row
    for mine in seen:  # states only move forwards
        generations = [g for _, g, _, _ in mine]
        assert generations == sorted(generations)
    assert any(top for rows, _, _, top in answers if rows == 540)
    assert health["rows"] == 540 and health["generation"] >= 2
    assert health["index"]["indexed_rows"] == 540 and health["index"]["keyword"]["docs"] == 540


def test_a_commit_it_cannot_open_keeps_the_previous_state_and_health_says_why(store):
    from sbert_cli.retrieval.graph import IndexManifest

    with client_for(store, poll_s=0.05) as client:
        before = client.get("/search", params={"q": "a whale hunt", "k": 3}).json()
        graph = store / "index" / IndexManifest.load(store).file
        damaged = bytearray(graph.read_bytes())
        damaged[4096:4196] = bytes(b ^ 0xFF for b in damaged[4096:4196])
        graph.with_suffix(".tmp").write_bytes(damaged)
        os.replace(graph.with_suffix(".tmp"), graph)
        os.utime(IndexManifest.path_in(store))  # as a commit would: the server looks again
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and client.get("/health").json()["status"] == "ok":
            time.sleep(0.05)
        health = client.get("/health").json()
        during = client.get("/search", params={"q": "a whale hunt", "k": 3})
        build_index(store, rebuild=True, bm25=False)  # the repair the error names; one commit, the graph's
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and client.get("/health").json()["status"] != "ok":
            time.sleep(0.05)
        repaired = client.get("/health").json()
        after = client.get("/search", params={"q": "a whale hunt", "k": 3}).json()

    assert health["status"] == "stale" and health["generation"] == 1
    assert f"{graph.name}: index file is damaged" in health["stale"]["error"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", health["stale"]["since"])
    assert during.status_code == 200 and during.json() == before  # the previous state, whole
    assert repaired["status"] == "ok" and "stale" not in repaired and repaired["generation"] == 2
    assert after["results"] == before["results"] and after["store"]["generation"] == 2


def test_a_served_state_searches_as_opened_when_the_store_moves_away(store, tmp_path):
    with client_for(store) as client:  # not following the store (poll 0)
        before = client.get("/search", params={"q": "a whale hunt", "k": 3}).json()
        store.rename(tmp_path / "moved")
        during = client.get("/search", params={"q": "a whale hunt", "k": 3})
    assert before["mode"] == "hybrid" and during.status_code == 200 and during.json() == before


def test_a_shard_removed_under_a_served_state_moves_it_to_the_next_generation(store):
    """`sbert rm` deletes shards that the served state reads rows from (none kept in memory here,
    and the server not following the store): the search that finds one gone is answered from the
    new commit, under its own generation, which /health then reports too."""
    params = {"q": "the whale and the sea", "k": 5, "mode": "dense"}
    with client_for(store, keep_rows_bytes=0) as client:
        before = client.get("/search", params=params).json()
        assert sbert("rm", store, SAMPLE_CORPUS / "moby_dick.txt", "-q").exit_code == 0
        after = client.get("/search", params=params)
        health = client.get("/health").json()

    def sources(body: dict) -> set[str]:
        return {Path(h["source"]).name for h in body["results"][0]["hits"]}

    assert before["store"] == {"rows": 500, "generation": 1} and "moby_dick.txt" in sources(before)
    assert after.status_code == 200, after.text
    left = after.json()["store"]
    assert left["generation"] == 2 and left["rows"] < 500 and "moby_dick.txt" not in sources(after.json())
    assert (health["generation"], health["rows"], health["status"]) == (2, left["rows"], "ok")


# -- batching across requests -------------------------------------------------------------------------
def test_concurrent_requests_share_model_batches_and_get_their_own_answers(store):
    texts = [[f"request {n} asks about whales", f"and {n} more words about the sea"] for n in range(8)]
    queries = ["a whale hunt at sea", "a student commits a murder", "officers at a ball", "the old prince"] * 2
    with client_for(store, batch_wait_ms=300) as client:
        alone = [client.get("/search", params={"q": q, "k": 3, "mode": "dense"}).json() for q in queries]
        barrier = threading.Barrier(8)

        def embed(n: int):
            barrier.wait()
            return client.post("/v1/embeddings", json={"input": texts[n]})

        def search(n: int):
            barrier.wait()
            return client.get("/search", params={"q": queries[n], "k": 3, "mode": "dense"})

        with ThreadPoolExecutor(8) as pool:
            embedded = list(pool.map(embed, range(8)))
            searched = list(pool.map(search, range(8)))
        metrics = client.get("/metrics").text

    for n, response in enumerate(embedded):
        assert response.status_code == 200, response.text
        got = np.float32([d["embedding"] for d in response.json()["data"]])
        np.testing.assert_array_equal(got, np.stack([hash_embed(t, 32) for t in texts[n]]))
        assert response.json()["usage"]["prompt_tokens"] == sum(len(t.split()) for t in texts[n])
    assert [r.json() for r in searched] == alone
    counts = {
        line.split("{")[0].rsplit("_", 1)[-1] + line.split('kind="')[1].split('"')[0]: float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith(("sbert_batch_requests_count", "sbert_batch_requests_sum"))
    }
    assert counts["sumembeddings"] == 8 and counts["countembeddings"] <= 4  # 8 requests, 1 to 4 model calls
    assert counts["sumsearch"] == 16 and counts["countsearch"] <= 8 + 4  # 8 alone, then 1 to 4 groups


def test_a_request_alone_does_not_wait_for_company(store):
    with client_for(store, batch_wait_ms=5000) as client:  # would be 5 s a request if it waited
        started = time.monotonic()
        for query in ["a whale", "a ball", "a murder"]:
            assert client.get("/search", params={"q": query, "k": 2}).status_code == 200
            assert client.post("/v1/embeddings", json={"input": query}).status_code == 200
        assert time.monotonic() - started < 5


# -- the command line -------------------------------------------------------------------------------
def test_cli_refuses_what_it_cannot_serve(store, tmp_path, monkeypatch):
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    monkeypatch.delenv("GOMP_SPINCOUNT", raising=False)
    missing = sbert("serve", tmp_path / "nope")
    assert missing.exit_code == 2 and "no such store" in missing.stderr and "Traceback" not in missing.output
    monkeypatch.delenv("SBERT_TEST_KEY", raising=False)
    no_key = sbert("serve", store, "--api-key-env", "SBERT_TEST_KEY")
    assert no_key.exit_code == 2 and "SBERT_TEST_KEY: that environment variable is not set" in no_key.stderr
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = sbert("serve", store, "--port", str(taken.getsockname()[1]))
    assert busy.exit_code == 1 and "cannot listen on 127.0.0.1" in busy.stderr
    # set by `sbert serve` (undone by monkeypatch): a short spin, and no wait policy that would override it
    assert os.environ["GOMP_SPINCOUNT"] == "10000" and "OMP_WAIT_POLICY" not in os.environ
    bad_host = sbert("serve", store, "--host", "no-such-host.invalid")
    assert bad_host.exit_code == 2 and "--host no-such-host.invalid" in bad_host.stderr


# -- a real server --------------------------------------------------------------------------------------
def test_server_logs_requests_and_finishes_in_flight_work_on_sigterm(store, tmp_path):
    marker = tmp_path / "model-running"
    env = {"SBERT_TEST_DELAY": "1.5", "SBERT_TEST_MARKER": str(marker)}
    with running_server(store, "-v", env=env) as server:
        assert server.url.startswith("http://127.0.0.1:")
        assert httpx.get(f"{server.url}/health", timeout=10).json()["rows"] == 500
        answer: dict = {}

        def slow_request() -> None:
            answer["response"] = httpx.post(f"{server.url}/v1/embeddings", json={"input": ["a whale"]}, timeout=60)

        thread = threading.Thread(target=slow_request)
        thread.start()
        deadline = time.monotonic() + 30
        while not marker.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert marker.exists(), "the request never reached the model"
        server.process.send_signal(signal.SIGTERM)
        thread.join(timeout=60)
        assert server.process.wait(timeout=60) == 0
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{server.url}/health", timeout=5)
    response = answer["response"]
    assert response.status_code == 200
    np.testing.assert_array_equal(np.float32(response.json()["data"][0]["embedding"]), hash_embed("a whale", 32))
    log = "".join(server.stderr)
    assert f"on {server.url}" in log and log.count("sbert: serving") == 1
    assert "127.0.0.1 GET /health 200" in log and "127.0.0.1 POST /v1/embeddings 200" in log
    assert "sbert: stopped\n" in log and "Traceback" not in log


def _closed_after(sock: socket.socket, limit_s: float) -> float | None:
    """Seconds until the server closed `sock` without answering; None if it answered or kept it."""
    sock.settimeout(limit_s)
    started = time.monotonic()
    try:
        return time.monotonic() - started if sock.recv(4096) == b"" else None
    except TimeoutError:
        return None


def _response(sock: socket.socket) -> bytes:
    """One whole HTTP response (headers and Content-Length bytes of body) read from `sock`."""
    sock.settimeout(10)
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, body = data.split(b"\r\n\r\n", 1)
    length = int(re.search(rb"content-length: (\d+)", head, re.IGNORECASE).group(1))
    while len(body) < length:
        body += sock.recv(65536)
    return head + b"\r\n\r\n" + body


def test_a_connection_whose_request_never_completes_is_closed_at_the_timeout(store):
    with running_server(store, "-v", "--timeout", "1") as server:
        host, port = server.url.removeprefix("http://").split(":")
        silent = socket.create_connection((host, int(port)))
        trickling = socket.create_connection((host, int(port)))
        trickling.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")  # and never the blank line
        slow_body = socket.create_connection((host, int(port)))
        slow_body.sendall(b"POST /search HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
        reused = socket.create_connection((host, int(port)))
        reused.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        first = _response(reused)
        time.sleep(0.5)  # a keep-alive connection's next request, within the deadline, is answered
        reused.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        second = _response(reused)
        silent_s, trickling_s = _closed_after(silent, 10), _closed_after(trickling, 10)
        refused = _response(slow_body)
        still = httpx.get(f"{server.url}/health", timeout=10)
    assert refused.startswith(b"HTTP/1.1 503") and b"the request took longer than 1 s" in refused
    assert silent_s is not None and 0.3 < silent_s < 5 and trickling_s is not None and trickling_s < 5
    assert first.startswith(b"HTTP/1.1 200") and second.startswith(b"HTTP/1.1 200")
    assert still.status_code == 200
    assert "no complete request within 1 s; connection closed" in "".join(server.stderr)


def test_the_readmes_serve_examples_work(store):
    """The README shows the server in ```sh blocks (tests/test_readme.py would wait on it forever):
    its curl lines, and the OpenAI client example where `openai` is installed, run here instead,
    against a server of the hash-model store."""
    section = (ROOT / "README.md").read_text(encoding="utf-8").split("\n## sbert serve\n", 1)[1].split("\n## ", 1)[0]
    curls = [line for block in re.findall(r"```sh\n(.*?)```", section, re.S) for line in block.splitlines()]
    curls = [line for line in curls if line.startswith("curl ")]
    assert len(curls) == 4
    if shutil.which("curl") is None:
        pytest.skip("no curl on PATH")
    with running_server(store) as server:
        for line in curls:
            result = subprocess.run(
                ["bash", "-c", line.replace("http://127.0.0.1:8080", server.url)], capture_output=True, timeout=60
            )
            assert result.returncode == 0, result.stderr
            body = json.loads(result.stdout)
            assert "error" not in body and (body.get("results") or body.get("data") or body.get("rows")), body
        if importlib.util.find_spec("openai") is not None:
            example = re.search(r"```python\n(.*?)```", section, re.S).group(1)
            scope: dict = {}
            exec(example.replace("http://127.0.0.1:8080", server.url).replace("all-MiniLM-L6-v2", MODEL), scope)
            np.testing.assert_array_equal(np.float32(scope["vectors"][0]), hash_embed("a storm at sea", 32))
