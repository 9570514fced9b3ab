"""How the app behaves on Dataloop, through dtlpy's own `predict_items`, `evaluate_model` and `PromptItem`, with only
the platform's HTTP layer faked (tests/fake_platform.py): failures, refused items, text items, chat history, kept,
re-asked and regenerated answers, evaluation that answers again, one answer per prompt."""
from __future__ import annotations

import hashlib
import logging

import dtlpy as dl
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from adapters.dataloop.model_adapter import ModelAdapter
from tests.conftest import FAST_SETTINGS, MODULE_MODELS
from tests.fake_platform import FakePlatform, answer_json, file_item, linked_item, prompt_file_item
from tests.prompt_factory import current_item
from tests.test_base_adapter import MODULES, offline_model

MODEL = "my-model"


@pytest.fixture
def platform(monkeypatch):
    return FakePlatform().install(monkeypatch)


def deployed(tiny_models, module: str, **configuration) -> ModelAdapter:
    """A ModelAdapter as the platform builds one: from a model entity whose configuration names the module."""
    configuration = {"module_name": module, "model_path": str(tiny_models[MODULE_MODELS[module]]),
                     **FAST_SETTINGS.get(module, {}), **configuration}
    return ModelAdapter(model_entity=offline_model(MODEL, configuration))


def chat_item(platform, tmp_path, stored: list[dict], prompts=("Hi there!", "How are you doing today?", "Tell me a joke")):
    data = current_item({str(i + 1): [text] for i, text in enumerate(prompts)})
    return platform.add_item(linked_item(tmp_path, "chat.json", data, "item-chat"), stored)


def break_the_model(adapter: ModelAdapter, error: Exception) -> None:
    """Make the torch model itself fail, as a device out of memory does (the project's code is left as it is)."""
    def fail(module, inputs):
        raise error
    for module in adapter.hugging.model.modules():  # every layer: a module may run only part of the model
        module.register_forward_pre_hook(fail)


