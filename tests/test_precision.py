"""`dtype` on the torch runtime: bfloat16 runs in bfloat16 and answers as float32 does within its rounding;
float32 is loaded whatever type the weights were saved in; what cannot apply is refused before weights are read."""
from __future__ import annotations

import importlib

import pytest
import torch
from torch import nn

from adapters.core.errors import ConfigurationError
from adapters.core.generation import generate_with_confidence
from adapters.runtimes.cpu_kernels import onednn_available, use_onednn_linears
from tests.prompt_factory import current_item
from tests.references import recomputed_confidence
from tests.test_classifiers import TEXTS

BFLOAT16_TOLERANCE = 3e-2  # bfloat16 keeps 8 bits of mantissa: scores and probabilities move by about 1e-2


def adapter(module_name: str, path, **configuration):
    return importlib.import_module(module_name).HuggingAdapter({"model_path": str(path), **configuration})


def scores(model) -> list[dict[str, float]]:
    """Each text's score per label, as the answers report them."""
    (collection,) = model.predict([current_item({str(i): [text] for i, text in enumerate(TEXTS)})])
    outputs = [a.metadata["user"]["model_output"] for a in collection.annotations]
    assert len(outputs) == len(TEXTS)
    if "labels" in outputs[0]:  # zero-shot
        return [dict(zip(o["labels"], o["scores"])) for o in outputs]
    return [o["scores"] for o in outputs]


@pytest.mark.parametrize("module_name", ["models.distilbert_sst2", "models.bart_large_mnli"])
def test_bfloat16_classifiers_compute_in_bfloat16_and_score_as_float32_within_its_rounding(sharp_classifiers,
                                                                                          module_name):
    path = sharp_classifiers[module_name]
    full = adapter(module_name, path, batch_size=3)
    half = adapter(module_name, path, batch_size=3, dtype="bfloat16")
    assert {p.dtype for p in half.model.parameters()} == {torch.bfloat16}
    assert {p.dtype for p in full.model.parameters()} == {torch.float32}
    expected, actual = scores(full), scores(half)
    assert len(expected) == len(actual) == len(TEXTS)
    largest = 0.0
    for want, got in zip(expected, actual):
        assert got.keys() == want.keys()
        assert got == pytest.approx(want, abs=BFLOAT16_TOLERANCE)
        largest = max(largest, *(abs(got[k] - want[k]) for k in want))
        ranked = sorted(want.values(), reverse=True)
        if ranked[0] - ranked[1] > 2 * BFLOAT16_TOLERANCE:  # a clear winner stays the winner
            assert max(got, key=got.get) == max(want, key=want.get)
    assert largest > 1e-6  # the arithmetic really ran in bfloat16, not in float32 behind a bfloat16 label


@pytest.mark.parametrize("module_name", ["models.dialogpt_large", "models.t5_email"])
def test_bfloat16_generators_answer_with_the_confidence_of_their_tokens(tiny_models, module_name):
    """The confidence is recomputed over the same tokens by a separate forward pass of the bfloat16 model (to its
    rounding), and of the float32 one within bfloat16's drift over a few tokens."""
    path = tiny_models[{"models.t5_email": "t5", "models.dialogpt_large": "gpt2"}[module_name]]
    budget = {"models.t5_email": "token_count", "models.dialogpt_large": "max_new_tokens"}[module_name]
    half = adapter(module_name, path, dtype="bfloat16", do_sample=False, **{budget: 6})
    full = adapter(module_name, path, do_sample=False, **{budget: 6})
    assert {p.dtype for p in half.model.parameters()} == {torch.bfloat16}
    rows = [row for text in ["please backup your work", "hi", "lunch is at noon"] for row in half.encode(text)]
    inputs = dict(half.tokenizer.pad(rows, padding=True, return_tensors="pt"))
    generated = generate_with_confidence(half.model, inputs, half.generation_config, seed=None)
    assert len(generated) == len(rows)
    eos = half.generation_config.eos_token_id
    for row, result in zip(rows, generated):
        answer = result.token_ids + ([eos] if len(result.token_ids) < 6 else [])
        assert result.confidence == pytest.approx(recomputed_confidence(half.model, row, answer), rel=1e-2)
        assert result.confidence == pytest.approx(recomputed_confidence(full.model, row, answer), rel=5e-2)
    assert len({round(g.confidence, 3) for g in generated}) == len(rows)  # told apart: the comparisons can fail


def test_weights_saved_in_half_precision_load_as_float32_by_default(tiny_models, tmp_path):
    from transformers import DistilBertForSequenceClassification, DistilBertTokenizerFast
    saved = tmp_path / "half"
    DistilBertForSequenceClassification.from_pretrained(tiny_models["distilbert"], dtype=torch.float16) \
        .save_pretrained(saved)
    DistilBertTokenizerFast.from_pretrained(tiny_models["distilbert"]).save_pretrained(saved)
    model = adapter("models.distilbert_sst2", saved)
    assert {p.dtype for p in model.model.parameters()} == {torch.float32}


def test_float16_on_a_cpu_is_refused_before_weights_are_read(nothing_loads, tiny_models):
    with pytest.raises(ConfigurationError, match="'float16' runs on CUDA GPUs only"):
        adapter("models.distilbert_sst2", tiny_models["distilbert"], dtype="float16", device="cpu")


@pytest.mark.parametrize("module_name, configuration, key", [
    ("models.distilbert_sst2", {"runtime": "onnx", "dtype": "bfloat16"}, "dtype"),
    ("models.t5_email", {"runtime": "ctranslate2", "dtype": "bfloat16"}, "dtype"),
    ("models.t5_email", {"runtime": "torch", "compute_type": "int8"}, "compute_type"),
])
def test_a_key_of_another_runtime_is_refused_before_weights_are_read(nothing_loads, tiny_models,
                                                                     module_name, configuration, key):
    with pytest.raises(ConfigurationError, match=f"'{key}' is read by runtime '.*' only"):
        adapter(module_name, tiny_models["t5"], **configuration)


def test_fine_tuning_a_bfloat16_configuration_is_refused_before_the_data_is_read(sharp_classifiers, tmp_path):
    from adapters.training.trainer import prepare
    model = adapter("models.distilbert_sst2", sharp_classifiers["models.distilbert_sst2"], dtype="bfloat16")
    with pytest.raises(ConfigurationError, match="fine-tuning trains float32 weights"):
        prepare(model, tmp_path / "no-such-folder")


@pytest.mark.skipif(not onednn_available(), reason="this torch build has no oneDNN")
def test_bfloat16_layers_routed_through_onednn_match_the_default_kernel(monkeypatch):
    monkeypatch.setenv("HF_ADAPTERS_ONEDNN", "1")
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 96), nn.GELU(), nn.Linear(96, 32)).to(torch.bfloat16)
    reference = nn.Sequential(nn.Linear(64, 96), nn.GELU(), nn.Linear(96, 32)).to(torch.bfloat16)
    reference.load_state_dict(model.state_dict())
    assert use_onednn_linears(model) == 2
    x = torch.randn(4, 7, 64).to(torch.bfloat16)
    with torch.inference_mode():
        routed, expected = model(x), reference(x)
    assert routed.dtype == torch.bfloat16
    assert torch.allclose(routed.float(), expected.float(), rtol=2e-2, atol=2e-2)
