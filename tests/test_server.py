"""`python -m adapters serve`: the real server in a subprocess on a loopback port, plus in-process app checks."""
from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from adapters.cli import build_parser
from adapters.cli.serve import configurations
from adapters.core.errors import ConfigurationError
from adapters.core.settings import MAX_BEAMS, MAX_GENERATIONS, MAX_NEW_TOKENS
from adapters.server import create_app
from adapters.server.limits import MAX_TEXTS
from tests.conftest import ROOT
from tests.prompt_factory import current_item, legacy_item, own_and_best_score
from tests.servers import free_loopback_port, running
from tests.tolerances import PROBABILITY_ATOL, PROBABILITY_SUM_ATOL, confidence_rtol

NAMES = {"dialogpt-large": "gpt2", "bart-large-mnli": "bart", "distilbert-sst2": "distilbert", "t5-email": "t5"}
BODY_LIMIT = 64 * 1024
MARKER = "zebra-marker-7731"  # user text that must never reach the server's log
T5_SEED = 5  # the server's own seed for t5-email, so a request without one is reproducible


@pytest.fixture(scope="module")
def server(tiny_models, tmp_path_factory):
    """One server with all four tiny models for the whole module; always terminated."""
    state = tmp_path_factory.mktemp("server-state")
    port = free_loopback_port()
    command = [sys.executable, "-m", "adapters", "serve", *NAMES, "--port", str(port),
               "--max-body-bytes", str(BODY_LIMIT),
               "--set", "dialogpt-large.max_new_tokens=8", "--set", "t5-email.token_count=8",
               "--set", f"t5-email.seed={T5_SEED}"]
    for name, tiny in NAMES.items():
        command += ["--model-path", f"{name}={tiny_models[tiny]}"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "DATALOOP_PATH": str(state / "dl"),
           "HOME": str(state), "PYTHONPATH": str(ROOT)}
    log_path = state / "server.log"
    base = f"http://127.0.0.1:{port}"
    with running(command, env, log_path, lambda: httpx.get(f"{base}/health", timeout=2).status_code == 200):
        yield {"url": base, "log": log_path}


@pytest.fixture(scope="module")
def client(server):
    with httpx.Client(base_url=server["url"], timeout=60) as http:
        yield http


# ----- routes -----

def test_health_and_models(client):
    health = client.get("/health")
    assert health.status_code == 200
    assert health.json() == {"status": "ok", "models": sorted(NAMES)}
    listing = {m["name"]: m for m in client.get("/models").json()}
    assert set(listing) == set(NAMES)
    t5 = listing["t5-email"]
    assert t5["loaded"] and t5["module"] == "models.t5_email"
    assert t5["defaults"]["token_count"] == 250 and t5["configuration"]["token_count"] == 8


def test_predict_reads_both_formats_and_reports_skips(client):
    items = [legacy_item({"1": ["How are you?", {"mimetype": "image/png", "value": "x"}]}),
             current_item({"1": ["Hello there"], "2": ["What's up?"]})]
    body = client.post("/models/dialogpt-large/predict", json=items).json()
    assert [item["name"] for item in body["items"]] == ["batch[0]", "batch[1]"]
    first, second = (item["annotations"] for item in body["items"])
    assert [a["metadata"]["system"]["promptId"] for a in first] == ["1"]
    assert [a["metadata"]["system"]["promptId"] for a in second] == ["1", "2"]
    for annotation in first + second:
        assert annotation["type"] == "text" and isinstance(annotation["coordinates"], str)
        assert annotation["metadata"]["user"]["model"]["name"] == "dialogpt-large"
        own, best = own_and_best_score(annotation["coordinates"], annotation["metadata"]["user"]["model_output"])
        assert annotation["metadata"]["user"]["model"]["confidence"] == own == best
    assert body["failed_items"] == []
    assert [(s["item"], s["element_key"]) for s in body["skipped"]] == [("batch[0]", "question-2")]
    assert "non-text" in body["skipped"][0]["reason"]
    single = client.post("/models/distilbert-sst2/predict", json=legacy_item({"p": ["Great product"]})).json()
    assert len(single["items"]) == 1 and len(single["items"][0]["annotations"]) == 1


