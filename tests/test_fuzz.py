"""Property-based tests: arbitrary prompt items never crash the parser or `predict`, and nothing is lost.

`expected_parse` below is the item format's specification, written from the format description rather than
from the parser: the parser and `predict` must agree with it on every generated item, which covers arbitrary
JSON shapes, missing and extra keys, non-string values, empty, huge and odd Unicode strings (lone surrogates,
NUL, bidi marks, combining marks) and duplicate keys in the JSON text.
"""
from __future__ import annotations

import json
import logging
import re
from collections import Counter
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.core.errors import ConfigurationError, MalformedItemError
from adapters.core.prompt_items import natural_key, parse_prompt_item
from tests.conftest import examples
from tests.model_factory import CORPUS
from tests.prompt_factory import current_item, legacy_item

SURROGATE = re.compile("[\ud800-\udfff]")
ODD = ["\ud800", "\udfff", "a\udc80b", "\x00", "nul\x00inside", "\u202eevil\u202c", "\u200f", "\ufeff", "\u200b",
       "e\u0301", "\x1b[31mred", "\r\n", "²", "١٢", "😂🎉", "日本語", "\t \n", "", " "]
TEXT_MIMETYPES = ["application/text", "text", "text/plain", "text/markdown"]
OTHER_MIMETYPES = ["image/png", "audio/wav", "video/mp4", "application/json", "TEXT", "", "metadata", "textual"]

characters = st.characters(codec=None, exclude_categories=())  # every code point, surrogates included
short_texts = st.text(alphabet=characters, max_size=30) | st.sampled_from(ODD)
# Characters a tokenizer drops, merges or packs few per token: zero-width and format characters, combining marks,
# C0 and C1 controls, runs of spaces. At megabyte sizes they must cost what the token budget allows, not their size.
SPARSE = ["\u200b", "\u200c", "\u200d", "\u2060", "\ufeff", "\u202e", "\u0301", "\u0300\u0308", "\u20dd",
          "\x00", "\x01", "\x1b", "\x7f", "\x85", "\x9f", " ", "\t", "\n", "\r\n", "\xa0", "\u3000", "\x1c"]
runs = st.lists(st.tuples(st.sampled_from(SPARSE) | st.sampled_from(["word", "e\u0301", " x", "日本"]),
                          st.integers(1, 5_000)), max_size=4)
megabyte_texts = st.builds(
    lambda before, unit, size, after, end: "".join(u * n for u, n in before) + unit * (size // len(unit))
    + "".join(u * n for u, n in after) + end,
    runs, st.sampled_from(SPARSE), st.integers(500_000, 1_000_000), runs,
    st.sampled_from(["", " word", "word", " the food was wonderful", "\u200b"]))
huge_texts = st.builds(lambda unit, n: unit * n, st.sampled_from(["word ", "x", "日本", "\x00", " "]),
                       st.integers(1_000, 20_000)) | megabyte_texts
texts = short_texts | huge_texts
keys = st.text(alphabet=characters, max_size=8) | st.sampled_from(["prompts", "mimetype", "value", "role", "1", "10",
                                                                   "²", "9" * 5000, "007"])
scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | short_texts
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(keys, inner, max_size=3),
                           max_leaves=8)

good_elements = st.fixed_dictionaries({"mimetype": st.sampled_from(TEXT_MIMETYPES), "value": texts},
                                      optional={"extra": json_values})
odd_elements = st.fixed_dictionaries(
    {}, optional={"mimetype": st.sampled_from(TEXT_MIMETYPES + OTHER_MIMETYPES) | json_values,
                  "value": json_values | texts})
elements = good_elements | good_elements | odd_elements | json_values
metadata_elements = st.fixed_dictionaries({"mimetype": st.just("metadata"), "value": st.one_of(
    st.fixed_dictionaries({}, optional={"role": st.sampled_from(["user", "assistant", "system"]) | json_values,
                                        "note": json_values}),
    json_values)})
