"""Hostile configuration is refused with a clear error before anything is imported, loaded or run.

`nothing_loads` makes every loader (tokenizer, weights, torch.load) fail the test if it is reached, so each
refusal below is proven to happen first. `test_configuration.py` covers the validation messages themselves.
"""
from __future__ import annotations

import json
import math
import shutil
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.core import loading
from adapters.core.errors import ConfigurationError
from adapters.core.module_loader import available_modules, load_model_module
from adapters.core.settings import BASE_SETTINGS, resolve_configuration
from adapters.dataloop.model_adapter import ModelAdapter
from tests.conftest import examples
from tests.prompt_factory import answers, legacy_item
from tests.test_base_adapter import offline_model

MODULES = available_modules()


def test_the_guard_catches_a_load(nothing_loads, tiny_models):
    with pytest.raises(AssertionError, match="loaded before"):
        load_model_module("models.distilbert_sst2").HuggingAdapter({"model_path": str(tiny_models["distilbert"])})


def refused(configuration: dict, match: str) -> None:
    """Both entry points refuse `configuration`: the module's HuggingAdapter, and ModelAdapter on a dl.Model."""
    module = load_model_module(configuration["module_name"])
    with pytest.raises(ConfigurationError, match=match):
        module.HuggingAdapter(configuration)
    with pytest.raises(ConfigurationError, match=match):
        ModelAdapter(model_entity=offline_model("hostile", configuration))


# ----- module names -----
@pytest.mark.parametrize("name", [
    "models.t5_emaіl",  # Cyrillic "і"
    "models.T5_EMAIL", "models.t5_email\x00", "models.t5_email;import os", "__import__('os')", ".models.t5_email",
    "models.t5_email.", "models/../models/t5_email", "..models.t5_email", "models.t5_email.__builtins__",
    "tests.conftest", "adapters.dataloop.model_adapter", "models.training", "models." + "a" * 10_000,
    b"models.t5_email", {"name": "models.t5_email"}, True, 0.0, None,
])
def test_module_names_outside_models_are_refused_before_any_import(nothing_loads, name):
    imported = set(sys.modules)
    with pytest.raises(ConfigurationError, match="valid names"):
        ModelAdapter(model_entity=offline_model("hostile", {"module_name": name, "model_path": "t5-base"}))
    assert set(sys.modules) == imported


def test_a_configuration_without_module_name_is_refused(nothing_loads):
    with pytest.raises(ConfigurationError, match="non-empty string"):
        ModelAdapter(model_entity=offline_model("hostile", {"model_path": "t5-base"}))


# ----- weights -----
@pytest.mark.parametrize("suffix", loading.PICKLE_SUFFIXES)
@pytest.mark.parametrize("module", MODULES)
def test_pickle_checkpoints_are_refused_before_loading(nothing_loads, tmp_path, module, suffix):
    (tmp_path / f"pytorch_model{suffix}").write_bytes(b"\x80\x04pickle that would run code")
    (tmp_path / "config.json").write_text("{}")
    refused({"module_name": module, "model_path": str(tmp_path)}, rf"no \.safetensors.*pytorch_model\{suffix}")


def test_pickle_checkpoints_are_refused_with_the_onnx_runtime_too(nothing_loads, tmp_path, monkeypatch):
    """runtime 'onnx' exports a non-ONNX model_path first, through the same safetensors-only loader."""
    from adapters.runtimes import onnx_runtime
    monkeypatch.setattr(onnx_runtime, "AutoConfig", loading.AutoTokenizer)
    monkeypatch.setenv("HF_ADAPTERS_ONNX_CACHE", str(tmp_path / "cache"))
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "pytorch_model.bin").write_bytes(b"\x80\x04pickle")
    refused({"module_name": "models.distilbert_sst2", "model_path": str(tmp_path / "model"), "runtime": "onnx"},
            "pickle")
    assert not list((tmp_path / "cache").rglob("*"))  # nothing exported


@pytest.mark.parametrize("path", ["", "   ", "../../etc", "~/models", "/etc/passwd", 7, None])
def test_model_paths_that_are_no_model_folder_are_refused(nothing_loads, path):
    refused({"module_name": "models.distilbert_sst2", "model_path": path}, "model_path")


