"""The Cog predictors (cog_predictors.py) under Cog's own HTTP server (coglet, no Docker), with the seeds' requests.

One server per model, all four started together once for the module; each runs `cog_predictors.py:Predictor`
with HF_ADAPTERS_MODEL, HF_ADAPTERS_MODEL_PATH (the tiny models) and HF_HUB_OFFLINE=1, exactly as docs/cog.md
says to run it. Cog's worker subprocess runs the first `python` on PATH, so this interpreter's folder goes first.
The environment checks and the chat history run in-process, on the predictor classes themselves.
"""
from __future__ import annotations

import base64
import contextlib
import inspect
import json
import os
import sys
from pathlib import Path

import httpx
import pytest
import torch

import cog_predictors
from adapters.core.errors import ConfigurationError
from adapters.core.manifest import model_entry
from tests.conftest import ROOT
from tests.prompt_factory import current_item
from tests.servers import free_loopback_port, started, wait_until_ready
from tests.test_seed_004_route import SEED_004_BODY
from tests.tolerances import PROBABILITY_ATOL, PROBABILITY_SUM_ATOL

TINY = {"distilbert-sst2": "distilbert", "bart-large-mnli": "bart", "t5-email": "t5", "dialogpt-large": "gpt2"}
# The tiny GPT-2 has a 128-token window: the default answer budget (128) would leave no room for a question.
CONFIGURATION = {"dialogpt-large": {"max_new_tokens": 8}}
SEED_002_INPUT = {"texts": "[\"I love apple\", \"I hate apple\"]"}
SEED_000_INPUT = {"input": "This is so cool!"}
CHAT = ["Hi there! How are you doing today?", "Do you want to grab a coffee at the café later?"]


def cog_environment(model: str, path: Path, port: int) -> dict[str, str]:
    return {**os.environ, "HF_ADAPTERS_MODEL": model, "HF_ADAPTERS_MODEL_PATH": str(path),
            "HF_ADAPTERS_CONFIGURATION": json.dumps(CONFIGURATION.get(model, {})), "HF_HUB_OFFLINE": "1",
            "COG_PREDICT_TYPE_STUB": "cog_predictors.py:Predictor", "PORT": str(port), "PYTHONPATH": str(ROOT),
            "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")}


def cog_status(url: str) -> str:
    return httpx.get(f"{url}/health-check", timeout=5).json()["status"]


@pytest.fixture(scope="module")
def cog_servers(tiny_models, tmp_path_factory):
    """`python -m cog.server.http` for every model, started at once, then waited for; model name -> base URL."""
    state = tmp_path_factory.mktemp("cog-servers")
    with contextlib.ExitStack() as stack:
        servers = {}
        for model, tiny in TINY.items():
            port = free_loopback_port()
            log = state / f"{model}.log"
            process = stack.enter_context(started([sys.executable, "-m", "cog.server.http", "--host", "127.0.0.1"],
                                                  cog_environment(model, tiny_models[tiny], port), log))
            servers[model] = (f"http://127.0.0.1:{port}", process, log)
        for model, (url, process, log) in servers.items():
            def ready(url=url, log=log) -> bool:
                status = cog_status(url)
                if status == "SETUP_FAILED":
                    pytest.fail(f"Cog setup of {model} failed:\n{log.read_text()}")
                return status == "READY"
            wait_until_ready(process, log, ready)
        yield {model: url for model, (url, _, _) in servers.items()}


def cog_predict(url: str, inputs: dict) -> dict:
    """One prediction, as a Cog client sends it: POST /predictions {"input": {...}}."""
    response = httpx.post(f"{url}/predictions", json={"input": inputs}, timeout=120)
    assert response.status_code == 200, response.text
    return response.json()


def succeeded(url: str, inputs: dict):
    result = cog_predict(url, inputs)
    assert result["status"] == "succeeded", result
    return result["output"]


# ----- the seeds' requests through Cog's server -----

