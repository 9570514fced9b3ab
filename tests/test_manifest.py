"""dataloop.json, checked offline: it parses as dtlpy parses it, every reference resolves, and every model's
configuration is one its module reads and accepts, whatever keys the modules and manifest hold today."""
from __future__ import annotations

import collections
import importlib.util
import inspect
import sys

import dtlpy as dl
import pytest

import creation
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
    """Every compute config names the runner image (a template creation.py replaces with the tags it pushes) of its
    kind of pod, tagged with the app's version; the Dockerfile builds both on Dataloop's Python 3.11 runner images,
    with the build arguments creation.py passes."""
    dockerfile = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    for config in DPK.components.compute_configs:
        kind = "gpu" if config.runtime["podType"].startswith("gpu") else "cpu"
        image = f"{creation.RUNNER_IMAGE_PREFIX}:{kind}-{MANIFEST['version']}"
        assert config.runtime["runnerImage"] == image, config.name
    assert "ARG RUNNER=gpu:python3.11_cuda11.8_pytorch2\nFROM hub.dataloop.ai/dtlpy-runner-images/${RUNNER}" in dockerfile
    assert creation.IMAGE_BUILD_ARGS["cpu"]["RUNNER"] == "cpu:python3.11_pytorch2"
    assert set(creation.IMAGE_BUILD_ARGS["cpu"]) <= {line.split()[1].split("=")[0] for line in dockerfile.splitlines()
                                                     if line.startswith("ARG ")}
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


# The values Dataloop's app catalogue uses, read from 24 published dataloop.json files of dataloop-ai-apps
# (huggingface-adapter: dialogpt_large, bert_base_ner, dslim_bert_base_ner, pegasus_summarize, pegasus_xsum,
# open_llama_3b, meta_llama_3_8b_instruct, auto_for_causal_lm, apple_dclm_7b, amazon_review_sentiment_analysis;
# openai-model-adapters: chat_completion, text_embeddings, whisper; torch-models: resnet, speechbrain; nim-api-adapter:
# gemma_3_12b_it, bge_m3; clip-model-adapter, ner-spacy-adapter, google-nnlm, amazon-bedrock, yolov8, ollama-server,
# google-gemini). Each attribute is one string, except "Media Type" (a list).
CATALOGUE = {
    "Provider": {"Hugging Face", "Microsoft", "Meta", "Google", "Open AI", "AWS", "PyTorch", "SpeechBrain", "spaCy",
                 "UltraLytics", "Ollama", "Other"},
    "Deployed By": {"Dataloop", "Open AI", "NVIDIA", "Google"},
    "Category": {"Model"},
    "NLP": {"Conversational", "Sentiment Analysis", "Text Classification", "Token Classification", "Embeddings",
            "Other"},
    "Gen AI": {"LLM", "LMM"},
    "Media Type": {"Text", "Image", "Audio", "Multi Modal"},
    "License": {"Apache 2.0", "MIT", "BSD-3.0", "AGPL-3.0", "Apple Sample Code License", "Other"},
}


def test_attributes_use_the_app_catalogues_values():
    attributes = MANIFEST["attributes"]
    assert set(attributes) <= set(CATALOGUE)
    for name, value in attributes.items():
        values = value if name == "Media Type" else [value]
        assert name == "Media Type" or isinstance(value, str), name
        assert values and set(values) <= CATALOGUE[name], (name, value)
    assert attributes["NLP"] == "Text Classification" and attributes["Gen AI"] == "LLM"  # classifiers; chat, email
    assert attributes["License"] == "Other"  # MIT and Apache 2.0 models: each model's tag says which


def dtlpy_fields(entity: type) -> set[str]:
    """The JSON keys a dtlpy entity reads (its DlProperty locations)."""
    return {value.location[0] for value in vars(entity).values() if isinstance(value, dl.entities.DlProperty)}


def test_components_hold_only_fields_dtlpy_knows():
    for config in MANIFEST["components"]["computeConfigs"]:
        assert set(config) <= dtlpy_fields(dl.entities.dpk.DpkComputeConfig), config["name"]
    for module in MANIFEST["components"]["modules"]:
        assert set(module) <= dtlpy_fields(dl.PackageModule), module["name"]
        for function in module["functions"]:
            assert set(function) <= dtlpy_fields(dl.PackageFunction), function["name"]