def test_remote_code_shipped_with_weights_is_never_run(tiny_models, make_adapter, tmp_path):
    """A folder whose config asks for its own classes (auto_map) still loads the library's classes, and no code."""
    folder = tmp_path / "remote"
    shutil.copytree(tiny_models["distilbert"], folder)
    marker = tmp_path / "ran"
    for name, key, target in (("config.json", "AutoModelForSequenceClassification", "evil.Model"),
                              ("tokenizer_config.json", "AutoTokenizer", ["evil.Tokenizer", None])):
        config = json.loads((folder / name).read_text())
        config["auto_map"] = {key: target, "AutoConfig": "evil.Config"}
        (folder / name).write_text(json.dumps(config))
    (folder / "evil.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n")
    adapter = make_adapter("models.distilbert_sst2", model_path=str(folder))
    assert len(answers(adapter.predict([legacy_item({"p": ["fine"]})])[0])) == 1
    assert type(adapter.model).__module__.startswith("transformers.") and not marker.exists()


@pytest.mark.parametrize("value", [True, "true", 1, "yes", ["x"], {"enabled": True}])
def test_trust_remote_code_is_refused_in_any_spelling(nothing_loads, value):
    for module in MODULES:
        refused({"module_name": module, "model_path": "t5-base", "trust_remote_code": value}, "trust_remote_code")


# ----- absurd settings -----
@pytest.mark.parametrize("module, override, match", [
    ("models.t5_email", {"n_gen": 10**6}, "'n_gen' must be <= 16"),
    ("models.t5_email", {"token_count": -1}, "'token_count' must be >= 1"),
    ("models.t5_email", {"token_count": 10**9}, "'token_count' must be <= 2048"),
    ("models.t5_email", {"num_beams": 10**6}, "'num_beams' must be <= 16"),
    ("models.t5_email", {"n_gen": 4, "num_beams": 2, "do_sample": True}, "beam sampling returns at most num_beams"),
    ("models.t5_email", {"temperature": math.nan}, "'temperature' must be a finite number"),
    ("models.t5_email", {"top_p": math.nan}, "'top_p' must be a finite number"),
    ("models.t5_email", {"seed": -1}, "'seed' must be >= 0"),
    ("models.dialogpt_large", {"max_new_tokens": 10**6}, "'max_new_tokens' must be <= 2048"),
    ("models.dialogpt_large", {"temperature": math.inf}, "'temperature' must be a finite number"),
    ("models.distilbert_sst2", {"batch_size": 10**9}, "'batch_size' must be <= 1024"),
    ("models.distilbert_sst2", {"max_batch_tokens": 10**12}, "'max_batch_tokens' must be <= 1048576"),
    ("models.distilbert_sst2", {"max_batch_tokens": 1}, "'max_batch_tokens' must be >= 16"),
    ("models.distilbert_sst2", {"device": "cuda:0; rm -rf /"}, "'device'"),
    ("models.bart_large_mnli", {"candidate_labels": [f"l{i}" for i in range(10**4)]}, "give 1 to 100 labels"),
    ("models.bart_large_mnli", {"candidate_labels": ["a", "a"]}, "unique"),
    ("models.bart_large_mnli", {"hypothesis_template": "{}{}"}, "exactly one"),
    ("models.bart_large_mnli", {"hypothesis_template": "{{}}{:>20000000}"}, "exactly one plain"),
    ("models.bart_large_mnli", {"hypothesis_template": "{} {__class__}"}, "exactly one plain"),
    ("models.bart_large_mnli", {"hypothesis_template": "{:{}}"}, "exactly one plain"),
    ("models.bart_large_mnli", {"hypothesis_template": "{!r}"}, "exactly one plain"),
    ("models.bart_large_mnli", {"hypothesis_template": "It is {}." * 50}, "at most 200 characters"),
    ("models.bart_large_mnli", {"candidate_labels": ["x" * 1_000_000]}, "at most 200 characters"),
])
def test_absurd_settings_are_refused_before_loading(nothing_loads, module, override, match):
    refused({"module_name": module, "model_path": "t5-base", **override}, match)