current_prompts = st.builds(lambda els, meta: els + meta, st.lists(elements, max_size=5),
                            st.lists(metadata_elements, max_size=2)).flatmap(st.permutations)
legacy_prompts = st.dictionaries(keys, elements, max_size=5)
items = st.fixed_dictionaries(
    {"prompts": st.dictionaries(keys, current_prompts | legacy_prompts | legacy_prompts | json_values, max_size=4)},
    optional={"shebang": json_values, "metadata": json_values, "extra": json_values})
anything = items | items | items | json_values | st.fixed_dictionaries({"prompts": json_values})


def answerable(element: Any) -> str | None:
    """The text of an element that gets an answer (lone surrogates replaced, as UTF-8 decoding does), else None."""
    if not isinstance(element, dict):
        return None
    mimetype, value = element.get("mimetype"), element.get("value")
    if not isinstance(mimetype, str) or not (mimetype in ("text", "application/text") or mimetype.startswith("text/")):
        return None
    if not isinstance(value, str) or not value.strip():
        return None
    return SURROGATE.sub("\ufffd", value)


def is_metadata(element: Any) -> bool:
    return isinstance(element, dict) and element.get("mimetype") == "metadata"


def expected_parse(data: Any) -> tuple[list[tuple[str, str, str]], list[tuple[str, str | None]]] | None:
    """(questions as (prompt, element, text), skips as (prompt, element or None)), or None for a malformed item."""
    if not isinstance(data, dict) or not isinstance(data.get("prompts"), dict):
        return None
    questions, skips = [], []
    for key, content in data["prompts"].items():
        if isinstance(content, dict):
            numbered = list(content.items())
        elif isinstance(content, list):
            metadata: dict = {}
            for element in filter(is_metadata, content):
                if isinstance(element.get("value"), dict):
                    metadata.update(element["value"])
                else:
                    skips.append((key, None))
            if metadata.get("role", "user") != "user":
                skips.append((key, None))
                continue
            texts = []
            for element_key, element in ((str(i), e) for i, e in enumerate(content) if not is_metadata(e)):
                text = answerable(element)
                if text is None:
                    skips.append((key, element_key))
                else:
                    texts.append((element_key, text))
            if texts:  # a current-format prompt is one message: its texts are one question
                questions.append((key, texts[0][0], "\n".join(text for _, text in texts)))
            continue
        else:
            skips.append((key, None))
            continue
        for element_key, element in numbered:
            text = answerable(element)
            if text is None:
                skips.append((key, element_key))
            else:
                questions.append((key, element_key, text))
    return questions, skips


# ----- the parser -----
@settings(max_examples=examples(1500), deadline=None)
@given(anything)
def test_parser_agrees_with_the_format_on_any_json(data):
    expected = expected_parse(data)
    if expected is None:
        with pytest.raises(MalformedItemError):
            parse_prompt_item(data, 0, "fuzz.json")
        return
    parsed = parse_prompt_item(data, 0, "fuzz.json")
    questions, skips = expected
    assert [(q.prompt_key, q.element_key, q.text) for q in parsed.questions] == questions
    assert Counter((s.prompt_key, s.element_key) for s in parsed.skipped) == Counter(skips)
    assert all(s.item == "fuzz.json" and isinstance(s.reason, str) and s.reason for s in parsed.skipped)
    for question in parsed.questions:
        question.text.encode("utf-8")  # valid Unicode: every tokenizer can take it


@settings(max_examples=examples(300), deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["a", "b", "c"]), short_texts.filter(str.strip)), min_size=1, max_size=6))
def test_duplicate_keys_in_the_json_text_last_value_wins_at_the_first_position(pairs):
    """`json.loads` keeps the LAST value of a repeated key, at the position where the key FIRST appeared."""
    questions = ", ".join(f'{json.dumps(key)}: {json.dumps({"mimetype": "text", "value": value})}'
                          for key, value in pairs)
    data = json.loads(f'{{"prompts": {{"p": {{{questions}}}, "p": {{{questions}}}}}}}')
    parsed = parse_prompt_item(data, 0, "dup.json")
    last = dict(pairs)
    assert [(q.element_key, q.text) for q in parsed.questions] == [(k, SURROGATE.sub("\ufffd", v))
                                                                   for k, v in last.items()]