def test_sentiment_answers_seed_002s_request(cog_servers, make_adapter):
    output = succeeded(cog_servers["distilbert-sst2"], SEED_002_INPUT)
    assert set(output) == {"predicted_labels", "confidences"}
    [collection] = make_adapter("models.distilbert_sst2").predict([current_item({"0": ["I love apple"],
                                                                                 "1": ["I hate apple"]})])
    direct = [a.metadata["user"] for a in collection.annotations]
    assert output["predicted_labels"] == [d["model_output"]["class_index"] for d in direct]
    # another process, whose timings may route other kernels (adapters/runtimes/cpu_kernels.py): float32 rounding
    assert output["confidences"] == pytest.approx([d["model"]["confidence"] for d in direct], abs=PROBABILITY_ATOL)


def test_zero_shot_answers_seed_000s_request(cog_servers, make_adapter):
    url = cog_servers["bart-large-mnli"]
    output = succeeded(url, SEED_000_INPUT)
    assert set(output) == {"labels", "scores", "sequence", "hypothesis_template"}
    configured = model_entry("bart-large-mnli")["configuration"]
    assert output["sequence"] == "This is so cool!"
    assert output["hypothesis_template"] == configured["hypothesis_template"]
    assert sorted(output["labels"]) == sorted(configured["candidate_labels"])
    assert output["scores"] == sorted(output["scores"], reverse=True)
    assert sum(output["scores"]) == pytest.approx(1, abs=PROBABILITY_SUM_ATOL)  # one float32 softmax
    [collection] = make_adapter("models.bart_large_mnli").predict([current_item({"0": ["This is so cool!"]})])
    direct = collection.annotations[0].metadata["user"]["model_output"]
    assert output["labels"] == direct["labels"]
    assert output["scores"] == pytest.approx(direct["scores"], abs=PROBABILITY_ATOL)  # another process's kernels

    chosen = succeeded(url, {**SEED_000_INPUT, "labels": "mobile, website,billing", "multi_label": True,
                             "hypothesis_template": "It is about {}."})
    assert sorted(chosen["labels"]) == ["billing", "mobile", "website"]
    assert chosen["hypothesis_template"] == "It is about {}." and len(chosen["scores"]) == 3


def test_email_writer_answers_seed_004s_request(cog_servers):
    output = succeeded(cog_servers["t5-email"], SEED_004_BODY)
    assert isinstance(output, list) and len(output) == SEED_004_BODY["n_gen"]
    assert all(isinstance(email, str) for email in output)


def test_chat_answers_the_newest_turn(cog_servers, chat):
    inputs = {"turns": json.dumps(CHAT), "replies": json.dumps(["I'm fine, thanks. What about you?"]),
              "temperature": 0}
    output = succeeded(cog_servers["dialogpt-large"], inputs)
    assert isinstance(output, str) and output == run(chat, **inputs)  # greedy: the server runs the same path


CLIENT_ERRORS = [
    ("distilbert-sst2", {"texts": "[\"I love apple\", "}, "is not valid JSON"),
    ("distilbert-sst2", {"texts": "I love apple", "colour": "red"}, "unexpected keyword argument 'colour'"),
    ("distilbert-sst2", {}, "texts is required"),
    ("distilbert-sst2", {"texts": "[\"fine\", 2]"}, "texts[1] must be a string"),
    ("distilbert-sst2", {"texts": "data:application/json;base64,%%%"}, "base64 payload is invalid"),
    ("bart-large-mnli", {"input": "x", "labels": "a,,b"}, "every label must be a non-empty string"),
    ("bart-large-mnli", {"input": "x", "hypothesis_template": "no slot"}, "exactly one plain '{}'"),
    ("t5-email", {**SEED_004_BODY, "n_gen": 17}, "'n_gen' must be <= 16"),
    ("t5-email", {**SEED_004_BODY, "token_count": "250"}, "'token_count' must be an integer"),
    ("t5-email", {"prompt": "   "}, "prompt is empty"),
    ("dialogpt-large", {"turns": "[\"Hi\"]", "replies": "[\"Hello\"]"}, "1 replies to 1 turns"),
]


