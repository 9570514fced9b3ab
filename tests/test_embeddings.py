"""Embeddings: one vector per text question, equal to a plain AutoModel forward pooled the same way; dtlpy's
`embed_items` / `embed_dataset` into the model's feature set with only the platform's HTTP layer faked
(tests/fake_platform.py); `python -m adapters embed`; `POST /models/{name}/embed` under predict's limits."""
from __future__ import annotations

import asyncio
import json
import threading

import dtlpy as dl
import httpx
import pytest
import torch
from transformers import AutoModel, AutoTokenizer

from adapters.cli import main as cli_main
from adapters.core.hugging_adapter import LoadedItem
from adapters.dataloop.model_adapter import ModelAdapter
from adapters.server import create_app
from adapters.server.limits import MAX_TEXTS, ServerLimits
from tests.conftest import FAST_SETTINGS, MODULE_MODELS
from tests.fake_platform import FakePlatform, file_item, prompt_file_item
from tests.prompt_factory import current_item
from tests.test_base_adapter import MODULES
from tests.test_platform import break_the_model

MODEL = "my-embedder"
# Mixed lengths, so a micro-batch pads the short ones.
TEXTS = ["hi", "The plot was boring, predictable and far too long, and the staff were not friendly at all.",
         "Great product, works exactly as described.", "Who won the game last night?", "ok then"]
# float32 arithmetic: a batched matrix product sums in another order than a single row's (relative error of a few
# float32 epsilons, 1.2e-7, per layer), and the tiny models have 2 layers and values of order 1.
TOLERANCE = {"rtol": 1e-5, "atol": 1e-5}


def plain_vector(model_dir, text: str) -> torch.Tensor:
    """What the vector should be: AutoModel's last hidden states for the text alone (the encoder's, for an
    encoder-decoder), mean over its tokens."""
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModel.from_pretrained(model_dir).eval()
    encoder = model.get_encoder() if model.config.is_encoder_decoder else model
    with torch.no_grad():
        return encoder(**tokenizer(text, return_tensors="pt")).last_hidden_state[0].mean(dim=0)


@pytest.mark.parametrize("module", MODULES)
def test_vectors_equal_a_plain_automodel_forward_pooled_the_same_way(make_adapter, tiny_models, module):
    adapter = make_adapter(module, batch_size=2)
    vectors = adapter.embed_texts(TEXTS)
    assert len(vectors) == len(TEXTS) and {len(v) for v in vectors} == {adapter.embedding_size}
    for text, vector in zip(TEXTS, vectors):
        torch.testing.assert_close(torch.tensor(vector), plain_vector(tiny_models[MODULE_MODELS[module]], text),
                                   **TOLERANCE)
    assert len({round(v[0], 5) for v in vectors}) == len(TEXTS)  # a mix-up of rows could not pass


def test_a_bfloat16_model_embeds_close_to_its_float32_vectors(make_adapter):
    vector = make_adapter("models.distilbert_sst2", dtype="bfloat16").embed_texts(["hello there"])[0]
    reference = make_adapter("models.distilbert_sst2").embed_texts(["hello there"])[0]
    torch.testing.assert_close(torch.tensor(vector), torch.tensor(reference), rtol=0.05, atol=0.05)  # bf16: 8 bits


def test_embed_returns_one_vector_or_none_per_input_in_order(make_adapter):
    """dtlpy zips items with vectors: an item with nothing to embed keeps its place with None."""
    adapter = make_adapter("models.t5_email")
    batch = [LoadedItem("a.txt", text=TEXTS[0]), LoadedItem("bad", error="could not read the item"),
             current_item({"1": ["first"], "2": [TEXTS[1]]}), LoadedItem("empty.txt", text="  "),
             LoadedItem("b.md", text=TEXTS[2])]
    vectors, report = adapter.embed_items(batch)
    assert [v is None for v in vectors] == [False, True, False, True, False]
    expected = adapter.embed_texts([TEXTS[0], TEXTS[1], TEXTS[2]])  # a prompt item: its last question
    for got, want in zip([vectors[0], vectors[2], vectors[4]], expected):
        torch.testing.assert_close(torch.tensor(got), torch.tensor(want), **TOLERANCE)
    assert sorted(report.unanswered) == [1, 3] and "empty text" in report.unanswered[3]


def test_a_non_torch_runtime_embeds_with_the_same_weights(make_adapter):
    onnx = make_adapter("models.distilbert_sst2", runtime="onnx")
    torch_vectors = make_adapter("models.distilbert_sst2").embed_texts(TEXTS[:2])
    torch.testing.assert_close(torch.tensor(onnx.embed_texts(TEXTS[:2])), torch.tensor(torch_vectors), **TOLERANCE)


# ----- dtlpy's embed_items / embed_dataset into the model's feature set -----
@pytest.fixture
def platform(monkeypatch, tmp_path):
    fake = FakePlatform()
    fake.install_dataset(monkeypatch, tmp_path / "artifacts")
    return fake


