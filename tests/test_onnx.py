"""The ONNX Runtime backend: same answers as torch through the full predict, int8 close, export CLI, refusals."""
import os
import subprocess
import sys

import pytest

from adapters.core.errors import ConfigurationError
from tests.conftest import ROOT
from tests.model_factory import build_bart_nli, build_distilbert_classifier
from tests.prompt_factory import current_item, legacy_item
from tests.test_classifiers import TEXTS, sharpen
from tests.tolerances import INT8_PROBABILITY_ATOL, PROBABILITY_ATOL

INT8_SCORE_TOLERANCE = INT8_PROBABILITY_ATOL  # int8's drift from float32 (tests/tolerances.py)
LABELS = ["sports", "politics", "cooking", "travel", "music"]


@pytest.fixture(scope="module")
def classifier_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("onnx-classifiers")
    return {"models.distilbert_sst2": sharpen(build_distilbert_classifier(root / "distilbert")),
            "models.bart_large_mnli": sharpen(build_bart_nli(root / "bart"))}


def scored_answers(module_name, configuration):
    """(answer text, {label: score}) of every question of a fixed two-item batch, via the module's full predict."""
    import importlib
    adapter = importlib.import_module(module_name).HuggingAdapter(
        {"candidate_labels": LABELS, "batch_size": 4, **configuration} if "bart" in module_name else
        {"batch_size": 4, **configuration})
    batch = [legacy_item({"p": TEXTS[:3]}), current_item({**{str(i): [t] for i, t in enumerate(TEXTS[3:])}, "9": ["a short one"]})]
    results = []
    for collection in adapter.predict(batch):
        for annotation in collection.annotations:
            output = annotation.metadata["user"]["model_output"]
            scores = output["scores"] if isinstance(output["scores"], dict) else dict(zip(output["labels"], output["scores"]))
            results.append((annotation.coordinates, scores))
    assert len(results) == len(TEXTS) + 1 and not adapter.last_report.skipped
    return adapter, results


def max_score_change(expected, actual):
    return max(abs(expected_scores[label] - actual_scores[label])
               for (_, expected_scores), (_, actual_scores) in zip(expected, actual) for label in expected_scores)


@pytest.mark.parametrize("module_name", ["models.distilbert_sst2", "models.bart_large_mnli"])
def test_onnx_answers_equal_torch(classifier_dirs, module_name):
    model_path = str(classifier_dirs[module_name])
    torch_adapter, expected = scored_answers(module_name, {"model_path": model_path})
    onnx_adapter, actual = scored_answers(module_name, {"model_path": model_path, "runtime": "onnx"})
    assert type(torch_adapter.model).__name__ != "OnnxModel" and type(onnx_adapter.model).__name__ == "OnnxModel"
    assert [label for label, _ in actual] == [label for label, _ in expected]
    assert max_score_change(expected, actual) < PROBABILITY_ATOL  # another engine's float32 rounding
    assert len({round(max(s.values()), 4) for _, s in expected}) > 1  # the texts get different scores


