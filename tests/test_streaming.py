"""Streamed answers: on the platform through dtlpy's `predict_items` and `PromptItem.add` (only the HTTP layer faked,
tests/fake_platform.py), and as server-sent events on the server's chat route. A streamed answer ends exactly as the
unstreamed one; updates come at a bounded rate; a failure leaves nothing behind."""
from __future__ import annotations

import asyncio
import json
import time

import httpx
import pytest

from adapters.dataloop.model_adapter import ModelAdapter
from tests.fake_platform import FakePlatform, answer_json, linked_item
from tests.prompt_factory import current_item, legacy_item
from tests.test_base_adapter import offline_model

MODEL = "my-chat"
INTERVAL = 0.1
STEP_SECONDS = 0.04  # each decoding step of the slowed model: several steps per update interval


@pytest.fixture
def platform(monkeypatch):
    return FakePlatform().install(monkeypatch)


def deployed(model_path, **configuration) -> ModelAdapter:
    configuration = {"module_name": "models.dialogpt_large", "model_path": str(model_path), "max_new_tokens": 12,
                     "do_sample": False, "stream_interval": INTERVAL, **configuration}
    return ModelAdapter(model_entity=offline_model(MODEL, configuration))


def slowed(adapter: ModelAdapter, seconds: float = STEP_SECONDS) -> ModelAdapter:
    """Each decoding step takes `seconds` longer, as a large model's does: the answer grows over several intervals."""
    adapter.hugging.model.get_output_embeddings().register_forward_pre_hook(lambda module, inputs: time.sleep(seconds))
    return adapter


def stored(platform, item_id: str) -> list[dict]:
    return [a for a in platform.annotations[item_id]]


def chat_item(platform, tmp_path, item_id: str, earlier: list[dict] | None = None):
    data = current_item({"1": ["Hi there!"], "2": ["Tell me a joke."]})
    return platform.add_item(linked_item(tmp_path, f"{item_id}.json", data, item_id), earlier or [])


def test_a_streamed_answer_grows_in_its_annotation_then_ends_as_the_unstreamed_answer(chat_models, tmp_path,
                                                                                       platform):
    earlier = [answer_json("1", "Fine, thanks (kept)", MODEL)]
    reference_item = chat_item(platform, tmp_path, "item-plain", earlier)
    deployed(chat_models["qwen2"]).predict_items([reference_item])
    (reference,) = [a for a in stored(platform, "item-plain") if a["metadata"]["system"]["promptId"] == "2"]
    platform.writes.clear()

    item = chat_item(platform, tmp_path, "item-streamed", earlier)
    slowed(deployed(chat_models["qwen2"], stream=True)).predict_items([item])
    final = [a for a in stored(platform, "item-streamed") if a["metadata"]["system"]["promptId"] == "2"]
    assert len(final) == 1 and final[0]["coordinates"] == reference["coordinates"] != ""
    assert final[0]["metadata"]["user"] == reference["metadata"]["user"]  # confidence and model_output too
    assert platform.texts("item-streamed")[0] == ("1", "Fine, thanks (kept)", MODEL)

    # The draft: created at the first tokens, updated as the answer grows, then replaced by the final answer.
    draft_id = platform.writes[0][2]
    draft = [(moment, action, text) for moment, action, annotation, text in platform.writes if annotation == draft_id]
    assert [action for _, action, _ in draft] == ["upload"] + ["update"] * (len(draft) - 2) + ["delete"]
    assert len(draft) >= 4  # at least two updates after the creation
    texts = [text for _, action, text in draft if action != "delete"]
    assert all(later.startswith(earlier) and later != earlier for earlier, later in zip(texts, texts[1:]))
    assert reference["coordinates"].startswith(texts[-1])
    assert len(texts[0]) < len(reference["coordinates"])  # created before the answer was finished
    shown = [moment for moment, action, _ in draft if action != "delete"]
    assert min(b - a for a, b in zip(shown, shown[1:])) >= INTERVAL * 0.99  # at most one write per interval
    (final_upload,) = [w for w in platform.writes if w[1] == "upload" and w[2] != draft_id]
    assert final_upload[0] < draft[-1][0]  # the final answer is uploaded before the draft goes


