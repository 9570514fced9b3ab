"""Configuration is data: module names, types, ranges and trust_remote_code are checked before loading."""
import logging

import pytest

from adapters.core.errors import ConfigurationError
from adapters.core.manifest import defaults_for_module
from adapters.core.module_loader import available_modules, canonical_module_name, load_model_module
from adapters.core.settings import resolve_configuration
from models import t5_email

MODULES = ["models.bart_large_mnli", "models.dialogpt_large", "models.distilbert_sst2", "models.t5_email"]


def test_the_four_modules_are_available_and_load():
    assert available_modules() == MODULES
    for name in MODULES:
        assert isinstance(load_model_module(name).HuggingAdapter, type)
    assert canonical_module_name("models.dialogpt-large") == "models.dialogpt_large"  # seed 001's spelling


@pytest.mark.parametrize("name", ["os", "subprocess", "models", "models.x", "models.t5_email.os", "models..t5_email",
                                  "../models/t5_email", "/tmp/evil", "models/t5_email", "adapters.core.settings",
                                  "models.__init__", "", "   ", None, 3, ["models.t5_email"]])
def test_refused_module_names_list_the_valid_ones(name):
    with pytest.raises(ConfigurationError) as error:
        load_model_module(name)
    assert "models.t5_email" in str(error.value)


def test_defaults_come_from_the_manifest():
    resolved = resolve_configuration("models.t5_email", t5_email.HuggingAdapter.settings, {})
    manifest = defaults_for_module("models.t5_email")
    assert {k: resolved[k] for k in manifest} == manifest
    assert resolved["model_path"] == "t5-base" and resolved["token_count"] == 250 and resolved["temperature"] == 0.7


@pytest.mark.parametrize("override, message", [
    ({"token_count": -1}, "configuration 'token_count' must be >= 1, got -1"),
    ({"token_count": 10**6}, "configuration 'token_count' must be <= 2048, got 1000000"),
    ({"n_gen": 10**6}, "configuration 'n_gen' must be <= 16, got 1000000"),
    ({"n_gen": "3"}, "configuration 'n_gen' must be an integer, got a string '3'"),
    ({"temperature": "hot"}, "configuration 'temperature' must be a number, got a string 'hot'"),
    ({"do_sample": "yes"}, "configuration 'do_sample' must be true/false, got a string 'yes'"),
    ({"num_beams": True}, "configuration 'num_beams' must be an integer, not a boolean"),
    ({"device": "tpu"}, "configuration 'device': use 'auto', 'cpu', 'mps', 'cuda' or 'cuda:N'"),
    ({"model_path": ""}, "configuration 'model_path': must not be empty"),
    ({"batch_size": 0}, "configuration 'batch_size' must be >= 1, got 0"),
    ({"trust_remote_code": True},
     "configuration 'trust_remote_code' is refused: this package never runs code shipped with model weights"),
])
def test_bad_values_are_refused_with_a_message_that_says_what_to_fix(override, message):
    with pytest.raises(ConfigurationError) as error:
        resolve_configuration("models.t5_email", t5_email.HuggingAdapter.settings, override)
    assert str(error.value) == message


def test_unknown_keys_are_logged_with_the_module_and_its_valid_keys_and_dtlpy_keys_ignored(caplog):
    with caplog.at_level(logging.WARNING, logger="adapters"):
        resolved = resolve_configuration("models.t5_email", t5_email.HuggingAdapter.settings,
                                         {"tokn_count": 3, "include_background": False, "trust_remote_code": False})
    (record,) = caplog.records  # trust_remote_code false is understood (and harmless), not an unknown key
    message = record.getMessage()
    assert message.startswith("ignoring configuration keys that models.t5_email does not read: ['tokn_count'] "
                              "(valid keys: [")
    assert "'token_count'" in message and "'model_path'" in message  # the keys the user may have meant
    assert "tokn_count" not in resolved


def test_thousands_of_unknown_keys_make_one_short_warning(caplog):
    """50,000 unknown keys made one 3.7 MB warning line."""
    with caplog.at_level(logging.WARNING, logger="adapters"):
        resolve_configuration("models.t5_email", t5_email.HuggingAdapter.settings,
                              {f"{'k' * 1000}{i}": i for i in range(50_000)})
    (record,) = caplog.records
    assert len(record.getMessage()) < 2000 and "(50000 keys)" in record.getMessage()


def test_the_resolved_module_name_is_the_module_that_runs():
    """A configuration's own module_name (seed 001's spelling, say) does not replace the module's name."""
    from models import dialogpt_large
    resolved = resolve_configuration("models.dialogpt_large", dialogpt_large.HuggingAdapter.settings,
                                     {"module_name": "models.dialogpt-large"})
    assert resolved["module_name"] == "models.dialogpt_large"


def test_a_module_without_a_runtime_key_refuses_any_runtime_but_torch():
    """`runtime` chooses what runs: a module that does not read it must refuse it rather than ignore it."""
    with pytest.raises(ConfigurationError) as error:
        resolve_configuration("models.t5_email", (), {"runtime": "onnx"})
    assert str(error.value) == ("configuration 'runtime' 'onnx' is not supported by models.t5_email; "
                                "remove the key or set it to 'torch'")
    for harmless in ("torch", None):
        assert "runtime" not in resolve_configuration("models.t5_email", (), {"runtime": harmless})


def test_refusals_happen_before_loading(tmp_path):
    (tmp_path / "pytorch_model.bin").write_bytes(b"pickle")
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ConfigurationError, match="pickle"):
        t5_email.HuggingAdapter({"model_path": str(tmp_path)})
    with pytest.raises(ConfigurationError, match="n_gen > 1 without sampling"):
        t5_email.HuggingAdapter({"model_path": "/nonexistent", "n_gen": 2, "do_sample": False})
    with pytest.raises(ConfigurationError, match="does not exist"):
        t5_email.HuggingAdapter({"model_path": "/nonexistent/folder"})
