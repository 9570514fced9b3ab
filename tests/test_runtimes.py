"""The runtimes: CTranslate2 answers as torch does (greedy float32), honours every generation setting, caches its
conversion; each module refuses the runtimes its task cannot use before anything is loaded."""
from __future__ import annotations

import importlib
import os
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from adapters.core.errors import ConfigurationError
from adapters.runtimes import CLASSIFY, GENERATE, RUNTIMES, ctranslate2_runtime, derived, runtimes_of
from tests.model_factory import build_gpt2_lm, build_t5
from tests.prompt_factory import answers, current_item, legacy_item
from tests.tolerances import confidence_rtol

MODULES = {"models.t5_email": "t5", "models.dialogpt_large": "gpt2"}
BUDGET = {"models.t5_email": "token_count", "models.dialogpt_large": "max_new_tokens"}
QUESTIONS = ["we will have a system update on friday", "please backup your work", "hi",
             "lunch is moved to noon tomorrow", "the quarterly report is attached"]


@pytest.fixture(scope="module")
def generators(tiny_models, tmp_path_factory):
    """model paths per module; T5 re-drawn at a smaller scale so its token probabilities are not all ~1."""
    return {"models.t5_email": build_t5(tmp_path_factory.mktemp("t5-soft") / "t5",
                                        config_overrides={"initializer_factor": 3.0}),
            "models.dialogpt_large": tiny_models["gpt2"]}


@pytest.fixture(autouse=True)
def conversion_cache(tmp_path_factory, monkeypatch):
    """One conversion cache for the module's tests (conversions are reused, as in production)."""
    monkeypatch.setenv("HF_ADAPTERS_CTRANSLATE2_CACHE", str(tmp_path_factory.getbasetemp() / "ct2-cache"))


def adapter(generators, module_name, **configuration):
    module = importlib.import_module(module_name)
    return module.HuggingAdapter({"model_path": str(generators[module_name]), BUDGET[module_name]: 8,
                                  "do_sample": False, **configuration})


def batch():
    """Questions of both formats; for the chat model, two multi-turn conversations (history and trimming run)."""
    return [legacy_item({"a": QUESTIONS[:3], "b": QUESTIONS[3:]}), current_item({"1": [QUESTIONS[2]],
                                                                                 "2": [QUESTIONS[0]]})]


def predicted(model) -> list[tuple[str, str, float]]:
    result = [a for collection in model.predict(batch()) for a in answers(collection)]
    assert len(result) == 7 and not model.last_report.skipped
    return result


def generations(model, texts=QUESTIONS):
    """The runtime's raw output for one padded batch: per row, the list of Generated (n_gen of them)."""
    rows = [row for text in texts for row in model.encode(text)]
    inputs = model.tokenizer.pad(rows, padding=True, return_tensors="pt")
    with torch.inference_mode():
        return model.forward(dict(inputs))


def texts_of(outputs) -> list[list[str]]:
    return [[str(g.token_ids) for g in row] for row in outputs]


@pytest.mark.parametrize("module_name", MODULES)
def test_greedy_float32_answers_and_confidence_equal_torch(generators, module_name):
    expected = predicted(adapter(generators, module_name))
    model = adapter(generators, module_name, runtime="ctranslate2", compute_type="float32")
    assert isinstance(model.model, ctranslate2_runtime.CTranslate2Model)
    actual = predicted(model)
    assert [text for _, text, _ in actual] == [text for _, text, _ in expected]
    # another engine's float32 kernels (CTranslate2 picks its own per CPU): rounding of the logits (tests/tolerances.py)
    tolerance = confidence_rtol("t5-soft" if module_name == "models.t5_email" else "gpt2")
    assert [c for _, _, c in actual] == pytest.approx([c for _, _, c in expected], rel=tolerance)
    assert len({round(c, 3) for _, _, c in expected}) > 2  # confidences that differ: the comparison means something
    assert len({text for _, text, _ in expected}) > 2