def deployed(platform, tiny_models, module: str, **configuration) -> ModelAdapter:
    configuration = {"module_name": module, "model_path": str(tiny_models[MODULE_MODELS[module]]),
                     **FAST_SETTINGS.get(module, {}), **configuration}
    return ModelAdapter(model_entity=platform.model(MODEL, configuration))


def dataset_items(platform, tmp_path):
    """Two text items and a prompt item (ObjectId-like ids, as dtlpy splits a dataset by id)."""
    texts = [platform.add_item(file_item(tmp_path / "data", f"/texts/t{i}.txt", text, f"{i + 1:024x}", "text/plain"))
             for i, text in enumerate(TEXTS[:2])]
    chat = platform.add_item(prompt_file_item(tmp_path / "data", "/chats/c.json",
                                              current_item({"1": ["first"], "2": [TEXTS[2]]}), f"{9:024x}"))
    return texts, chat


@pytest.mark.parametrize("module", MODULES)
def test_embed_items_uploads_to_the_models_feature_set_created_once_with_its_size(tiny_models, tmp_path, platform,
                                                                                   module):
    adapter = deployed(platform, tiny_models, module)
    size = adapter.hugging.embedding_size
    assert adapter.model_entity.configuration["embeddings_size"] == size != 256  # dtlpy's default would drop them
    texts, chat = dataset_items(platform, tmp_path)
    items, vectors = adapter.embed_items([*texts, chat])
    assert [i.id for i in items] == [t.id for t in texts] + [chat.id] and len(vectors) == 3
    assert platform.feature_sets == [{"id": "feature-set-1", "name": MODEL, "size": size, "type": MODEL,
                                      "project": platform.project.id, "modelId": adapter.model_entity.id,
                                      "entityType": "item"}]
    uploaded = {f["entityId"]: f["value"] for f in platform.features}
    assert sorted(uploaded) == sorted(t.id for t in texts)  # dtlpy uploads no prompt item's unless asked
    expected = adapter.hugging.embed_texts(TEXTS[:3])
    for item, want in zip(texts, expected):
        torch.testing.assert_close(torch.tensor(uploaded[item.id]), torch.tensor(want), **TOLERANCE)
    torch.testing.assert_close(torch.tensor(vectors[2]), torch.tensor(expected[2]), **TOLERANCE)
    again = ModelAdapter(model_entity=platform.model(MODEL, dict(adapter.model_entity.configuration)))
    again.embed_items([chat], upload_features=True)  # a new execution: the same feature set, found by model id
    assert len(platform.feature_sets) == 1 and platform.features[-1]["entityId"] == chat.id
    assert {f["featureSetId"] for f in platform.features} == {"feature-set-1"}


def test_embed_dataset_embeds_the_items_its_filter_selects(tiny_models, tmp_path, platform):
    adapter = deployed(platform, tiny_models, "models.distilbert_sst2")
    texts, _ = dataset_items(platform, tmp_path)
    adapter.embed_dataset(platform.dataset, filters=dl.Filters(field="dir", values="/texts"))
    assert sorted(f["entityId"] for f in platform.features) == sorted(t.id for t in texts)


def test_items_with_nothing_to_embed_fail_the_execution_after_the_others_are_uploaded(tiny_models, tmp_path,
                                                                                       platform):
    adapter = deployed(platform, tiny_models, "models.distilbert_sst2", batch_size=2)
    texts, _ = dataset_items(platform, tmp_path)
    photo = platform.add_item(file_item(tmp_path / "data", "/photo.jpg", b"\xff\xd8", f"{20:024x}", "image/jpeg"))
    empty = platform.add_item(file_item(tmp_path / "data", "/empty.txt", " \n", f"{21:024x}", "text/plain"))
    with pytest.raises(Exception) as raised:
        adapter.embed_items([photo, texts[0], empty, texts[1]])
    message = str(raised.value)
    assert "2 of 4 items were not embedded; the vectors of every other item were uploaded" in message
    assert f"item 'photo.jpg' ({photo.id})" in message and f"item 'empty.txt' ({empty.id}): " in message
    assert sorted(f["entityId"] for f in platform.features) == sorted(t.id for t in texts)


def test_a_feature_set_of_another_size_is_refused_before_anything_is_embedded(tiny_models, tmp_path, platform):
    adapter = deployed(platform, tiny_models, "models.distilbert_sst2")
    platform.feature_sets.append({"id": "old-set", "name": MODEL, "size": 768, "type": MODEL,
                                  "project": platform.project.id, "modelId": adapter.model_entity.id,
                                  "entityType": "item"})
    texts, _ = dataset_items(platform, tmp_path)
    with pytest.raises(Exception, match=r"feature set 'my-embedder' \(old-set\) of model 'my-embedder' holds vectors "
                                        r"of size 768, and this model's are "
                                        r"of size 32 \(its weights changed\); delete that feature set, and the next "
                                        r"embedding creates one of the right size$"):
        adapter.embed_items(texts)
    assert platform.features == []


