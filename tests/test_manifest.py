"""dataloop.json, checked offline: it parses as dtlpy parses it, every reference resolves, and every model's
configuration is one its module reads and accepts, whatever keys the modules and manifest hold today."""
from __future__ import annotations

import collections
import importlib.util
import inspect
import sys

import dtlpy as dl
import pytest

from adapters.core.manifest import MANIFEST_PATH, load_manifest
from adapters.core.module_loader import load_model_module
from adapters.core.settings import setting_names
from adapters.dataloop.local_runner import validate_configuration
from adapters.dataloop.model_adapter import ModelAdapter

ROOT = MANIFEST_PATH.parent
MANIFEST = load_manifest()
DPK = dl.Dpk.from_json(_json=load_manifest(), client_api=dl.client_api)
MODULES = {module.name: module for module in DPK.components.modules}
COMPUTE_CONFIGS = {config.name for config in DPK.components.compute_configs}
MODELS = DPK.components.models
MODEL_IDS = [model["name"] for model in MODELS]


def duplicates(names: list[str]) -> list[str]:
    return [name for name, count in collections.Counter(names).items() if count > 1]


def test_the_app_carries_the_four_models_on_one_module():
    assert DPK.name == MANIFEST["name"] and DPK.version and DPK.display_name
    assert sorted(MODEL_IDS) == ["bart-large-mnli", "dialogpt-large", "distilbert-sst2", "t5-email"]
    assert {model["moduleName"] for model in MODELS} == {"hugging-adapter"}
    assert all(model["inputType"] == model["outputType"] == "text" for model in MODELS)


def test_names_are_unique():
    assert not duplicates([module.name for module in DPK.components.modules])
    assert not duplicates([config.name for config in DPK.components.compute_configs])
    assert not duplicates(MODEL_IDS)
    for module in MODULES.values():
        assert not duplicates([function.name for function in module.functions]), module.name


def test_every_reference_resolves():
    for module in MODULES.values():
        assert module.compute_config in COMPUTE_CONFIGS, module.name
        for function in module.functions:
            assert function.compute_config in COMPUTE_CONFIGS | {None}, function.name
    for model in MODELS:
        assert model["moduleName"] in MODULES, model["name"]
        for purpose, config in model.get("computeConfigs", {}).items():
            assert config in COMPUTE_CONFIGS, (model["name"], purpose)


def test_compute_configs_are_known_pods_that_scale_from_zero():
    pods = {pod.value for pod in dl.InstanceCatalog}
    for config in DPK.components.compute_configs:
        runtime = config.runtime
        assert runtime["podType"] in pods, config.name
        assert runtime["autoscaler"]["minReplicas"] == 0, config.name
        assert runtime["autoscaler"]["maxReplicas"] >= 1, config.name
        assert runtime["runnerImage"], config.name


def test_model_compute_configs_use_the_purposes_dtlpy_reads():
    """A model's `computeConfigs` maps the purposes the platform looks up (deploy, train, default) to configs."""
    for model in MODELS:
        assert set(model["computeConfigs"]) == {"deploy", "train", "default"}, model["name"]
        assert model["computeConfigs"]["default"] == model["computeConfigs"]["deploy"], model["name"]


def test_services_run_on_the_python_3_11_images_the_dockerfile_builds():
    """Every compute config names the image the Dockerfile builds for its kind of pod, tagged with the app's
    version, and the Dockerfile builds both on Dataloop's Python 3.11 runner images."""
    dockerfile = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    for config in DPK.components.compute_configs:
        kind = "gpu" if config.runtime["podType"].startswith("gpu") else "cpu"
        image = f"ghcr.io/huggingface-nlp-adapters/runner:{kind}-{MANIFEST['version']}"
        assert config.runtime["runnerImage"] == image, config.name
        assert f"docker build -t {image}" in dockerfile and f"docker push {image}" in dockerfile
    assert "ARG RUNNER=gpu:python3.11_cuda11.8_pytorch2\nFROM hub.dataloop.ai/dtlpy-runner-images/${RUNNER}" in dockerfile
    assert "--build-arg RUNNER=cpu:python3.11_pytorch2" in dockerfile
    assert "-r /tmp/hf-adapters-requirements.txt" in dockerfile