@pytest.mark.parametrize("module_name", MODULES)
def test_int8_runs_and_stays_in_range(generators, module_name):
    model = adapter(generators, module_name, runtime="ctranslate2")  # compute_type 'default': int8 on CPU
    assert model.model.engine.compute_type == "int8_float32"
    predicted(model)  # every question answered
    # The runtime's own confidences, before predict clamps them into [0, 1] for the annotation.
    assert all(0.0 <= g.confidence <= 1.0 for row in generations(model) for g in row)


@pytest.mark.parametrize("module_name", MODULES)
def test_budget_sampling_and_seed_are_honoured(generators, module_name):
    greedy = adapter(generators, module_name, runtime="ctranslate2", compute_type="float32")
    reference = texts_of(generations(greedy))

    def sampled(**settings):
        model = adapter(generators, module_name, runtime="ctranslate2", compute_type="float32", do_sample=True,
                        **settings)
        return texts_of(generations(model))

    hot = {"temperature": 10.0, "top_k": 0, "top_p": 1.0}
    assert sampled(seed=1, **hot) == sampled(seed=1, **hot)  # seed: reproducible
    assert sampled(seed=1, **hot) != reference and sampled(seed=2, **hot) != sampled(seed=1, **hot)
    assert sampled(seed=1, **{**hot, "temperature": 0.01}) == reference  # temperature reaches the sampler
    assert sampled(seed=1, **{**hot, "top_k": 1}) == reference  # top-k
    assert sampled(seed=1, **{**hot, "top_p": 1e-6}) == reference  # top-p

    short = adapter(generators, module_name, runtime="ctranslate2", compute_type="float32", **{BUDGET[module_name]: 3})
    lengths = [len(g.token_ids) for row in generations(short) for g in row]
    assert max(lengths) == 3 and max(len(g.token_ids) for row in generations(greedy) for g in row) > 3


@pytest.mark.parametrize("module_name", MODULES)
def test_a_top_k_past_the_vocabulary_samples_from_all_of_it(generators, module_name):
    """`top_k` larger than the vocabulary failed every CTranslate2 batch; it is clamped, as transformers does."""
    def sampled(top_k):
        model = adapter(generators, module_name, runtime="ctranslate2", compute_type="float32", do_sample=True,
                        temperature=10.0, top_k=top_k, seed=1)
        return texts_of(generations(model)), len(model.model.tokens)

    whole, vocabulary = sampled(100_000)
    assert vocabulary < 100_000 and all(whole) and sampled(vocabulary + 1)[0] == sampled(vocabulary)[0]


def test_beams_and_n_gen_are_honoured(generators):
    module_name = "models.t5_email"
    beams = adapter(generators, module_name, runtime="ctranslate2", compute_type="float32", num_beams=4, n_gen=3)
    outputs = generations(beams)
    assert [len(row) for row in outputs] == [3] * len(QUESTIONS)
    assert all(len({str(g.token_ids) for g in row}) == 3 for row in outputs)  # three different beams
    one_beam = adapter(generators, module_name, runtime="ctranslate2", compute_type="float32", num_beams=4)
    greedy = adapter(generators, module_name, runtime="ctranslate2", compute_type="float32")
    assert texts_of(generations(one_beam)) != texts_of(generations(greedy))
    best = [row[0].confidence for row in generations(one_beam)]
    # the best beam comes first: the same search, maybe batched otherwise (one hypothesis kept, not three)
    assert best == pytest.approx([row[0].confidence for row in outputs], rel=confidence_rtol("t5-soft"))
    sampled = adapter(generators, module_name, runtime="ctranslate2", compute_type="float32", do_sample=True,
                      temperature=10.0, n_gen=4, seed=3)
    rows = generations(sampled)
    assert [len(row) for row in rows] == [4] * len(QUESTIONS)
    assert any(len({str(g.token_ids) for g in row}) > 1 for row in rows)
    assert all(0.0 <= g.confidence <= 1.0 for row in rows for g in row)


