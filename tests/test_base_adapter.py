"""The generic base: every question answered in order, bad items reported, inputs of every kind accepted."""

import math

import dtlpy as dl
import pytest

from adapters.core.errors import ModelFailure
from adapters.core.hugging_adapter import LoadedItem
from adapters.dataloop.model_adapter import ModelAdapter
from tests.fake_platform import FakePlatform, linked_item
from tests.prompt_factory import answers, current_item, legacy_item, own_and_best_score
from tests.tolerances import confidence_tolerance

MODULES = ["models.distilbert_sst2", "models.bart_large_mnli", "models.dialogpt_large", "models.t5_email"]
UNICODE = ["Ünïcödé ✓ — 日本語のテキスト", "emoji 😂🎉 only?", "tab\tand\nnewline", "x" * 3]


@pytest.mark.parametrize("module", MODULES)
def test_every_question_of_every_item_is_answered_in_order(make_adapter, module):
    adapter = make_adapter(module, batch_size=2)
    batch = [legacy_item({"p1": ["good movie", "bad movie"], "p2": ["fine"]}),
             {"not": "a prompt item"},
             current_item({"1": UNICODE, "2": ["last"]}),
             legacy_item({"p": [{"mimetype": "image/png", "value": "http://x"}, "", "after the image"]})]
    collections = adapter.predict(batch)
    assert len(collections) == 4
    per_answer = 1
    assert [p for p, _, _ in answers(collections[0])] == ["p1"] * 2 * per_answer + ["p2"] * per_answer
    assert collections[1].annotations == []
    assert [p for p, _, _ in answers(collections[2])] == ["1", "2"]  # a current-format prompt gets one answer
    assert [p for p, _, _ in answers(collections[3])] == ["p"]
    for annotation in (a for col in collections for a in col.annotations):
        own, best = own_and_best_score(annotation.coordinates, annotation.metadata["user"]["model_output"])
        assert annotation.metadata["user"]["model"]["confidence"] == own == best
    assert all(a.metadata["user"]["model"]["name"] == adapter.model_name for col in collections for a in col.annotations)
    report = adapter.last_report
    assert [f.item for f in report.failed_items] == ["batch[1]"]
    assert sorted((s.item, s.element_key) for s in report.skipped) == [("batch[3]", "question-1"),
                                                                        ("batch[3]", "question-2")]


# Mixed lengths (1 to ~50 tokens), so micro-batches are padded and planned longest first, not in input order.
MIXED = ["terrible", "The plot was boring, predictable and far too long, and the staff were not friendly at all.",
         "ok", "Great product, works exactly as described and arrived early.", "Who won the game last night?",
         "The quarterly report is attached; please review it by Friday and send me the invoice.", "hi there"]


def batched(module, tiny_models, sharp_classifiers, **configuration):
    """An adapter that pads all of MIXED into shared micro-batches; classifiers on sharpened weights (answers that
    differ per text), generators greedy."""
    import importlib

    from tests.conftest import FAST_SETTINGS, MODULE_MODELS
    path = sharp_classifiers.get(module) or tiny_models[MODULE_MODELS[module]]
    settings = {} if module in sharp_classifiers else {"do_sample": False}
    return importlib.import_module(module).HuggingAdapter({"model_path": str(path), **FAST_SETTINGS.get(module, {}),
                                                           **settings, **configuration})


def padded_batches(adapter) -> list:
    """Record the attention mask of every micro-batch the adapter runs."""
    masks = []
    forward = adapter.forward
    adapter.forward = lambda inputs: (masks.append(inputs["attention_mask"]), forward(inputs))[1]
    return masks


@pytest.mark.parametrize("module", MODULES)
def test_batched_answers_come_back_in_input_order_and_ignore_padding(tiny_models, sharp_classifiers, module):
    """Each text's answer in padded, length-sorted micro-batches is its own: equal to transformers' answer to that
    text alone, unpadded (so outputs go back in input order and padding is masked)."""
    from tests.references import reference_answers
    adapter = batched(module, tiny_models, sharp_classifiers, batch_size=4)
    masks = padded_batches(adapter)
    (collection,) = adapter.predict([legacy_item({f"p{i}": [text] for i, text in enumerate(MIXED)})])
    got = [(text, confidence) for _, text, confidence in answers(collection)]
    expected = reference_answers(module, adapter, MIXED)
    assert len(got) == len(expected) == len(MIXED)
    for (text, confidence), (expected_text, expected_confidence) in zip(got, expected):
        # transformers' code on one unpadded text: float32 rounding of the logits (tests/tolerances.py)
        assert text == expected_text
        assert confidence == pytest.approx(expected_confidence, **confidence_tolerance(module))
    assert len(masks) > 1 and any(bool((mask == 0).any()) for mask in masks)  # several batches, with padding
    assert len({round(c, 4) for _, c in expected}) > 3  # answers differ per text: a mix-up cannot pass


