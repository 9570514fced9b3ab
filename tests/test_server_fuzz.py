"""Property-based tests of the REST server: any body, to any route, is answered without a fault or a traceback.

Bodies are generated from the prompt-item strategies of `test_fuzz` plus what the task routes take: texts as
lists, JSON strings and data URIs (of any JSON, nested past the decoder's stack too), numbers of every kind
for the settings, unknown fields, huge names and keys, and raw bytes that are not JSON or not UTF-8. Every
answer must be a 2xx or 4xx with a JSON `detail` for errors (never a 500), nothing may be logged at ERROR, and
`/predict` must answer each readable item, report each unreadable one, and echo identifiers only shortened.
"""
from __future__ import annotations

import asyncio
import base64
import json
import logging
import urllib.parse
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from adapters.server import create_app
from adapters.server.limits import MAX_IDENTIFIER_CHARS, MAX_TEXTS, SHOWN_IDENTIFIER_CHARS, ServerLimits
from tests.test_fuzz import expected_parse, items, json_values, keys, megabyte_texts, short_texts, texts
from tests.test_memory import CountingTokenizer

DEEP_LIST = "[" * 50_000 + "]" * 50_000
DEEP_OBJECT = '{"a":' * 30_000 + "1" + "}" * 30_000
SHOWN_MAX = SHOWN_IDENTIFIER_CHARS + len("...(1000000 characters)")


def data_uri(payload: str, encoded: bool) -> str:
    if encoded:
        return "data:application/json;base64," + base64.b64encode(payload.encode("utf-8", "surrogatepass")).decode()
    return "data:application/json," + urllib.parse.quote(payload.encode("utf-8", "surrogatepass"))


text_lists = st.lists(texts, max_size=4)
json_payloads = (text_lists | json_values).map(lambda v: json.dumps(v)) | st.sampled_from([DEEP_LIST, DEEP_OBJECT])
encoded_lists = json_payloads | st.builds(data_uri, json_payloads, st.booleans()) | st.sampled_from(
    ["data:", "data:,", "data:;base64,!!", "data:application/json;base64,/w==", "data:application/json,%ff"])
numbers = (st.integers(-3, 40) | st.sampled_from([2048, 2049, 10**30, -10**30]) | st.floats() | st.booleans()
           | st.none() | short_texts)
anything_goes = json_values | texts | text_lists | encoded_lists | numbers


def route_bodies(required: dict, optional: dict) -> st.SearchStrategy[dict]:
    """Well-formed bodies, the same with one field swapped for anything, and bodies of anything at all."""
    valid = st.fixed_dictionaries(required, optional=optional)
    one_bad = valid.flatmap(lambda body: st.builds(lambda key, value: {**body, key: value},
                                                   st.sampled_from([*body, "unknown_field"]), anything_goes))
    wild = st.fixed_dictionaries({}, optional={key: anything_goes for key in [*required, *optional, "unknown_field"]})
    return valid | valid | one_bad | wild


words = texts.filter(str.strip)
good_texts = st.lists(words, min_size=1, max_size=4)
SAMPLING = {"temperature": st.floats(0.1, 2.0), "do_sample": st.booleans(), "top_k": st.integers(0, 50),
            "top_p": st.floats(0.05, 1.0), "seed": st.integers(0, 2**31)}
ROUTES = {
    "/models/distilbert-sst2/classify": route_bodies(
        {"texts": good_texts | st.builds(data_uri, good_texts.map(json.dumps), st.booleans())
         | good_texts.map(json.dumps)}, {}),
    "/models/bart-large-mnli/classify": route_bodies(
        {"sequences": words | good_texts},
        {"candidate_labels": st.lists(short_texts, min_size=1, max_size=4, unique=True),
         "hypothesis_template": st.sampled_from(["This is {}.", "{}", "{} {}", "{:>9999}", "{0}", "{!r}", "x"]),
         "multi_label": st.booleans()}),
    "/models/t5-email/generate": route_bodies(
        {"prompt": words}, {"token_count": st.integers(1, 6), "n_gen": st.integers(1, 3),
                            "num_beams": st.integers(1, 3), **SAMPLING}),
    "/models/dialogpt-large/chat": route_bodies({"turns": good_texts}, {"max_new_tokens": st.integers(1, 6),
                                                                        **SAMPLING}),
}
names = st.none() | short_texts | st.just("n" * 100_000) | json_values
named_items = st.builds(lambda item, name: {**item, "name": name} if name is not None else item, items, names)
predict_bodies = st.lists(named_items | named_items | json_values, max_size=5) | named_items | json_values


