"""The ASGI guard on request bodies: their size, the time they take to arrive, and the bytes held at once.

uvicorn has no body limit or read deadline. FastAPI's `max_body_size` answers a too-large Content-Length with
plain text ("Content Too Large") whatever the app sends, while every error of this server is JSON with a
`detail` that says what to do, so the size cap is counted here too.
"""
from __future__ import annotations

from typing import Any, Awaitable, Callable

import anyio
from starlette.exceptions import HTTPException

from .limits import MAX_HEADER_BYTES, MAX_HEADER_COUNT, ServerLimits, retry_after
from .responses import JSONAnswer

CLOSE = {"Connection": "close"}  # on errors that leave a body unread: the connection cannot be reused

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


def head_problem(scope: Scope) -> str | None:
    """Why a request's line and headers are refused (too many headers, or more than MAX_HEADER_BYTES as sent).

    uvicorn's h11 bound (16 KiB) holds only while a head is incomplete: one that arrives whole in a read (up to
    64 KiB) was accepted, 20 KB headers and 3,000 headers alike.
    """
    headers = scope.get("headers") or []
    if len(headers) > MAX_HEADER_COUNT:
        return f"the request has {len(headers)} headers, more than the server's limit of {MAX_HEADER_COUNT}"
    query = scope.get("query_string") or b""
    size = (len(scope.get("method", "")) + 1 + len(scope.get("raw_path") or scope.get("path", "").encode())
            + (1 + len(query) if query else 0) + len(" HTTP/\r\n") + len(scope.get("http_version", "1.1"))
            + sum(len(name) + len(value) + 4 for name, value in headers) + 2)
    if size > MAX_HEADER_BYTES:
        return f"the request line and headers take {size} bytes, more than the server's limit of {MAX_HEADER_BYTES}"
    return None


class RequestBodyGuard:
    """Refuses oversized request heads (431), time-limits reading each request body and caps the bytes held by all
    requests at once.

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
        problem = head_problem(scope)
        if problem:
            await JSONAnswer({"detail": f"{problem}; send fewer or shorter headers"}, status_code=431,
                             headers=CLOSE)(scope, receive, send)
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