def test_a_module_that_cannot_read_the_models_output_fails_the_call_naming_model_question_and_error(make_adapter):
    """A `postprocess` that raises is a model-side failure: the call fails with which model, which question and
    the error's type (not its message, which may quote the question)."""
    adapter = make_adapter("models.distilbert_sst2")

    def unreadable(question, outputs):
        raise ValueError("cannot read")
    adapter.postprocess = unreadable
    with pytest.raises(ModelFailure) as error:
        adapter.predict([{**legacy_item({"p": ["fine"]}), "name": "out.json"}])
    assert str(error.value) == ("distilbert-sst2 could not read the model's output for item 'out.json', prompt 'p', "
                                "element 'question-1': failed with ValueError (its message may quote the question, "
                                "so only the DEBUG log has it)")


def test_a_failing_micro_batch_fails_the_whole_call(make_adapter):
    """A model failure is not bad input: `predict` raises instead of returning the batch short of answers."""
    adapter = make_adapter("models.distilbert_sst2", batch_size=1)
    forward = adapter.forward

    def flaky(inputs):
        if inputs["input_ids"].shape[1] > 20:
            raise RuntimeError("simulated device error")
        return forward(inputs)
    adapter.forward = flaky
    with pytest.raises(ModelFailure, match="distilbert-sst2 failed on a micro-batch of 1 rows: RuntimeError: "
                                           "simulated device error"):
        adapter.predict([legacy_item({"p": ["short", "long " * 40, "tiny"]})])
    assert adapter.last_report.skipped == []  # a model failure is never passed off as a skipped question


def test_a_model_failure_message_is_cut_to_300_characters(make_adapter):
    """A model error may quote whole tensors: its message is kept whole up to 300 characters, cut past them."""
    adapter = make_adapter("models.distilbert_sst2")
    for message, expected in (("x" * 300, "x" * 300), ("y" * 301, "y" * 300 + "...")):
        def failing(inputs, message=message):
            raise RuntimeError(message)
        adapter.forward = failing
        with pytest.raises(ModelFailure) as error:
            adapter.predict([legacy_item({"p": ["fine"]})])
        assert str(error.value).endswith(f"RuntimeError: {expected}")


def test_accepts_prompt_items_items_and_loaded_items(make_adapter, tmp_path, monkeypatch):
    platform = FakePlatform().install(monkeypatch)
    adapter = make_adapter("models.distilbert_sst2")
    prompt_item = dl.PromptItem(name="from-sdk")
    prompt = dl.Prompt(key="1")
    prompt.add_element(value="what a great day", mimetype=dl.PromptType.TEXT)
    prompt_item.prompts.append(prompt)
    item = platform.add_item(linked_item(tmp_path, "linked.json", legacy_item({"p": ["linked question"]}), "item-1"))
    broken = platform.add_item(linked_item(tmp_path, "broken.json", {}, "item-2"))
    (tmp_path / "broken.json").write_text("{not json")
    loaded = [adapter.prepare_item_func(x) for x in (prompt_item, item, broken)]
    assert all(isinstance(x, LoadedItem) for x in loaded) and loaded[2].error
    collections = adapter.predict(loaded + [prompt_item, item])
    assert [len(c.annotations) for c in collections] == [1, 1, 0, 1, 1]
    assert adapter.last_report.failed_items[0].item == "broken.json"


def offline_model(name, configuration):
    model = dl.Model.from_json(_json={"id": f"{name}-id", "name": name, "configuration": configuration,
                                      "inputType": "text", "outputType": "text", "status": "pre-trained"},
                               client_api=dl.client_api, project=None, package=dl.Package())
    model.update = lambda *args, **kwargs: model  # configuration writes stay local
    return model