class ErrorLog(logging.Handler):
    """Collects every record at ERROR or above, from any logger."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture(scope="module")
def errors():
    handler = ErrorLog()
    logging.getLogger().addHandler(handler)
    yield handler
    logging.getLogger().removeHandler(handler)


@pytest.fixture(scope="module")
def app(make_adapter):
    """All four tiny models; a small cost limit keeps fuzzed generation fast (and exercises the 413)."""
    return create_app({"distilbert-sst2": make_adapter("models.distilbert_sst2"),
                       "bart-large-mnli": make_adapter("models.bart_large_mnli"),
                       "t5-email": make_adapter("models.t5_email", token_count=4),
                       "dialogpt-large": make_adapter("models.dialogpt_large", max_new_tokens=4)},
                      ServerLimits(max_request_tokens=3000))


def post(app, path: str, content: bytes) -> httpx.Response:
    async def send() -> httpx.Response:
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://in-process") as client:
            return await client.post(path, content=content, headers={"content-type": "application/json"})
    return asyncio.run(asyncio.wait_for(send(), timeout=120))


def check_answer(response: httpx.Response, errors: ErrorLog) -> Any:
    """No fault: a 2xx, or a 4xx whose JSON `detail` says what is wrong; nothing logged at ERROR."""
    logged = [f"{r.name}: {r.getMessage()}" for r in errors.records]
    errors.records.clear()
    assert not logged, logged
    assert response.status_code in (200, 413, 422), response.text
    body = response.json()
    if response.status_code != 200:
        assert isinstance(body["detail"], str) and body["detail"]
    return body


def encode(body: Any) -> bytes:
    return json.dumps(body).encode("utf-8", "surrogatepass")


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.data())
def test_task_routes_answer_any_body_without_a_fault(app, errors, data):
    path = data.draw(st.sampled_from(sorted(ROUTES)))
    body = data.draw(ROUTES[path] | json_values)
    response = post(app, path, encode(body))
    event(f"{path} {response.status_code}")
    check_answer(response, errors)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.sampled_from(sorted(ROUTES) + ["/models/distilbert-sst2/predict"]),
       st.binary(max_size=200) | st.sampled_from([DEEP_LIST.encode(), DEEP_OBJECT.encode(), b'{"texts": "\xff"}',
                                                  b"\xef\xbb\xbf{}", b"", b"null", b"[" * 5000]))
def test_bodies_that_are_not_json_are_422(app, errors, path, content):
    response = post(app, path, content)
    check_answer(response, errors)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(predict_bodies)
def test_predict_answers_each_readable_item_and_reports_the_rest(app, errors, body):
    response = post(app, "/models/distilbert-sst2/predict", encode(body))
    answer = check_answer(response, errors)
    batch = [body] if isinstance(body, dict) else body
    expected = [_expected(item) for item in batch] if isinstance(batch, list) else []
    if response.status_code == 422:
        elements = sum(len(q) + len(s) for q, s in filter(None, expected))
        assert not isinstance(batch, list) or not any(expected) or len(batch) > MAX_TEXTS or elements > MAX_TEXTS
        return
    if response.status_code == 413:
        return
    assert len(answer["items"]) == len(batch)
    assert len(answer["failed_items"]) == expected.count(None)
    for item, parsed, result in zip(batch, expected, answer["items"]):
        assert len(result["annotations"]) == (len(parsed[0]) if parsed else 0)
    assert len(answer["skipped"]) == sum(len(parsed[1]) for parsed in expected if parsed)
    shown = [i["name"] for i in answer["items"]] + [
        value for entry in answer["failed_items"] + answer["skipped"]
        for value in (entry["item"], entry["prompt_key"], entry["element_key"]) if value is not None]
    assert all(len(value) <= SHOWN_MAX for value in shown)


def _expected(item: Any):
    """(questions, skips) the server answers for `item`, or None when it reports the item as unreadable."""
    parsed = expected_parse(item)
    if parsed is None or any(len(key) > MAX_IDENTIFIER_CHARS for key in item["prompts"]):
        return None
    return parsed


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(keys | st.just("k" * 300), min_size=1, max_size=3), names)
def test_identifiers_in_every_answer_are_short(app, errors, prompt_keys, name):
    image = {"mimetype": "image/png", "value": "x"}
    item = {"name": name, "prompts": {key: {key * 3: image, "q": {"mimetype": "text", "value": "hi"}}
                                      for key in prompt_keys}}
    answer = check_answer(post(app, "/models/distilbert-sst2/predict", encode(item)), errors)
    text = json.dumps(answer)
    for identifier in [*prompt_keys, *(k * 3 for k in prompt_keys), name if isinstance(name, str) else ""]:
        if len(identifier) > MAX_IDENTIFIER_CHARS:
            assert identifier not in text


MEGABYTE_ROUTES = {"/models/distilbert-sst2/classify": lambda text: {"texts": [text]},
                   "/models/bart-large-mnli/classify": lambda text: {"sequences": text},
                   "/models/t5-email/generate": lambda text: {"prompt": text},
                   "/models/dialogpt-large/chat": lambda text: {"turns": ["hello", text]},
                   "/models/distilbert-sst2/predict": lambda text: {"prompts": {"1": {"q": {"mimetype": "text",
                                                                                             "value": text}}}}}


@pytest.fixture(scope="module")
def counted_app(make_adapter):
    """The four models with counting tokenizers, behind a server that takes bodies of a few megabytes."""
    adapters = {"distilbert-sst2": make_adapter("models.distilbert_sst2"),
                "bart-large-mnli": make_adapter("models.bart_large_mnli"),
                "t5-email": make_adapter("models.t5_email", token_count=4),
                "dialogpt-large": make_adapter("models.dialogpt_large", max_new_tokens=4)}
    for adapter in adapters.values():
        adapter.tokenizer = CountingTokenizer(adapter.tokenizer)
    return create_app(adapters, ServerLimits(max_body_bytes=8 << 20, max_pending_bytes=64 << 20))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.sampled_from(sorted(MEGABYTE_ROUTES)), megabyte_texts)
def test_megabyte_texts_of_sparse_characters_cost_the_server_what_the_token_budget_allows(counted_app, errors, path,
                                                                                          text):
    """A body of a megabyte of zero-width, combining or control characters is answered (or refused as empty) at
    the cost of the model's window: characters tokenized and tokenizer calls per text stay within the read bound."""
    from adapters.core.truncation import read_bound

    adapter = counted_app.state.runners[path.split("/")[2]].adapter
    counter = adapter.tokenizer
    characters, calls = counter.characters, counter.calls
    body = json.dumps(MEGABYTE_ROUTES[path](text), ensure_ascii=False).encode("utf-8")
    check_answer(post(counted_app, path, body), errors)
    texts_run = 2 if path.endswith("/chat") else 1
    assert counter.characters - characters <= texts_run * read_bound(adapter.max_input_tokens) + 200
    assert counter.calls - calls <= texts_run * 13