def test_a_streamed_answer_replaces_the_models_earlier_answer_only_when_finished(chat_models, tmp_path, platform):
    item = chat_item(platform, tmp_path, "item-again", [answer_json("1", "old one", MODEL),
                                                       answer_json("1", "a person's note", None)])
    adapter = slowed(deployed(chat_models["llama"], stream=True, reanswer=True))
    adapter.predict_items([item])
    texts = platform.texts("item-again")
    assert ("1", "a person's note", None) in texts and ("1", "old one", MODEL) not in texts
    assert sorted(prompt for prompt, _, model in texts if model == MODEL) == ["1", "2"]
    drafts = {w[2] for w in platform.writes if w[1] == "update"}
    assert drafts and all(w[2] not in drafts for w in platform.writes if w[1] == "delete" and w[0] < min(
        u[0] for u in platform.writes if u[1] == "upload" and u[2] not in drafts))  # earlier answers go at the end


def test_a_model_failure_mid_stream_deletes_the_drafts_and_keeps_the_earlier_answers(chat_models, tmp_path,
                                                                                     platform):
    """The draft is an annotation of its own: the model's earlier answer to that prompt is never written over."""
    data = current_item({"1": ["Tell me a joke."]})
    item = platform.add_item(linked_item(tmp_path, "fails.json", data, "item-fails"),
                             [answer_json("1", "earlier answer", MODEL)])
    adapter = slowed(deployed(chat_models["qwen2"], stream=True, reanswer=True))
    steps = []

    def fail_late(module, inputs):
        steps.append(1)
        if len(steps) > 8:
            raise RuntimeError("CUDA out of memory")
    adapter.hugging.model.get_output_embeddings().register_forward_pre_hook(fail_late)
    with pytest.raises(Exception, match="CUDA out of memory"):
        adapter.predict_items([item])
    assert [w[1] for w in platform.writes][:1] == ["upload"]  # a draft was written before the failure
    assert platform.texts("item-fails") == [("1", "earlier answer", MODEL)]


def test_legacy_prompts_and_unstreamed_configurations_write_only_the_final_answers(chat_models, tmp_path, platform):
    legacy = platform.add_item(linked_item(tmp_path, "legacy.json", legacy_item({"p": ["Hi there!"]}), "item-legacy"))
    slowed(deployed(chat_models["qwen2"], stream=True)).predict_items([legacy])
    current = chat_item(platform, tmp_path, "item-current")
    slowed(deployed(chat_models["qwen2"])).predict_items([current])
    assert [w[1] for w in platform.writes] == ["upload", "upload", "upload"]
    assert [a for a in platform.calls if a[0] == "annotations.update"] == []


def test_local_files_are_answered_whole_and_never_read_as_platform_items(chat_models, tmp_path, monkeypatch):
    """`python -m adapters predict` with `stream: true`: the files get their final answers; no draft is written."""
    import dtlpy as dl

    from adapters.dataloop.local_runner import LocalRunner

    fetched = []
    monkeypatch.setattr(dl.PromptItem, "from_item", lambda item: fetched.append(item) or dl.PromptItem(item.name))
    path = tmp_path / "chat.json"
    path.write_text(json.dumps(current_item({"1": ["Hi there!"], "2": ["Tell me a joke."]})))
    runner = LocalRunner("dialogpt-large", {"model_path": str(chat_models["qwen2"]), "stream": True,
                                            "max_new_tokens": 4, "do_sample": False})
    (result,) = runner.predict_files([path])
    assert result.error is None and [a["metadata"]["system"]["promptId"] for a in result.annotations] == ["1", "2"]
    assert fetched == []


@pytest.mark.parametrize("runtime", ["torch", "ctranslate2"])
@pytest.mark.parametrize("sampling", [{"do_sample": False}, {"do_sample": True, "temperature": 0.8, "seed": 3}])
def test_every_runtime_hands_each_written_token_to_the_stream_in_order(chat_models, runtime, sampling, tmp_path,
                                                                         monkeypatch):
    """Per row of a padded batch, the streamed tokens are the answer's tokens (its end token and the padding after
    it excluded), so a streamed answer's text is the answer's."""
    from transformers import AutoTokenizer

    from models.dialogpt_large import HuggingAdapter
    from tests.model_factory import write_token_at
    monkeypatch.setenv("HF_ADAPTERS_CTRANSLATE2_CACHE", str(tmp_path / "ct2"))
    texts = ["Hi there!", "Tell me a joke about programmers and their coffee.", "Lunch?"]
    tokenizer = AutoTokenizer.from_pretrained(chat_models["qwen2"])
    rows = [tokenizer.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True,
                                          return_dict=False) for text in texts]
    # the first answer ends its turn at its fourth token (greedy), the others run on: padding follows it
    end_of_turn = tokenizer.convert_tokens_to_ids("<|im_end|>")
    path = write_token_at(chat_models["qwen2"], tmp_path / "ends", rows[0], end_of_turn, 3)
    padded = AutoTokenizer.from_pretrained(path)
    padded.pad_token = "<|im_start|>"  # a pad token that ends nothing (as Llama 3.1's): padding must not stream
    padded.save_pretrained(path)
    adapter = HuggingAdapter({"model_path": str(path), "max_new_tokens": 12, "runtime": runtime,
                              **({"compute_type": "float32"} if runtime == "ctranslate2" else {}), **sampling})
    inputs = adapter.tokenizer.pad([{"input_ids": ids} for ids in rows], padding=True, return_tensors="pt")
    streamed: dict[int, list[int]] = {}
    generated = adapter.runtime.generate(adapter.model, dict(inputs), adapter.generation_config, sampling.get("seed"),
                                         on_token=lambda row, token: streamed.setdefault(row, []).append(token))
    assert [streamed.get(row, []) for row in range(3)] == [g.token_ids for g in generated]
    if not sampling["do_sample"]:
        assert [len(g.token_ids) for g in generated] == [3, 12, 12]


