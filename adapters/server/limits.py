"""What one request, one client and the whole server may take (plain values: the CLI reads them cheaply)."""
from __future__ import annotations

import math
from dataclasses import dataclass

MAX_TEXTS = 256  # texts, sequences, turns, prompt items or prompt elements in one request
MAX_IDENTIFIER_CHARS = 256  # longest prompt key /predict takes: each answer echoes it in `promptId`
SHOWN_IDENTIFIER_CHARS = 64  # item names and keys echoed in responses are cut to this
MAX_HEADER_BYTES = 16 * 1024  # an incomplete request head past this is a 400 (uvicorn's h11_max_incomplete_event_size)
MAX_HEADER_COUNT = 100  # headers in one request (as Apache's LimitRequestFields); h11 and uvicorn set none
# asyncio accepts up to `backlog` connections in one go before any of them reaches the connection cap, so the
# file handles kept free of connections cover two such bursts, plus model files and logs.
ACCEPT_BURST = 128  # the listen backlog
RESERVED_FILE_HANDLES = 2 * ACCEPT_BURST + 64
# Requests of one model inside `predict` at once, each in a worker thread (the others are admitted and wait for a
# thread): enough for the model's batcher to gather 4 micro-batches of one-text requests (4 x batch_size 32) while
# the previous ones run.
CALLS_AT_ONCE = 256


@dataclass(frozen=True)
class ServerLimits:
    """Every limit of `python -m adapters serve`; each one is a command-line option (docs/server.md)."""

    max_body_bytes: int = 1 << 20  # 1 MiB: far more than a few hundred texts, small enough to parse without worry
    max_pending_bytes: int = 64 << 20  # request bytes held at once over all requests (503 past it)
    header_timeout: float = 10.0  # seconds to send the request line and headers (connection closed past it)
    body_timeout: float = 30.0  # seconds to send the body once the headers are in (408 past it)
    keep_alive_timeout: int = 5  # seconds an idle connection stays open between requests
    max_connections: int = 1000  # open connections; more are answered 503 and closed at once
    max_request_tokens: int = 1 << 19  # estimated padded tokens one request may cost a model (413 past it)
    # Estimated padded tokens of the requests one model has running or waiting (503 with Retry-After past it): two
    # of the costliest requests, or 2048 one-text requests at DistilBERT's full window of 512 tokens.
    max_queue_tokens: int = 1 << 20
    shutdown_timeout: float = 10.0  # seconds SIGTERM waits for running requests before it abandons them


def shortened(identifier: str, limit: int = SHOWN_IDENTIFIER_CHARS) -> str:
    """An item name or key as responses echo it: whole when short, else its start and how long it was."""
    if len(identifier) <= limit:
        return identifier
    return f"{identifier[:limit]}...({len(identifier)} characters)"


def retry_after(seconds: float) -> dict[str, str]:
    """A Retry-After header of at least one whole second."""
    return {"Retry-After": str(max(1, math.ceil(seconds)))}