@pytest.mark.parametrize("module", MODULES)
def test_model_adapter_drives_a_module_through_dtlpy_predict_items(tiny_models, tmp_path, module, monkeypatch):
    from tests.conftest import FAST_SETTINGS, MODULE_MODELS
    platform = FakePlatform().install(monkeypatch)
    configuration = {"module_name": module, "model_path": str(tiny_models[MODULE_MODELS[module]]),
                     **FAST_SETTINGS.get(module, {})}
    adapter = ModelAdapter(model_entity=offline_model("my-model", configuration))
    items = [platform.add_item(linked_item(tmp_path, f"{i}.json", legacy_item({"p": [f"question {i}", "another"]}),
                                           f"id-{i}")) for i in range(3)]
    _, annotations = adapter.predict_items(items)
    assert [len(platform.annotations[f"id-{i}"]) for i in range(3)] == [2, 2, 2]
    assert len(annotations) == 6
    for annotation in annotations:
        assert annotation.type == "text" and annotation.metadata["system"]["promptId"] == "p"
        assert annotation.metadata["system"]["model"]["name"] == "my-model"
        own, best = own_and_best_score(annotation.coordinates, annotation.metadata["user"]["model_output"])
        assert annotation.metadata["user"]["model"]["confidence"] == own == best


def test_model_adapter_refuses_modules_outside_models(tmp_path):
    from adapters.core.errors import ConfigurationError
    with pytest.raises(ConfigurationError, match="valid names"):
        ModelAdapter(model_entity=offline_model("evil", {"module_name": "os"}))


def test_an_annotations_confidence_is_0_when_not_a_number_and_clamped_into_0_1(make_adapter):
    """model_info.confidence must lie in [0, 1]: a NaN or infinite score (a broken output) claims nothing."""
    import math

    from adapters.core.hugging_adapter import Answer
    from adapters.core.prompt_items import parse_prompt_item
    adapter = make_adapter("models.distilbert_sst2")
    parsed = parse_prompt_item(legacy_item({"p": ["a", "b", "c", "d", "e", "f"]}), 0, "x.json")
    scores = [math.nan, math.inf, -0.5, 1.5, 0.25, 1.0]
    collection = adapter._collection(parsed, {id(q): [Answer("POSITIVE", s)] for q, s in zip(parsed.questions, scores)})
    assert [a[2] for a in answers(collection)] == [0.0, 0.0, 0.0, 1.0, 0.25, 1.0]


def test_scores_that_are_not_numbers_are_written_as_null_so_the_output_stays_json(make_adapter):
    """NaN logits gave `NaN` in the model output, which json.dumps writes and no JSON reader takes (the CLI's file,
    the platform's upload)."""
    import json

    import torch
    adapter = make_adapter("models.distilbert_sst2")
    adapter.forward = lambda inputs: [torch.tensor([math.nan, math.inf]) for _ in inputs["input_ids"]]
    (collection,) = adapter.predict([legacy_item({"p": ["hello"]})])
    (annotation,) = collection.annotations
    output = annotation.metadata["user"]["model_output"]
    assert list(output["scores"].values()) == [None, None] and annotation.metadata["user"]["model"]["confidence"] == 0
    json.dumps(annotation.to_json(), allow_nan=False)


def test_a_dict_items_stored_answers_by_this_model_are_kept_not_rerun(make_adapter):
    from tests.fake_platform import answer_json
    adapter = make_adapter("models.distilbert_sst2")
    item = {**current_item({"1": ["first"], "2": ["second"]}), "name": "d.json",
            "annotations": [answer_json("1", "kept as it is", adapter.model_name)]}
    (collection,) = adapter.predict([item])
    assert [prompt for prompt, _, _ in answers(collection)] == ["2"]
    (kept,) = adapter.last_report.kept
    assert (kept.item, kept.prompt_key) == ("d.json", "1")
    nameless = {key: value for key, value in item.items() if key != "name"}
    refused = adapter.predict([{**item, "annotations": {"1": "not a list"}}, {**nameless, "annotations": "x"}])
    assert [c.annotations for c in refused] == [[], []]
    assert [(s.item, s.reason) for s in adapter.last_report.failed_items] == [
        ("d.json", "'annotations' must be a list of annotations"),
        ("batch[1]", "'annotations' must be a list of annotations")]