@settings(max_examples=examples(300), deadline=None)
@given(st.lists(keys, max_size=8))
def test_natural_key_sorts_any_key_and_numbers_numerically(prompt_keys):
    ordered = sorted(prompt_keys, key=natural_key)
    assert Counter(ordered) == Counter(prompt_keys)
    numbers = [k for k in ordered if k.isascii() and k.isdigit()]
    assert [k.zfill(6000) for k in numbers] == sorted(k.zfill(6000) for k in numbers)  # numeric, past int()'s limit


def test_thousands_of_prompts_and_absurd_keys_in_one_item():
    item = legacy_item({str(i): [f"question {i}"] for i in range(5000)})
    item["prompts"]["9" * 5000] = item["prompts"]["²"] = {"q": {"mimetype": "text", "value": "odd key"}}
    parsed = parse_prompt_item(item, 0, "big.json")
    assert len(parsed.questions) == 5002 and parsed.skipped == []
    assert sorted((q.prompt_key for q in parsed.questions), key=natural_key)[:3] == ["0", "1", "2"]


# ----- predict -----
def tagged(adapter):
    """Mark each answer with the question it answers, so that order can be checked on the annotations."""
    postprocess = adapter.postprocess

    def tagging(question, outputs):
        found = postprocess(question, outputs)
        for answer in found:
            answer.details = {**answer.details, "question": [question.prompt_key, question.element_key]}
        return found
    adapter.postprocess = tagging
    return adapter


def check_nothing_lost(adapter, batch: list) -> None:
    """No exception; each good item's questions answered in order; every element answered or reported once."""
    collections = adapter.predict(batch)
    report = adapter.last_report
    assert len(collections) == len(batch)
    expected_skips: Counter = Counter()
    malformed = []
    elements = 0
    for index, (data, collection) in enumerate(zip(batch, collections)):
        name = f"batch[{index}]"
        expected = expected_parse(data)
        if expected is None:
            malformed.append(name)
            assert collection.annotations == []
            continue
        questions, skips = expected
        expected_skips.update((name, prompt, element) for prompt, element in skips)
        got = [(a.metadata["system"]["promptId"], tuple(a.metadata["user"]["model_output"]["question"]))
               for a in collection.annotations]
        assert got == [(p, (p, e)) for p, e, _ in questions]
        assert all(isinstance(a.coordinates, str) for a in collection.annotations)
        elements += len(questions) + len(skips)
    assert [f.item for f in report.failed_items] == malformed
    assert Counter((s.item, s.prompt_key, s.element_key) for s in report.skipped) == expected_skips
    answered = sum(len(c.annotations) for c in collections)
    assert answered + len(report.skipped) == elements
    assert all(isinstance(s.reason, str) and s.reason for s in (*report.skipped, *report.failed_items))


batches = st.lists(items | items | items | anything, min_size=1, max_size=4)


@pytest.fixture(scope="module")
def distilbert(make_adapter):
    return tagged(make_adapter("models.distilbert_sst2", batch_size=64, max_batch_tokens=2048))


@pytest.fixture(scope="module")
def bart(make_adapter):
    return tagged(make_adapter("models.bart_large_mnli", batch_size=16, candidate_labels=["good", "bad"]))


@pytest.fixture(scope="module")
def dialogpt(make_adapter):
    return tagged(make_adapter("models.dialogpt_large", max_new_tokens=4, do_sample=False))


@pytest.fixture(scope="module")
def t5(make_adapter):
    return tagged(make_adapter("models.t5_email", token_count=4, n_gen=2, do_sample=True, temperature=0.7, seed=1))