def test_sentiment_accepts_a_list_a_json_string_and_a_data_uri(client, make_adapter):
    texts = ["I love apple", "I hate apple", "The battery died after two days."]
    encoded = base64.b64encode(json.dumps(texts).encode()).decode()
    answers = [client.post("/models/distilbert-sst2/classify", json={"texts": form}).json()
               for form in (texts, json.dumps(texts), f"data:application/json;base64,{encoded}")]
    assert answers[0] == answers[1] == answers[2]
    body = answers[0]
    assert set(body) == {"model", "predicted_labels", "labels", "confidences"}
    id2label = {0: "NEGATIVE", 1: "POSITIVE"}
    assert [id2label[i] for i in body["predicted_labels"]] == body["labels"]
    # The same predict path as the Dataloop adapter: the same confidences in-process, but for the rounding of the
    # kernels the server process chose by its own timings (adapters/runtimes/cpu_kernels.py).
    adapter = make_adapter("models.distilbert_sst2")
    [collection] = adapter.predict([current_item({str(i): [t] for i, t in enumerate(texts)})])
    assert body["confidences"] == pytest.approx([a.metadata["user"]["model"]["confidence"]
                                                 for a in collection.annotations], abs=PROBABILITY_ATOL)


def test_a_single_string_is_taken_where_the_cog_predictors_take_one(client):
    """Cog's predictors read `texts` and `turns` given as one plain string as one text, and `labels` as a
    comma-separated string; the REST routes refused those with a 422."""
    one = client.post("/models/distilbert-sst2/classify", json={"texts": "I love apple"})
    assert one.status_code == 200 and one.json() == client.post("/models/distilbert-sst2/classify",
                                                                json={"texts": ["I love apple"]}).json()
    chat = client.post("/models/dialogpt-large/chat", json={"turns": "Hi there", "seed": 1})
    assert chat.status_code == 200 and chat.json() == client.post("/models/dialogpt-large/chat",
                                                                  json={"turns": ["Hi there"], "seed": 1}).json()
    labels = client.post("/models/bart-large-mnli/classify", json={"sequences": "x", "candidate_labels": "a, b"})
    assert labels.status_code == 200 and sorted(labels.json()["labels"]) == ["a", "b"]


def test_a_mistyped_route_answers_404_with_the_route_it_probably_meant(client):
    typo = client.post("/models/distilbert-sst2/clasify", json={"texts": ["x"]})
    assert typo.status_code == 404
    assert typo.json() == {"detail": "no route POST /models/distilbert-sst2/clasify (did you mean "
                                     "'/models/distilbert-sst2/classify'?); every route is listed at /docs"}
    assert client.get("/helth").json()["detail"].startswith("no route GET /helth (did you mean '/health'?)")
    far = client.get("/" + "z" * 5000)
    assert far.status_code == 404 and "did you mean" not in far.json()["detail"] and len(far.text) < 300
    # A model route of a model this server did not load keeps its own 404.
    assert "is not a model of this app;" in client.post("/models/gpt5/predict", json=[]).json()["detail"]
    assert "is not a model of this app (did you mean 't5-email'?)" in client.post(
        "/models/t5-emial/predict", json=[]).json()["detail"]


