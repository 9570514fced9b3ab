"""Promises about failure, tested by making the dependency fail (docs/testing.md, "How we test failure paths").

The platform's HTTP layer raises (tests/fake_platform.py `failures`, the artifacts and metrics repositories), a
library's `save_pretrained` raises while the model is written, the torch model raises during training (a device
out of memory): each time the promise is checked on what is left, not on a run where nothing failed.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

import dtlpy as dl
import pytest
import torch

from adapters.cli import main as cli_main
from adapters.dataloop.model_adapter import ModelAdapter
from tests.fake_platform import FakePlatform, answer_json, linked_item
from tests.prompt_factory import current_item, legacy_item
from tests.test_platform import MODEL, deployed
from tests.test_training import FAST, local_adapter, sentiment_layout
from tests.test_training_runs import ArtifactStore, Progress

MODEL_FILES = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json")


@pytest.fixture
def platform(monkeypatch):
    return FakePlatform().install(monkeypatch)


# ----- predictions: a failed upload or delete loses nothing -----

def test_a_failed_upload_deletes_no_earlier_answer_and_fails_the_execution(tiny_models, tmp_path, platform):
    """`reanswer` replaces this model's answers: the new ones are uploaded first, the old ones deleted after, so
    an upload that fails leaves every earlier answer in place (and the execution fails where the platform sees it)."""
    adapter = deployed(tiny_models, "models.distilbert_sst2", reanswer=True)
    stored = [answer_json("1", "an earlier answer", MODEL), answer_json("1", "a person's note", None),
              answer_json("2", "another earlier answer", MODEL)]
    item = platform.add_item(linked_item(tmp_path, "a.json", current_item({"1": ["first"], "2": ["second"]}),
                                         "item-a"), stored)
    before = platform.texts("item-a")
    platform.failures["annotations.upload"] = RuntimeError("503 Service Unavailable")
    with pytest.raises(Exception, match="(?s)Failed to predict all items.*item-a.*503 Service Unavailable"):
        adapter.predict_items([item])
    assert platform.texts("item-a") == before
    assert not [call for call in platform.calls if call[0] == "annotations.delete"]

    del platform.failures["annotations.upload"]  # the platform is back: the same execution again replaces them
    adapter.predict_items([item])
    after = platform.texts("item-a")
    assert ("1", "a person's note", None) in after
    assert sorted(p for p, _, m in after if m == MODEL) == ["1", "2"]
    assert not {text for _, text, _ in after} & {"an earlier answer", "another earlier answer"}


def test_a_failed_delete_after_the_upload_keeps_both_answers_and_fails_the_execution(tiny_models, tmp_path,
                                                                                     platform):
    adapter = deployed(tiny_models, "models.distilbert_sst2", reanswer=True)
    item = platform.add_item(linked_item(tmp_path, "a.json", current_item({"1": ["first"]}), "item-a"),
                             [answer_json("1", "an earlier answer", MODEL)])
    platform.failures["annotations.delete"] = RuntimeError("504 Gateway Timeout")
    with pytest.raises(Exception, match="504 Gateway Timeout"):
        adapter.predict_items([item])
    texts = [text for _, text, model in platform.texts("item-a") if model == MODEL]
    assert len(texts) == 2 and "an earlier answer" in texts  # the new answer is stored, the old one not lost


# ----- saving: a write that fails never leaves a half-written model -----

class DiskFull(OSError):
    pass


def trained_adapter(tiny_models) -> ModelAdapter:
    adapter, _ = local_adapter("distilbert-sst2", tiny_models["distilbert"])
    return adapter


def fail_tokenizer_save(adapter: ModelAdapter, monkeypatch) -> None:
    """The library's write fails after the weights are written, as a full disk would."""
    def full(*args, **kwargs):
        raise DiskFull(28, "No space left on device")
    monkeypatch.setattr(adapter.hugging.tokenizer, "save_pretrained", full)


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_write_that_fails_mid_save_leaves_the_earlier_model_whole_and_nothing_beside_it(tiny_models, tmp_path,
                                                                                          monkeypatch):
    out = tmp_path / "model"
    adapter = trained_adapter(tiny_models)
    adapter.save(str(out))
    earlier = snapshot(out)
    assert set(MODEL_FILES) <= set(earlier)
    with torch.no_grad():  # the weights change, so a half-written folder would differ from the earlier one
        next(adapter.hugging.model.parameters()).add_(1.0)
    fail_tokenizer_save(adapter, monkeypatch)
    with pytest.raises(DiskFull):
        adapter.save(str(out))
    assert snapshot(out) == earlier
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]  # no staging or old folder left beside it


def test_a_write_that_fails_mid_save_of_a_new_folder_leaves_no_model(tiny_models, tmp_path, monkeypatch):
    adapter = trained_adapter(tiny_models)
    fail_tokenizer_save(adapter, monkeypatch)
    with pytest.raises(DiskFull):
        adapter.save(str(tmp_path / "model"))
    assert list(tmp_path.iterdir()) == []