@settings(max_examples=examples(400), deadline=None)
@given(batches)
def test_distilbert_predict_loses_nothing(distilbert, batch):
    check_nothing_lost(distilbert, batch)


@settings(max_examples=examples(100), deadline=None)
@given(batches)
def test_bart_predict_loses_nothing(bart, batch):
    check_nothing_lost(bart, batch)


@settings(max_examples=examples(100), deadline=None)
@given(batches)
def test_dialogpt_predict_loses_nothing(dialogpt, batch):
    check_nothing_lost(dialogpt, batch)


@settings(max_examples=examples(60), deadline=None)
@given(batches)
def test_t5_predict_loses_nothing(t5, batch):
    check_nothing_lost(t5, batch)
    for collection in t5.predict(batch):  # n_gen emails per question, in one answer
        assert all(len(a.metadata["user"]["model_output"]["generations"]) == 2 for a in collection.annotations)


def test_thousands_of_prompts_in_one_item_are_all_answered(distilbert, dialogpt):
    many = legacy_item({str(i): ["a", "", "b"] for i in range(1000)})
    check_nothing_lost(distilbert, [current_item({str(i): [f"q{i}", {"mimetype": "image/png", "value": "x"}]
                                                  for i in range(2000)}), many])
    check_nothing_lost(dialogpt, [legacy_item({str(i): ["a", "", "b"] for i in range(300)})])  # 300 conversations


# ----- what a request controls must not buy cost: templates, labels, identifiers, long texts -----
from adapters.core.prompt_items import Skipped  # noqa: E402
from models.bart_large_mnli import MAX_LABEL_CHARS, MAX_TEMPLATE_CHARS, TASK_SETTINGS, template_parts  # noqa: E402
from tests.test_memory import CountingTokenizer  # noqa: E402

TEMPLATE_SETTING = TASK_SETTINGS[1]
LABELS_SETTING = TASK_SETTINGS[0]
format_pieces = st.sampled_from(["{}", "{", "}", "{{", "}}", "{:>20000000}", "{__class__}", "{:{}}", "{0}", "{!r}",
                                 "{[0]}", "{.real}", "{:", "!", ":", ">", "9" * 8, "This example is ", "."])
templates = st.lists(format_pieces | short_texts, max_size=8).map("".join) | st.text(max_size=300)
labels = st.lists(short_texts | huge_texts | st.sampled_from(["sports", "x" * MAX_LABEL_CHARS]) | json_values,
                  max_size=6) | json_values


@settings(max_examples=examples(1500), deadline=None)
@given(templates, short_texts)
def test_a_template_is_refused_or_only_puts_the_label_in_its_one_plain_placeholder(template, label):
    """`"{{}}{:>20000000}"` padded every hypothesis to 20 MB through str.format; `{__class__}` read attributes."""
    try:
        TEMPLATE_SETTING.validate(template)
    except ConfigurationError as error:
        assert "'hypothesis_template'" in str(error) and len(str(error)) < 300
        return
    before, after = template_parts(template)
    assert len(template) <= MAX_TEMPLATE_CHARS
    assert before + label + after == template.format(label)  # what it always meant, with braces as braces
    assert len(before) + len(after) < len(template)


@settings(max_examples=examples(300), deadline=None)
@given(labels)
def test_labels_are_refused_or_few_unique_and_short(value):
    try:
        accepted = LABELS_SETTING.validate(value)
    except ConfigurationError as error:
        assert "'candidate_labels'" in str(error) and len(str(error)) < 300
        return
    assert 1 <= len(accepted) <= 100 and len(set(accepted)) == len(accepted)
    assert all(isinstance(x, str) and x.strip() and len(x) <= MAX_LABEL_CHARS for x in accepted)