def test_each_model_trains_on_one_compute_config():
    """A function-level computeConfig on train_model would compete with each model's `computeConfigs.train` (it
    named gpu-t4 for DialoGPT-large, whose own train config is gpu-t4-m): only the model's own one is given."""
    (module,) = MANIFEST["components"]["modules"]
    (train,) = [f for f in module["functions"] if f["name"] == "train_model"]
    assert "computeConfig" not in train
    for model in MODELS:
        assert model["computeConfigs"]["train"] in COMPUTE_CONFIGS, model["name"]


def test_models_are_sized_cpu_for_distilbert_gpu_for_the_large_ones():
    pod_of = {config.name: config.runtime["podType"] for config in DPK.components.compute_configs}
    for model in MODELS:
        deploy = pod_of[model["computeConfigs"]["deploy"]]
        assert deploy.startswith("gpu") == (model["name"] != "distilbert-sst2"), model["name"]
        assert pod_of[model["computeConfigs"]["train"]].startswith("gpu"), model["name"]


def test_prediction_services_batch_concurrent_executions_and_training_runs_alone():
    """A deploy config runs enough executions at once for one replica to fill a micro-batch of one-item executions
    (the batching layer gathers them), no more than its queue length (past it the autoscaler starts a replica
    for work this one already holds); a training config runs one execution, which alone uses the whole GPU."""
    runtime_of = {config.name: config.runtime for config in DPK.components.compute_configs}
    for model in MODELS:
        runtime = runtime_of[model["computeConfigs"]["deploy"]]
        assert runtime["concurrency"] >= model["configuration"]["batch_size"], model["name"]
        assert runtime["concurrency"] <= runtime["autoscaler"]["queueLength"], model["name"]
        assert runtime_of[model["computeConfigs"]["train"]]["concurrency"] == 1, model["name"]


def sizing_table() -> dict[str, dict[str, str]]:
    """docs/app.md's sizing table of the compute configs, by config name."""
    lines = (ROOT / "docs" / "app.md").read_text(encoding="utf-8").splitlines()
    start = lines.index("| compute config | models | pod | concurrency | minReplicas | maxReplicas | queueLength |")
    header = [cell.strip() for cell in lines[start].strip("|").split("|")]
    rows = {}
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        cells = dict(zip(header, (cell.strip().strip("`") for cell in line.strip("|").split("|"))))
        rows[cells["compute config"]] = cells
    return rows


def test_the_sizing_table_of_the_docs_is_the_manifest():
    """docs/app.md's "Sizing" states each compute config's concurrency and autoscaler as the manifest sets them."""
    table = sizing_table()
    assert set(table) == COMPUTE_CONFIGS
    for config in DPK.components.compute_configs:
        runtime, row = config.runtime, table[config.name]
        assert row["pod"] == runtime["podType"], config.name
        assert int(row["concurrency"]) == runtime["concurrency"], config.name
        for key in ("minReplicas", "maxReplicas", "queueLength"):
            assert int(row[key]) == runtime["autoscaler"][key], (config.name, key)


def test_module_declares_the_model_adapter_functions_as_dtlpy_does():
    module = MODULES["hugging-adapter"]
    assert (ROOT / module.entry_point).is_file()
    assert module.entry_point == "adapters/dataloop/model_adapter.py" and module.class_name == "ModelAdapter"
    assert [(i.name, i.type) for i in module.init_inputs] == [("model_entity", "Model")]
    assert "model_entity" in inspect.signature(ModelAdapter.__init__).parameters
    assert [f.name for f in module.functions] == ["predict_items", "predict_dataset", "train_model", "evaluate_model",
                                                 "embed_items", "embed_dataset"]
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


@pytest.mark.parametrize("model", MODELS, ids=MODEL_IDS)
def test_keys_checked_before_the_module_loads_are_declared_alike_by_every_module(model):
    """The CLI checks these values before importing the module (torch, transformers): they must be the values the
    module itself accepts, so each module declares exactly these settings, and the manifest lists every key."""
    from adapters.dataloop.local_runner import SHARED_SETTINGS
    adapter_class = load_model_module(model["configuration"]["module_name"]).HuggingAdapter
    declared = {setting.name: setting for setting in adapter_class.settings}
    for name, setting in SHARED_SETTINGS.items():
        assert declared.get(name, setting) == setting, (model["name"], name)