def test_zero_shot_matches_seed_000_shape(client, make_adapter):
    single = client.post("/models/bart-large-mnli/classify",
                         json={"sequences": "Replicate, I think I might...like you a lot!"}).json()
    assert single["sequence"] == "Replicate, I think I might...like you a lot!"
    assert sorted(single["labels"]) == ["negative", "neutral", "positive"]  # the manifest's default labels
    assert single["scores"] == sorted(single["scores"], reverse=True)
    assert sum(single["scores"]) == pytest.approx(1.0, abs=PROBABILITY_SUM_ATOL)  # one float32 softmax
    task = {"candidate_labels": ["billing", "mobile", "website"], "hypothesis_template": "This text is about {}.",
            "multi_label": True}
    texts = ["billing is broken", "the app is great"]
    many = client.post("/models/bart-large-mnli/classify", json={"sequences": texts, **task}).json()
    assert [r["sequence"] for r in many] == texts
    # The same predict path in-process, with the task as prompt metadata: the same ranked labels and scores.
    (collection,) = make_adapter("models.bart_large_mnli").predict([current_item(
        {str(i): [text] for i, text in enumerate(texts)}, metadata={str(i): task for i in range(len(texts))})])
    expected = [a.metadata["user"]["model_output"] for a in collection.annotations]
    assert len(many) == len(expected) == 2
    for result, reference in zip(many, expected):
        assert sorted(result["labels"]) == ["billing", "mobile", "website"]
        assert result["multi_label"] is True and result["hypothesis_template"] == "This text is about {}."
        assert result["labels"] == reference["labels"]
        assert result["scores"] == pytest.approx(reference["scores"], abs=PROBABILITY_ATOL)  # another process's kernels


def test_generate_takes_seed_004_fields(client, make_adapter):
    request = {"prompt": "we will have a system update on friday. please backup your work",
               "token_count": 6, "temperature": 0.7, "n_gen": 3, "seed": 11}
    body = client.post("/models/t5-email/generate", json=request).json()
    assert body["model"] == "t5-email" and len(body["generations"]) == 3
    assert all(g["generated_tokens"] <= 6 for g in body["generations"])
    # Every field reaches generation: the adapter configured with them writes the same emails, in-process.
    adapter = make_adapter("models.t5_email", **{key: value for key, value in request.items() if key != "prompt"})
    (collection,) = adapter.predict([current_item({"0": [request["prompt"]]})])
    (annotation,) = collection.annotations
    expected = annotation.metadata["user"]["model_output"]["generations"]
    assert [(g["text"], g["generated_tokens"]) for g in body["generations"]] == [
        (g["text"], g["generated_tokens"]) for g in expected]
    assert [g["confidence"] for g in body["generations"]] == pytest.approx(  # another process's kernels
        [g["confidence"] for g in expected], rel=confidence_rtol("t5"))


def test_generate_replays_a_seed_and_other_seeds_write_other_emails(client):
    """seeded: reproducible, and the seed is what decides: another seed samples other emails."""
    request = {"prompt": "we will have a system update on friday. please backup your work", "token_count": 6,
               "temperature": 0.7, "n_gen": 3}
    emails = {seed: client.post("/models/t5-email/generate", json={**request, "seed": seed}).json()["generations"]
              for seed in (11, 12, 13)}
    assert client.post("/models/t5-email/generate", json={**request, "seed": 11}).json()["generations"] == emails[11]
    assert emails[12] != emails[11] and emails[13] != emails[11]
    assert len({g["text"] for g in emails[11]}) > 1  # a model whose samples vary: a replay is not trivially equal


def test_per_request_overrides_do_not_leak(client):
    """A request without overrides, after one with them, runs on the server's configuration (its seed included)."""
    plain = {"prompt": MARKER + " reminder about the team lunch"}  # no override: the server's configuration runs
    before = client.post("/models/t5-email/generate", json=plain).json()
    seeded = client.post("/models/t5-email/generate", json={**plain, "seed": 3}).json()
    assert seeded != before  # the seed shows in the answer, so a seed that leaked would too
    overridden = client.post("/models/t5-email/generate", json={**plain, "seed": 3, "token_count": 1, "n_gen": 3,
                                                                 "temperature": 1.5, "top_k": 5}).json()
    assert len(overridden["generations"]) == 3 and all(g["generated_tokens"] <= 1 for g in overridden["generations"])
    assert client.post("/models/t5-email/generate", json=plain).json() == before


