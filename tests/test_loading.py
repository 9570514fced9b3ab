"""Loading mistakes end in one short, true line: no hub access, weights of another model, a missing folder."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys

import pytest

from adapters.core import loading
from adapters.cli import main
from adapters.core.errors import ConfigurationError
from tests.conftest import ROOT

EXAMPLE = ROOT / "examples" / "t5-email" / "key-points-current.json"


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def unreachable_hub(monkeypatch, tmp_path):
    """Online mode, with the hub endpoint on a closed loopback port and an empty cache."""
    from huggingface_hub import constants
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{closed_port()}")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub-cache"))
    return tmp_path / "hub-cache"


def test_without_hub_access_the_cli_fails_at_once_in_one_line(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    env.update(HF_ENDPOINT=f"http://127.0.0.1:{closed_port()}", HF_HOME=str(tmp_path / "hf"))
    # Without the fix, huggingface_hub retries for about 50 s and logs 40 warnings: the timeout catches that too.
    run = subprocess.run([sys.executable, "-m", "adapters", "predict", "t5-email", str(EXAMPLE)], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=45)
    assert run.returncode == 2 and run.stdout == ""
    (line,) = run.stderr.strip().splitlines()
    for part in ("'t5-email'", "'t5-base'", "could not be fetched", "--model-path", "HF_HUB_OFFLINE=1"):
        assert part in line


def test_without_hub_access_a_hub_id_is_refused_with_the_reason(unreachable_hub):
    with pytest.raises(loading.WeightsUnavailable, match=r"'t5-base' could not be fetched .*unreachable.*'model_path'"):
        loading.resolve_source("t5-base")


def test_without_hub_access_the_local_cache_is_used(unreachable_hub, tiny_models, make_adapter):
    """A hub id whose snapshot is cached loads from the cache, as with HF_HUB_OFFLINE=1, without waiting."""
    commit = "0" * 40
    repo = unreachable_hub / "models--acme--tiny-t5"
    shutil.copytree(tiny_models["t5"], repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    assert loading.resolve_source("acme/tiny-t5") == str(repo / "snapshots" / commit)
    adapter = make_adapter("models.t5_email", model_path="acme/tiny-t5")
    assert type(adapter.model).__name__ == "T5ForConditionalGeneration"


def test_offline_a_hub_id_missing_from_the_cache_says_so():
    with pytest.raises(loading.WeightsUnavailable, match="HF_HUB_OFFLINE is set"):
        loading.resolve_source("acme/not-downloaded")


@pytest.mark.parametrize("module_name, other, detail", [
    ("models.distilbert_sst2", "t5", r"missing weights \(classification_head\."),  # T5 body, random head
    ("models.t5_email", "bart", r"unexpected weights \(classification_head\."),  # an NLI classifier as writer
    ("models.dialogpt_large", "distilbert", "holds a 'distilbert' model"),
])
def test_weights_of_another_architecture_are_refused(make_adapter, tiny_models, module_name, other, detail):
    with pytest.raises(ConfigurationError, match=detail):
        make_adapter(module_name, model_path=str(tiny_models[other]))


def test_a_model_path_that_does_not_exist_says_so(tiny_models, capsys):
    for path in ("/no/such/folder", "./no-such-folder", str(tiny_models["t5"] / "no-such-child")):
        with pytest.raises(ConfigurationError, match=f"model_path '{path}' does not exist"):
            loading.check_local_weights(path)
    assert main(["predict", "t5-email", str(EXAMPLE), "--model-path", "/no/such/folder"]) == 2
    assert capsys.readouterr().err.strip() == "error: model_path '/no/such/folder' does not exist"


def test_an_adapters_input_limit_is_its_tokenizers_when_that_is_below_the_models_positions(tiny_models, tmp_path):
    """A tokenizer saved with a shorter `model_max_length` than the model's position table sets the input limit."""
    import json

    import models.distilbert_sst2 as module
    from tests.conftest import MODULE_MODELS
    copy = shutil.copytree(tiny_models[MODULE_MODELS["models.distilbert_sst2"]], tmp_path / "short-tokenizer")
    config_file = copy / "tokenizer_config.json"
    config_file.write_text(json.dumps({**json.loads(config_file.read_text()), "model_max_length": 40}))
    adapter = module.HuggingAdapter({"model_path": str(copy)})
    assert adapter.model.config.max_position_embeddings > 40 and adapter.max_input_tokens == 40


def test_the_hub_error_names_the_knob_of_the_interface_in_use(monkeypatch):
    """The hub-unreachable error named configuration 'model_path' everywhere: serve takes --model-path NAME=PATH,
    Cog the HF_ADAPTERS_MODEL_PATH variable, predict and train --model-path DIR (test above)."""
    import cog_predictors
    from adapters.cli._common import CommandError
    from adapters.cli.serve import load
    with pytest.raises(CommandError) as served:
        load({"t5-email": {"module_name": "models.t5_email"}})
    assert "pass a local folder of save_pretrained files with --model-path t5-email=PATH" in str(served.value)
    monkeypatch.delenv(cog_predictors.PATH_VARIABLE, raising=False)
    monkeypatch.delenv(cog_predictors.CONFIGURATION_VARIABLE, raising=False)
    with pytest.raises(ConfigurationError) as cog:
        cog_predictors.load_runner("t5-email")
    assert "'t5-base' could not be fetched" in str(cog.value) and "set HF_ADAPTERS_MODEL_PATH to a local" in str(cog.value)
    for message in (str(served.value), str(cog.value)):
        assert "configuration 'model_path'" not in message
