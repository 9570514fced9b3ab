"""Parsing both prompt-item formats, and reporting everything that is not a text question."""
import pytest

from adapters.errors import MalformedItemError
from adapters.prompt_items import natural_key, parse_prompt_item
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
    ({"mimetype": "image/png", "value": "http://x/y.png"}, "non-text element (image/png)"),
    ({"mimetype": "audio/*", "value": "http://x/y.wav"}, "non-text element (audio/*)"),
    ({"value": "no mimetype"}, "unknown element shape"),
    (7, "unknown element shape"),
    (["a", "list"], "unknown element shape"),
    ({"mimetype": "application/text", "value": 42}, "must be a string"),
    ({"mimetype": "application/text", "value": "   "}, "empty text"),
])
def test_unanswerable_elements_are_reported_with_item_prompt_and_reason(element, reason):
    for item in (legacy_item({"p": ["ok", element]}), current_item({"p": ["ok", element]})):
        parsed = parse_prompt_item(item, 0, "z.json")
        assert [q.text for q in parsed.questions] == ["ok"]
        (skipped,) = parsed.skipped
        assert skipped.item == "z.json" and skipped.prompt_key == "p" and reason in skipped.reason
        assert "z.json" in skipped.describe() and "'p'" in skipped.describe()


def test_assistant_prompts_and_bad_prompt_shapes_are_reported():
    item = current_item({"1": ["q"], "2": ["a"]}, metadata={"2": {"role": "assistant"}})
    item["prompts"]["3"] = "not a prompt"
    parsed = parse_prompt_item(item, 0, "w")
    assert [q.text for q in parsed.questions] == ["q"]
    assert [s.prompt_key for s in parsed.skipped] == ["2", "3"]


@pytest.mark.parametrize("data", [None, [], "text", {"no": "prompts"}, {"prompts": ["a"]}])
def test_unreadable_items_raise(data):
    with pytest.raises(MalformedItemError):
        parse_prompt_item(data, 0, "bad")


def test_natural_key_orders_numbered_prompts():
    assert sorted(["10", "2", "1", "b", "a"], key=natural_key) == ["1", "2", "10", "a", "b"]
    # text around numbers compares as text, whatever its length: "a2bb" before "a2c", "a2" before "a10"
    assert sorted(["b", "abc", "a10", "a2", "a2c", "a2bb"], key=natural_key) == ["a2", "a2bb", "a2c", "a10", "abc", "b"]
    assert sorted(["x1y10", "x1y2", "x10y1"], key=natural_key) == ["x1y2", "x1y10", "x10y1"]  # every number