def test_chat_answers_every_turn(client, make_adapter):
    turns = ["Hi there!", "Do you want to grab a coffee?"]
    body = client.post("/models/dialogpt-large/chat", json={"turns": turns, "seed": 5}).json()
    assert len(body["replies"]) == 2 and body["reply"] == body["replies"][-1]
    # The turns are one conversation: in-process, the same seeded chat gives the same replies, and the last one's
    # confidence is its generation's own.
    (collection,) = make_adapter("models.dialogpt_large", seed=5).predict([current_item(
        {str(i): [turn] for i, turn in enumerate(turns)})])
    assert body["replies"] == [a.coordinates for a in collection.annotations]
    last = collection.annotations[-1].metadata["user"]["model_output"]
    assert body["confidence"] == pytest.approx(last["generations"][last["generation"]]["confidence"],
                                               rel=confidence_rtol("gpt2"))  # another process's kernels


def test_chat_streams_server_sent_events_over_http(client):
    """Through uvicorn and the server's middleware: the events arrive as a stream and end in the whole answer."""
    turns = ["Hi there!", "Do you want to grab a coffee?"]
    plain = client.post("/models/dialogpt-large/chat", json={"turns": turns, "seed": 5}).json()
    body = {"turns": turns, "seed": 5, "stream": True}
    with client.stream("POST", "/models/dialogpt-large/chat", json=body) as answer:
        assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/event-stream")
        lines = list(answer.iter_lines())
    received = [(event.removeprefix("event: "), json.loads(data.removeprefix("data: ")))
                for event, data in zip(lines, lines[1:]) if event.startswith("event: ")]
    assert received[-1] == ("reply", plain) and {event for event, _ in received[:-1]} <= {"delta"}
    assert "".join(data["text"] for _, data in received[:-1]) == plain["reply"]


# ----- bad input: 4xx that says what to fix -----

BAD_REQUESTS = [
    ("/models/t5-email/generate", {"prompt": "x", "token_count": MAX_NEW_TOKENS + 1}, "token_count"),
    ("/models/t5-email/generate", {"prompt": "x", "n_gen": MAX_GENERATIONS + 1}, "n_gen"),
    ("/models/t5-email/generate", {"prompt": "x", "num_beams": MAX_BEAMS + 1}, "num_beams"),
    ("/models/t5-email/generate", {"prompt": "x", "n_gen": 2, "temperature": 0}, "num_beams >= n_gen"),
    ("/models/t5-email/generate", {"prompt": "x", "token_count": "8"}, "token_count"),
    ("/models/t5-email/generate", {"prompt": "x", "temperature": True}, "temperature"),
    ("/models/t5-email/generate", {"prompt": "x", "token_cuont": 8},
     "token_cuont: Extra inputs are not permitted (did you mean 'token_count'?)"),
    ("/models/t5-email/generate", {"prompt": "x", "tokens": 8}, "tokens: Extra inputs are not permitted"),
    ("/models/t5-email/generate", {"token_count": 8}, "prompt: Field required"),
    ("/models/t5-email/generate", {"prompt": "   "}, "prompt is empty"),
    ("/models/distilbert-sst2/classify", {"texts": []}, "at least one text"),
    ("/models/distilbert-sst2/classify", {"texts": ["fine", ""]}, "texts[1] is empty"),
    ("/models/distilbert-sst2/classify", {"texts": [1, 2]}, "texts.0"),
    ("/models/distilbert-sst2/classify", {"texts": '[{"a": 1}]'}, "texts.0: Input should be a valid string"),
    ("/models/distilbert-sst2/classify", {"texts": '["I love apple", '}, "not valid JSON"),
    ("/models/distilbert-sst2/classify", {"texts": "data:application/json;base64,%%%"}, "base64"),
    ("/models/distilbert-sst2/classify", {"texts": "data:application/json;base64"}, "data URI"),
    ("/models/distilbert-sst2/classify", {"texts": ["x"] * (MAX_TEXTS + 1)}, f"limit of {MAX_TEXTS}"),
    ("/models/distilbert-sst2/classify", {}, "texts: Field required"),
    ("/models/bart-large-mnli/classify", {"sequences": "x", "candidate_labels": ["a", "a"]}, "unique"),
    ("/models/bart-large-mnli/classify", {"sequences": "x", "candidate_labels": []}, "candidate_labels"),
    ("/models/bart-large-mnli/classify", {"sequences": "x", "hypothesis_template": "no slot"}, "'{}'"),
    ("/models/bart-large-mnli/classify", {"sequences": []}, "at least one text"),
    ("/models/bart-large-mnli/classify", {"sequences": [1]}, "sequences.list.0"),
    ("/models/bart-large-mnli/classify", {"sequences": "  "}, "sequences is empty"),
    # A hypothesis longer than the tiny model's 128-token window: the request's fault, not the server's.
    ("/models/bart-large-mnli/classify", {"sequences": "hi", "candidate_labels": ["x9 " * 66, "b"]},
     "could not prepare the question"),
    ("/models/dialogpt-large/chat", {"turns": []}, "at least one text"),
    ("/models/dialogpt-large/chat", {"turns": ["hi"], "max_new_tokens": 128}, "context window"),
    ("/models/dialogpt-large/chat", {"turns": "  "}, "turns[0] is empty"),
    ("/models/t5-email/predict", [], "at least one prompt item"),
    ("/models/t5-email/predict", [{"name": "x"}], "item 'x': a prompt item needs a 'prompts' object"),
    ("/models/t5-email/predict", {"prompts": [1]}, "prompts"),
]