@pytest.mark.parametrize("metadata, match", [
    ({"candidate_labels": ["ok", "nul\x00inside"]}, "control characters"),
    ({"hypothesis_template": "It is {}\x1b[2J"}, "control characters"),
    ({"candidate_labels": list(map(str, range(10**5)))}, "give 1 to 100 labels"),
    ({"candidate_labels": ["a" * 10**6, "b"]}, "at most 200 characters"),
    ({"hypothesis_template": "{{}}{:>20000000}"}, "exactly one plain"),  # took 7.6 GB through str.format
    ({"hypothesis_template": "{} {__class__}"}, "exactly one plain"),
])
def test_absurd_prompt_metadata_skips_the_question_not_the_batch(make_adapter, metadata, match):
    adapter = make_adapter("models.bart_large_mnli")
    item = {"prompts": {"1": [{"mimetype": "text", "value": "hostile"}, {"mimetype": "metadata", "value": metadata}],
                        "2": [{"mimetype": "text", "value": "fine"}]}}
    (collection,) = adapter.predict([item])
    assert [p for p, _, _ in answers(collection)] == ["2"]
    (skipped,) = adapter.last_report.skipped
    assert skipped.prompt_key == "1" and match in skipped.reason and len(skipped.reason) < 300


HUGE = 10 ** 5000  # past Python's 4300-digit limit: its repr raises ValueError


@pytest.mark.parametrize("name, value", [
    ("seed", HUGE), ("seed", -HUGE), ("top_k", HUGE), ("batch_size", -HUGE), ("temperature", HUGE),
    ("runtime", "x" * 100_000), ("device", "cuda:" + "9" * 100_000), ("dtype", ["float32"] * 50_000),
    ("candidate_labels", ["x" * 100_000] * 8), ("hypothesis_template", "{" * 100_000),
], ids=lambda value: value if isinstance(value, str) and len(value) < 30 else type(value).__name__)
def test_values_at_the_edges_are_refused_in_one_short_line(name, value):
    """A 5000-digit seed crashed with Python's ValueError for integers past 4300 digits, raised by the error
    message itself; long values are echoed shortened."""
    (module, *_) = declaring_modules(name)
    with pytest.raises(ConfigurationError) as error:
        resolved(module, name, value)
    message = str(error.value)
    assert f"'{name}'" in message and len(message) < 300 and "\n" not in message


@pytest.mark.parametrize("name", ["x" * 100_000, "models." + "x" * 100_000, HUGE], ids=["long", "long-models", "huge"])
def test_a_huge_module_name_is_refused_in_one_short_line(nothing_loads, name):
    with pytest.raises(ConfigurationError) as error:
        load_model_module(name)
    assert len(str(error.value)) < 600


@pytest.mark.skipif(__import__("torch").backends.mps.is_available(), reason="this machine has MPS")
def test_a_device_this_torch_build_cannot_use_is_a_configuration_error(nothing_loads, tiny_models):
    """`mps` on a build without it failed with a library traceback when the weights were moved, after loading."""
    for device, match in (("mps", "'mps' is not available"), ("cuda:3", "CUDA is not available")):
        refused({"module_name": "models.distilbert_sst2", "model_path": str(tiny_models["distilbert"]),
                 "device": device}, match)


