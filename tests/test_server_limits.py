"""The server protects itself: slow clients, full queues, departed clients, costly requests, bad items, faults.

Most checks call the ASGI app in-process the way uvicorn does (`call`), which makes stalls and disconnects
exact; the connection-level guards (header deadline, connection cap, file handles, SIGTERM) run the real
`python -m adapters serve` on a loopback port.
"""
from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import anyio
import httpx
import pytest

from adapters.cli import build_parser
from adapters.cli import serve as serve_command
from adapters.cli._common import CommandError
from adapters.core.errors import ModelFailure
from adapters.core.prompt_items import parse_prompt_item
from adapters.server import create_app
from adapters.server.cost import SCORE_BYTES, SPECIAL_TOKENS, request_cost
from adapters.server.limits import (
    MAX_HEADER_BYTES,
    MAX_HEADER_COUNT,
    MAX_IDENTIFIER_CHARS,
    MAX_TEXTS,
    RESERVED_FILE_HANDLES,
    SHOWN_IDENTIFIER_CHARS,
    ServerLimits,
)
from adapters.server.logs import RepeatedLogFilter
from adapters.server.runner import ModelRunner, QueueFull, ServedRate
from tests.conftest import ROOT
from tests.prompt_factory import current_item, legacy_item
from tests.servers import free_loopback_port, wait_until_ready

SST2 = "/models/distilbert-sst2/classify"


# ----- calling the app as uvicorn does -----

@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Client:
    """One request as a client sends it: the body in `chunks`; `stall` stops before the body ends; setting
    `leave` disconnects the client once its body is sent."""

    chunks: list[bytes]
    stall: bool = False
    leave: anyio.Event = field(default_factory=anyio.Event)


async def call(app, path: str, client: Client, headers: tuple = ()) -> Reply:
    pending = list(client.chunks)

    async def receive() -> dict:
        if pending:
            chunk = pending.pop(0)
            return {"type": "http.request", "body": chunk, "more_body": bool(pending) or client.stall}
        if client.stall:
            await anyio.sleep_forever()
        await client.leave.wait()
        return {"type": "http.disconnect"}

    sent: list[dict] = []

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
             "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
             "headers": [(b"content-type", b"application/json"), *headers], "client": ("127.0.0.1", 1),
             "server": ("in-process", 80), "state": {}}
    await app(scope, receive, send)
    start = sent[0]
    return Reply(start["status"], {k.decode(): v.decode() for k, v in start["headers"]},
                 b"".join(m.get("body", b"") for m in sent[1:]))


def body_of(value: Any) -> list[bytes]:
    return [json.dumps(value).encode()]


def run_async(scenario):
    return asyncio.run(asyncio.wait_for(scenario, timeout=60))


class Gate:
    """Holds every forward pass of `adapter`'s model until opened, and records the rows of each."""

    def __init__(self, adapter):
        self.opened, self.rows, self.active = threading.Event(), [], 0
        real = adapter.forward

        def held(inputs):
            self.rows.append(inputs["input_ids"].shape[0])
            self.active += 1
            try:
                self.opened.wait(timeout=30)
                return real(inputs)
            finally:
                self.active -= 1
        adapter.forward = held

    @property
    def calls(self) -> int:
        return len(self.rows)

    async def until_active(self) -> None:
        for _ in range(3000):
            if self.active:
                return
            await asyncio.sleep(0.01)
        raise AssertionError("no forward pass started")


async def until_queued(adapter, calls: int) -> None:
    """Until `calls` calls' rows wait in the model's batcher (their requests admitted and inside `predict`)."""
    for _ in range(3000):
        if len(adapter.batcher._queue) == calls:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{calls} calls never queued")


def one_text_cost(text: str) -> int:
    """What a one-text /classify request costs DistilBERT: its bytes and special tokens (texts under the window)."""
    return len(text.encode()) + SPECIAL_TOKENS


# ----- admission by cost -----