# ----- training: a run that fails before its first epoch ends publishes no weights -----

class TrainingCrash(RuntimeError):
    pass


def crash_in_training(model_class_name: str, after_steps: int):
    """A global forward hook (torch's public API): the model raises on training step `after_steps` + 1, as a
    device running out of memory does; inference (validation) runs untouched."""
    steps = [0]

    def hook(module, inputs):
        if type(module).__name__ == model_class_name and module.training:
            steps[0] += 1
            if steps[0] > after_steps:
                raise TrainingCrash("CUDA out of memory. Tried to allocate 2.00 GiB")
    return torch.nn.modules.module.register_module_forward_pre_hook(hook)


@pytest.fixture
def artifacts(tmp_path, monkeypatch):
    """The model's artifacts in a local folder (dtlpy's Artifacts repository's calls), as test_training_runs has."""
    store = ArtifactStore(tmp_path / "artifacts")
    for name, method in store.methods.items():
        monkeypatch.setattr(dl.repositories.Artifacts, name, method)
    monkeypatch.setattr(dl.entities.Model, "dataset", property(lambda self: None))
    return store


def platform_training(adapter: ModelAdapter, data: Path, tmp_path: Path, monkeypatch) -> dl.Model:
    """`train_model` as the platform runs it: each execution gets a fresh pod with the data downloaded."""
    pods = iter(range(100))

    def prepare_data(self, dataset, root_path=None, **kwargs):
        pod = tmp_path / f"pod-{next(pods)}"
        shutil.copytree(data, pod / "data")
        (pod / "output").mkdir()
        self.convert_from_dtlpy(str(pod / "data"))
        return str(pod), str(pod / "data"), str(pod / "output")

    monkeypatch.setattr(ModelAdapter, "prepare_data", prepare_data)
    model = adapter.model_entity
    model.wait_for_model_ready = lambda: model
    return model


def test_a_training_that_fails_in_its_first_epoch_stores_no_weights_with_the_model(tiny_models, tmp_path,
                                                                                 monkeypatch, artifacts):
    """dtlpy's `train_model` saves and uploads the output folder on failure too: it must not hold weights."""
    data = sentiment_layout(tmp_path / "data", train=16, validation=4)
    adapter, _ = local_adapter("distilbert-sst2", tiny_models["distilbert"], epochs=2, **FAST)
    model = platform_training(adapter, data, tmp_path, monkeypatch)
    handle = crash_in_training("DistilBertForSequenceClassification", after_steps=1)  # 2 steps per epoch
    try:
        with pytest.raises(TrainingCrash):
            adapter.train_model(model, progress=Progress())
    finally:
        handle.remove()
    stored = artifacts.files()
    assert not set(MODEL_FILES) & {Path(f).name for f in stored}, stored
    assert model.status != "trained"


def test_a_second_training_that_fails_in_its_first_epoch_publishes_nothing_of_it(tiny_models, tmp_path):
    """The same adapter trained again: the first run's completion must not let the failed second one's weights
    pass for a model (the local flow: train, then save)."""
    data = sentiment_layout(tmp_path / "data", train=16, validation=0)
    adapter, _ = local_adapter("distilbert-sst2", tiny_models["distilbert"], epochs=1, **FAST)
    adapter.train(str(data), str(tmp_path / "first"))
    adapter.save(str(tmp_path / "first"))
    handle = crash_in_training("DistilBertForSequenceClassification", after_steps=0)
    try:
        with pytest.raises(TrainingCrash):
            adapter.train(str(data), str(tmp_path / "second"))
    finally:
        handle.remove()
    adapter.save(str(tmp_path / "second"))  # as dtlpy does after a failure
    assert sorted(os.listdir(tmp_path / "second")) == ["checkpoints"]
    assert not list((tmp_path / "second" / "checkpoints").glob("checkpoint-*"))


def test_the_cli_training_that_fails_in_its_first_epoch_leaves_no_model_and_the_rerun_trains(tiny_models, tmp_path,
                                                                                            capsys):
    data = sentiment_layout(tmp_path / "data", train=16, validation=0)
    out = tmp_path / "out"
    args = ["train", "distilbert-sst2", str(data), str(out), "--model-path", str(tiny_models["distilbert"]),
            "--set", "epochs=1", *[f"--set={k}={json.dumps(v)}" for k, v in FAST.items()]]
    handle = crash_in_training("DistilBertForSequenceClassification", after_steps=1)
    try:
        with pytest.raises(TrainingCrash):
            cli_main(args)
    finally:
        handle.remove()
    assert sorted(os.listdir(out)) == ["checkpoints"] and not (out / "config.json").exists()
    assert cli_main(args) == 0  # nothing to resume: the run starts over and finishes
    assert set(MODEL_FILES) <= set(os.listdir(out))
    # the rerun trained its one epoch (epochs are counted from 1 since issue 24)
    assert [record["epoch"] for record in json.loads(capsys.readouterr().out)["epochs"]] == [1]