def test_export_cli_and_int8_quantization(classifier_dirs, tmp_path):
    """The CLI writes an int8 export that the backend runs, with scores within the stated tolerance of torch."""
    model_path = str(classifier_dirs["models.distilbert_sst2"])
    out = tmp_path / "sst2-int8"
    done = subprocess.run([sys.executable, "-m", "adapters", "export-onnx", "distilbert-sst2", str(out),
                           "--model-path", model_path, "--quantize", "int8"],
                          cwd=ROOT, env={**os.environ, "HF_HUB_OFFLINE": "1"}, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert (out / "model.onnx").is_file() and (out / "config.json").is_file() and str(out) in done.stdout
    assert "pre-processing" not in done.stderr and "onnxruntime" not in done.stderr  # its advice stays at DEBUG
    _, expected = scored_answers("models.distilbert_sst2", {"model_path": model_path})
    _, actual = scored_answers("models.distilbert_sst2", {"model_path": str(out), "runtime": "onnx"})
    change = max_score_change(expected, actual)
    assert 0 < change < INT8_SCORE_TOLERANCE  # int8 really is in use, and stays close


def test_int8_zero_shot_stays_close(classifier_dirs, tmp_path):
    from adapters.runtimes.onnx_runtime import export_onnx
    model_path = str(classifier_dirs["models.bart_large_mnli"])
    folder = export_onnx(model_path, tmp_path / "bart-int8", quantize="int8")
    _, expected = scored_answers("models.bart_large_mnli", {"model_path": model_path})
    _, actual = scored_answers("models.bart_large_mnli", {"model_path": str(folder), "runtime": "onnx"})
    assert max_score_change(expected, actual) < INT8_SCORE_TOLERANCE


def test_unknown_runtime_and_unsupported_export_are_refused(make_adapter, tmp_path, capsys):
    from adapters.cli import main
    with pytest.raises(ConfigurationError, match="'runtime' must be one of"):
        make_adapter("models.distilbert_sst2", runtime="tensorrt")
    assert main(["export-onnx", "dialogpt-large", str(tmp_path / "x")]) == 2
    assert "does not support runtime 'onnx'" in capsys.readouterr().err


def test_export_never_replaces_a_folder_it_did_not_write(tiny_models, tmp_path):
    from adapters.runtimes.onnx_runtime import export_onnx
    (tmp_path / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError):
        export_onnx(str(tiny_models["distilbert"]), tmp_path)
    assert (tmp_path / "notes.txt").read_text() == "keep me"


def test_onnx_model_says_it_cannot_train(make_adapter):
    adapter = make_adapter("models.distilbert_sst2", runtime="onnx")
    with pytest.raises(AttributeError, match="use runtime 'torch' to fine-tune"):
        adapter.model.named_parameters()


@pytest.fixture
def onnx_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_ADAPTERS_ONNX_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_weights_replaced_in_place_with_the_same_size_and_time_are_exported_again(tmp_path, onnx_cache):
    from tests.test_runtimes import replace_in_place
    folder = sharpen(build_distilbert_classifier(tmp_path / "distilbert"))
    _, before = scored_answers("models.distilbert_sst2", {"model_path": str(folder), "runtime": "onnx"})
    replace_in_place(folder, sharpen(build_distilbert_classifier(tmp_path / "other", seed=3), seed=3))
    adapter, after = scored_answers("models.distilbert_sst2", {"model_path": str(folder), "runtime": "onnx"})
    _, expected = scored_answers("models.distilbert_sst2", {"model_path": str(folder)})
    assert max_score_change(expected, after) < 1e-4 and max_score_change(before, after) > 1e-3
    assert len([p for p in onnx_cache.iterdir() if not p.name.startswith(".") and p.suffix != ".lock"]) == 2


def test_four_concurrent_first_exports_publish_one_complete_folder(tiny_models, onnx_cache, monkeypatch):
    """Four concurrent exports into an empty cache: one died with `Directory not empty`."""
    import time
    from concurrent.futures import ThreadPoolExecutor

    from transformers import AutoModelForSequenceClassification

    from adapters.runtimes import onnx_runtime
    exports = []
    export = onnx_runtime.export_onnx

    def counted(*args, **kwargs):
        exports.append(args)
        time.sleep(0.5)  # every other load arrives while this one runs
        return export(*args, **kwargs)
    monkeypatch.setattr(onnx_runtime, "export_onnx", counted)
    with ThreadPoolExecutor(4) as pool:
        folders = list(pool.map(lambda _: onnx_runtime.exported_folder(
            AutoModelForSequenceClassification, str(tiny_models["distilbert"])), range(4)))
    assert len(set(folders)) == 1 and len(exports) == 1 and (folders[0] / "model.onnx").is_file()
    assert not [p for p in onnx_cache.iterdir() if p.name.startswith(".staging")]