@pytest.mark.parametrize("path,body,fix", BAD_REQUESTS, ids=[f"{p.split('/')[2]}-{i}" for i, (p, _, _)
                                                               in enumerate(BAD_REQUESTS)])
def test_bad_input_is_a_422_that_says_what_to_fix(client, path, body, fix):
    response = client.post(path, json=body)
    assert response.status_code == 422, response.text
    assert fix in response.json()["detail"]


def test_invalid_json_and_unknown_model(client):
    response = client.post("/models/t5-email/generate", content=b"{not json", headers={"content-type": "application/json"})
    assert response.status_code == 422 and "not valid JSON" in response.json()["detail"]
    missing = client.post("/models/gpt-9/predict", json=legacy_item({"1": ["hi"]}))
    assert missing.status_code == 404 and "not a model of this app" in missing.json()["detail"]


def test_bodies_over_the_limit_are_413_by_header_and_by_stream(client):
    big = json.dumps({"texts": ["a" * (BODY_LIMIT + 10)]}).encode()
    declared = client.post("/models/distilbert-sst2/classify", content=big, headers={"content-type": "application/json"})
    assert declared.status_code == 413 and str(BODY_LIMIT) in declared.json()["detail"]

    def chunks():  # no Content-Length: the server must count what actually arrives
        for start in range(0, len(big), 8192):
            yield big[start:start + 8192]
    streamed = client.post("/models/distilbert-sst2/classify", content=chunks(),
                           headers={"content-type": "application/json"})
    assert streamed.status_code == 413
    assert client.get("/health").status_code == 200


def test_concurrent_clients_get_consistent_answers(client, server):
    texts = ["Great product, works exactly as described.", "Terrible customer support."]
    expected = client.post("/models/distilbert-sst2/classify", json={"texts": texts}).json()
    zero_shot = client.post("/models/bart-large-mnli/classify", json={"sequences": texts}).json()
    email = {"prompt": "the meeting on monday is cancelled", "seed": 9}
    expected_email = client.post("/models/t5-email/generate", json=email).json()

    def worker(index: int) -> list[bool]:
        with httpx.Client(base_url=server["url"], timeout=60) as http:
            results = []
            for round_ in range(3):
                kind = (index + round_) % 3
                if kind == 0:
                    results.append(http.post("/models/distilbert-sst2/classify", json={"texts": texts}).json() == expected)
                elif kind == 1:
                    results.append(http.post("/models/bart-large-mnli/classify",
                                             json={"sequences": texts}).json() == zero_shot)
                else:
                    results.append(http.post("/models/t5-email/generate", json=email).json() == expected_email)
                results.append(http.get("/health").status_code == 200)
            return results

    with ThreadPoolExecutor(max_workers=8) as pool:
        outcomes = [future.result(timeout=120) for future in [pool.submit(worker, i) for i in range(8)]]
    assert all(all(results) for results in outcomes)