def test_platform_reports_that_fail_cost_the_report_not_the_training(tiny_models, tmp_path, monkeypatch, artifacts,
                                                                   caplog):
    """Metric samples, each epoch's checkpoint upload and the deletion of stored checkpoints are best effort: the
    platform refusing them is logged, and the model is trained and stored all the same."""
    data = sentiment_layout(tmp_path / "data", train=8, validation=4)
    adapter, _ = local_adapter("distilbert-sst2", tiny_models["distilbert"], epochs=2, **FAST)
    model = platform_training(adapter, data, tmp_path, monkeypatch)
    upload = artifacts.methods["upload"]
    uploads = []

    def flaky_upload(repo, filepath, **kwargs):  # the two epochs' checkpoint uploads fail, the final one works
        uploads.append(filepath)
        if len(uploads) <= 2:
            raise RuntimeError("502 Bad Gateway")
        return upload(repo, filepath, **kwargs)

    def refused(*args, **kwargs):
        raise RuntimeError("500 Internal Server Error")
    monkeypatch.setattr(dl.repositories.Artifacts, "upload", flaky_upload)
    monkeypatch.setattr(dl.repositories.Artifacts, "delete", refused)
    model.metrics.create = refused
    (artifacts.root / "checkpoints").mkdir()
    (artifacts.root / "checkpoints" / "stale.json").write_text("{}")  # stored by an earlier execution
    with caplog.at_level(logging.WARNING, logger="adapters"):
        assert adapter.train_model(model, progress=Progress()) is model
    assert model.status == "trained" and len(uploads) == 3
    assert "model.safetensors" in artifacts.files()
    warnings = caplog.text
    assert "could not upload" in warnings and "could not store the epoch's checkpoint" in warnings
    assert "could not delete the stored checkpoints" in warnings


# ----- local predictions: a model failure fails the files of its call, the others are answered -----

def test_a_model_failure_in_one_predict_call_fails_its_files_only(tiny_models, tmp_path):
    from adapters.dataloop.local_runner import LocalRunner
    runner = LocalRunner("distilbert-sst2", {"model_path": str(tiny_models["distilbert"]), "batch_size": 1})
    files = []
    for index in range(3):
        files.append(tmp_path / f"{index}.json")
        files[-1].write_text(json.dumps(legacy_item({"p": [f"text number {index}"]})))
    calls = [0]

    def second_call_fails(module, inputs):
        calls[0] += 1
        if calls[0] == 2:
            raise RuntimeError("CUDA error: an illegal memory access was encountered")
    handle = runner.adapter.hugging.model.register_forward_pre_hook(second_call_fails)
    try:
        results = runner.predict_files([str(f) for f in files])
    finally:
        handle.remove()
    assert [bool(r.error) for r in results] == [False, True, False]
    assert "prediction failed" in results[1].error and "illegal memory access" in results[1].error
    assert [len(r.annotations) for r in results] == [1, 0, 1]


# ----- exports: a derived model that fails halfway never passes for one -----

def test_an_export_that_fails_halfway_leaves_the_earlier_export_whole_and_nothing_beside_it(tiny_models, tmp_path,
                                                                                          monkeypatch):
    """The float graph is written, then quantizing it fails (a full disk): the folder keeps the earlier export."""
    import onnxruntime.quantization

    from adapters.runtimes.onnx_runtime import export_onnx
    out = tmp_path / "export"
    export_onnx(str(tiny_models["distilbert"]), out)
    earlier = snapshot(out)

    def full(*args, **kwargs):
        raise DiskFull(28, "No space left on device")
    monkeypatch.setattr(onnxruntime.quantization, "quantize_dynamic", full)
    with pytest.raises(DiskFull):
        export_onnx(str(tiny_models["distilbert"]), out, quantize="int8")
    assert snapshot(out) == earlier
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export"]


def test_a_cached_export_that_failed_is_made_again_on_the_next_load(tiny_models, tmp_path, monkeypatch, make_adapter):
    """`runtime: onnx` exports into its cache on first use: a failed export leaves no folder that a later load
    would take for a finished one."""
    from transformers import PreTrainedTokenizerBase
    monkeypatch.setenv("HF_ADAPTERS_ONNX_CACHE", str(tmp_path / "cache"))
    real = PreTrainedTokenizerBase.save_pretrained
    monkeypatch.setattr(PreTrainedTokenizerBase, "save_pretrained",
                        lambda *args, **kwargs: (_ for _ in ()).throw(DiskFull(28, "No space left on device")))
    with pytest.raises(DiskFull):
        make_adapter("models.distilbert_sst2", runtime="onnx")
    # only the weights' remembered digests and the build's lock file, never a folder a load would use
    assert [p for p in (tmp_path / "cache").iterdir() if p.name != ".digests" and p.suffix != ".lock"] == []
    monkeypatch.setattr(PreTrainedTokenizerBase, "save_pretrained", real)
    adapter = make_adapter("models.distilbert_sst2", runtime="onnx")
    (collection,) = adapter.predict([legacy_item({"p": ["fine"]})])
    assert len(collection.annotations) == 1