@pytest.fixture(scope="module")
def counted_bart(make_adapter):
    adapter = make_adapter("models.bart_large_mnli", batch_size=16, candidate_labels=["good", "bad"])
    adapter.tokenizer = CountingTokenizer(adapter.tokenizer)
    return adapter


@settings(max_examples=examples(150), deadline=None)
@given(st.fixed_dictionaries({}, optional={"candidate_labels": labels, "hypothesis_template": templates,
                                           "multi_label": st.booleans() | json_values}),
       texts.filter(str.strip))
def test_prompt_metadata_is_answered_or_skipped_with_a_reason_at_bounded_cost(counted_bart, metadata, text):
    """Whatever a prompt's metadata holds, its question is answered with the labels asked for, or skipped with a
    reason that names the key; the characters tokenized stay within the caps, never the text's size x labels."""
    counter = counted_bart.tokenizer
    before = counter.characters
    (collection,) = counted_bart.predict([current_item({"1": [text]}, {"1": metadata})])
    report = counted_bart.last_report
    if collection.annotations:
        (annotation,) = collection.annotations
        given_labels = metadata.get("candidate_labels", ["good", "bad"])
        assert sorted(annotation.metadata["user"]["model_output"]["labels"]) == sorted(given_labels)
        assert report.skipped == []
    else:
        (skipped,) = report.skipped
        # A label or template of up to 200 characters can still be longer, in tokens, than the model's window.
        too_long = "(e.g. a zero-shot hypothesis)" in skipped.reason and "leaves no room" in skipped.reason
        assert (too_long or any(f"'{name}'" in skipped.reason for name in metadata)) and len(skipped.reason) < 400
    window = counted_bart.max_input_tokens * 8 * 4
    assert counter.characters - before <= window + 100 * (MAX_LABEL_CHARS + MAX_TEMPLATE_CHARS)


identifiers = (st.text(alphabet=characters, max_size=50) | huge_texts | st.sampled_from(ODD)
               | st.builds(lambda unit, n: unit * n, st.sampled_from(["k", "\u202e", "日", "\x00", "'\""]),
                           st.integers(1_000, 100_000)))


@settings(max_examples=examples(200), deadline=None)
@given(identifiers, identifiers, identifiers)
def test_odd_or_huge_item_names_and_prompt_keys_are_echoed_short(distilbert, name, prompt_key, element_key):
    """A 110 KB request gave a 25 MB response and log: every skip echoed its whole item name and prompt key."""
    item = legacy_item({prompt_key: [{"mimetype": "image/png", "value": "x"}] * 3 + ["hello"]})
    elements = item["prompts"][prompt_key]
    elements[element_key] = {"mimetype": "audio/wav", "value": "y"}
    item["name"] = name
    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.DEBUG)
    handler.emit = records.append
    logger = logging.getLogger("adapters")
    saved = logger.level
    logger.setLevel(logging.DEBUG)
    logger.addHandler(handler)
    try:
        distilbert.predict([item])
    finally:
        logger.removeHandler(handler)
        logger.setLevel(saved)
    report = distilbert.last_report
    assert len(report.skipped) == sum(e["mimetype"] != "application/text" for e in elements.values())
    for skipped in report.skipped:
        assert (skipped.prompt_key, skipped.item) == (prompt_key, distilbert_name(name))  # kept whole for callers
        assert len(skipped.describe()) < 400 and len(skipped.reason) < 200
    assert records and all(len(record.getMessage()) < 600 for record in records)
    assert len(Skipped(name, prompt_key, element_key, "why").describe()) < 200


def distilbert_name(name: str) -> str:
    """The name predict reports a dict item by: its `name`, or its place in the batch."""
    return name or "batch[0]"


@pytest.fixture(scope="module")
def tokenizers(tiny_models):
    from transformers import AutoTokenizer
    return {name: AutoTokenizer.from_pretrained(tiny_models[name]) for name in ("bart", "distilbert", "t5", "gpt2")}


MODULES = ["models.distilbert_sst2", "models.bart_large_mnli", "models.t5_email", "models.dialogpt_large"]


