"""How the app behaves on Dataloop, through dtlpy's own `predict_items` and `PromptItem`, with only the platform's HTTP
layer faked (tests/fake_platform.py): failures, refused items, chat history, kept answers, one answer per prompt."""
from __future__ import annotations

import dtlpy as dl
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from adapters.dataloop.model_adapter import ModelAdapter
from tests.conftest import FAST_SETTINGS, MODULE_MODELS
from tests.fake_platform import FakePlatform, answer_json, linked_item
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


def test_items_that_are_not_prompt_items_are_refused_by_name_untouched(tiny_models, tmp_path, platform, caplog):
    adapter = deployed(tiny_models, "models.distilbert_sst2")
    image = platform.add_item(linked_item(tmp_path, "photo.json", {}, "item-photo", dltype=None),
                              [answer_json("1", "POSITIVE", MODEL)])
    table = platform.add_item(linked_item(tmp_path, "table.json", {}, "item-table", dltype="table"))
    for name in ("photo.json", "table.json"):
        (tmp_path / name).unlink()  # reading it would fail loudly: it must not be read at all
    prompt = platform.add_item(linked_item(tmp_path, "p.json", current_item({"1": ["lovely"]}), "item-p"))
    _, annotations = adapter.predict_items([image, table, prompt])
    assert len(annotations) == 1 and annotations[0].item_id == "item-p"
    assert not [call for call in platform.calls if call[1] in ("item-photo", "item-table")]
    assert platform.texts("item-photo") == [("1", "POSITIVE", MODEL)]
    assert "'photo.json' is not a prompt item (metadata.system.shebang.dltype is None," in caplog.text
    assert "'table.json' is not a prompt item (metadata.system.shebang.dltype is 'table'," in caplog.text


@pytest.mark.parametrize("metadata", [{}, {"system": None}, {"system": {}}, {"system": {"shebang": None}},
                                      {"system": {"shebang": "prompt"}}])
def test_an_item_without_a_prompt_shebang_is_refused_as_not_a_prompt_item(metadata):
    """Items uploaded as plain files have no shebang: the refusal says what they are not, not a crash's text."""
    from adapters.core.hugging_adapter import not_a_prompt_item
    item = dl.Item.from_json(_json={"id": "item-x", "name": "photo.jpg", "filename": "/photo.jpg", "type": "file",
                                    "metadata": metadata}, client_api=dl.client_api, dataset=None, project=None)
    assert not_a_prompt_item(item) == ("item 'photo.jpg' is not a prompt item (metadata.system.shebang.dltype is None, "
                                       "not 'prompt'): refused, nothing of it was read")


def test_an_item_without_a_name_is_reported_by_its_id(make_adapter):
    item = dl.Item.from_json(_json={"id": "item-7", "name": None, "filename": "/x", "type": "file", "metadata": {}},
                             client_api=dl.client_api, dataset=None, project=None)
    loaded = make_adapter("models.distilbert_sst2").prepare_item_func(item)
    assert loaded.name == "item-7" and loaded.error.startswith("item 'item-7' is not a prompt item")


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
    for turn in ("How are you doing today?", "Who won the game last night?"):
        prompts = [p for p, _, _ in platform.texts("item-chat")]
        data = current_item({**{p: ["(asked before)"] for p in prompts}, str(len(prompts) + 1): [turn]})
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