def test_logs_hold_no_request_text(client, server):
    client.post("/models/distilbert-sst2/classify", json={"texts": [MARKER + " is great"]})
    client.post("/models/dialogpt-large/chat", json={"turns": [MARKER]})
    client.post("/models/bart-large-mnli/classify", json={"sequences": MARKER, "candidate_labels": [MARKER, MARKER]})
    client.post("/models/t5-email/predict", json=legacy_item({"1": [MARKER, {"mimetype": "image/png", "value": MARKER}]}))
    assert client.get("/health").status_code == 200
    log = server["log"].read_text()
    assert "POST /models/t5-email/predict" in log  # the log is being written...
    assert MARKER not in log  # ...but never with the user's text


# ----- in-process app -----

def run_async(scenario):
    return asyncio.run(asyncio.wait_for(scenario, timeout=60))


def asgi_client(app) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://in-process")


def test_routes_of_models_not_loaded_are_404():
    async def scenario():
        async with asgi_client(create_app({})) as http:
            return [await http.post(path, json=body) for path, body in [
                ("/models/t5-email/generate", {"prompt": "hi"}),
                ("/models/distilbert-sst2/classify", {"texts": ["hi"]}),
                ("/models/bart-large-mnli/classify", {"sequences": "hi"}),
                ("/models/dialogpt-large/chat", {"turns": ["hi"]}),
                ("/models/t5-email/predict", legacy_item({"1": ["hi"]}))]]
    for response in run_async(scenario()):
        assert response.status_code == 404
        assert "is not loaded by this server" in response.json()["detail"]


def test_concurrent_requests_share_forward_passes_one_at_a_time_and_health_stays_responsive(make_adapter):
    """Requests to one model run side by side (each in its worker thread), but the model runs one forward pass at
    a time, and the requests that came while it was busy share the next one; /health answers meanwhile."""
    adapter = make_adapter("models.distilbert_sst2")
    real_forward, gate, guard = adapter.forward, threading.Event(), threading.Lock()
    state = {"active": 0, "peak": 0, "rows": []}

    def watched(inputs):
        with guard:
            state["active"] += 1
            state["peak"] = max(state["peak"], state["active"])
            state["rows"].append(inputs["input_ids"].shape[0])
        try:
            gate.wait(timeout=20)
            return real_forward(inputs)
        finally:
            with guard:
                state["active"] -= 1

    adapter.forward = watched

    async def scenario():
        async with asgi_client(create_app({"distilbert-sst2": adapter})) as http:
            first = asyncio.create_task(http.post("/models/distilbert-sst2/classify", json={"texts": ["text 0"]}))
            for _ in range(2000):  # until the first forward pass is held at the gate
                if state["active"]:
                    break
                await asyncio.sleep(0.01)
            calls = [asyncio.create_task(http.post("/models/distilbert-sst2/classify", json={"texts": [f"text {i}"]}))
                     for i in range(1, 6)]
            for _ in range(2000):  # until the five are in `predict`, their rows queued behind the running pass
                if len(adapter.batcher._queue) == 5:
                    break
                await asyncio.sleep(0.01)
            health = await http.get("/health")
            gate.set()
            return health, await asyncio.gather(first, *calls)

    health, responses = run_async(scenario())
    assert health.status_code == 200
    assert [r.status_code for r in responses] == [200] * 6
    assert state["peak"] == 1 and state["active"] == 0
    assert state["rows"] == [1, 5]  # the five that came while the model was busy ran in one forward pass