@pytest.fixture(scope="module")
def counted(make_adapter):
    """Each model with a tokenizer that counts the characters and calls it is given."""
    adapters = {module: make_adapter(module) for module in MODULES}
    for adapter in adapters.values():
        adapter.tokenizer = CountingTokenizer(adapter.tokenizer)
    return adapters


@settings(max_examples=examples(40), deadline=None)
@given(st.sampled_from(MODULES), st.lists(megabyte_texts, min_size=1, max_size=3))
def test_megabyte_texts_of_sparse_characters_cost_what_the_token_budget_allows(counted, module, questions):
    """Whatever the characters, each question costs at most the read bound of the model's window in characters
    tokenized and a dozen tokenizer calls (memory follows the characters tokenized), and it is answered or skipped
    with a reason."""
    from adapters.core.truncation import read_bound

    adapter = counted[module]
    counter = adapter.tokenizer
    characters, calls = counter.characters, counter.calls
    (collection,) = adapter.predict([legacy_item({str(i): [text] for i, text in enumerate(questions)})])
    assert len(collection.annotations) + len(adapter.last_report.skipped) == len(questions)
    assert all(skipped.reason == "empty text: nothing to answer" for skipped in adapter.last_report.skipped)
    labels = 100 if module == "models.bart_large_mnli" else 0  # the default labels and template, once a question
    assert counter.characters - characters <= len(questions) * (read_bound(adapter.max_input_tokens) + labels)
    assert counter.calls - calls <= len(questions) * 13


words = st.sampled_from(sorted({w for line in CORPUS for w in line.split()}))
separators = st.sampled_from([" ", "", "  ", "\n", "\t", "\r\n", "\xa0", "\u3000", "\x1c", " \u200b"])
long_texts = st.lists(st.tuples(words | short_texts, separators), min_size=1, max_size=400).map(
    lambda parts: SURROGATE.sub("\ufffd", "".join(w + s for w, s in parts)))


@settings(max_examples=examples(300), deadline=None)
@given(st.sampled_from(["bart", "distilbert", "t5", "gpt2"]), long_texts, st.sampled_from([12, 16, 64]),
       st.booleans(), st.sampled_from([None, 1, 24]))
def test_cutting_before_tokenizing_keeps_the_tokens_the_whole_text_gives(tokenizers, name, text, max_length, paired,
                                                                         window):
    """Texts are read in windows cut between words before tokenizing: the rows must be those of the whole text,
    truncated (`window` shrinks the first window so that many windows are joined)."""
    import contextlib
    from unittest import mock

    from adapters.core import truncation
    small = mock.patch.multiple(truncation, MIN_PIECE_CHARS=window, CHARS_PER_TOKEN=1) if window else None
    with small or contextlib.nullcontext():
        check_cutting_keeps_the_whole_texts_tokens(tokenizers[name], text, max_length, paired)


def check_cutting_keeps_the_whole_texts_tokens(tokenizer, text: str, max_length: int, paired: bool) -> None:
    from adapters.core.truncation import Segments, read_bound
    assert len(text) <= read_bound(1)  # shorter texts are read whole when they need to be
    segments = Segments(tokenizer)
    pair = ["It is sports."] if paired else None
    rows, _ = segments.rows(text, pair, max_length)
    if paired:
        expected = tokenizer([text], pair, truncation="only_first", max_length=max_length)
    else:
        expected = tokenizer([text], truncation=True, max_length=max_length)
    assert rows == [{key: expected[key][0] for key in rows[0]}]
    whole = tokenizer(text, add_special_tokens=False)["input_ids"]
    for limit in (1, max_length):
        ids, more = segments.ids(text, limit, keep_end=True)
        assert (ids, more) == (whole[-limit:] if len(whole) > limit else whole, len(whole) > limit)
        assert segments.ids(text, limit) == (whole[:limit], len(whole) > limit)