# What each key accepts, written here from the documented caps (docs/security.md, docs/configuration.md,
# docs/training.md), not read from the settings' own declared bounds: a bound changed by mistake in the code must
# fail these tests.
NUMBERS = {  # key: (type, minimum, maximum)
    "batch_size": (int, 1, 1024), "max_batch_tokens": (int, 16, 2**20), "max_batch_wait_ms": (int, 0, 1000),
    "epochs": (int, 1, 1000),
    "learning_rate": (float, 1e-9, 1.0), "train_batch_size": (int, 1, 1024),
    "gradient_accumulation_steps": (int, 1, 1024), "weight_decay": (float, 0.0, 1.0),
    "warmup_ratio": (float, 0.0, 0.999), "max_grad_norm": (float, 0.0, 1e4), "early_stopping_patience": (int, 0, 1000),
    "lora_r": (int, 0, 1024), "lora_alpha": (float, 1e-3, 1e4), "lora_dropout": (float, 0.0, 0.9),
    "seed": (int, 0, 2**32 - 1), "max_source_length": (int, 8, 65536), "max_new_tokens": (int, 1, 2048),
    "temperature": (float, 0.0, 100.0), "top_k": (int, 0, 100_000), "top_p": (float, 1e-6, 1.0),
    "token_count": (int, 1, 2048), "n_gen": (int, 1, 16), "num_beams": (int, 1, 16), "max_target_length": (int, 2, 2048),
    "stream_interval": (float, 0.1, 60.0),
    "embeddings_size": (int, 1, 65536), "threshold": (float, 0.0, 1.0),
}
NULLABLE = {"seed"}
FLAGS = {"reanswer", "multi_label", "gradient_checkpointing", "do_sample", "stream"}
CLASSIFIERS, GENERATORS = ("models.distilbert_sst2", "models.bart_large_mnli"), ("models.dialogpt_large", "models.t5_email")
CHOICES = {  # key: {module: accepted values}
    "runtime": {**{m: ("torch", "onnx") for m in CLASSIFIERS}, **{m: ("torch", "ctranslate2") for m in GENERATORS}},
    "mixed_precision": {m: ("auto", "no", "fp16", "bf16") for m in MODULES},
    "compute_type": {m: ("default", "int8", "int8_float32", "float32") for m in GENERATORS},
    "dtype": {m: ("float32", "bfloat16", "float16") for m in MODULES},
    "output_type": {m: ("text", "class") for m in CLASSIFIERS},
}
OTHERS = {  # key: (good values, bad values)
    "model_path": (["t5-base", "/models/my-model"], ["", "   ", 7, None]),
    "device": (["auto", "cpu", "mps", "cuda", "cuda:1", "cuda:12", "cuda:9999"],
               ["gpu", "cuda:", "CPU", "cuda:0; rm -rf /", "", "cuda:\u0663", "cuda:\uff11", "cuda:1\n", "cuda:10000"]),
    "prefix": (["", "write an email: ", "é: ", "\u200b"], [None, 3, "\ud800 write: ", "a\udfffb"]),
    "system_prompt": (["", "You are a concise assistant."], [None, 3, ["be brief"]]),
    "hypothesis_template": (["This example is {}.", "{} {{braces}}", "C'est {}, é."],
                            ["no placeholder", "{}{}", "{0}", "{x}", "{:>9}", "{!r}", "{" * 3, "x{}" * 100,
                             "It is {}.\x00", "\x1b[31m{}", "It\nis {}", "{}\x85"]),
    "candidate_labels": ([["a"], ["urgent", "not urgent"], [f"l{i}" for i in range(100)], ["x" * 200], ["café"]],
                         [[], ["a", "a"], [""], [" "], [1], ["x" * 201], [f"l{i}" for i in range(101)], "a", None,
                          ["a\x00b"], ["ok", "\x1b[31mred"], ["tab\there"], ["line\nbreak"], ["\x7f"], ["\x9f"]]),
}


def declaring_modules(name: str) -> list[str]:
    return [m for m in MODULES if name in {s.name for s in (*BASE_SETTINGS, *load_model_module(m).HuggingAdapter.settings)}]


def resolved(module: str, name: str, value):
    settings = load_model_module(module).HuggingAdapter.settings
    return resolve_configuration(module, settings, {name: value})[name]


def assert_refused(module: str, name: str, value) -> None:
    with pytest.raises(ConfigurationError, match=f"'{name}'"):
        resolved(module, name, value)


def test_the_table_covers_every_key_each_module_reads():
    declared = {s.name for m in MODULES for s in (*BASE_SETTINGS, *load_model_module(m).HuggingAdapter.settings)}
    assert declared - {"module_name"} == {*NUMBERS, *FLAGS, *CHOICES, *OTHERS}


def beyond(kind, bound: float, direction: int):
    """The nearest value past `bound`."""
    return bound + direction if kind is int else math.nextafter(bound, direction * math.inf)


@pytest.mark.parametrize("name", sorted(NUMBERS))
def test_numbers_are_accepted_within_their_bounds_and_refused_past_them(name):
    kind, minimum, maximum = NUMBERS[name]
    for module in declaring_modules(name):
        for good in (minimum, maximum, kind((minimum + maximum) / 2)):
            assert resolved(module, name, good) == good
        bad = [beyond(kind, minimum, -1), beyond(kind, maximum, +1), True, "1", [1]]
        bad += [math.nan, math.inf, -math.inf] if kind is float else [1.5]
        bad += [] if name in NULLABLE else [None]
        for value in bad:
            assert_refused(module, name, value)
        if kind is float:
            assert isinstance(resolved(module, name, int(maximum)), float)  # an integer is widened, not refused
        if name in NULLABLE:
            assert resolved(module, name, None) is None


