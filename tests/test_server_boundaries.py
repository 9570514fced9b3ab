"""Each server limit at the limit and one past it, and request overrides priced before they queue.

The app is called in-process as uvicorn calls it (tests/test_server_limits.py `call`); the connection cap runs
uvicorn's own h11 protocol on in-memory transports, so a connection is exactly one `connection_made`.
"""
from __future__ import annotations

import asyncio
import json
import time

import anyio
import pytest
from uvicorn.config import Config
from uvicorn.server import ServerState

from adapters.server import create_app
from adapters.server.connections import GuardedH11Protocol
from adapters.server.cost import SPECIAL_TOKENS
from adapters.server.limits import MAX_TEXTS, SHOWN_IDENTIFIER_CHARS, ServerLimits, retry_after, shortened
from tests.test_server_limits import SST2, Client, Gate, Reply, body_of, call, run_async

GENERATE = "/models/t5-email/generate"


# ----- connections -----

class MemoryTransport(asyncio.Transport):
    """A connection with nothing behind it: what the protocol writes, and whether it closed."""

    def __init__(self, port: int):
        super().__init__()
        self.port, self.written, self.closed = port, b"", False

    def get_extra_info(self, name, default=None):
        return {"peername": ("127.0.0.1", self.port), "sockname": ("127.0.0.1", 8000)}.get(name, default)

    def write(self, data: bytes) -> None:
        self.written += data

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


def test_connections_up_to_the_cap_stay_open_and_one_past_it_is_503_and_closed(sst2):
    async def scenario():
        config = Config(app=create_app({"distilbert-sst2": sst2}), log_level="warning")
        state = ServerState()
        protocol = GuardedH11Protocol.with_limits(header_timeout=60, max_connections=3)

        def connect(port: int) -> tuple[GuardedH11Protocol, MemoryTransport]:
            connection, transport = protocol(config, state, {}), MemoryTransport(port)
            connection.connection_made(transport)
            if transport.closed:  # asyncio tells the protocol once the transport has closed
                connection.connection_lost(None)
            return connection, transport

        opened = [connect(port) for port in range(3)]  # at the cap
        assert not any(transport.closed for _, transport in opened) and len(state.connections) == 3
        _, refused = connect(3)  # one past it
        assert refused.closed and refused.written.startswith(b"HTTP/1.1 503") and b"retry-after: 1" in refused.written
        first, transport = opened[0]
        transport.close()
        first.connection_lost(None)
        _, again = connect(4)  # a place came free
        assert not again.closed and again.written == b""
        for connection in state.connections:
            connection._disarm_header_deadline()
    asyncio.run(scenario())


# ----- Retry-After -----

@pytest.mark.parametrize("seconds, header", [(0.0, "1"), (1e-9, "1"), (0.4, "1"), (1.0, "1"), (1.001, "2"),
                                             (59.5, "60")])
def test_retry_after_is_whole_seconds_and_never_0(seconds, header):
    assert retry_after(seconds) == {"Retry-After": header}


def test_an_echoed_identifier_of_exactly_the_shown_length_is_whole_and_one_character_more_is_cut():
    at_limit, past_it = "k" * SHOWN_IDENTIFIER_CHARS, "k" * (SHOWN_IDENTIFIER_CHARS + 1)
    assert shortened(at_limit) == at_limit
    assert shortened(past_it) == f"{at_limit}...({SHOWN_IDENTIFIER_CHARS + 1} characters)"