# ----- the server's chat route: server-sent events -----

def run_async(scenario):
    return asyncio.run(asyncio.wait_for(scenario, timeout=120))


def chat_app(model_path, limits=None, **configuration):
    from adapters.server import create_app
    from adapters.server.limits import ServerLimits
    from models.dialogpt_large import HuggingAdapter
    adapter = HuggingAdapter({"model_path": str(model_path), "max_new_tokens": 12, "do_sample": False,
                              **configuration})
    return create_app({"dialogpt-large": adapter}, limits or ServerLimits()), adapter


def events(body: str) -> list[tuple[str, dict]]:
    """(event, data) of each server-sent event of a response body; pings (comment lines) are left out."""
    parsed = []
    for block in body.replace("\r\n", "\n").split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.split("\n") if line and not line.startswith(":"))
        if fields:
            parsed.append((fields.get("event", "message"), json.loads(fields["data"])))
    return parsed


def post_chat(app, body: dict) -> httpx.Response:
    async def scenario():
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://in-process") as http:
            return await http.post("/models/dialogpt-large/chat", json=body)
    return run_async(scenario())


def test_the_chat_route_streams_the_last_reply_as_server_sent_events_that_end_as_the_unstreamed_answer(chat_models):
    turns = ["Hi there!", "Tell me a joke."]
    app, adapter = chat_app(chat_models["llama"])
    plain = post_chat(app, {"turns": turns})
    assert plain.status_code == 200
    adapter.model.get_output_embeddings().register_forward_pre_hook(lambda module, inputs: time.sleep(0.01))
    streamed = post_chat(app, {"turns": turns, "stream": True})
    assert streamed.status_code == 200 and streamed.headers["content-type"].startswith("text/event-stream")
    received = events(streamed.text)
    assert [event for event, _ in received] == ["delta"] * (len(received) - 1) + ["reply"]
    assert len(received) >= 4  # the reply came in pieces
    reply = received[-1][1]
    assert reply == plain.json()
    assert "".join(data["text"] for _, data in received[:-1]) == reply["reply"]


def test_a_streamed_chat_refused_before_it_starts_gets_its_status_and_one_failing_later_an_error_event(chat_models):
    from adapters.server.limits import ServerLimits
    app, _ = chat_app(chat_models["gpt2"], limits=ServerLimits(max_request_tokens=16))
    costly = post_chat(app, {"turns": ["Hi there!"], "stream": True})
    assert costly.status_code == 413 and "more than the server's limit" in costly.json()["detail"]
    app, _ = chat_app(chat_models["gpt2"])
    refused = post_chat(app, {"turns": ["Hi there!"], "stream": True, "system_prompt": "Be brief."})
    assert refused.status_code == 422 and "no system turn" in refused.json()["detail"]

    app, adapter = chat_app(chat_models["qwen2"])
    steps = []

    def fail_late(module, inputs):
        steps.append(1)
        if len(steps) > 3:
            raise RuntimeError("CUDA out of memory")
    adapter.model.get_output_embeddings().register_forward_pre_hook(fail_late)
    failed = post_chat(app, {"turns": ["Hi there!"], "stream": True})
    assert failed.status_code == 200
    received = events(failed.text)
    assert [event for event, _ in received[:-1]] == ["delta"] * (len(received) - 1) and received[:-1]
    assert received[-1] == ("error", {"detail": "dialogpt-large failed on a micro-batch of 1 rows: RuntimeError: CUDA "
                                                "out of memory", "status": 500})
