"""Parsing both prompt-item formats, and reporting everything that is not a text question."""
import logging

import pytest

from adapters.core.errors import MalformedItemError
from adapters.core.prompt_items import natural_key, parse_prompt_item
from tests.prompt_factory import current_item, legacy_item


def test_legacy_questions_in_document_order():
    parsed = parse_prompt_item(legacy_item({"p1": ["a", "b"], "p2": ["c"]}), 0, "x.json")
    assert parsed.format == "legacy"
    assert [(q.prompt_key, q.element_key, q.text) for q in parsed.questions] == [
        ("p1", "question-1", "a"), ("p1", "question-2", "b"), ("p2", "question-1", "c")]
    assert parsed.skipped == []


def test_current_format_reads_metadata_and_skips_it_as_a_question():
    item = current_item({"1": ["hi"], "2": ["there", "you"]}, metadata={"2": {"candidate_labels": ["x"]}})
    parsed = parse_prompt_item(item, 3, "y.json")
    assert parsed.format == "current"
    # a current-format prompt is one user message: its text elements are one question, read in order
    assert [(q.item_index, q.prompt_key, q.text) for q in parsed.questions] == [(3, "1", "hi"), (3, "2", "there\nyou")]
    assert parsed.questions[1].prompt_metadata == {"role": "user", "candidate_labels": ["x"]}


@pytest.mark.parametrize("element, reason", [
    ({"mimetype": "image/png", "value": "http://x/y.png"}, "non-text element (image/png) skipped: this model reads text only"),
    ({"mimetype": "audio/*", "value": "http://x/y.wav"}, "non-text element (audio/*) skipped: this model reads text only"),
    ({"value": "no mimetype"}, "unknown element shape: no 'mimetype' string"),
    (7, "unknown element shape: expected an object with 'mimetype' and 'value', got int"),
    (["a", "list"], "unknown element shape: expected an object with 'mimetype' and 'value', got list"),
    ({"mimetype": "application/text", "value": 42}, "text element value must be a string, got int"),
    ({"mimetype": "application/text", "value": "   "}, "empty text: nothing to answer"),
])
def test_unanswerable_elements_are_reported_with_item_prompt_element_and_reason(element, reason):
    # the element's key: its question key in the legacy format, its position in the current one
    for item, element_key in ((legacy_item({"p": ["ok", element]}), "question-2"),
                              (current_item({"p": ["ok", element]}), "1")):
        parsed = parse_prompt_item(item, 0, "z.json")
        assert [q.text for q in parsed.questions] == ["ok"]
        (skipped,) = parsed.skipped
        assert skipped.describe() == f"item 'z.json', prompt 'p', element '{element_key}': {reason}"


def test_assistant_prompts_and_bad_prompt_shapes_are_reported():
    item = current_item({"1": ["q"], "2": ["a"]}, metadata={"2": {"role": "assistant"}})
    item["prompts"]["3"] = "not a prompt"
    parsed = parse_prompt_item(item, 0, "w")
    assert [q.text for q in parsed.questions] == ["q"]
    # a whole prompt is skipped: the reason names what it was, and no element is named
    assert [s.describe() for s in parsed.skipped] == [
        "item 'w', prompt '2': prompt role 'assistant' is not a user prompt",
        "item 'w', prompt '3': a prompt must be a list or an object of elements, got str"]


def test_a_metadata_element_that_is_not_an_object_is_reported_and_the_prompt_still_answered():
    item = current_item({"p": ["q"]})
    item["prompts"]["p"].append({"mimetype": "metadata", "value": "role=user"})
    parsed = parse_prompt_item(item, 0, "m")
    assert [q.text for q in parsed.questions] == ["q"]
    assert [s.describe() for s in parsed.skipped] == ["item 'm', prompt 'p': a metadata element's value must be an object"]


@pytest.mark.parametrize("data, reason", [
    (None, "a prompt item must be a JSON object, got NoneType"),
    ([], "a prompt item must be a JSON object, got list"),
    ("text", "a prompt item must be a JSON object, got str"),
    ({"no": "prompts"}, "a prompt item needs a 'prompts' object mapping prompt keys to their questions"),
    ({"prompts": ["a"]}, "a prompt item needs a 'prompts' object mapping prompt keys to their questions"),
])
def test_unreadable_items_raise_with_what_is_wrong(data, reason):
    # the message is what the server's caller and the report read
    with pytest.raises(MalformedItemError) as error:
        parse_prompt_item(data, 0, "bad")
    assert str(error.value) == reason


def test_lone_surrogates_are_replaced_and_the_warning_says_where(caplog):
    with caplog.at_level(logging.WARNING, logger="adapters.core.prompt_items"):
        parsed = parse_prompt_item(legacy_item({"p": ["ok", "a \ud800 b \udfff"]}), 0, "s.json")
    assert [q.text for q in parsed.questions] == ["ok", "a \ufffd b \ufffd"]
    (record,) = caplog.records
    assert record.getMessage().startswith("item 's.json', prompt 'p', element 'question-2': 2 lone surrogate(s)")


def test_natural_key_orders_numbered_prompts():
    assert sorted(["10", "2", "1", "b", "a"], key=natural_key) == ["1", "2", "10", "a", "b"]
    # text around numbers compares as text, whatever its length: "a2bb" before "a2c", "a2" before "a10"
    assert sorted(["b", "abc", "a10", "a2", "a2c", "a2bb"], key=natural_key) == ["a2", "a2bb", "a2c", "a10", "abc", "b"]
    assert sorted(["x1y10", "x1y2", "x10y1"], key=natural_key) == ["x1y2", "x1y10", "x10y1"]  # every number