def test_a_legacy_prompt_with_more_questions_than_stored_answers_keeps_each_question_by_element(make_adapter):
    """A legacy prompt holds several questions; any stored answer by this model keeps them all (the extra ones see
    its last answer), and the report names each kept question's element, as the local runner's output shows."""
    from tests.fake_platform import answer_json
    adapter = make_adapter("models.distilbert_sst2")
    item = {**legacy_item({"a": ["one", "two", "three"], "b": ["four"]}), "name": "old.json",
            "annotations": [answer_json("a", "A", adapter.model_name), answer_json("a", "B", adapter.model_name)]}
    (collection,) = adapter.predict([item])
    assert [prompt for prompt, _, _ in answers(collection)] == ["b"]
    assert [(k.item, k.prompt_key, k.element_key) for k in adapter.last_report.kept] == [
        ("old.json", "a", "question-1"), ("old.json", "a", "question-2"), ("old.json", "a", "question-3")]


def test_an_item_whose_questions_a_module_cannot_order_is_reported_question_by_question_and_the_batch_goes_on(
        make_adapter):
    """A module's `conversations` that raises on one item (a module bug, or an item it did not foresee) skips that
    item's questions, each reported with the error's type only, and the rest of the batch is answered."""
    adapter = make_adapter("models.distilbert_sst2")
    conversations = adapter.conversations

    def failing_on_odd(parsed):
        if parsed.name == "odd.json":
            raise ValueError("odd.json cannot be ordered")
        return conversations(parsed)
    adapter.conversations = failing_on_odd
    odd = {**legacy_item({"a": ["one", "two"]}), "name": "odd.json"}
    fine = {**legacy_item({"a": ["three"]}), "name": "fine.json"}
    odd_answers, fine_answers = adapter.predict([odd, fine])
    assert (len(odd_answers.annotations), len(fine_answers.annotations)) == (0, 1)
    reason = ("could not order the item's questions: failed with ValueError "
              "(its message may quote the question, so only the DEBUG log has it)")
    assert [(s.item, s.prompt_key, s.element_key, s.reason) for s in adapter.last_report.skipped] == [
        ("odd.json", "a", "question-1", reason), ("odd.json", "a", "question-2", reason)]
    from adapters.core.prompt_items import parse_prompt_item  # evaluation answers parsed items the same way
    by_question, report = adapter.answer_questions([parse_prompt_item(odd, 0, "odd.json"),
                                                    parse_prompt_item(fine, 1, "fine.json")])
    assert [q.item_name for q in by_question] == ["fine.json"]
    assert [(s.item, s.reason) for s in report.skipped] == [("odd.json", reason), ("odd.json", reason)]


def test_a_prompt_items_own_answers_by_this_model_are_kept_and_its_skips_named_by_it(make_adapter):
    adapter = make_adapter("models.distilbert_sst2")
    prompt_item = dl.PromptItem(name="from-sdk")
    for key, text in (("1", "what a great day"), ("2", "an awful day"), ("3", "   ")):
        prompt_item.add(message={"role": "user", "content": [{"mimetype": dl.PromptType.TEXT, "value": text}]},
                        prompt_key=key)
    answer = dl.Prompt(key="1", role="assistant")  # as dtlpy loads a stored answer (`_load_annotations_prompts`)
    answer.add_element(value="kept", mimetype=dl.PromptType.TEXT)
    answer.add_element(value={"id": "a1", "model_info": {"name": adapter.model_name}}, mimetype=dl.PromptType.METADATA)
    prompt_item.assistant_prompts.append(answer)
    (collection,) = adapter.predict([prompt_item])
    assert [prompt for prompt, _, _ in answers(collection)] == ["2"]
    assert [(k.item, k.prompt_key) for k in adapter.last_report.kept] == [("from-sdk", "1")]
    assert [(s.item, s.prompt_key) for s in adapter.last_report.skipped] == [("from-sdk", "3")]


def test_a_batch_entry_that_is_no_item_is_refused_by_type_and_name(make_adapter):
    from types import SimpleNamespace
    adapter = make_adapter("models.distilbert_sst2")
    collections = adapter.predict([42, SimpleNamespace(name="odd.json"), legacy_item({"p": ["fine"]})])
    assert [len(c.annotations) for c in collections] == [0, 0, 1]
    assert [(s.item, s.reason) for s in adapter.last_report.failed_items] == [
        ("batch[0]", "cannot read a int as a prompt item"),
        ("odd.json", "cannot read a SimpleNamespace as a prompt item")]
