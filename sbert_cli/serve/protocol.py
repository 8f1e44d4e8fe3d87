"""uvicorn's HTTP protocol with a deadline for a request's headers.

uvicorn times nothing before a request's headers are complete: its keep-alive timer is reset by
every byte received, so a client that sends a header line now and then (Slowloris) holds a
connection, and a socket, for as long as it likes; the app cannot help, as it is only called once
the headers are in. Here a connection waiting for a request (just opened, or after an answer) is
closed when the request's headers have not all arrived within the deadline. The body is bounded
by the request timeout already (guard.py), so a whole request is bounded.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

log = logging.getLogger("sbert")


def _base_protocol() -> type:
    """The protocol uvicorn's `http="auto"` picks: httptools' parser where installed, else h11."""
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
    except ImportError:
        from uvicorn.protocols.http.h11_impl import H11Protocol

        return H11Protocol
    return HttpToolsProtocol


def with_header_deadline(deadline_s: float) -> type[asyncio.Protocol]:
    """uvicorn's HTTP protocol class, closing connections whose request headers take longer than
    `deadline_s` to arrive (pass it as uvicorn.Config(http=...))."""
    base: Any = _base_protocol()

    class HeaderDeadline(base):
        _timer: asyncio.TimerHandle | None = None
        _waiting_after: Any = None  # the request cycle (None: none yet) a new request must replace

        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            self._await_request()

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if self._timer is not None and self.cycle is not self._waiting_after:  # headers complete
                self._disarm()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            # Unless a pipelined request already started: the next one's headers are awaited.
            if not self.transport.is_closing() and (self.cycle is None or self.cycle.response_complete):
                self._await_request()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _await_request(self) -> None:
            self._disarm()
            self._waiting_after = self.cycle
            self._timer = self.loop.call_later(deadline_s, self._expired)

        def _disarm(self) -> None:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None

        def _expired(self) -> None:
            self._timer = None
            client = "{}:{}".format(*self.client) if self.client else "a client"
            log.debug("%s: no complete request within %g s; connection closed", client, deadline_s)
            self.transport.close()

    return HeaderDeadline