def test_overrides_are_validated_and_restored_in_process(make_adapter):
    adapter = make_adapter("models.t5_email")
    app = create_app({"t5-email": adapter})
    runner = app.state.runners["t5-email"]
    with pytest.raises(ConfigurationError, match="token_count"):
        runner.resolve({"token_count": 0})
    # The routes' schemas refuse unknown fields; a caller of the runner itself gets a refusal too, where the model
    # configuration's own resolution would only warn and ignore the key.
    with pytest.raises(ConfigurationError, match=r"^t5-email has no setting \['tokens'\]$"):
        runner.resolve({"tokens": 2})
    configuration, budget = dict(adapter.configuration), adapter.generation_config.max_new_tokens

    async def scenario():
        async with asgi_client(app) as http:
            return await http.post("/models/t5-email/generate", json={"prompt": "hi", "token_count": 2, "n_gen": 2})

    response = run_async(scenario())
    assert response.status_code == 200 and len(response.json()["generations"]) == 2
    assert adapter.configuration == configuration == runner.configuration
    assert adapter.generation_config.max_new_tokens == budget == 8


def test_openapi_describes_every_route():
    schema = create_app({}).openapi()
    assert {"/health", "/models", "/models/{name}/predict", "/models/t5-email/generate",
            "/models/distilbert-sst2/classify", "/models/bart-large-mnli/classify",
            "/models/dialogpt-large/chat"} <= set(schema["paths"])
    token_count = schema["components"]["schemas"]["GenerateRequest"]["properties"]["token_count"]
    assert str(MAX_NEW_TOKENS) in token_count["description"] and token_count["examples"]


# ----- the command line -----

def test_cli_checks_names_and_settings(tiny_models):
    built = configurations(["t5-email", "t5-email"], [("t5-email", "/m")],
                           ["t5-email.token_count=8", "t5-email.prefix=email: "])
    assert built == {"t5-email": {"module_name": "models.t5_email", "model_path": "/m", "token_count": 8,
                                  "prefix": "email: "}}
    with pytest.raises(ConfigurationError, match="tokens"):
        configurations(["t5-email"], [], ["t5-email.tokens=8"])
    with pytest.raises(ConfigurationError, match="token_count"):
        configurations(["t5-email"], [], [f"t5-email.token_count={MAX_NEW_TOKENS + 1}"])
    with pytest.raises(ConfigurationError, match="not among the models"):
        configurations(["t5-email"], [("distilbert-sst2", "/m")], [])
    with pytest.raises(SystemExit):
        build_parser().parse_args(["serve", "gpt-9"])
    args = build_parser().parse_args(["serve", "t5-email"])
    assert (args.host, args.port) == ("127.0.0.1", 8008)


def test_every_serve_option_is_documented_with_its_default():
    docs = (ROOT / "docs" / "server.md").read_text(encoding="utf-8")
    documented = dict(re.findall(r"^\| `(--[a-z-]+)[^`]*` \| `?([^`|]+?)`? \|", docs, re.MULTILINE))
    serve = next(a for a in build_parser()._actions if a.dest == "command").choices["serve"]
    for action in serve._actions:
        option = next((o for o in action.option_strings if o.startswith("--")), None)
        if option in (None, "--help"):
            continue
        assert option in documented, option
        if isinstance(action.default, (int, float)):
            assert float(documented[option]) == action.default, option


def test_the_docs_pages_load_every_asset_from_the_server_itself(client):
    # Offline (a closed network, a laptop on a plane), a page that loads its script from a CDN is blank.
    for page in ("/docs", "/redoc"):
        html = client.get(page)
        assert html.status_code == 200 and "text/html" in html.headers["content-type"]
        assets = re.findall(r"""(?:src|href)=["']([^"']+)["']""", html.text)
        scripts = [a for a in assets if a.endswith(".js")]
        assert scripts, page
        for asset in assets:
            assert not re.match(r"(https?:)?//", asset), (page, asset)  # nothing from another host
            fetched = client.get(asset)
            assert fetched.status_code == 200 and len(fetched.content) > 100, (page, asset)
    assert client.get("/openapi.json").json()["info"]["title"] == "Hugging Face NLP models"