@pytest.mark.parametrize("room", [0, -1], ids=["at-the-limit", "one-past"])
def test_requests_are_admitted_by_cost_and_refused_503_with_retry_after_only_past_the_token_limit(sst2, room):
    """The model's admitted requests may cost `max_queue_tokens` together: a request that fits exactly is admitted
    and answered; one token more is a 503 with a Retry-After of at least a second, and nothing of it runs."""
    gate = Gate(sst2)
    limit = one_text_cost("one") + one_text_cost("two") + room
    app = create_app({"distilbert-sst2": sst2}, ServerLimits(max_queue_tokens=limit))

    async def scenario():
        running = asyncio.create_task(call(app, SST2, Client(body_of({"texts": ["one"]}))))
        await gate.until_active()
        second = asyncio.create_task(call(app, SST2, Client(body_of({"texts": ["two"]}))))
        if room == 0:
            await until_queued(sst2, 1)
        reply = None if room == 0 else await second
        gate.opened.set()
        return await running, reply or await second

    running, second = run_async(scenario())
    assert running.status == 200
    if room == 0:
        assert second.status == 200 and gate.rows == [1, 1]
    else:
        assert second.status == 503 and int(second.headers["retry-after"]) >= 1
        assert f"about {one_text_cost('one')} tokens" in second.json()["detail"]
        assert f"limit of {limit}" in second.json()["detail"]
        assert gate.rows == [1]  # the refused request never reached the model


def test_a_request_alone_is_admitted_whatever_the_queue_limit(sst2):
    """The queue limit bounds requests waiting behind others; one request alone (within max_request_tokens) runs."""
    app = create_app({"distilbert-sst2": sst2}, ServerLimits(max_queue_tokens=16))
    reply = run_async(call(app, SST2, Client(body_of({"texts": ["a text that costs more than sixteen tokens"]}))))
    assert reply.status == 200


def test_retry_after_is_the_time_the_model_takes_to_serve_the_excess():
    rate = ServedRate()
    assert rate.seconds_to_serve(10_000) == 1.0  # nothing served yet: retry in a second
    rate = ServedRate(tokens=1000, seconds=4.0)  # 250 tokens a second
    assert rate.seconds_to_serve(500) == pytest.approx(2.0)


@pytest.fixture
def clock(monkeypatch) -> list[float]:
    """The server's monotonic clock, set by the test: `clock[0] = seconds`."""
    now = [0.0]
    monkeypatch.setattr("adapters.server.runner.time.monotonic", lambda: now[0])
    return now


def test_the_served_rate_counts_the_time_requests_were_admitted_and_not_the_idle_time(clock):
    """The rate behind Retry-After: tokens served over the seconds during which at least one request was admitted
    (overlapping requests count their shared time once; time with nothing admitted is not the model's); a model
    that served tokens in no measurable time still says one second, never zero."""
    rate = ServedRate(busy_since=100.0)

    def at(moment: float) -> ServedRate:
        clock[0] = moment
        return rate

    at(0).admit()
    at(1).admit()  # overlaps the first: its second is not counted twice
    at(3).release(100)
    assert at(4).seconds_to_serve(50) == pytest.approx(50 * 4 / 100)  # one request still admitted: busy 4 s so far
    at(5).release(300)
    assert at(10).seconds_to_serve(80) == pytest.approx(80 * 5 / 400)  # idle from 5 to 10: still 5 busy seconds
    at(10).admit()
    assert at(12).seconds_to_serve(400) == pytest.approx(400 * 7 / 400)
    at(12).release(100)  # a second busy stretch, added to the first
    assert at(20).seconds_to_serve(500) == pytest.approx(500 * 7 / 500)
    instant = ServedRate()
    at(20)
    instant.admit()
    instant.release(10)  # served, in no time at all by the clock
    assert instant.seconds_to_serve(5) == 1.0


