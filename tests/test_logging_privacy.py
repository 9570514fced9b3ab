"""Prompt and answer texts are user data: no log record above DEBUG may contain them, on any path.

Every module runs items that take every path that logs (good questions, truncation, trimmed history, lone
surrogates, non-text and empty elements, assistant prompts, malformed and unreadable items, a failing
micro-batch, a third-party error that quotes its input), with distinctive texts; then every record at INFO or
above, from our loggers and from transformers' and dtlpy's, and every Python warning, is searched for them.
"""
from __future__ import annotations

import logging
import uuid
from types import SimpleNamespace

import dtlpy as dl
import pytest

from adapters.core.errors import ModelFailure
from adapters.dataloop.execution import ItemsNotAnswered
from adapters.dataloop.model_adapter import ModelAdapter
from tests.conftest import FAST_SETTINGS, MODULE_MODELS
from tests.fake_platform import FakePlatform, linked_item
from tests.prompt_factory import current_item, legacy_item
from tests.test_base_adapter import offline_model

MODULES = list(MODULE_MODELS)


def secret() -> str:
    return f"secret-{uuid.uuid4().hex}"


@pytest.fixture
def records(caplog):
    """Records at DEBUG and up from our loggers, transformers' (which does not propagate) and dtlpy's."""
    caplog.set_level(logging.DEBUG, logger="adapters")
    caplog.set_level(logging.DEBUG, logger="models")
    caplog.set_level(logging.INFO, logger="dtlpy")
    library = logging.getLogger("transformers")
    saved = library.level
    library.setLevel(logging.INFO)
    library.addHandler(caplog.handler)
    yield caplog
    library.removeHandler(caplog.handler)
    library.setLevel(saved)


def hostile_batch(secrets: list[str], tmp_path) -> list:
    """Items that take every logging path; each user text holds one of `secrets` (which this appends to)."""
    s = [secret() for _ in range(9)]
    secrets.extend(s)
    long = f"{s[0]} " + "a very long message indeed " * 300
    items = [
        legacy_item({"p": [s[2], f"{s[3]} lone \ud800 surrogate", "", long],
                     "q": [{"mimetype": "image/png", "value": s[5]}, {"mimetype": "text", "value": 42}],
                     "r": ["fail me " + s[4]]}),
        current_item({"1": [s[6]], "2": [f"{s[7]} " * 60], "3": ["an assistant turn " + s[8]]},
                     metadata={"3": {"role": "assistant"}}),
        {"prompts": [s[1]]},
        {"no prompts": s[1]},
        linked_item(tmp_path, "unreadable.json", {}, "id-unreadable"),
    ]
    (tmp_path / "unreadable.json").write_text(f'{{"prompts": {{"p": "{s[1]}"')  # cut short: not JSON
    return items


def break_some_questions(adapter) -> None:
    """A third-party error that quotes the question."""
    preprocess = adapter.preprocess

    def quoting(question, history):
        if question.text.startswith("fail me"):
            raise ValueError(f"cannot tokenize {question.text!r}")
        return preprocess(question, history)
    adapter.preprocess = quoting


def leaked(records, texts: list[str]) -> list[str]:
    formatter = logging.Formatter()
    found = []
    for record in records:
        if record.levelno < logging.INFO:
            continue
        message = record.getMessage() + (formatter.formatException(record.exc_info) if record.exc_info else "")
        found += [f"{record.name}: {message[:200]}" for text in texts if text in message]
    return found


def answer_texts(collections) -> list[str]:
    """Generated answers distinctive enough to search for (classifier labels are the model's, not the user's)."""
    return [a.coordinates for c in collections for a in c.annotations
            if "generated_tokens" in a.metadata["user"]["model_output"] and len(a.coordinates.strip()) >= 6]