@pytest.mark.parametrize("module", MODULES)
def test_a_model_failure_fails_the_execution_and_deletes_nothing(tiny_models, tmp_path, platform, module):
    adapter = deployed(tiny_models, module)
    earlier = [answer_json("1", "an earlier answer", MODEL), answer_json("1", "a person's note", None)]
    item = platform.add_item(linked_item(tmp_path, "a.json", current_item({"1": ["first"], "2": ["second"]}), "item-a"),
                             earlier)
    before = platform.texts("item-a")
    break_the_model(adapter, RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB"))
    with pytest.raises(Exception, match="(?s)Failed to predict all items.*item-a.*CUDA out of memory"):
        adapter.predict_items([item])
    assert platform.texts("item-a") == before
    assert not [call for call in platform.calls if call[0] in ("annotations.delete", "annotations.upload")]


def test_items_neither_prompt_nor_text_fail_the_execution_by_name_after_the_others_are_answered(
        tiny_models, tmp_path, platform):
    """An image, an audio file, a JSON file that is no prompt item and a prompt item with nothing a text model can
    answer fail the execution, each named with why; they are not read, and every other item, in the same batches
    and later ones, is answered and uploaded first (dtlpy raises only after its last batch)."""
    adapter = deployed(tiny_models, "models.distilbert_sst2", batch_size=2)
    image = platform.add_item(file_item(tmp_path, "/photo.jpg", b"\xff\xd8\xff", "item-photo", "image/jpeg"),
                              [answer_json("1", "POSITIVE", MODEL)])
    audio = platform.add_item(file_item(tmp_path, "/song.mp3", b"ID3", "item-song", "audio/mpeg"))
    table = platform.add_item(file_item(tmp_path, "/table.json", '{"rows": []}', "item-table", "application/json"))
    pictures = platform.add_item(linked_item(tmp_path, "pictures.json", current_item(
        {"1": [{"mimetype": "image/png", "value": "http://example.com/a.png"}]}), "item-pictures"))
    for name in ("photo.jpg", "song.mp3", "table.json"):
        (tmp_path / name).unlink()  # reading it would fail loudly: it must not be read at all
    prompts = [platform.add_item(linked_item(tmp_path, f"p{i}.json", current_item({"1": [f"lovely {i}"]}),
                                             f"item-p{i}")) for i in range(3)]
    with pytest.raises(Exception) as raised:
        adapter.predict_items([prompts[0], image, audio, prompts[1], table, pictures, prompts[2]])
    message = str(raised.value)
    for name, item_id, why in (("photo.jpg", "item-photo", "image/jpeg"), ("song.mp3", "item-song", "audio/mpeg"),
                               ("table.json", "item-table", "application/json"),
                               ("pictures.json", "item-pictures", "non-text element (image/png)")):
        assert f"item {name!r} ({item_id})" in message and why in message, name
    assert "4 of 7 items were not answered" in message
    for prompt in prompts:  # finished work is not lost
        assert [m for _, _, m in platform.texts(prompt.id)] == [MODEL]
    assert not [call for call in platform.calls if call[1] in ("item-photo", "item-song", "item-table")]
    assert platform.texts("item-photo") == [("1", "POSITIVE", MODEL)]


def test_a_failed_batch_and_an_unanswerable_item_are_both_reported(tiny_models, tmp_path, platform):
    """dtlpy's own failure (a batch whose prediction raised) and the unanswered items fail the execution together;
    the message then does not claim the other items were answered."""
    adapter = deployed(tiny_models, "models.distilbert_sst2", batch_size=1)
    prompt = platform.add_item(linked_item(tmp_path, "p.json", current_item({"1": ["lovely"]}), "item-p"))
    image = platform.add_item(file_item(tmp_path, "/photo.jpg", b"\xff", "item-photo", "image/jpeg"))
    adapter.hugging.model.register_forward_pre_hook(lambda module, inputs: (_ for _ in ()).throw(
        RuntimeError("CUDA out of memory")))
    with pytest.raises(Exception) as raised:
        adapter.predict_items([prompt, image])
    message = str(raised.value)
    assert "Failed to predict all items" in message and "CUDA out of memory" in message
    assert "1 of 2 items were not answered:\nitem 'photo.jpg' (item-photo)" in message
    assert "every other item" not in message


def test_a_call_where_every_item_is_answered_succeeds(tiny_models, tmp_path, platform):
    """The failure above is the bad items': the same call without them succeeds, and so does one after it."""
    adapter = deployed(tiny_models, "models.distilbert_sst2")
    bad = platform.add_item(file_item(tmp_path, "/photo.jpg", b"\xff", "item-photo", "image/jpeg"))
    good = platform.add_item(linked_item(tmp_path, "p.json", current_item({"1": ["lovely"]}), "item-p"))
    with pytest.raises(Exception, match="photo.jpg"):
        adapter.predict_items([bad, good])
    _, annotations = adapter.predict_items([good])
    assert [a.item_id for a in annotations] == ["item-p"]


@pytest.mark.parametrize("metadata, described", [
    ({}, "no mimetype"), ({"system": None}, "no mimetype"), ({"system": {}}, "no mimetype"),
    ({"system": {"shebang": None, "mimetype": "image/jpeg"}}, "mimetype 'image/jpeg'"),
    ({"system": {"shebang": "prompt", "mimetype": "application/json"}}, "mimetype 'application/json'")])
def test_an_item_neither_prompt_nor_text_is_refused_saying_what_it_is(metadata, described):
    """Items uploaded as plain files have no shebang: the refusal says what they are and what is read."""
    from adapters.core.hugging_adapter import refusal_of
    item = dl.Item.from_json(_json={"id": "item-x", "name": "photo.jpg", "filename": "/photo.jpg", "type": "file",
                                    "metadata": metadata}, client_api=dl.client_api, dataset=None, project=None)
    assert refusal_of(item) == (f"item 'photo.jpg' is neither a prompt item nor a text item ({described}; this model "
                                "reads prompt items and text/plain or text/markdown items): refused, nothing of it was "
                                "read")


def test_an_item_without_a_name_is_reported_by_its_id(make_adapter):
    item = dl.Item.from_json(_json={"id": "item-7", "name": None, "filename": "/x", "type": "file", "metadata": {}},
                             client_api=dl.client_api, dataset=None, project=None)
    loaded = make_adapter("models.distilbert_sst2").prepare_item_func(item)
    assert loaded.name == "item-7" and loaded.error.startswith("item 'item-7' is neither a prompt item")


def greedy_chat_reply(model_dir, utterances: list[str], max_new_tokens: int) -> str:
    """DialoGPT's reply computed directly with transformers: every utterance ends with end-of-text, greedy."""
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    ids = [token for text in utterances for token in tokenizer.encode(text) + [tokenizer.eos_token_id]]
    with torch.inference_mode():
        output = model.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                                max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tokenizer.eos_token_id)
    return tokenizer.decode(output[0, len(ids):], skip_special_tokens=True).strip()