def test_a_full_queue_of_a_fast_model_still_says_retry_after_1(sst2):
    """The hint is the time the model takes to serve the excess at its measured rate: a fast model's is far below a
    second, and a Retry-After of 0 would invite clients to hammer the server."""
    app = create_app({"distilbert-sst2": sst2}, ServerLimits(max_queue_tokens=1))  # a request alone, no more

    async def scenario():
        for _ in range(12):  # fast calls bring the average well under half a second
            assert (await call(app, SST2, Client(body_of({"texts": ["hi"]})))).status == 200
        gate = Gate(sst2)
        running = asyncio.create_task(call(app, SST2, Client(body_of({"texts": ["one"]}))))
        await gate.until_active()
        refused = await call(app, SST2, Client(body_of({"texts": ["two"]})))
        gate.opened.set()
        await running
        return refused

    refused = run_async(scenario())
    assert refused.status == 503 and refused.headers["retry-after"] == "1"
    served = app.state.runners["distilbert-sst2"]._served
    assert served.seconds_to_serve(2 * served.tokens // 12) < 0.5  # two requests' worth: the case the check is about


# ----- bodies -----

def padded_body(texts: list[str], size: int) -> bytes:
    """A JSON body of exactly `size` bytes (trailing spaces are JSON whitespace)."""
    body = json.dumps({"texts": texts}).encode()
    assert len(body) <= size
    return body + b" " * (size - len(body))


@pytest.mark.parametrize("declared", [False, True], ids=["streamed", "content-length"])
def test_a_body_of_exactly_the_limit_is_read_and_one_byte_more_is_413(sst2, declared):
    limit = 200
    app = create_app({"distilbert-sst2": sst2}, ServerLimits(max_body_bytes=limit))

    def send(size: int) -> Reply:
        body = padded_body(["hi"], size)
        headers = ((b"content-length", str(size).encode()),) if declared else ()
        return run_async(call(app, SST2, Client([body[:100], body[100:]]), headers=headers))

    assert send(limit).status == 200
    too_large = send(limit + 1)
    assert too_large.status == 413 and f"limit of {limit} bytes" in too_large.json()["detail"]


def test_request_bytes_held_at_once_may_reach_the_cap_but_not_pass_it(sst2):
    limits = ServerLimits(max_pending_bytes=1000, body_timeout=0.5)
    app = create_app({"distilbert-sst2": sst2}, limits)

    async def scenario(size: int) -> Reply:
        parked = asyncio.create_task(call(app, SST2, Client([b" " * 800], stall=True)))
        await asyncio.sleep(0.1)
        reply = await call(app, SST2, Client([padded_body(["hi"], size)]))
        assert (await parked).status == 408  # and its bytes are given back
        return reply

    assert run_async(scenario(200)).status == 200  # 800 + 200: at the cap
    crowded = run_async(scenario(201))
    assert crowded.status == 503 and crowded.headers["retry-after"] == "1"


def test_a_body_trickled_under_any_per_chunk_timeout_still_ends_at_the_whole_body_deadline(sst2):
    """A client that sends one byte every 50 ms never stalls long, but its body must be in within body_timeout."""
    app = create_app({"distilbert-sst2": sst2}, ServerLimits(body_timeout=0.6))

    async def trickle(chunks: int | None) -> tuple[Reply, float]:
        sent = [0]

        async def receive() -> dict:
            await anyio.sleep(0.05)
            sent[0] += 1
            if chunks is not None and sent[0] > chunks:
                return {"type": "http.request", "body": json.dumps({"texts": ["hi"]}).encode(), "more_body": False}
            return {"type": "http.request", "body": b" ", "more_body": True}

        replies: list[dict] = []

        async def send(message: dict) -> None:
            replies.append(message)
        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
                 "scheme": "http", "path": SST2, "raw_path": SST2.encode(), "query_string": b"", "root_path": "",
                 "headers": [(b"content-type", b"application/json")], "client": ("127.0.0.1", 1),
                 "server": ("in-process", 80), "state": {}}
        started = time.monotonic()
        await asyncio.wait_for(app(scope, receive, send), timeout=5)
        return Reply(replies[0]["status"], {k.decode(): v.decode() for k, v in replies[0]["headers"]},
                     b"".join(m.get("body", b"") for m in replies[1:])), time.monotonic() - started

    endless, seconds = asyncio.run(trickle(None))
    assert endless.status == 408 and endless.headers["connection"] == "close"
    assert 0.5 < seconds < 2.0
    in_time, _ = asyncio.run(trickle(4))  # 5 chunks over 0.25 s: within the deadline
    assert in_time.status == 200


def test_texts_up_to_the_limit_are_answered_and_one_more_is_422(sst2):
    app = create_app({"distilbert-sst2": sst2})
    assert run_async(call(app, SST2, Client(body_of({"texts": ["a"] * MAX_TEXTS})))).status == 200
    over = run_async(call(app, SST2, Client(body_of({"texts": ["a"] * (MAX_TEXTS + 1)}))))
    assert over.status == 422 and f"limit of {MAX_TEXTS}" in over.body.decode()


# ----- request overrides are priced -----

@pytest.mark.parametrize("override", ["n_gen", "token_count"])
def test_request_overrides_are_priced_by_the_cost_cap_at_the_cap_and_one_past_it(make_adapter, override):
    """A request that asks for more generations or a longer answer costs more: it is priced with its overrides
    before it queues (413 past the cap), not with the server's configuration."""
    t5 = make_adapter("models.t5_email", token_count=8, n_gen=1)
    prompt = "lunch on friday"
    row = len(prompt) + SPECIAL_TOKENS  # bytes of the input, and the special tokens of its row
    asked = {"n_gen": {"n_gen": 4, "do_sample": True}, "token_count": {"token_count": 40}}[override]
    cost = 4 * (row + 8) if override == "n_gen" else row + 40
    assert cost > 2 * (row + 8)  # far more than the same request without the override

    def status(limit: int) -> Reply:
        app = create_app({"t5-email": t5}, ServerLimits(max_request_tokens=limit))
        return run_async(call(app, GENERATE, Client(body_of({"prompt": prompt, "seed": 1, **asked}))))

    assert status(cost).status == 200
    refused = status(cost - 1)
    assert refused.status == 413 and f"about {cost} tokens" in refused.json()["detail"]


def test_predict_takes_up_to_the_limit_of_items_and_of_elements_and_refuses_one_more(sst2):
    app = create_app({"distilbert-sst2": sst2})
    predict = "/models/distilbert-sst2/predict"
    image = {"mimetype": "image/png", "value": "x"}

    def item(elements: int) -> dict:  # one text and images (skipped: they cost the model nothing)
        return {"prompts": {"1": {"q": {"mimetype": "application/text", "value": "hi"},
                                  **{f"i{n}": image for n in range(elements - 1)}}}}

    for body, what in (([item(1)] * MAX_TEXTS, "prompt items"), ([item(MAX_TEXTS)], "prompt elements")):
        assert run_async(call(app, predict, Client(body_of(body)))).status == 200
        over = [item(1)] * (MAX_TEXTS + 1) if what == "prompt items" else [item(MAX_TEXTS + 1)]
        refused = run_async(call(app, predict, Client(body_of(over))))
        assert refused.status == 422 and what in refused.json()["detail"]
