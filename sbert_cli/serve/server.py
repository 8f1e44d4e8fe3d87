"""Running the app on uvicorn: the listening socket, quiet uvicorn logs, a graceful SIGTERM.

The socket is bound before the store is opened, so a port in use fails at once; it listens before
uvicorn starts, so clients that connect during start-up wait in the backlog instead of being
refused. On SIGTERM (or Ctrl-C) uvicorn stops accepting, lets in-flight requests finish (up to the
request timeout), then the app shuts down its engine; the process then exits 0.
"""

from __future__ import annotations

import logging
import signal
import socket
from dataclasses import replace

from sbert_cli.errors import InputError, SbertError
from sbert_cli.serve.config import ServeOptions

log = logging.getLogger("sbert")


class _Stopped(Exception):
    """Raised by our SIGTERM handler once uvicorn, having drained, re-raises the signal."""


def _stop(signum, frame) -> None:
    raise _Stopped


def bind(host: str, port: int) -> tuple[socket.socket, str]:
    """A listening TCP socket on host:port (port 0: any free one) and its http:// URL."""
    if not 0 <= port <= 65535:
        raise InputError(f"--port {port}: choose from 0 to 65535")
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except socket.gaierror as exc:
        raise InputError(f"--host {host}: not an address of this machine ({exc.strerror})") from None
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        raise SbertError(f"cannot listen on {host}:{port} ({exc.strerror})") from None
    bound_host, bound_port = sock.getsockname()[:2]
    shown = f"[{bound_host}]" if ":" in bound_host else bound_host
    return sock, f"http://{shown}:{bound_port}"


def serve(options: ServeOptions, host: str, port: int, verbose: bool) -> None:
    """Serve until SIGTERM or Ctrl-C. InputError: the store cannot be served; SbertError: the port."""
    import uvicorn

    from sbert_cli.serve.app import create_app
    from sbert_cli.serve.protocol import with_header_deadline

    sock, url = bind(host, port)
    try:
        app = create_app(replace(options, listen_url=url))
        config = uvicorn.Config(
            app,
            lifespan="on",
            log_config=None,
            access_log=False,
            timeout_graceful_shutdown=max(1, int(options.timeout_s)),
            http=with_header_deadline(options.timeout_s),  # a request's headers: within --timeout too
        )
        server = uvicorn.Server(config)
        _run(server, sock, verbose)
    finally:
        sock.close()


def _run(server, sock: socket.socket, verbose: bool) -> None:
    uvicorn_log = logging.getLogger("uvicorn")
    previous_level = uvicorn_log.level
    uvicorn_log.setLevel(logging.INFO if verbose else logging.WARNING)  # our own lines say what it would
    previous_handler = signal.signal(signal.SIGTERM, _stop)
    try:
        server.run(sockets=[sock])
    except (_Stopped, KeyboardInterrupt):
        pass
    finally:
        signal.signal(signal.SIGTERM, previous_handler)
        uvicorn_log.setLevel(previous_level)