def test_an_embedding_table_larger_than_the_tokenizer_converts(tmp_path):
    """Models padded or resized past their tokenizer (GPT-2's loader would refuse the vocabulary) answer as torch."""
    generators = {"models.dialogpt_large": build_gpt2_lm(tmp_path / "gpt2", config_overrides={"vocab_size": 700})}
    expected = predicted(adapter(generators, "models.dialogpt_large"))
    actual = predicted(adapter(generators, "models.dialogpt_large", runtime="ctranslate2", compute_type="float32"))
    assert [text for _, text, _ in actual] == [text for _, text, _ in expected] and any(t for _, t, _ in expected)


def test_conversion_is_cached_and_reused(generators, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_ADAPTERS_CTRANSLATE2_CACHE", str(tmp_path / "cache"))
    first = adapter(generators, "models.dialogpt_large", runtime="ctranslate2", compute_type="float32")
    folder = first.model.folder
    assert folder.parent == tmp_path / "cache" and (folder / ctranslate2_runtime.CONVERSION_INFO).is_file()

    def no_conversion(*args, **kwargs):
        raise AssertionError("converted again")
    monkeypatch.setattr(ctranslate2_runtime, "convert", no_conversion)
    again = adapter(generators, "models.dialogpt_large", runtime="ctranslate2", compute_type="float32")
    assert again.model.folder == folder
    as_path = adapter(generators, "models.dialogpt_large", runtime="ctranslate2", compute_type="float32",
                      model_path=str(folder))  # a conversion folder is a model_path of its own
    assert as_path.model.folder == folder and predicted(as_path) == predicted(again)
    with pytest.raises(AssertionError, match="converted again"):  # int8 weights are a conversion of their own
        adapter(generators, "models.dialogpt_large", runtime="ctranslate2", compute_type="int8")
    left = sorted(p.name for p in (tmp_path / "cache").iterdir() if p.name != ".digests" and p.suffix != ".lock")
    assert left == [folder.name]  # no staging left behind


def replace_in_place(folder: Path, other: Path, name: str = "model.safetensors") -> None:
    """Put `other`'s file over `folder`'s with the same size and times, as `cp -p` or `tar` leave them."""
    target, source = folder / name, other / name
    assert target.stat().st_size == source.stat().st_size  # the same shapes: a size check cannot tell them apart
    times = (target.stat().st_atime_ns, target.stat().st_mtime_ns)
    shutil.copyfile(source, target)
    os.utime(target, ns=times)


def test_weights_replaced_in_place_with_the_same_size_and_time_are_converted_again(tmp_path, monkeypatch):
    """The cache key was the files' names, sizes and times: weights replaced by `cp -p` ran the stale conversion."""
    monkeypatch.setenv("HF_ADAPTERS_CTRANSLATE2_CACHE", str(tmp_path / "cache"))
    folder = build_gpt2_lm(tmp_path / "gpt2", seed=0)
    generators = {"models.dialogpt_large": folder}
    first = adapter(generators, "models.dialogpt_large", runtime="ctranslate2", compute_type="float32")
    before = predicted(first)
    replace_in_place(folder, build_gpt2_lm(tmp_path / "other", seed=5))
    again = adapter(generators, "models.dialogpt_large", runtime="ctranslate2", compute_type="float32")
    assert again.model.folder != first.model.folder
    after, torch_after = predicted(again), predicted(adapter(generators, "models.dialogpt_large"))
    assert [text for _, text, _ in after] == [text for _, text, _ in torch_after]  # the new weights' answers
    assert [c for _, _, c in after] == pytest.approx([c for _, _, c in torch_after], rel=1e-4)
    assert [text for _, text, _ in after] != [text for _, text, _ in before]


def test_a_conversion_of_another_architecture_is_refused_like_its_weights(generators, tmp_path, monkeypatch):
    """A t5-email adapter whose model_path held DialoGPT weights loaded DialoGPT's cached conversion and answered."""
    monkeypatch.setenv("HF_ADAPTERS_CTRANSLATE2_CACHE", str(tmp_path / "cache"))
    chat = adapter(generators, "models.dialogpt_large", runtime="ctranslate2", compute_type="float32")
    for model_path in (generators["models.dialogpt_large"], chat.model.folder):  # the weights, or the conversion
        with pytest.raises(ConfigurationError, match="holds a 'gpt2' model.*which AutoModelForSeq2SeqLM cannot run"):
            adapter(generators, "models.t5_email", runtime="ctranslate2", compute_type="float32",
                    model_path=str(model_path))
    with pytest.raises(ConfigurationError, match="holds a 'gpt2' model, which AutoModelForSeq2SeqLM cannot run"):
        adapter(generators, "models.t5_email", model_path=str(generators["models.dialogpt_large"]))  # as torch says


def test_concurrent_first_conversions_publish_one_complete_folder(generators, tmp_path, monkeypatch):
    """Four loads at once into an empty cache: one converts, the others wait for it and use its folder."""
    monkeypatch.setenv("HF_ADAPTERS_CTRANSLATE2_CACHE", str(tmp_path / "cache"))
    conversions = []
    convert = ctranslate2_runtime.convert

    def counted(*args, **kwargs):
        conversions.append(args)
        time.sleep(0.5)  # long enough for every other load to arrive while it runs
        return convert(*args, **kwargs)
    monkeypatch.setattr(ctranslate2_runtime, "convert", counted)
    with ThreadPoolExecutor(4) as pool:
        folders = list(pool.map(lambda _: ctranslate2_runtime.converted_folder(
            AutoModelForCausalLM, str(generators["models.dialogpt_large"]), "float32"), range(4)))
    assert len(set(folders)) == 1 and len(conversions) == 1
    assert not [p for p in (tmp_path / "cache").iterdir() if p.name.startswith((".staging", f".{folders[0].name}"))]


def test_an_incomplete_or_foreign_folder_in_the_cache_is_rebuilt(generators, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_ADAPTERS_CTRANSLATE2_CACHE", str(tmp_path / "cache"))
    root = tmp_path / "cache"
    model_path = str(generators["models.dialogpt_large"])
    folder = derived.derived_folder(model_path, AutoModelForCausalLM, root, "float32")
    (folder / "ctranslate2").mkdir(parents=True)
    (folder / "ctranslate2" / "model.bin").write_bytes(b"half of a conversion")  # a build that died
    (folder / "notes.txt").write_text("not ours")
    model = adapter(generators, "models.dialogpt_large", runtime="ctranslate2", compute_type="float32")
    assert model.model.folder == folder and not (folder / "notes.txt").exists() and predicted(model)


def test_a_ctranslate2_model_only_generates(generators):
    model = adapter(generators, "models.t5_email", runtime="ctranslate2", compute_type="float32")
    with pytest.raises(AttributeError, match="use runtime 'torch' to fine-tune"):
        model.model.named_parameters()


@pytest.mark.parametrize("module_name, runtime", [
    ("models.distilbert_sst2", "ctranslate2"), ("models.bart_large_mnli", "ctranslate2"),
    ("models.t5_email", "onnx"), ("models.dialogpt_large", "onnx"), ("models.t5_email", "tensorrt")])
def test_a_runtime_the_module_cannot_use_is_refused_before_loading(module_name, runtime):
    module = importlib.import_module(module_name)
    with pytest.raises(ConfigurationError, match=rf"'runtime' must be one of .*got '{runtime}'"):
        module.HuggingAdapter({"model_path": "/no/such/folder", "runtime": runtime})


def test_modules_accept_exactly_the_runtimes_of_their_task():
    for module_name, task in [("models.distilbert_sst2", CLASSIFY), ("models.bart_large_mnli", CLASSIFY),
                              ("models.t5_email", GENERATE), ("models.dialogpt_large", GENERATE)]:
        settings = importlib.import_module(module_name).HuggingAdapter.settings
        assert set(runtimes_of(settings)) == {name for name, r in RUNTIMES.items() if task in r.tasks}
    assert runtimes_of(importlib.import_module("models.t5_email").HuggingAdapter.settings) == ("torch", "ctranslate2")


def test_a_runtime_that_serves_generation_must_define_generate():
    from adapters.runtimes.base import GENERATE, Runtime

    with pytest.raises(TypeError, match="serves 'generate' but defines no generate"):
        type("Incomplete", (Runtime,), {"name": "x", "doc": "", "tasks": frozenset({GENERATE}),
                                        "load": lambda self, *a: None})
