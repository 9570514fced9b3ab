"""The server's `ModelRunner` called directly, as its routes call it: what it counts while a request runs, how
it ends a request the server cancels or that fails, what the admission check of a streamed answer prices, the
embedding path, and the answers it reads back (tests/test_server_limits.py has the routes around it)."""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field

import anyio
import pytest
import torch

from adapters.server.cost import embedding_cost, request_cost
from adapters.server.limits import ServerLimits
from adapters.server.runner import (
    ClientLeft,
    ModelRunner,
    QueueFull,
    RequestRejected,
    RequestTooCostly,
    ServerStopping,
    parse_items,
    prompt_item,
)
from tests.test_embeddings import TOLERANCE
from tests.test_server_limits import Gate, run_async


def until(condition, seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "the condition never held"
        time.sleep(0.01)


@dataclass
class Held:
    """A model step (`forward`: answers, `_pooled`: embeddings) held until `release` is set; `entered` once reached."""

    entered: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)


def hold(adapter, step: str) -> Held:
    held, real = Held(), getattr(adapter, step)

    def waiting(inputs):
        held.entered.set()
        held.release.wait(timeout=30)
        return real(inputs)
    setattr(adapter, step, waiting)
    return held


def test_busy_is_true_while_any_call_is_inside_the_model(sst2):
    """The shutdown message names the models still answering (`busy`): true while any call runs (two at once, the
    first ending while the second waits its turn), false once every call ended, whether it answered or failed."""
    answering, embedding = hold(sst2, "forward"), hold(sst2, "_pooled")
    runner = ModelRunner("distilbert-sst2", sst2)
    assert not runner.busy
    first = threading.Thread(target=runner.predict, args=([prompt_item(["one"])],))
    second = threading.Thread(target=runner.embed_texts, args=(["two"],))
    first.start()
    until(answering.entered.is_set)
    second.start()
    until(lambda: len(sst2.batcher._queue) == 1)  # the embedding waits behind the prediction
    answering.release.set()
    first.join()
    until(embedding.entered.is_set)
    assert runner.busy  # the embedding is still inside
    embedding.release.set()
    second.join()
    assert not runner.busy

    def broken(inputs):
        raise RuntimeError("boom")
    sst2.forward = broken
    with pytest.raises(Exception, match="boom"):
        runner.predict([prompt_item(["three"])])
    assert not runner.busy


def test_a_call_streams_to_its_target_and_leaves_the_thread_streaming_nowhere(make_adapter):
    """`stream_to` reaches the generation of `answer`'s call (tokens heard as they come), and the thread that ran
    it streams nowhere afterwards: a later call on it without a target must not write to the last one."""
    chat = make_adapter("models.dialogpt_large", do_sample=False, max_new_tokens=6)
    runner = ModelRunner("dialogpt-large", chat)
    heard: dict[str, list[str]] = {}

    def target(question):
        return lambda partial: heard.setdefault(question.prompt_key, []).append(partial.text())
    (replies,) = run_async(runner.answer(["Hello there, how are you?"], stream_to=target))
    assert heard["0"] and len(heard["0"]) > 1  # token by token
    assert replies[0].text.startswith(heard["0"][-1])
    heard.clear()
    runner.predict([prompt_item(["And you?"])], stream_to=target)  # in this thread, streamed
    assert heard["0"]
    heard.clear()
    runner.predict([prompt_item(["Fine."])])
    assert chat.stream_to is None and not heard


def test_a_request_the_server_cancels_is_a_503_retry_in_a_second_and_gives_its_place_back(sst2):
    """Uvicorn cancels a request only when its shutdown grace is over: the request ends in ServerStopping (503,
    Retry-After 1) at once, its priced cost leaves the queue, and the model call finishes alone."""
    gate = Gate(sst2)
    runner = ModelRunner("distilbert-sst2", sst2, ServerLimits(max_queue_tokens=10))
    ended: list[Exception] = []

    async def scenario():
        async def request():
            try:
                await runner.answer(["a text that costs more than ten tokens"])
            except ServerStopping as error:
                ended.append(error)
        async with anyio.create_task_group() as group:
            group.start_soon(request)
            await gate.until_active()
            group.cancel_scope.cancel()

    run_async(scenario())
    (stopped,) = ended
    assert str(stopped) == "the server stopped before distilbert-sst2 answered; retry later"
    assert stopped.headers == {"Retry-After": "1"}
    runner.check_queue(10)  # nothing left in the queue: a request of the whole limit would be admitted
    assert runner.busy  # the abandoned call is still inside predict
    gate.opened.set()
    until(lambda: not runner.busy)


def test_a_failed_request_served_nothing_so_retry_after_is_not_priced_by_it(sst2, monkeypatch):
    """The rate behind Retry-After counts the tokens of answered requests only: after a request whose model call
    failed (10 s by the clock, no answer), a refused request is told one second, as before anything was served."""
    now = [100.0]
    monkeypatch.setattr("adapters.server.runner.time.monotonic", lambda: now[0])

    def failing(inputs):
        now[0] += 10.0
        raise RuntimeError("boom")
    sst2.forward = failing
    runner = ModelRunner("distilbert-sst2", sst2, ServerLimits(max_queue_tokens=100))
    with pytest.raises(Exception, match="boom"):
        run_async(runner.answer(["one"]))
    runner.admit(90)
    with pytest.raises(QueueFull) as refused:
        runner.check_queue(60)
    assert refused.value.headers == {"Retry-After": "1"}