def test_retry_after_is_the_time_to_serve_only_what_passes_the_queue_limit(sst2, clock):
    """A refused request is told to come back when the model will have served the excess (what is queued plus
    the request, less the limit) at its measured rate; not the whole queue, not a second by default."""
    clock[0] = 50.0
    runner = ModelRunner("distilbert-sst2", sst2, ServerLimits(max_queue_tokens=1000))
    runner._served = ServedRate(tokens=1000, seconds=10.0)  # served so far: 100 tokens a second
    runner.admit(600)
    runner.admit(300)  # both are queued: 900 tokens
    with pytest.raises(QueueFull) as refused:
        runner.check_queue(400)
    assert refused.value.headers == {"Retry-After": str((900 + 400 - 1000) // 100)}


def test_a_client_that_left_before_its_turn_never_runs_the_model_and_frees_its_place(sst2):
    gate = Gate(sst2)
    limit = one_text_cost("one") + one_text_cost("gone")
    app = create_app({"distilbert-sst2": sst2}, ServerLimits(max_queue_tokens=limit))

    async def scenario():
        running = asyncio.create_task(call(app, SST2, Client(body_of({"texts": ["one"]}))))
        await gate.until_active()
        quitter = Client(body_of({"texts": ["gone"]}))
        abandoned = asyncio.create_task(call(app, SST2, quitter))
        await until_queued(sst2, 1)
        quitter.leave.set()
        left = await asyncio.wait_for(abandoned, 5)  # while the model is still busy: its place is given up now
        behind = asyncio.create_task(call(app, SST2, Client(body_of({"texts": ["next"]}))))  # fits in the queue
        await until_queued(sst2, 2)  # "gone"'s rows (dropped when their turn comes) and "next"'s
        gate.opened.set()
        return left, await running, await behind

    left, running, behind = run_async(scenario())
    assert left.status == 499
    assert (running.status, behind.status) == (200, 200)
    assert gate.rows == [1, 1]  # "gone" never reached the model: the second pass holds "next" alone


def test_a_request_over_the_cost_limit_is_413_before_it_queues(sst2):
    gate = Gate(sst2)
    gate.opened.set()
    window = sst2.max_input_tokens
    app = create_app({"distilbert-sst2": sst2}, ServerLimits(max_request_tokens=3 * window))

    async def scenario():
        fits = await call(app, SST2, Client(body_of({"texts": ["word " * 1000] * 3})))
        too_much = await call(app, SST2, Client(body_of({"texts": ["word " * 1000] * 4})))
        return fits, too_much

    fits, too_much = run_async(scenario())
    assert fits.status == 200
    assert too_much.status == 413 and f"limit of {3 * window}" in too_much.json()["detail"]
    assert gate.calls == 1


def test_a_zero_shot_answer_that_echoes_labels_per_text_is_priced_413_before_it_queues(make_adapter):
    """4.5 KB asked for 256 texts x 16 labels of 200 characters and got 941 KB back: every label is echoed, with its
    score, for every text. The answer is priced with the work, and refused with the figure."""
    bart = make_adapter("models.bart_large_mnli")
    gate = Gate(bart)
    gate.opened.set()
    app = create_app({"bart-large-mnli": bart})
    labels = [(f"topic {i} " + "the service was slow but the food was wonderful " * 5)[:200] for i in range(16)]
    amplified = {"sequences": ["short text"] * MAX_TEXTS, "candidate_labels": labels}
    reply = run_async(call(app, "/models/bart-large-mnli/classify", Client(body_of(amplified))))
    assert reply.status == 413 and gate.calls == 0
    detail = reply.json()["detail"]
    assert "label" in detail and "limit of 524288" in detail
    cost = int(detail.split("about ")[1].split(" ")[0])
    assert cost > 16 * MAX_TEXTS * 200  # the bytes the labels would take in the answer are counted
    fair = {"sequences": ["short text"] * MAX_TEXTS, "candidate_labels": ["sports", "politics", "cooking"]}
    answer = run_async(call(app, "/models/bart-large-mnli/classify", Client(body_of(fair))))
    assert answer.status == 200 and len(answer.json()) == MAX_TEXTS


def parsed(*items):
    return [parse_prompt_item(item, index, f"i{index}") for index, item in enumerate(items)]


def test_the_cost_estimate_counts_rows_generations_budget_and_history(make_adapter):
    sst2 = make_adapter("models.distilbert_sst2")
    window = sst2.max_input_tokens
    assert request_cost(sst2, sst2.configuration, parsed(current_item({"1": ["héllo"], "2": ["x" * 10_000]}))) \
        == (len("héllo".encode()) + SPECIAL_TOKENS) + window
    bart = make_adapter("models.bart_large_mnli", candidate_labels=["a", "b"], hypothesis_template="It is {}.")
    item = current_item({"1": ["hi"]}, metadata={"1": {"candidate_labels": list("cdef")}})
    echoed = len('"a"') + SCORE_BYTES  # each row's label and score in the answer
    assert request_cost(bart, bart.configuration, parsed(current_item({"1": ["hi"]}), item)) \
        == 2 * (2 + SPECIAL_TOKENS + 1 + 9 + echoed) + 4 * (2 + SPECIAL_TOKENS + 1 + 9 + echoed)
    t5 = make_adapter("models.t5_email", token_count=5, n_gen=3, num_beams=4, do_sample=False)
    assert request_cost(t5, t5.configuration, parsed(current_item({"1": ["hi"]}))) == 3 * 4 * (2 + SPECIAL_TOKENS + 5)
    chat = make_adapter("models.dialogpt_large", max_new_tokens=4)
    turns = (2 + SPECIAL_TOKENS) + (2 + SPECIAL_TOKENS + 4 + 2 + SPECIAL_TOKENS)  # turn two reads turn one
    assert request_cost(chat, chat.configuration, parsed(current_item({"1": ["hi"], "2": ["yo"]}))) == turns + 2 * 4


# ----- /predict: per-item answers, short echoes -----

def test_predict_answers_the_good_items_and_reports_each_bad_one(sst2):
    app = create_app({"distilbert-sst2": sst2})
    long_key = "k" * (MAX_IDENTIFIER_CHARS + 1)
    batch = [legacy_item({"1": ["good one"]}), {"name": "no-prompts"}, 7, {"prompts": [1]},
             {"name": "huge-key", "prompts": {long_key: [{"mimetype": "text", "value": "hi"}]}},
             current_item({"1": ["good two"], "2": [{"mimetype": "image/png", "value": "x"}]})]
    reply = run_async(call(app, "/models/distilbert-sst2/predict", Client(body_of(batch))))
    assert reply.status == 200, reply.body
    body = reply.json()
    assert [i["name"] for i in body["items"]] == ["batch[0]", "no-prompts", "batch[2]", "batch[3]", "huge-key",
                                                  "batch[5]"]
    assert [len(i["annotations"]) for i in body["items"]] == [1, 0, 0, 0, 0, 1]
    failed = {f["item"]: f["reason"] for f in body["failed_items"]}
    assert set(failed) == {"no-prompts", "batch[2]", "batch[3]", "huge-key"}
    assert "'prompts' object" in failed["no-prompts"] and "JSON object" in failed["batch[2]"]
    assert f"limit of {MAX_IDENTIFIER_CHARS}" in failed["huge-key"]
    assert [(s["item"], s["prompt_key"]) for s in body["skipped"]] == [("batch[5]", "2")]


def test_identifiers_echoed_in_responses_are_shortened_and_the_response_stays_small(sst2):
    app = create_app({"distilbert-sst2": sst2})
    name, key = "N" * 100_000, "K" * MAX_IDENTIFIER_CHARS
    image = {"mimetype": "image/png", "value": "x"}
    item = {"name": name, "prompts": {key: {"E" * 2000 + str(i): image for i in range(MAX_TEXTS - 1)}}}
    item["prompts"][key]["q"] = {"mimetype": "text", "value": "hello"}
    request = json.dumps(item).encode()
    reply = run_async(call(app, "/models/distilbert-sst2/predict", Client([request])))
    assert reply.status == 200
    body = reply.json()
    assert len(body["skipped"]) == MAX_TEXTS - 1
    shown = [body["items"][0]["name"], *(s["item"] for s in body["skipped"]),
             *(s["element_key"] for s in body["skipped"]), *(s["prompt_key"] for s in body["skipped"])]
    assert all(len(text) <= SHOWN_IDENTIFIER_CHARS + 30 for text in shown)
    assert len(reply.body) < len(request)  # nothing is echoed whole, let alone once per skip
    nothing = run_async(call(app, "/models/distilbert-sst2/predict", Client(body_of([{"name": name}] * 3))))
    assert nothing.status == 422 and len(nothing.body) < 2000
    fields = {name: 1, **{f"k{i}": 1 for i in range(20_000)}}  # unknown fields, each a validation error
    invalid = run_async(call(app, SST2, Client(body_of({"texts": ["hi"], **fields}))))
    assert invalid.status == 422 and len(invalid.body) < 5000
    assert invalid.json()["detail"].endswith("and 19981 more")


# ----- bodies -----

DEEP = "[" * 100_000 + "]" * 100_000


@pytest.mark.parametrize("path,body", [
    (SST2, {"texts": DEEP}),
    (SST2, {"texts": "data:application/json;base64," + base64.b64encode(DEEP.encode()).decode()}),
    (SST2, {"texts": "data:application/json," + DEEP}),
    ("/models/distilbert-sst2/predict", None),  # the body itself nests past the decoder's stack
], ids=["json-string", "base64-data-uri", "plain-data-uri", "body"])
def test_deeply_nested_json_is_a_422_and_logs_no_traceback(sst2, caplog, path, body):
    app = create_app({"distilbert-sst2": sst2})
    chunks = [DEEP.encode()] if body is None else body_of(body)
    with caplog.at_level(logging.WARNING):
        reply = run_async(call(app, path, Client(chunks)))
    assert reply.status == 422, reply.body
    assert "nest" in reply.json()["detail"]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]


@pytest.mark.parametrize("body, says, not_said", [
    (b'{"texts": ["hi"], "seed": ' + b"9" * 5000 + b"}", "a number of more than 4300 digits", "nest"),
    (b'{"texts": ["hi", "\xff"]}', "not UTF-8", "nest"),
    (DEEP.encode(), "nests too deeply", "digits"),
], ids=["huge-number", "not-utf8", "deep"])
def test_a_body_json_cannot_read_says_why(sst2, body, says, not_said):
    """A 5000-digit number in a body was answered "it is not UTF-8, or nests too deeply"."""
    reply = run_async(call(create_app({"distilbert-sst2": sst2}), "/models/distilbert-sst2/predict", Client([body])))
    assert reply.status == 422 and says in reply.json()["detail"] and not_said not in reply.json()["detail"]


def request_head(path: str, headers: list[tuple[bytes, bytes]]) -> int:
    """The bytes of a request line and headers as a client sends them."""
    return len(f"POST {path} HTTP/1.1\r\n") + sum(len(k) + len(v) + 4 for k, v in headers) + 2


@pytest.mark.parametrize("padding, count, status", [
    (0, MAX_HEADER_COUNT, 200), (0, MAX_HEADER_COUNT + 1, 431),  # the count, at the limit and one past it
    (MAX_HEADER_BYTES, 2, 200), (MAX_HEADER_BYTES + 1, 2, 431),  # the size, at the limit and one past it
    (20_000, 2, 431), (0, 3000, 431),  # what was accepted: a 20 KB header, 3,000 headers
])
def test_request_heads_are_bounded_in_size_and_header_count(sst2, padding, count, status):
    """A 20 KB header and 3,000 headers in one request were accepted: uvicorn's 16 KiB bound holds only for a head
    still incomplete, not for one that arrives whole."""
    app = create_app({"distilbert-sst2": sst2})
    headers = [(b"content-type", b"application/json")] + [(b"x-%d" % i, b"1") for i in range(count - 2)]
    if padding:
        headers.append((b"x-pad", b""))
        headers[-1] = (b"x-pad", b"p" * (padding - request_head(SST2, headers)))
    else:
        headers.append((b"x-last", b"1"))
    assert len(headers) == count and (not padding or request_head(SST2, headers) == padding)
    reply = run_async(call(app, SST2, Client(body_of({"texts": ["hi"]})), headers=tuple(headers[1:])))
    assert reply.status == status, reply.body
    if status == 431:
        assert reply.headers["connection"] == "close" and "header" in reply.json()["detail"]


def test_a_body_that_stalls_is_408_within_the_deadline(sst2):
    app = create_app({"distilbert-sst2": sst2}, ServerLimits(body_timeout=0.3))
    started = time.monotonic()
    reply = run_async(call(app, SST2, Client([b'{"texts": ["a'], stall=True)))
    assert reply.status == 408 and reply.headers["connection"] == "close"
    assert time.monotonic() - started < 5


def test_bodies_held_at_once_are_capped_and_released(sst2):
    limits = ServerLimits(max_pending_bytes=1000, body_timeout=0.5)
    app = create_app({"distilbert-sst2": sst2}, limits)
    padding = b" " * 800

    async def scenario():
        parked = asyncio.create_task(call(app, SST2, Client([padding], stall=True)))
        await asyncio.sleep(0.1)
        crowded = await call(app, SST2, Client([b" " * 300 + json.dumps({"texts": ["hi"]}).encode()]))
        timed_out = await parked
        later = await call(app, SST2, Client([b" " * 300 + json.dumps({"texts": ["hi"]}).encode()]))
        return crowded, timed_out, later

    crowded, timed_out, later = run_async(scenario())
    assert crowded.status == 503 and crowded.headers["retry-after"] == "1"
    assert timed_out.status == 408
    assert later.status == 200  # the parked body's bytes were given back


def test_a_declared_body_over_the_limit_is_refused_unread(sst2):
    app = create_app({"distilbert-sst2": sst2}, ServerLimits(max_body_bytes=100))
    reply = run_async(call(app, SST2, Client([], stall=True), headers=((b"content-length", b"101"),)))
    assert reply.status == 413 and "limit of 100 bytes" in reply.json()["detail"]


# ----- faults -----

def test_a_model_failure_is_a_500_with_one_line_and_no_traceback(sst2, caplog):
    app = create_app({"distilbert-sst2": sst2})

    def broken(*args, **kwargs):
        raise RuntimeError("CUDA out of memory.\nTried to allocate 2.00 GiB")
    sst2.model.forward = broken
    with caplog.at_level(logging.ERROR, logger="adapters.server"):
        reply = run_async(call(app, SST2, Client(body_of({"texts": ["hi"]}))))
    assert reply.status == 500 and "\n" not in reply.json()["detail"]
    server_errors = [r for r in caplog.records if r.name.startswith("adapters.server")]
    assert len(server_errors) == 1 and server_errors[0].exc_info is None


def test_model_failure_from_predict_is_a_500_not_a_4xx(sst2):
    app = create_app({"distilbert-sst2": sst2})

    def failing(batch, **kwargs):  # contract: HuggingAdapter.predict raises ModelFailure on model-side faults
        raise ModelFailure("distilbert-sst2: forward failed on a micro-batch of 1 rows: boom\nstack")
    sst2.predict = failing
    for path, body in ((SST2, {"texts": ["hi"]}), ("/models/distilbert-sst2/predict", legacy_item({"1": ["hi"]}))):
        reply = run_async(call(app, path, Client(body_of(body))))
        assert reply.status == 500 and reply.json()["detail"].endswith("boom")


def test_an_unexpected_error_is_logged_once(sst2, caplog):
    app = create_app({"distilbert-sst2": sst2})

    def bug(batch, **kwargs):
        raise KeyError("bug")
    sst2.predict = bug
    with caplog.at_level(logging.ERROR):
        reply = run_async(call(app, SST2, Client(body_of({"texts": ["hi"]}))))
    assert reply.status == 500 and "server log" in reply.json()["detail"]
    assert len([r for r in caplog.records if r.exc_info]) == 1


def test_generate_reads_every_generation_of_one_answer(make_adapter):
    """One annotation per prompt holds the n_gen emails in `model_output["generations"]` (contract 2)."""
    t5 = make_adapter("models.t5_email")
    real = t5.predict

    def one_answer(batch, **kwargs):  # the merged shape, built from one-annotation-per-generation if need be
        collections = real(batch, **kwargs)
        for collection in collections:
            if "generations" in collection.annotations[0].metadata["user"]["model_output"]:
                continue
            first = collection.annotations[0]
            first.metadata["user"]["model_output"] = {"generations": [
                {"text": a.coordinates, "confidence": a.metadata["user"]["model"]["confidence"],
                 "generated_tokens": a.metadata["user"]["model_output"]["generated_tokens"]}
                for a in collection.annotations]}
            collection.annotations[1:] = []
        return collections
    app = create_app({"t5-email": t5})
    request = {"prompt": "lunch on friday", "n_gen": 3, "seed": 4, "token_count": 4}
    expected = run_async(call(app, "/models/t5-email/generate", Client(body_of(request)))).json()
    t5.predict = one_answer
    merged = run_async(call(app, "/models/t5-email/generate", Client(body_of(request)))).json()
    assert len(merged["generations"]) == 3 and merged == expected


@pytest.mark.parametrize("temperature", [1e-300, 5e-324])
def test_a_tiny_temperature_is_answered_greedily_not_a_500(make_adapter, temperature):
    app = create_app({"t5-email": make_adapter("models.t5_email", token_count=4),
                      "dialogpt-large": make_adapter("models.dialogpt_large", max_new_tokens=4)})
    for path, body in (("/models/t5-email/generate", {"prompt": "lunch on friday"}),
                       ("/models/dialogpt-large/chat", {"turns": ["hello there"]})):
        replies = [run_async(call(app, path, Client(body_of({**body, **sampling})))) for sampling in
                   ({"do_sample": True, "temperature": temperature, "seed": 3}, {"do_sample": False})]
        assert [reply.status for reply in replies] == [200, 200], replies[0].body
        assert replies[0].json() == replies[1].json()


# ----- the log -----

def test_repeated_log_lines_are_rate_limited():
    now = [0.0]
    limiter = RepeatedLogFilter(burst=3, window=60, clock=lambda: now[0])

    def record(message: str, *args: object, level: int = logging.ERROR) -> logging.LogRecord:
        return logging.LogRecord("asyncio", level, __file__, 1, message, args, None)

    passed = [limiter.filter(record("accept failed: %d open", n)) for n in range(1000)]
    assert passed == [True] * 3 + [False] * 997  # the same message, whatever its numbers
    assert all(limiter.filter(record("not answered: item %r", f"item-{chr(65 + n)}")) for n in range(20))
    assert all(limiter.filter(record("request", level=logging.INFO)) for _ in range(100))
    now[0] = 61
    fresh = record("accept failed: %d open", 5)
    assert limiter.filter(fresh) and "repeated" not in fresh.getMessage()  # a new window
    last = [record("accept failed: %d open", 5) for _ in range(2)]
    assert all(limiter.filter(r) for r in last) and "further repeats dropped" in last[-1].getMessage()
    assert not limiter.filter(record("accept failed: %d open", 5))


def test_the_log_rate_limiter_blanks_numbers_before_it_cuts_the_text():
    """The key was the text cut to 200 characters, then blanked: a long number pushed what tells two warnings
    apart out of the key, and distinct warnings were dropped as repeats of one."""
    limiter = RepeatedLogFilter(burst=2, window=60, clock=lambda: 0.0)

    def warning(n: int, what: str) -> logging.LogRecord:
        return logging.LogRecord("adapters", logging.WARNING, __file__, 1, "item %s of %d: %s", (n, 10**250, what),
                                 None)
    assert all(limiter.filter(warning(n, what)) for n, what in enumerate(["timeout", "refused", "long", "bad key"]))
    assert [limiter.filter(warning(7, "timeout")) for _ in range(2)] == [True, False]  # a repeat is still one


def repeated_warning() -> logging.LogRecord:
    return logging.LogRecord("adapters", logging.WARNING, __file__, 1, "the same %d", (1,), None)


def test_the_rate_limit_holds_while_the_server_runs_and_leaves_the_callers_handlers_as_they_were():
    """An in-process caller (a test, a notebook) keeps its own handlers' behaviour once the server stops."""
    from adapters.server.logs import repeats_limited
    handler = logging.Handler()
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        with repeats_limited():
            assert [type(f) for f in handler.filters] == [RepeatedLogFilter]
            assert [bool(handler.filter(repeated_warning())) for _ in range(6)] == [True] * 5 + [False]
        assert handler.filters == []
        assert all(handler.filter(repeated_warning()) for _ in range(6))
    finally:
        root.removeHandler(handler)


# ----- the real server: connections, file handles, SIGTERM -----

SERVER_ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONPATH": str(ROOT)}


def start(command: list[str], log_path, file_limit: int | None = None) -> subprocess.Popen:
    def limit_files() -> None:
        if file_limit:
            resource.setrlimit(resource.RLIMIT_NOFILE, (file_limit, file_limit))
    with open(log_path, "wb") as log:
        return subprocess.Popen(command, cwd=ROOT, env=SERVER_ENV, stdout=log, stderr=subprocess.STDOUT,
                                preexec_fn=limit_files)


def wait_healthy(process: subprocess.Popen, url: str, log_path) -> None:
    wait_until_ready(process, log_path, lambda: httpx.get(f"{url}/health", timeout=2).status_code == 200)


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=15)


