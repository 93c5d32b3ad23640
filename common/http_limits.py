"""Connection limits of every HTTP port moments serves (collector, read API, ops port).

Two things keep a handful of clients from taking a port away from everyone
else (the probes included):

- a cap on the connections one client address holds open at once
  (`MOMENTS_HTTP_CLIENT_CONNECTIONS`): a connection beyond it is answered
  429 and closed at once, so reconnecting does not help;
- a deadline for a request's headers (idle connections, a header sent a byte
  at a time): a connection without a complete request line and headers within
  the deadline of its start (or of the first byte of its next request) is
  closed; between requests uvicorn's keep-alive timeout closes it.

`ConnectionCounter` is the cap's bookkeeping, shared by the uvicorn servers
(`limited_protocol`) and the threaded ops server (`common.metrics`).
"""

from __future__ import annotations

import asyncio
import functools
import threading
from typing import Any, Final

#: What a client beyond its connection cap reads before the connection closes.
TOO_MANY_CONNECTIONS: Final = (
    b"HTTP/1.1 429 Too Many Requests\r\n"
    b"Content-Type: text/plain\r\nContent-Length: 42\r\nConnection: close\r\n\r\n"
    b"too many open connections from this client"
)


class ConnectionCounter:
    """Open connections per client address, at most `limit` each (0: no limit); thread-safe."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._open: dict[str, int] = {}
        self._lock = threading.Lock()

    def acquire(self, address: str) -> bool:
        """Count one more connection of ADDRESS; False (nothing counted) when it has `limit`."""
        with self._lock:
            held = self._open.get(address, 0)
            if self.limit and held >= self.limit:
                return False
            self._open[address] = held + 1
            return True

    def release(self, address: str) -> None:
        """One connection of ADDRESS (counted by `acquire`) is closed."""
        with self._lock:
            held = self._open.get(address, 0) - 1
            if held > 0:
                self._open[address] = held
            else:
                self._open.pop(address, None)

    def held(self, address: str) -> int:
        """How many connections ADDRESS holds now."""
        with self._lock:
            return self._open.get(address, 0)


def peer_address(transport: asyncio.BaseTransport) -> str:
    """The client's IP address ("" for a Unix socket)."""
    peer = transport.get_extra_info("peername")
    return str(peer[0]) if isinstance(peer, tuple) and peer else ""


def limited_protocol(header_timeout_s: float, client_connections: int) -> type[Any]:
    """A `LimitedHttpProtocol` class for one server (`uvicorn.Config(http=...)`): its own
    counter, so two servers in a process do not share a client's cap."""
    return type(
        "LimitedHttpProtocol",
        (_protocol_base(),),
        {
            "header_timeout_s": header_timeout_s,
            "counter": ConnectionCounter(client_connections),
        },
    )


@functools.cache
def _protocol_base() -> type[Any]:
    """The protocol class, made on first use: uvicorn is imported only by the HTTP servers,
    not by every process that imports the ops port's counter."""
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    class LimitedHttpProtocol(HttpToolsProtocol):
        """uvicorn's httptools protocol with a per-client connection cap and a deadline for a
        request's headers (uvicorn has neither: an idle client holds its socket, and a slot under
        `limit_concurrency`, for ever). Made per server by `limited_protocol`."""

        header_timeout_s: float = 10.0
        counter: ConnectionCounter = ConnectionCounter(0)
        _header_timer: asyncio.TimerHandle | None = None
        _counted: str | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            address = peer_address(transport)
            if not self.counter.acquire(address):
                transport.write(TOO_MANY_CONNECTIONS)
                transport.close()
                return
            self._counted = address
            self._arm_header_timer()

        def on_message_begin(self) -> None:
            super().on_message_begin()
            if self._header_timer is None:
                self._arm_header_timer()

        def on_headers_complete(self) -> None:
            self._cancel_header_timer()
            super().on_headers_complete()

        def connection_lost(self, exc: Exception | None) -> None:
            self._cancel_header_timer()
            if self._counted is not None:
                self.counter.release(self._counted)
                self._counted = None
            super().connection_lost(exc)

        def _arm_header_timer(self) -> None:
            self._header_timer = self.loop.call_later(self.header_timeout_s, self._headers_late)

        def _cancel_header_timer(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def _headers_late(self) -> None:
            self._header_timer = None
            if not self.transport.is_closing():
                self.transport.close()

    return LimitedHttpProtocol
