"""`dtype` on the torch runtime: bfloat16 runs in bfloat16 and answers as float32 does within its rounding;
float32 is loaded whatever type the weights were saved in; what cannot apply is refused before weights are read."""
from __future__ import annotations

import importlib
import math

import pytest
import torch
from torch import nn

from adapters.core.errors import ConfigurationError
from adapters.core.generation import generate_with_confidence
from adapters.runtimes.cpu_kernels import onednn_available, onednn_runs, use_onednn_linears
from tests.prompt_factory import current_item
from tests.references import recomputed_confidence
from tests.test_classifiers import TEXTS
from tests.tolerances import BFLOAT16_PROBABILITY_ATOL, U_BF16

BFLOAT16_TOLERANCE = BFLOAT16_PROBABILITY_ATOL  # bfloat16's drift from float32 (tests/tolerances.py)


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
    """The confidence is exp(mean log p) of the tokens written (end token included), under the bfloat16 model.

    It is compared with transformers' own `generate` run on the same padded batch (its raw logits): the same
    bfloat16 arithmetic, so only the float32 mean of a few log-probabilities rounds differently. A separate forward
    pass would not do: it rounds each logit to bfloat16 on its own (an ulp of a logit of 17 is 0.125), so it may
    differ by far more than a wrong confidence would.
    """
    path = tiny_models[{"models.t5_email": "t5", "models.dialogpt_large": "gpt2"}[module_name]]
    budget = {"models.t5_email": "token_count", "models.dialogpt_large": "max_new_tokens"}[module_name]
    half = adapter(module_name, path, dtype="bfloat16", do_sample=False, **{budget: 6})
    full = adapter(module_name, path, do_sample=False, **{budget: 6})
    assert {p.dtype for p in half.model.parameters()} == {torch.bfloat16}
    rows = [row for text in ["please backup your work", "hi", "lunch is at noon"] for row in half.encode(text)]
    inputs = dict(half.tokenizer.pad(rows, padding=True, return_tensors="pt"))
    generated = generate_with_confidence(half.model, inputs, half.generation_config, seed=None)
    assert len(generated) == len(rows)
    with torch.inference_mode():
        replay = half.model.generate(**inputs, generation_config=half.generation_config, output_logits=True)
    start = 1 if half.model.config.is_encoder_decoder else inputs["input_ids"].shape[1]
    eos = half.generation_config.eos_token_id
    drift = 0.0
    for index, (row, result) in enumerate(zip(rows, generated)):
        answer = result.token_ids + ([eos] if len(result.token_ids) < 6 else [])
        assert replay.sequences[index, start:start + len(answer)].tolist() == answer
        logprobs = [float(torch.log_softmax(step[index].float(), -1)[token])
                    for step, token in zip(replay.logits, answer)]
        # the same logits: only the mean of <= 6 log-probabilities (|log p| <= 20) is summed otherwise, <= 6 u of 120
        assert result.confidence == pytest.approx(math.exp(sum(logprobs) / len(logprobs)), rel=2**-16)
        drift = max(drift, abs(result.confidence - recomputed_confidence(full.model, row, answer)))
    assert drift > 1e-6  # the arithmetic really ran in bfloat16: float32 gives these tokens other probabilities
    assert len({round(g.confidence, 3) for g in generated}) == len(rows)  # told apart: the comparison can fail


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


@pytest.mark.skipif(not onednn_available() or not onednn_runs(torch.bfloat16),
                    reason="this torch build or CPU has no oneDNN bfloat16 kernel (AVX-512 or AMX)")
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
    # both kernels accumulate in float32 and round each layer's output to bfloat16: one rounding (2 U_BF16) apart
    # at each of the two layers
    assert torch.allclose(routed.float(), expected.float(), rtol=4 * U_BF16, atol=4 * U_BF16)