def open_handles(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def closed_by_server(sock: socket.socket, timeout: float) -> bytes | None:
    """What the server sent before closing the connection, or None if it is still open after `timeout`."""
    sock.settimeout(timeout)
    received = b""
    try:
        while chunk := sock.recv(65536):
            received += chunk
    except socket.timeout:
        return None
    except ConnectionResetError:
        pass
    return received


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc and sets the file-handle limit")
def test_stalled_connections_are_capped_and_timed_out_and_health_keeps_answering(tiny_models, tmp_path):
    port, log_path, file_limit = free_loopback_port(), tmp_path / "server.log", RESERVED_FILE_HANDLES + 450
    process = start([sys.executable, "-m", "adapters", "serve", "distilbert-sst2", "--port", str(port),
                     "--model-path", f"distilbert-sst2={tiny_models['distilbert']}", "--header-timeout", "8",
                     "--body-timeout", "8", "--max-pending-bytes", str(8 << 20)], log_path, file_limit)
    url, stalled = f"http://127.0.0.1:{port}", []
    try:
        wait_healthy(process, url, log_path)
        baseline = open_handles(process.pid)
        body = json.dumps({"texts": ["x" * 100] * 50}).encode()
        head = (b"POST /models/distilbert-sst2/classify HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"Content-Length: %d\r\n\r\n" % len(body))
        for index in range(300):  # hundreds of slow clients: half stall in their headers, half in their bodies
            sock = socket.create_connection(("127.0.0.1", port), timeout=5)
            sock.sendall(head + body[:-10] if index % 2 else b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            stalled.append(sock)
        started = time.monotonic()
        assert httpx.get(f"{url}/health", timeout=5).status_code == 200
        assert time.monotonic() - started < 2
        cap = file_limit - RESERVED_FILE_HANDLES
        extra = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(cap - 300 + 20)]
        refused = [closed_by_server(sock, 5) for sock in extra[-10:]]
        assert all(reply is not None and reply.startswith(b"HTTP/1.1 503") for reply in refused), refused
        stalled += extra
        replies = [closed_by_server(sock, 15) for sock in stalled]  # every stalled client is let go
        assert all(reply is not None for reply in replies)
        assert sum(reply.startswith(b"HTTP/1.1 408") for reply in replies[:300]) >= 290
        assert httpx.get(f"{url}/health", timeout=5).status_code == 200
        assert open_handles(process.pid) <= baseline + 5
    finally:
        for sock in stalled:
            sock.close()
        stop(process)
    log = log_path.read_text(errors="replace")
    assert "Too many open files" not in log and "Traceback" not in log
    assert log.count("refused a connection") <= 6  # rate-limited: 5 and the one that says so


SLOW_SERVER = """
import sys, threading, time
from pathlib import Path
from adapters.cli.serve import bind, serve
from adapters.server import create_app
from adapters.server.limits import ServerLimits
from models import distilbert_sst2

adapter = distilbert_sst2.HuggingAdapter({"model_path": sys.argv[1]})
real = adapter.predict
def slow(batch, **kwargs):  # a generation that would run for a minute
    Path(sys.argv[3]).write_text("running")
    time.sleep(60)
    return real(batch, **kwargs)
adapter.predict = slow
limits = ServerLimits(shutdown_timeout=1)
sys.exit(serve(create_app({"distilbert-sst2": adapter}, limits), bind("127.0.0.1", int(sys.argv[2])), limits))
"""


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_stop_signal_ends_the_server_within_the_shutdown_timeout(tiny_models, tmp_path, sig):
    port, log_path, marker = free_loopback_port(), tmp_path / "server.log", tmp_path / "running"
    process = start([sys.executable, "-c", SLOW_SERVER, str(tiny_models["distilbert"]), str(port), str(marker)],
                    log_path)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(process, url, log_path)
        answers: list[int] = []
        threading.Thread(target=lambda: answers.append(
            httpx.post(f"{url}{SST2}", json={"texts": ["hi"]}, timeout=90).status_code), daemon=True).start()
        deadline = time.monotonic() + 30
        while not marker.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert marker.exists()
        started = time.monotonic()
        process.send_signal(sig)
        process.wait(timeout=20)
        assert time.monotonic() - started < 8  # 1 s of grace, not the 60 s the model call would take
        assert process.returncode == 0
        for _ in range(100):
            if answers:
                break
            time.sleep(0.05)
        assert answers == [503]  # the client is told, not cut off
    finally:
        stop(process)
    log = log_path.read_text(errors="replace")
    assert "abandoned" in log and "Traceback" not in log


# ----- startup errors -----

def test_startup_errors_are_one_line_and_exit_2(tiny_models, tmp_path, monkeypatch, capsys):
    """Each is a CommandError (`main` prints it as `error: ...` and exits with its code) before serving."""
    corrupt = tmp_path / "corrupt"
    shutil.copytree(tiny_models["distilbert"], corrupt)
    weights = corrupt / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    tiny = f"distilbert-sst2={tiny_models['distilbert']}"
    cases = {
        "corrupt weights": (["--model-path", f"distilbert-sst2={corrupt}"], "could not load model 'distilbert-sst2'"),
        "absent device": (["--model-path", tiny, "--set", "distilbert-sst2.device=cuda:3"], "CUDA is not available"),
        "port in use": (["--model-path", tiny, "--port", str(taken.getsockname()[1])], "Address already in use"),
        "bad address": (["--model-path", tiny, "--host", "10.255.255.1"], "cannot listen on 10.255.255.1"),
    }
    monkeypatch.setattr(serve_command, "serve", lambda *args: pytest.fail("the server started"))
    try:
        for name, (arguments, expected) in cases.items():
            args = build_parser().parse_args(["-v", "serve", "distilbert-sst2", "--port", str(free_loopback_port()),
                                              *arguments])
            with pytest.raises(CommandError) as error:
                args.run(args)
            assert error.value.code == 2, name
            assert expected in str(error.value) and "\n" not in str(error.value), (name, str(error.value))
    finally:
        taken.close()
    with pytest.raises(SystemExit) as usage:
        build_parser().parse_args(["serve", "distilbert-sst2", "--port", "99999"])
    assert usage.value.code == 2 and "port number from 1 to 65535" in capsys.readouterr().err