def test_chat_answers_only_the_new_prompt_with_the_conversation_as_it_stands(tiny_models, tmp_path, platform):
    adapter = deployed(tiny_models, "models.dialogpt_large", do_sample=False)
    stored = [answer_json("1", "Fine, thanks (edited by a person)", MODEL),
              answer_json("2", "another model's answer", "other-model"),
              answer_json("2", "Not bad at all", MODEL)]
    item = chat_item(platform, tmp_path, stored)
    before = platform.texts("item-chat")
    _, annotations = adapter.predict_items([item])
    (new,) = annotations
    assert new.metadata["system"]["promptId"] == "3"
    assert platform.texts("item-chat")[:3] == before  # earlier answers neither regenerated nor deleted
    assert not [call for call in platform.calls if call[0] == "annotations.delete"]
    expected = greedy_chat_reply(tiny_models["gpt2"], ["Hi there!", "Fine, thanks (edited by a person)",
                                                       "How are you doing today?", "Not bad at all", "Tell me a joke"],
                                 FAST_SETTINGS["models.dialogpt_large"]["max_new_tokens"])
    assert new.coordinates == expected


def test_sampled_answers_stay_as_they_are_when_the_user_asks_again(tiny_models, tmp_path, platform):
    adapter = deployed(tiny_models, "models.dialogpt_large", do_sample=True, temperature=5.0)
    item = chat_item(platform, tmp_path, [], prompts=("Hi there!",))
    adapter.predict_items([item])
    first = platform.texts("item-chat")
    asked = ["Hi there!"]
    for turn in ("How are you doing today?", "Who won the game last night?"):
        asked.append(turn)
        data = current_item({str(i + 1): [text] for i, text in enumerate(asked)})
        linked_item(tmp_path, "chat.json", data, "item-chat")  # the user adds a prompt to the same item
        adapter.predict_items([item])
    assert platform.texts("item-chat")[:1] == first
    assert [p for p, _, _ in platform.texts("item-chat")] == ["1", "2", "3"]


@pytest.mark.parametrize("module", MODULES)
def test_answered_prompts_keep_their_answers_by_default(tiny_models, tmp_path, platform, module):
    adapter = deployed(tiny_models, module)
    item = platform.add_item(linked_item(tmp_path, "a.json", current_item({"1": ["first"], "2": ["second"]}), "item-a"),
                             [answer_json("1", "kept as it is", MODEL)])
    _, annotations = adapter.predict_items([item])
    assert [a.metadata["system"]["promptId"] for a in annotations] == ["2"]
    assert platform.texts("item-a")[0] == ("1", "kept as it is", MODEL)
    assert [p for p, _, m in platform.texts("item-a") if m == MODEL] == ["1", "2"]
    (kept,) = adapter.hugging.last_report.kept  # reported as kept, not as skipped
    assert (kept.item, kept.prompt_key) == ("a.json", "1") and "reanswer" in kept.reason
    assert adapter.hugging.last_report.skipped == []


def test_reanswer_replaces_this_models_answers_and_nothing_else(tiny_models, tmp_path, platform):
    adapter = deployed(tiny_models, "models.bart_large_mnli", reanswer=True, candidate_labels=["billing", "bug"])
    stored = [answer_json("1", "positive", MODEL), answer_json("1", "a person's answer", None),
              answer_json("2", "neutral", "other-model"), answer_json("2", "negative", MODEL)]
    item = platform.add_item(linked_item(tmp_path, "a.json", current_item({"1": ["first"], "2": ["second"]}), "item-a"),
                             stored)
    adapter.predict_items([item])
    after = platform.texts("item-a")
    assert ("1", "a person's answer", None) in after and ("2", "neutral", "other-model") in after
    mine = [(p, text) for p, text, m in after if m == MODEL]
    assert sorted(p for p, _ in mine) == ["1", "2"] and {text for _, text in mine} <= {"billing", "bug"}