def test_requirements_split_runtime_from_test_tools():
    runtime = (ROOT / "requirements.txt").read_text(encoding="utf-8").lower()
    dev = (ROOT / "requirements-dev.txt").read_text(encoding="utf-8").lower()
    for tool in ("pytest", "hypothesis", "httpx", "cog", "mutmut"):
        assert not any(line.startswith(tool) for line in runtime.splitlines()), tool
    assert "-r requirements.txt" in dev.splitlines() and "torch==2.13.0" in runtime.splitlines()


@pytest.mark.parametrize("name, license_tag", [("distilbert-sst2", "license:apache-2.0"),
                                               ("t5-email", "license:apache-2.0"),
                                               ("bart-large-mnli", "license:mit"), ("dialogpt-large", "license:mit")])
def test_each_model_carries_its_weights_license(name, license_tag):
    (model,) = [m for m in MODELS if m["name"] == name]
    assert [tag for tag in model["tags"] if tag.startswith("license:")] == [license_tag]
    assert sorted(MANIFEST["attributes"]["License"]) == ["Apache 2.0", "MIT"]
    assert MANIFEST["attributes"]["NLP"] != "Conversational"  # not every model of the app chats


def test_models_are_sized_cpu_for_distilbert_gpu_for_the_large_ones():
    pod_of = {config.name: config.runtime["podType"] for config in DPK.components.compute_configs}
    for model in MODELS:
        deploy = pod_of[model["computeConfigs"]["deploy"]]
        assert deploy.startswith("gpu") == (model["name"] != "distilbert-sst2"), model["name"]
        assert pod_of[model["computeConfigs"]["train"]].startswith("gpu"), model["name"]


def test_module_declares_the_model_adapter_functions_as_dtlpy_does():
    module = MODULES["hugging-adapter"]
    assert (ROOT / module.entry_point).is_file()
    assert module.entry_point == "adapters/dataloop/model_adapter.py" and module.class_name == "ModelAdapter"
    assert [(i.name, i.type) for i in module.init_inputs] == [("model_entity", "Model")]
    assert "model_entity" in inspect.signature(ModelAdapter.__init__).parameters
    assert [f.name for f in module.functions] == ["predict_items", "predict_dataset", "train_model", "evaluate_model"]
    for function in module.functions:
        declared = getattr(ModelAdapter, function.name).__dtlpy__  # what dtlpy's own decorators say
        assert [(i.name, i.type) for i in function.inputs] == [(i["name"], i["type"]) for i in declared["input"]]
        assert [(o.name, o.type) for o in function.outputs] == [(o["name"], o["type"]) for o in declared["output"]]


def test_entry_point_loads_by_file_path_as_dataloop_loads_it(monkeypatch):
    """dtlpy (and the platform's runner) import the entry point file by path, with the codebase root on sys.path."""
    module = MODULES["hugging-adapter"]
    monkeypatch.syspath_prepend(str(ROOT))
    spec = importlib.util.spec_from_file_location(module.class_name, ROOT / module.entry_point)
    loaded = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(loaded)
    finally:
        sys.modules.pop(module.class_name, None)
    assert issubclass(getattr(loaded, module.class_name), dl.BaseModelAdapter)


@pytest.mark.parametrize("model", MODELS, ids=MODEL_IDS)
def test_configuration_keys_are_read_by_the_module(model):
    configuration = model["configuration"]
    adapter_class = load_model_module(configuration["module_name"]).HuggingAdapter
    unread = set(configuration) - setting_names(adapter_class.settings)
    assert not unread, f"{model['name']}: keys its module does not read: {sorted(unread)}"


@pytest.mark.parametrize("model", MODELS, ids=MODEL_IDS)
def test_configuration_defaults_are_complete_and_valid(model):
    """Every key the module reads has a valid default here: the manifest is the only place defaults live."""
    configuration = model["configuration"]
    adapter_class = load_model_module(configuration["module_name"]).HuggingAdapter
    assert set(configuration) == setting_names(adapter_class.settings), model["name"]
    assert validate_configuration(configuration) == configuration