@pytest.mark.parametrize("model, inputs, fix", CLIENT_ERRORS, ids=[f"{m}-{f}" for m, _, f in CLIENT_ERRORS])
def test_client_errors_fail_the_prediction_with_what_to_fix_and_the_worker_goes_on(cog_servers, model, inputs, fix):
    url = cog_servers[model]
    result = cog_predict(url, inputs)
    assert result["status"] == "failed" and fix in result["error"], result
    assert "output" not in result or result["output"] is None
    assert cog_status(url) == "READY"


def test_the_worker_still_answers_after_failed_predictions(cog_servers):
    url = cog_servers["distilbert-sst2"]
    assert cog_predict(url, {"texts": "[oops"})["status"] == "failed"
    assert len(succeeded(url, SEED_002_INPUT)["predicted_labels"]) == 2


# ----- in-process: the environment, the input forms and the chat history -----

def make_predictor(monkeypatch, tiny_models, model: str, **configuration) -> cog_predictors.AppModel:
    """The predictor class `Predictor` resolves to for `model`, set up from the environment as Cog does."""
    monkeypatch.setenv("HF_ADAPTERS_MODEL", model)
    monkeypatch.setenv("HF_ADAPTERS_MODEL_PATH", str(tiny_models[TINY[model]]))
    monkeypatch.setenv("HF_ADAPTERS_CONFIGURATION", json.dumps(configuration))
    predictor = cog_predictors.Predictor()
    predictor.setup()
    return predictor


def run(predictor: cog_predictors.AppModel, **inputs):
    """`run` as Cog's server calls it without a schema: every input the client did not send is None."""
    return predictor.run(**{name: inputs.get(name) for name in inspect.signature(predictor.run).parameters})


@pytest.fixture
def chat(monkeypatch, tiny_models):
    return make_predictor(monkeypatch, tiny_models, "dialogpt-large", **CONFIGURATION["dialogpt-large"])


def test_predictor_is_the_class_hf_adapters_model_names(monkeypatch):
    monkeypatch.delenv("HF_ADAPTERS_MODEL", raising=False)
    assert cog_predictors.Predictor is cog_predictors.DistilbertSst2
    for model, cls in [("t5-email", cog_predictors.T5Email), ("bart-large-mnli", cog_predictors.BartLargeMnli),
                       ("dialogpt-large", cog_predictors.DialogptLarge)]:
        monkeypatch.setenv("HF_ADAPTERS_MODEL", model)
        assert cog_predictors.Predictor is cls and cls.model_name == model
    monkeypatch.setenv("HF_ADAPTERS_MODEL", "gpt-9")
    with pytest.raises(ConfigurationError, match="'gpt-9' is not a model of this app"):
        cog_predictors.Predictor


def test_a_class_refuses_to_serve_another_model_before_loading_anything(monkeypatch):
    monkeypatch.setenv("HF_ADAPTERS_MODEL", "t5-email")
    monkeypatch.setenv("HF_ADAPTERS_MODEL_PATH", "/nonexistent")
    with pytest.raises(ConfigurationError, match='"cog_predictors.py:T5Email"'):
        cog_predictors.DistilbertSst2().setup()


@pytest.mark.parametrize("raw, fix", [("{\"max_new_token\": 8}", "max_new_token"), ("{oops", "not valid JSON"),
                                      ("[8]", "must be a JSON object"), ("{\"max_new_tokens\": 0}", ">= 1"),
                                      ('{"seed": ' + "9" * 5000 + "}", "more than 4300 digits"),
                                      ("[" * 100_000, "nests too deeply")], ids=range(6))
def test_configuration_from_the_environment_is_checked(monkeypatch, tiny_models, raw, fix):
    monkeypatch.setenv("HF_ADAPTERS_MODEL", "dialogpt-large")
    monkeypatch.setenv("HF_ADAPTERS_MODEL_PATH", str(tiny_models["gpt2"]))
    monkeypatch.setenv("HF_ADAPTERS_CONFIGURATION", raw)
    with pytest.raises(ConfigurationError, match=fix):
        cog_predictors.DialogptLarge().setup()


def test_the_environment_picks_weights_and_configuration(chat, tiny_models):
    assert chat.runner.configuration["model_path"] == str(tiny_models["gpt2"])
    assert chat.runner.configuration["max_new_tokens"] == 8