@pytest.mark.parametrize("module", MODULES)
def test_no_prompt_or_answer_text_in_logs_above_debug(make_adapter, records, recwarn, tmp_path, module, monkeypatch):
    FakePlatform().install(monkeypatch)
    adapter = make_adapter(module, batch_size=1, **({"candidate_labels": ["x", "y"]} if "mnli" in module else {}))
    break_some_questions(adapter)
    secrets: list[str] = []
    collections = adapter.predict(hostile_batch(secrets, tmp_path))
    report = adapter.last_report
    assert sum(len(c.annotations) for c in collections) > 0
    assert [f.item for f in report.failed_items] == ["batch[2]", "batch[3]", "unreadable.json"]
    reasons = " | ".join(s.reason for s in (*report.skipped, *report.failed_items))
    assert "could not prepare the question: failed with ValueError" in reasons  # it ran, unquoted
    texts = secrets + answer_texts(collections)
    assert not [s for s in secrets if s in reasons]
    assert any(r.levelno == logging.WARNING and "not answered" in r.getMessage() for r in records.records)
    assert any("surrogate" in r.getMessage() for r in records.records)
    assert leaked(records.records, texts) == []
    assert [str(w.message) for w in recwarn if any(t in str(w.message) for t in texts)] == []


@pytest.mark.parametrize("module", MODULES)
def test_a_model_failure_names_no_user_text(make_adapter, records, module):
    adapter = make_adapter(module, batch_size=1, **({"candidate_labels": ["x", "y"]} if "mnli" in module else {}))
    forward = adapter.forward

    def failing(inputs):
        if inputs["input_ids"].shape[1] > 30:
            raise RuntimeError("simulated device error")
        return forward(inputs)
    adapter.forward = failing
    secrets = [secret() for _ in range(2)]
    with pytest.raises(ModelFailure, match="simulated device error") as failure:
        adapter.predict([legacy_item({"p": [secrets[0], f"{secrets[1]} " * 20]})])
    assert not [s for s in secrets if s in str(failure.value)]
    assert leaked(records.records, secrets) == []


def test_dtlpy_predict_items_logs_no_user_text(tiny_models, records, tmp_path, monkeypatch):
    platform = FakePlatform().install(monkeypatch)
    module = "models.dialogpt_large"
    configuration = {"module_name": module, "model_path": str(tiny_models[MODULE_MODELS[module]]),
                     **FAST_SETTINGS[module]}
    adapter = ModelAdapter(model_entity=offline_model("chat", configuration))
    secrets = [secret() for _ in range(3)]
    broken = platform.add_item(linked_item(tmp_path, "broken.json", {}, "id-broken"))
    (tmp_path / "broken.json").write_text(f"[{secrets[0]}")
    items = [platform.add_item(linked_item(tmp_path, "good.json", legacy_item({"p": secrets[1:]}), "id-good")), broken]
    with pytest.raises(ItemsNotAnswered) as raised:  # the broken item fails the execution, once the other is answered
        adapter.predict_items(items)
    (unanswered,) = raised.value.unanswered
    assert unanswered.item_id == "id-broken" and not [s for s in secrets if s in str(raised.value)]
    annotations = [dl.Annotation.from_json(_json=a) for a in platform.annotations["id-good"]]
    assert len(annotations) == 2
    assert leaked(records.records, secrets + answer_texts([SimpleNamespace(annotations=annotations)])) == []


@pytest.mark.parametrize("text, quoted", [
    ("a", "max_length exceeded while tokenizing 'a'"),  # a short text: replacing it would mangle other words
    ("Tell Nobody This", "cannot lower-case 'tell nobody this'"),  # a transformed copy
    ("Tell Nobody This", "input 'Tell Nob...' too long"),  # a cut one
    ("Tell Nobody This", "unknown tokens ['Tell', 'Nobody', 'This']"),  # as tokens
])
def test_a_library_error_never_brings_question_text_into_a_skip_reason(make_adapter, text, quoted):
    adapter = make_adapter("models.distilbert_sst2")
    adapter.preprocess = lambda question, history: (_ for _ in ()).throw(KeyError(quoted))
    adapter.predict([legacy_item({"p": [text]})])
    (skipped,) = adapter.last_report.skipped
    assert skipped.reason.startswith("could not prepare the question: failed with KeyError")
    assert [word for word in quoted.split() if word in skipped.reason] == [] and "<question" not in skipped.reason


def test_the_packages_own_errors_keep_their_message(make_adapter):
    """Our messages say what to fix and never quote the text: a template refused in a prompt's metadata."""
    adapter = make_adapter("models.bart_large_mnli")
    adapter.predict([current_item({"1": ["hello"]}, metadata={"1": {"hypothesis_template": "{{}}{:>20000000}"}})])
    (skipped,) = adapter.last_report.skipped
    assert "'hypothesis_template'" in skipped.reason and "exactly one plain '{}'" in skipped.reason
