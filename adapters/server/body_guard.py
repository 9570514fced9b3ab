"""The ASGI guard on request bodies: their size, the time they take to arrive, and the bytes held at once.

uvicorn has no body limit or read deadline. FastAPI's `max_body_size` answers a too-large Content-Length with
plain text ("Content Too Large") whatever the app sends, while every error of this server is JSON with a
`detail` that says what to do, so the size cap is counted here too.
"""
from __future__ import annotations

from typing import Any, Awaitable, Callable

import anyio
from starlette.exceptions import HTTPException

from .limits import ServerLimits, retry_after
from .responses import JSONAnswer

CLOSE = {"Connection": "close"}  # on errors that leave a body unread: the connection cannot be reused

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


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