def test_a_collection_that_does_not_say_what_it_answered_replaces_by_its_annotations_prompts(tiny_models, tmp_path,
                                                                                           platform):
    """dtlpy uploads whatever `predict` returned. A plain `dl.AnnotationCollection` (a subclass's predict, not this
    package's collection with `answered_prompts`) still replaces this model's earlier answers on exactly the prompts
    its annotations answer: not the other prompts, not a person's answer; the delete names annotations, as dtlpy
    requires."""
    adapter = deployed(tiny_models, "models.distilbert_sst2")
    stored = [answer_json("1", "stale", MODEL, "old-1"), answer_json("2", "kept", MODEL, "old-2"),
              answer_json("1", "a person's", None, "person-1")]
    item = platform.add_item(linked_item(tmp_path, "a.json", current_item({"1": ["first"], "2": ["second"]}), "item-a"),
                             stored)
    collection = dl.AnnotationCollection(item=item)
    collection.add(annotation_definition=dl.FreeText(text="fresh"), prompt_id="1",
                   model_info={"name": MODEL, "confidence": 0.9})
    adapter._upload_model_annotations(item, collection)
    assert sorted(platform.texts("item-a")) == [("1", "a person's", None), ("1", "fresh", MODEL), ("2", "kept", MODEL)]


def test_n_gen_writes_one_annotation_per_prompt_that_prompt_item_can_update(tiny_models, tmp_path, platform):
    adapter = deployed(tiny_models, "models.t5_email", n_gen=3, seed=3)
    item = platform.add_item(linked_item(tmp_path, "e.json", current_item({"1": ["meeting moved to friday"]}),
                                         "item-e"))
    _, annotations = adapter.predict_items([item])
    (annotation,) = annotations
    assert len(annotation.metadata["user"]["model_output"]["generations"]) == 3
    prompt_item = dl.PromptItem.from_item(item)  # dtlpy asserts one annotation per model per prompt
    prompt_item.add(message={"role": "assistant", "content": [{"mimetype": dl.PromptType.TEXT, "value": "edited"}]},
                    prompt_key="1", model_info={"name": MODEL, "confidence": 1.0})
    assert platform.texts("item-e") == [("1", "edited", MODEL)]


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def mine(platform, item_id: str) -> dict[str | None, tuple[str, str]]:
    """This model's answers on the item: prompt id -> (annotation id, text); one answer per prompt is asserted."""
    answers = [(a["metadata"]["system"].get("promptId"), a["id"], a["coordinates"])
               for a in platform.annotations[item_id]
               if ((a["metadata"].get("user") or {}).get("model") or {}).get("name") == MODEL]
    assert len({prompt for prompt, _, _ in answers}) == len(answers), answers
    return {prompt: (annotation_id, text) for prompt, annotation_id, text in answers}


# ----- chat: the last prompt is answered (again) on every call, re-asked prompts are answered again -----
def test_each_call_answers_the_last_prompt_again_under_its_own_key_and_keeps_the_others(tiny_models, tmp_path,
                                                                                        platform):
    """The studio's regenerate, as Dataloop's chat apps do it (`PromptItem.add` without a key replaces this model's
    answer to the last prompt): the last prompt's answer is replaced, the earlier ones stand. Legacy keys such as
    "prompt1" are the prompts' own keys; `PromptItem.add` would assume "2" here."""
    adapter = deployed(tiny_models, "models.dialogpt_large", do_sample=True, temperature=5.0)
    item = platform.add_item(linked_item(tmp_path, "chat.json", current_item(
        {"prompt1": ["Hi there!"], "prompt2": ["Tell me a joke"]}), "item-chat"))
    adapter.predict_items([item])
    first = mine(platform, "item-chat")
    assert sorted(first) == ["prompt1", "prompt2"]
    for _ in range(2):
        _, annotations = adapter.predict_items([item])
        assert [a.metadata["system"]["promptId"] for a in annotations] == ["prompt2"]
    after = mine(platform, "item-chat")
    assert after["prompt1"] == first["prompt1"] and after["prompt2"][0] != first["prompt2"][0]
    messages = dl.PromptItem.from_item(item).to_messages(model_name=MODEL)
    assert [m["role"] for m in messages] == ["user", "assistant", "user", "assistant"]
    assert messages[-1]["content"][0]["text"] == after["prompt2"][1]