def test_the_admission_check_of_a_streamed_answer_prices_its_overrides_and_the_queue(make_adapter):
    """A streamed answer is checked before its response starts: priced with the request's own configuration (a
    bigger answer budget costs more), refused 413 one token past `max_request_tokens` and admitted at it, and
    refused 503 when the queue is full."""
    t5 = make_adapter("models.t5_email")
    items = [prompt_item(["Write to Bob about the meeting on Monday."])]
    cost = request_cost(t5, t5.configuration, parse_items(items))
    runner = ModelRunner("t5-email", t5, ServerLimits(max_request_tokens=cost, max_queue_tokens=2 * cost - 1))
    runner.check_admission(items)  # at the limit
    bigger = runner.resolve({"token_count": t5.configuration["token_count"] + 1})
    with pytest.raises(RequestTooCostly) as refused:
        runner.check_admission(items, bigger)
    assert f"limit of {cost}" in str(refused.value)
    assert str(refused.value).endswith("send fewer or shorter texts, or ask for fewer tokens, generations or labels")
    runner.admit(cost)
    with pytest.raises(QueueFull):
        runner.check_admission(items)


@pytest.mark.parametrize("room", [0, -1], ids=["at-the-limit", "one-past"])
def test_embed_gives_one_vector_per_text_within_the_cost_limit(sst2, room):
    texts = ["one", "two words", "a longer third text"]
    cost = embedding_cost(sst2, texts)
    runner = ModelRunner("distilbert-sst2", sst2, ServerLimits(max_request_tokens=cost + room))
    if room == 0:
        vectors = run_async(runner.embed(texts))
        assert len(vectors) == 3 and not runner.busy
        torch.testing.assert_close(torch.tensor(vectors), torch.tensor(sst2.embed_texts(texts)), **TOLERANCE)
        return
    with pytest.raises(RequestTooCostly) as refused:
        run_async(runner.embed(texts))
    message = str(refused.value)
    assert f"about {cost} tokens" in message and f"limit of {cost - 1}" in message
    assert message.endswith("send fewer or shorter texts")


def test_a_text_the_model_does_not_answer_is_a_422_naming_it(sst2):
    """A reply per text or none: a request with a text the model skipped is refused, naming the request's prompt
    and why, not answered in part and not a server fault."""
    runner = ModelRunner("distilbert-sst2", sst2)
    with pytest.raises(RequestRejected) as refused:
        run_async(runner.answer(["fine", "not mine"], metadata={"role": "assistant"}))
    assert str(refused.value) == ("distilbert-sst2 did not answer every text: item 'request', prompt '0': prompt "
                                  "role 'assistant' is not a user prompt; item 'request', prompt '1': prompt role "
                                  "'assistant' is not a user prompt")


@pytest.mark.parametrize("route", ["answer", "embed"])
def test_a_client_that_left_ends_its_request_at_once_logged_once(sst2, caplog, route):
    """A client that disconnects while its model call runs gets its request ended at once (the call, abandoned,
    finishes alone), and one INFO line by model says so."""
    runner = ModelRunner("distilbert-sst2", sst2)
    held = hold(sst2, "forward" if route == "answer" else "_pooled")  # the model step each route runs

    async def scenario():
        async def gone():
            while not held.entered.is_set():
                await anyio.sleep(0.01)
        request = runner.answer(["one"], client_gone=gone) if route == "answer" else runner.embed(["one"], gone)
        with pytest.raises(ClientLeft):
            await request

    with caplog.at_level(logging.INFO, logger="adapters.server.runner"):
        run_async(scenario())
    assert runner.busy  # the abandoned call still runs
    held.release.set()
    until(lambda: not runner.busy)
    assert [r.getMessage() for r in caplog.records if r.name == "adapters.server.runner"] == [
        "distilbert-sst2: a client left before its answer; what of its request had not run was dropped"]


def test_an_embedding_whose_client_left_before_its_turn_never_runs(sst2):
    """A client that leaves while its texts wait behind another call's: its rows are dropped unrun when their turn
    comes (the model's time goes to clients still waiting), as a prediction's are."""
    answering = hold(sst2, "forward")
    pooled = []
    real = sst2._pooled
    sst2._pooled = lambda inputs: pooled.append(len(inputs["input_ids"])) or real(inputs)
    runner = ModelRunner("distilbert-sst2", sst2)
    first = threading.Thread(target=runner.predict, args=([prompt_item(["one"])],))
    first.start()
    until(answering.entered.is_set)

    async def scenario():
        async def gone():
            while len(sst2.batcher._queue) != 1:  # the embedding's rows wait their turn
                await anyio.sleep(0.01)
        with pytest.raises(ClientLeft):
            await runner.embed(["two"], gone)

    run_async(scenario())
    answering.release.set()
    first.join()
    until(lambda: not runner.busy)
    assert pooled == []
