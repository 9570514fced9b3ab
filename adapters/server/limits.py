"""Request-size caps of the server, and the ASGI middleware that enforces the body cap before any parsing."""
from __future__ import annotations

import json
from typing import Any, Awaitable, Callable

MAX_BODY_BYTES = 1 << 20  # 1 MiB: far more than a few hundred texts, small enough to parse without worry
MAX_TEXTS = 256  # texts, sequences, turns or prompt elements in one request

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


class BodySizeLimit:
    """Refuse request bodies over `max_bytes` with 413, by Content-Length and by the bytes actually streamed.

    The body is read here (at most `max_bytes` of it) and replayed to the app, so a chunked upload without a
    Content-Length cannot get a larger body past the check.
    """

    def __init__(self, app: Callable, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None:
            if not declared.isdigit():
                await _reply(send, 400, "the Content-Length header must be a whole number of bytes")
                return
            if int(declared) > self.max_bytes:
                await self._too_large(send)
                return
        body = bytearray()
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > self.max_bytes:
                await self._too_large(send)
                return
        await self.app(scope, _replay(bytes(body), receive), send)

    async def _too_large(self, send: Send) -> None:
        await _reply(send, 413, f"the request body is larger than the server's limit of {self.max_bytes} bytes; "
                                "send fewer or shorter texts per request")


def _replay(body: bytes, receive: Receive) -> Receive:
    """A `receive` that hands the app the buffered body once, then passes on later messages (disconnects)."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if sent:
            return await receive()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay


async def _reply(send: Send, status: int, detail: str) -> None:
    payload = json.dumps({"detail": detail}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": payload})
