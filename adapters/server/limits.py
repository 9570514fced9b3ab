"""What one request, one client and the whole server may take, and the ASGI guard on request bodies.

`RequestBodyGuard` caps a body's size (by Content-Length and by the bytes actually sent), the time it may take
to arrive, and the request bytes held at once over all requests, so slow or parked uploads cannot pile up
memory. uvicorn has no body limit or read deadline; FastAPI's `max_body_size` answers a too-large
Content-Length with plain text ("Content Too Large") whatever the app sends, and every error of this server
is JSON with a `detail` that says what to do, so the size cap is counted here too.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Awaitable, Callable

import anyio
from starlette.exceptions import HTTPException

from .responses import JSONAnswer

MAX_TEXTS = 256  # texts, sequences, turns, prompt items or prompt elements in one request
MAX_IDENTIFIER_CHARS = 256  # longest prompt key /predict takes: each answer echoes it in `promptId`
SHOWN_IDENTIFIER_CHARS = 64  # item names and keys echoed in responses are cut to this
MAX_HEADER_BYTES = 16 * 1024  # an incomplete request head past this is a 400 (uvicorn's h11_max_incomplete_event_size)
# asyncio accepts up to `backlog` connections in one go before any of them reaches the connection cap, so the
# file handles kept free of connections cover two such bursts, plus model files and logs.
ACCEPT_BURST = 128  # the listen backlog
RESERVED_FILE_HANDLES = 2 * ACCEPT_BURST + 64

CLOSE = {"Connection": "close"}  # on errors that leave a body unread: the connection cannot be reused

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


@dataclass(frozen=True)
class ServerLimits:
    """Every limit of `python -m adapters serve`; each one is a command-line option (docs/server.md)."""

    max_body_bytes: int = 1 << 20  # 1 MiB: far more than a few hundred texts, small enough to parse without worry
    max_pending_bytes: int = 64 << 20  # request bytes held at once over all requests (503 past it)
    header_timeout: float = 10.0  # seconds to send the request line and headers (connection closed past it)
    body_timeout: float = 30.0  # seconds to send the body once the headers are in (408 past it)
    keep_alive_timeout: int = 5  # seconds an idle connection stays open between requests
    max_connections: int = 1000  # open connections; more are answered 503 and closed at once
    max_queue: int = 16  # requests per model, running or waiting (503 with Retry-After past it)
    max_request_tokens: int = 1 << 19  # estimated padded tokens one request may cost a model (413 past it)
    shutdown_timeout: float = 10.0  # seconds SIGTERM waits for running requests before it abandons them


def shortened(identifier: str, limit: int = SHOWN_IDENTIFIER_CHARS) -> str:
    """An item name or key as responses echo it: whole when short, else its start and how long it was."""
    if len(identifier) <= limit:
        return identifier
    return f"{identifier[:limit]}...({len(identifier)} characters)"


class RequestBodyGuard:
    """Time-limits reading each request body and caps the bytes held by all requests at once.

    A body must arrive within `body_timeout` seconds (408 otherwise). Its bytes count against
    `max_pending_bytes` until the response is sent, so the cap also covers requests waiting for a model;
    a request that would go past it gets 503 with Retry-After instead of more memory.
    """

    def __init__(self, app: Callable, limits: ServerLimits):
        self.app = app
        self.limits = limits
        self.pending_bytes = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.limits.max_body_bytes:
            await JSONAnswer({"detail": self._too_large()}, status_code=413, headers=CLOSE)(scope, receive, send)
            return
        held = 0
        deadline = anyio.current_time() + self.limits.body_timeout
        body_done = False

        async def guarded_receive() -> Message:
            nonlocal held, body_done
            if body_done:  # after the body: disconnect watching, no deadline
                return await receive()
            with anyio.move_on_after(deadline - anyio.current_time()):
                message = await receive()
                size = len(message.get("body", b""))
                if held + size > self.limits.max_body_bytes:
                    raise HTTPException(413, self._too_large(), headers=CLOSE)
                if self.pending_bytes + size > self.limits.max_pending_bytes:
                    raise HTTPException(503, "the server holds as many request bytes as it may; retry shortly",
                                        headers={**retry_after(1), **CLOSE})
                self.pending_bytes += size
                held += size
                body_done = message["type"] != "http.request" or not message.get("more_body", False)
                return message
            raise HTTPException(408, f"the request body did not arrive within {self.limits.body_timeout:g} "
                                     "seconds", headers=CLOSE)

        try:
            await self.app(scope, guarded_receive, send)
        finally:
            self.pending_bytes -= held

    def _too_large(self) -> str:
        return (f"the request body is larger than the server's limit of {self.limits.max_body_bytes} bytes; "
                "send fewer or shorter texts per request")


def retry_after(seconds: float) -> dict[str, str]:
    """A Retry-After header of at least one whole second."""
    return {"Retry-After": str(max(1, math.ceil(seconds)))}