def test_a_model_failure_fails_the_embedding_and_uploads_nothing(tiny_models, tmp_path, platform):
    adapter = deployed(platform, tiny_models, "models.distilbert_sst2")
    texts, _ = dataset_items(platform, tmp_path)
    break_the_model(adapter, RuntimeError("CUDA out of memory"))
    with pytest.raises(Exception, match="(?s)Failed to embed all items.*CUDA out of memory"):
        adapter.embed_items(texts)
    assert platform.features == []


# ----- command line -----
def test_cli_embed_writes_one_json_line_per_question_in_order(tiny_models, tmp_path, capsys):
    text = tmp_path / "review.txt"
    text.write_text(TEXTS[1], encoding="utf-8")
    chat = tmp_path / "chat.json"
    chat.write_text(json.dumps(current_item({"1": [TEXTS[0]], "2": [TEXTS[2]]})), encoding="utf-8")
    broken = tmp_path / "broken.json"
    broken.write_text("{not json", encoding="utf-8")
    code = cli_main(["embed", "distilbert-sst2", str(text), str(broken), str(chat),
                     "--model-path", str(tiny_models["distilbert"])])
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert code == 1
    assert [(l["file"], l.get("prompt"), "error" in l) for l in lines] == [
        (str(text), None, False), (str(broken), None, True), (str(chat), "1", False), (str(chat), "2", False)]
    assert "not JSON" in lines[1]["error"]
    from adapters.dataloop.local_runner import LocalRunner
    expected = LocalRunner("distilbert-sst2", {"model_path": str(tiny_models["distilbert"])}).adapter.hugging \
        .embed_texts([TEXTS[1], TEXTS[0], TEXTS[2]])
    for line, want in zip([lines[0], lines[2], lines[3]], expected):
        torch.testing.assert_close(torch.tensor(line["vector"]), torch.tensor(want), **TOLERANCE)


# ----- server -----
def embed_request(app, name: str, body) -> httpx.Response:
    async def send():
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://in-process") as http:
            return await http.post(f"/models/{name}/embed", json=body)
    return asyncio.run(send())


def test_the_server_embeds_texts_under_predicts_limits(make_adapter):
    adapter = make_adapter("models.distilbert_sst2")
    window = adapter.max_input_tokens
    app = create_app({"distilbert-sst2": adapter}, ServerLimits(max_request_tokens=3 * window))
    reply = embed_request(app, "distilbert-sst2", {"texts": TEXTS[:3]})
    assert reply.status_code == 200 and reply.json()["embeddings_size"] == adapter.embedding_size
    torch.testing.assert_close(torch.tensor(reply.json()["embeddings"]), torch.tensor(adapter.embed_texts(TEXTS[:3])),
                               **TOLERANCE)
    assert embed_request(app, "distilbert-sst2", {"texts": ["word " * 1000] * 3}).status_code == 200
    too_costly = embed_request(app, "distilbert-sst2", {"texts": ["word " * 1000] * 4})
    assert too_costly.status_code == 413 and f"limit of {3 * window}" in too_costly.json()["detail"]
    roomy = create_app({"distilbert-sst2": adapter})
    assert embed_request(roomy, "distilbert-sst2", {"texts": ["a"] * MAX_TEXTS}).status_code == 200
    too_many = embed_request(roomy, "distilbert-sst2", {"texts": ["a"] * (MAX_TEXTS + 1)})
    assert too_many.status_code == 422 and f"limit of {MAX_TEXTS}" in too_many.json()["detail"]
    assert embed_request(app, "distilbert-sst2", {"texts": [" "]}).status_code == 422
    assert embed_request(app, "t5-email", {"texts": ["a"]}).status_code == 404


def test_embed_requests_are_admitted_with_predictions_and_a_full_queue_is_503(make_adapter):
    adapter = make_adapter("models.distilbert_sst2")
    app = create_app({"distilbert-sst2": adapter}, ServerLimits(max_queue_tokens=1))  # a request alone, no more
    inside, release = threading.Event(), threading.Event()

    def hold(module, inputs):
        inside.set()
        release.wait(30)
    handle = adapter.model.base_model.register_forward_pre_hook(hold)  # what embedding and classifying both run

    async def scenario():
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://in-process") as http:
            first = asyncio.ensure_future(http.post("/models/distilbert-sst2/embed", json={"texts": ["a"]}))
            while not inside.is_set():
                await asyncio.sleep(0.01)
            second = await http.post("/models/distilbert-sst2/classify", json={"texts": ["b"]})
            release.set()
            return await first, second
    try:
        first, second = asyncio.run(asyncio.wait_for(scenario(), timeout=60))
    finally:
        handle.remove()
    assert first.status_code == 200
    assert second.status_code == 503 and "Retry-After" in second.headers
    assert "already has requests running or waiting" in second.json()["detail"]  # the embedding holds the queue
