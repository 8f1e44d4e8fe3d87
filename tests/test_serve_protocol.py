"""serve/protocol.py on both of uvicorn's HTTP parsers (httptools, and h11 where httptools is
missing): a connection whose request headers do not all arrive in time is closed; complete
requests, keep-alive reuse and pipelined requests are answered as before."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator

import pytest
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from sbert_cli.serve import protocol

DEADLINE_S = 0.5


async def hello(scope, receive, send) -> None:
    await receive()
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"ok"})


@contextlib.contextmanager
def serving(monkeypatch, parser: str) -> Iterator[tuple[str, int]]:
    if parser == "h11":
        monkeypatch.setattr(protocol, "_base_protocol", lambda: H11Protocol)
    config = uvicorn.Config(hello, http=protocol.with_header_deadline(DEADLINE_S), lifespan="off", log_config=None)
    server = uvicorn.Server(config)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.01)
    try:
        yield sock.getsockname()[:2]
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


def closed_after(conn: socket.socket) -> float | None:
    conn.settimeout(5)
    started = time.monotonic()
    try:
        return time.monotonic() - started if conn.recv(1024) == b"" else None
    except TimeoutError:
        return None


def answers(conn: socket.socket, count: int) -> bytes:
    conn.settimeout(5)
    data = b""
    while data.count(b"\r\n\r\nok") < count:
        data += conn.recv(4096)
    return data


@pytest.mark.parametrize("parser", ["httptools", "h11"])
def test_headers_that_do_not_arrive_in_time_close_the_connection(monkeypatch, parser):
    assert issubclass(protocol.with_header_deadline(1), protocol._base_protocol())
    with serving(monkeypatch, parser) as address:
        silent = socket.create_connection(address)
        partial = socket.create_connection(address)
        partial.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")
        reused = socket.create_connection(address)
        reused.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        first = answers(reused, 1)
        time.sleep(DEADLINE_S / 2)
        reused.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        second = answers(reused, 1)
        pipelined = socket.create_connection(address)
        pipelined.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" * 2)
        both = answers(pipelined, 2)
        silent_s, partial_s = closed_after(silent), closed_after(partial)
        idle_s = closed_after(reused)  # after its answers, a connection waits for the next request
    assert first.startswith(b"HTTP/1.1 200") and second.startswith(b"HTTP/1.1 200") and both.count(b"200 OK") == 2
    for seconds in (silent_s, partial_s, idle_s):
        assert seconds is not None and seconds < 3
