"""Connection-level guards uvicorn lacks: a deadline for request headers and a cap on open connections.

uvicorn times out idle keep-alive connections but not a client that trickles its headers, or connects and
sends nothing; each such connection holds a file handle forever, and once handles run out `accept` fails in
a loop and nothing, `/health` included, is answered. `GuardedH11Protocol` closes a connection whose request
head has not arrived within `header_timeout` seconds (after connecting, or after its previous response), and
answers 503 and closes at once any connection beyond `max_connections`, which is kept below the process's
file-handle limit so `accept` always has a handle to work with.
"""
from __future__ import annotations

import asyncio
import json
import logging
import resource
from typing import ClassVar

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from .limits import RESERVED_FILE_HANDLES

logger = logging.getLogger(__name__)



def _reply(status: bytes, detail: str, *headers: bytes) -> bytes:
    """A complete HTTP/1.1 JSON response, written straight to a connection that has no request to answer."""
    body = json.dumps({"detail": detail}).encode()
    head = [b"HTTP/1.1 " + status, b"content-type: application/json", b"connection: close",
            b"content-length: %d" % len(body), *headers]
    return b"\r\n".join(head) + b"\r\n\r\n" + body


BUSY = _reply(b"503 Service Unavailable", "the server has as many connections open as it may; retry shortly",
              b"retry-after: 1")
TIMED_OUT = _reply(b"408 Request Timeout", "the request headers did not arrive in time")


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a request-head deadline and a connection cap (set by `with_limits`)."""

    header_timeout: ClassVar[float] = 10.0
    max_connections: ClassVar[int] = 1000
    _header_timer: asyncio.TimerHandle | None = None

    @classmethod
    def with_limits(cls, header_timeout: float, max_connections: int) -> type[GuardedH11Protocol]:
        """The protocol class to hand to uvicorn (`http=`), with these limits."""
        return type(cls.__name__, (cls,), {"header_timeout": header_timeout, "max_connections": max_connections})

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.max_connections:
            logger.warning("refused a connection: %d are open, the limit is %d",
                           len(self.connections) - 1, self.max_connections)
            transport.write(BUSY)
            transport.close()
            return
        self._arm_header_deadline()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm_header_deadline()  # the next request on this connection gets the same deadline

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_header_deadline()
        super().connection_lost(exc)

    def _arm_header_deadline(self) -> None:
        self._disarm_header_deadline()
        self._header_timer = self.loop.call_later(self.header_timeout, self._header_deadline_passed)

    def _disarm_header_deadline(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _header_deadline_passed(self) -> None:
        self._header_timer = None
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():  # no complete request head
            logger.debug("closed a connection whose request headers did not arrive in %gs", self.header_timeout)
            self.transport.write(TIMED_OUT)
            self.transport.close()


def connection_cap(requested: int) -> int:
    """`requested` connections, or fewer when the file-handle limit (raised to its hard maximum) is lower."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = requested + RESERVED_FILE_HANDLES
    if soft != resource.RLIM_INFINITY and soft < wanted:
        new_soft = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (new_soft, hard))
        soft = new_soft
    if soft == resource.RLIM_INFINITY or soft >= wanted:
        return requested
    allowed = soft - min(RESERVED_FILE_HANDLES, soft // 2)
    logger.warning("serving at most %d connections: the process may open only %d files (ulimit -n)",
                   allowed, soft)
    return allowed