def test_a_prompt_edited_since_it_was_answered_is_answered_again_with_the_history_as_it_stands(tiny_models, tmp_path,
                                                                                               platform):
    adapter = deployed(tiny_models, "models.dialogpt_large", do_sample=False)
    asked = {"1": "Hi there!", "2": "How are you doing today?", "3": "Tell me a joke"}
    item = platform.add_item(linked_item(tmp_path, "chat.json", current_item({k: [v] for k, v in asked.items()}),
                                         "item-chat"))
    adapter.predict_items([item])  # every prompt answered, in order
    first = mine(platform, "item-chat")
    asked["2"] = "Who won the game last night?"  # the user edits prompt 2 under the same key
    linked_item(tmp_path, "chat.json", current_item({k: [v] for k, v in asked.items()}), "item-chat")
    _, annotations = adapter.predict_items([item])
    assert [a.metadata["system"]["promptId"] for a in annotations] == ["2", "3"]
    answered = {a.metadata["system"]["promptId"]: a.metadata["user"]["model_output"]["answered"] for a in annotations}
    assert answered["2"] == {"element": "0", "sha256": sha256(asked["2"])}
    after = mine(platform, "item-chat")
    assert after["1"] == first["1"]
    budget = FAST_SETTINGS["models.dialogpt_large"]["max_new_tokens"]
    expected_2 = greedy_chat_reply(tiny_models["gpt2"], [asked["1"], first["1"][1], asked["2"]], budget)
    expected_3 = greedy_chat_reply(tiny_models["gpt2"], [asked["1"], first["1"][1], asked["2"], expected_2, asked["3"]],
                                   budget)
    assert (after["2"][1], after["3"][1]) == (expected_2, expected_3)
    adapter.predict_items([item])  # nothing edited: only the last prompt is answered again
    again = mine(platform, "item-chat")
    assert [p for p in again if again[p] != after[p]] == ["3"]


# ----- text items: one question, answered on the item -----
def text_answer(text: str, model_name: str | None = MODEL) -> dict:
    """A text annotation on a text item (no prompt), by `model_name` or (None) by a person."""
    metadata: dict = {"system": {}}
    if model_name is not None:
        metadata = {"system": {"model": {"name": model_name}},
                    "user": {"model": {"name": model_name, "confidence": 0.5}}}
    return {"type": "text", "label": "free-text", "coordinates": text, "metadata": metadata}


@pytest.mark.parametrize("module", MODULES)
def test_a_text_item_is_one_question_answered_with_an_annotation_on_the_item(tiny_models, tmp_path, platform, module):
    adapter = deployed(tiny_models, module)
    text = "The film was great.\nI loved every minute of it, and the music too."
    item = platform.add_item(file_item(tmp_path, "/review.txt", text, "item-review", "text/plain"),
                             [text_answer("an earlier answer"), text_answer("a person's note", None)])
    _, annotations = adapter.predict_items([item])
    (answer,) = annotations
    assert answer.type == "text" and "promptId" not in answer.metadata["system"]
    assert answer.metadata["system"]["model"]["name"] == MODEL
    assert answer.metadata["user"]["model_output"]["answered"] == {"element": None, "sha256": sha256(text)}
    stored = [(t, m) for _, t, m in platform.texts("item-review")]
    assert stored == [("a person's note", None), (answer.coordinates, MODEL)]  # this model's earlier answer replaced
    if module == "models.distilbert_sst2":  # the whole text is the question, as in a prompt item
        (expected,) = adapter.hugging.predict([current_item({"1": [text]})])
        assert answer.coordinates == expected.annotations[0].coordinates
        assert (answer.metadata["user"]["model"]["confidence"]
                == expected.annotations[0].metadata["user"]["model"]["confidence"])