@pytest.mark.parametrize("name", sorted(FLAGS | set(CHOICES) | set(OTHERS)))
def test_flags_choices_and_texts_accept_what_they_document_and_refuse_the_rest(name):
    for module in declaring_modules(name):
        if name in FLAGS:
            good, bad = [True, False], [0, 1, "true", None]
        elif name in CHOICES:
            good, bad = list(CHOICES[name][module]), ["TORCH", "", None, 1, "tensorrt", "fp32"]
        else:
            good, bad = OTHERS[name]
        for value in good:
            assert resolved(module, name, value) == value
        for value in bad:
            assert_refused(module, name, value)


@pytest.mark.parametrize("name, value, needed, got", [
    ("batch_size", "8", "an integer", "a string '8'"), ("temperature", "hot", "a number", "a string 'hot'"),
    ("do_sample", 1, "true/false", "a number 1"), ("prefix", 3, "a string", "a number 3"),
    ("candidate_labels", "a", 'a list (in JSON: ["a", "b"])', "a string 'a'"), ("n_gen", 2.0, "an integer", "a number 2.0"),
    ("candidate_labels", {"a": 1}, 'a list (in JSON: ["a", "b"])', 'an object {"a": 1}')])
def test_a_value_of_the_wrong_type_is_refused_with_the_type_it_needs(name, value, needed, got):
    """Both in JSON's words (what a configuration, a request or --set holds), lists and objects written as JSON."""
    (module, *_) = declaring_modules(name)
    with pytest.raises(ConfigurationError) as error:
        resolved(module, name, value)
    assert str(error.value) == f"configuration '{name}' must be {needed}, got {got}"


@pytest.mark.parametrize("n_gen, num_beams, do_sample, temperature, refusal", [
    (2, 2, False, 0.7, None), (3, 1, True, 0.7, None), (4, 4, True, 0.7, None), (4, 1, True, 0.7, None),
    (2, 1, False, 0.7, "n_gen > 1 without sampling needs num_beams >= n_gen"),
    (2, 1, True, 0.0, "n_gen > 1 without sampling"),  # temperature 0 is greedy, not sampling
    (2, 1, True, 1e-300, "temperature >= 0.01"), (2, 1, True, 0.00999, "n_gen > 1 without sampling"),  # so is tiny
    (2, 1, True, 0.01, None),  # the floor samples
    (4, 2, True, 0.7, "beam sampling returns at most num_beams answers"), (4, 3, True, 0.7, "at most num_beams"),
])
def test_n_gen_needs_sampling_or_as_many_beams(n_gen, num_beams, do_sample, temperature, refusal):
    from models.t5_email import HuggingAdapter
    configuration = {"n_gen": n_gen, "num_beams": num_beams, "do_sample": do_sample, "temperature": temperature}
    resolved_configuration = resolve_configuration("models.t5_email", HuggingAdapter.settings, configuration)
    if refusal is None:
        HuggingAdapter.check_configuration(resolved_configuration)
    else:
        with pytest.raises(ConfigurationError, match=refusal):
            HuggingAdapter.check_configuration(resolved_configuration)


json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner,
                                                                                       max_size=3), max_leaves=6)


@settings(max_examples=examples(400), deadline=None)
@given(st.sampled_from(MODULES), st.data())
def test_any_value_of_any_setting_is_refused_by_name_or_within_the_tables_bounds(module, data):
    declared = {s.name for s in (*BASE_SETTINGS, *load_model_module(module).HuggingAdapter.settings)}
    name = data.draw(st.sampled_from(sorted(declared - {"module_name"})))
    value = data.draw(json_values)
    try:
        result = resolved(module, name, value)
    except ConfigurationError as error:
        assert f"'{name}'" in str(error)
        return
    if name in NUMBERS:
        kind, minimum, maximum = NUMBERS[name]
        assert (result is None and name in NULLABLE) or (type(result) is kind and minimum <= result <= maximum)
    elif name in FLAGS:
        assert type(result) is bool
    elif name in CHOICES:
        assert result in CHOICES[name][module]
    else:
        assert result not in OTHERS[name][1]