def test_texts_may_be_a_json_list_a_data_uri_or_one_text(monkeypatch, tiny_models):
    sentiment = make_predictor(monkeypatch, tiny_models, "distilbert-sst2")
    uri = "data:application/json;base64," + base64.b64encode(b'["I love apple", "I hate apple"]').decode()
    assert run(sentiment, texts=uri) == run(sentiment, **SEED_002_INPUT)
    one = run(sentiment, texts="I love apple")
    assert one == run(sentiment, texts='["I love apple"]') and len(one.predicted_labels) == 1
    with pytest.raises(cog_predictors.InvalidInput, match="over the limit"):
        run(sentiment, texts="x" * (cog_predictors.MAX_INPUT_CHARS + 1))
    with pytest.raises(cog_predictors.InvalidInput, match="limit of 256"):
        run(sentiment, texts=json.dumps(["x"] * 257))


def greedy_reply(chat: cog_predictors.AppModel, conversation: list[str]) -> str:
    """The model's greedy reply to the last utterance after the earlier ones, straight from `generate`."""
    adapter = chat.runner.adapter
    ids = [token for utterance in conversation for token in adapter.chat.utterance(utterance)]
    with torch.inference_mode():
        out = adapter.model.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                                     max_new_tokens=8, do_sample=False, pad_token_id=adapter.tokenizer.eos_token_id)
    return adapter.tokenizer.decode(out[0, len(ids):], skip_special_tokens=True).strip()


def test_turns_without_replies_are_answered_first_and_kept_as_history(chat):
    first = run(chat, turns=json.dumps(CHAT[:1]), temperature=0)
    assert first == greedy_reply(chat, CHAT[:1])
    assert run(chat, turns=json.dumps(CHAT), temperature=0) == greedy_reply(chat, [CHAT[0], first, CHAT[1]])


def test_replies_given_are_the_history_and_only_the_newest_turn_is_generated(chat):
    given = "The home team scored twice in the final minutes."
    reply = run(chat, turns=json.dumps(CHAT), replies=json.dumps([given]), temperature=0)
    assert reply == greedy_reply(chat, [CHAT[0], given, CHAT[1]])


# ----- what `cog build` reads without running the code -----

def test_cog_yaml_builds_a_predictor_of_this_module():
    import yaml

    config = yaml.safe_load((ROOT / "cog.yaml").read_text(encoding="utf-8"))
    assert config["build"]["python_version"] == "3.11"
    assert (ROOT / config["build"]["python_requirements"]).is_file()
    module, _, name = config["predict"].partition(":")
    assert module == "cog_predictors.py" and name in {cls.__name__ for cls in cog_predictors.PREDICTORS.values()}


@pytest.mark.parametrize("cls", cog_predictors.PREDICTORS.values(), ids=lambda cls: cls.__name__)
def test_cog_build_can_read_each_predictor_statically(cls):
    """Cog 0.23 builds the schema from the source: `run` in the class's own body, every default a literal, every
    description one plain string literal (it neither joins adjacent literals nor reads escapes)."""
    import ast

    source = (ROOT / "cog_predictors.py").read_text(encoding="utf-8")
    [class_node] = [n for n in ast.parse(source).body if isinstance(n, ast.ClassDef) and n.name == cls.__name__]
    [run_node] = [n for n in class_node.body if isinstance(n, ast.FunctionDef) and n.name == "run"]
    assert run_node.returns is not None
    arguments = run_node.args.args[1:]
    assert len(run_node.args.defaults) == len(arguments) and all(a.annotation is not None for a in arguments)
    for default in run_node.args.defaults:
        assert isinstance(default, ast.Call) and default.func.id == "Input"
        for keyword in default.keywords:
            assert isinstance(keyword.value, ast.Constant), ast.unparse(keyword)
            if keyword.arg == "description":
                literal = ast.get_source_segment(source, keyword.value)
                quote = literal[0]
                assert literal[-1] == quote and quote not in literal[1:-1] and "\\" not in literal, literal