def test_markdown_items_are_text_items_and_empty_ones_fail_the_execution(tiny_models, tmp_path, platform):
    adapter = deployed(tiny_models, "models.bart_large_mnli", candidate_labels=["billing", "bug"])
    notes = platform.add_item(file_item(tmp_path, "/notes.md", "# Invoice\nI was charged twice", "item-md",
                                        "text/markdown"))
    empty = platform.add_item(file_item(tmp_path, "/empty.txt", "  \n", "item-empty", "text/plain"))
    with pytest.raises(Exception, match=r"(?s)1 of 2 items.*item 'empty.txt' \(item-empty\).*empty text"):
        adapter.predict_items([notes, empty])
    assert [(t in ("billing", "bug"), m) for _, t, m in platform.texts("item-md")] == [(True, MODEL)]


# ----- evaluation answers every prompt again -----
def test_evaluate_model_answers_every_prompt_again_replacing_stale_answers_and_scores_the_new_ones(
        tiny_models, tmp_path, monkeypatch):
    platform = FakePlatform()
    dataset = platform.install_dataset(monkeypatch, tmp_path / "artifacts")
    adapter = deployed(tiny_models, "models.distilbert_sst2")
    references = {"1": "POSITIVE", "2": "NEGATIVE"}
    ids = [f"{i + 1:024x}" for i in range(2)]  # ObjectId-like, as dtlpy splits a dataset by id ranges
    for item_id in ids:
        platform.add_item(prompt_file_item(tmp_path / "data", f"/eval/{item_id}.json",
                                           current_item({"1": ["a fine film"], "2": ["a dull film"]}), item_id),
                          [*(answer_json(p, text, None) for p, text in references.items()),
                           answer_json("1", "STALE-ANSWER", MODEL), answer_json("2", "STALE-ANSWER", MODEL)])
    adapter.evaluate_model(adapter.model_entity, dataset)
    fresh = {item_id: mine(platform, item_id) for item_id in ids}
    for item_id in ids:
        assert sorted(fresh[item_id]) == ["1", "2"] and "STALE-ANSWER" not in {t for _, t in fresh[item_id].values()}
        writes = [call[0] for call in platform.calls if call[0] in ("annotations.upload", "annotations.delete")
                  and call[1] == item_id]
        assert writes == ["annotations.upload", "annotations.delete"]  # new answers first, then the stale ones go
    right = sum(text == references[p] for answers in fresh.values() for p, (_, text) in answers.items())
    assert adapter.evaluation_metrics["questions"] == 4
    assert adapter.evaluation_metrics["accuracy"] == pytest.approx(right / 4)
    kept = fresh[ids[0]]["1"]
    adapter.predict_items([platform.items[ids[0]]])  # outside evaluate_model: the chat rules again
    assert mine(platform, ids[0])["1"] == kept


def test_keys_dtlpy_writes_into_a_configuration_load_without_a_warning(tiny_models, tmp_path, monkeypatch, caplog):
    """dtlpy's dataset operations write `predict_embed_subset_limit` and `predict_embed_timeout` (its adapter
    defaults) into the model's configuration; the next load must not take them for typos. A typo still warns."""
    platform = FakePlatform()
    dataset = platform.install_dataset(monkeypatch, tmp_path / "artifacts")
    adapter = deployed(tiny_models, "models.distilbert_sst2")
    adapter.predict_dataset(dataset)  # an empty dataset: dtlpy reads (and writes) its keys, then has nothing to do
    model = adapter.model_entity
    assert {"predict_embed_subset_limit", "predict_embed_timeout"} <= set(model.configuration)
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        ModelAdapter(model_entity=model)
    assert "ignoring configuration keys" not in caplog.text
    model.configuration["batch_szie"] = 8
    with caplog.at_level(logging.WARNING):
        ModelAdapter(model_entity=model)
    assert "ignoring configuration keys that models.distilbert_sst2 does not read: ['batch_szie']" in caplog.text
