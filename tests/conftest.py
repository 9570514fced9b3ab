"""Offline test setup: no hub calls, dtlpy state in a temp folder, tiny models built once per session."""
from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

_STATE = tempfile.mkdtemp(prefix="hf-adapters-tests-")
# Tiny models gain nothing from a second thread, and on shared cores OpenMP threads wait on each other far longer
# than a tiny matrix product takes (measured: 15 ms with 2 threads, 0.03 ms with 1). Subprocesses inherit this.
os.environ["OMP_NUM_THREADS"] = "1"
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["HF_HOME"] = os.path.join(_STATE, "hf")
os.environ["DATALOOP_PATH"] = os.path.join(_STATE, "dataloop")
os.environ["HOME"] = os.path.join(_STATE, "home")
os.environ["HF_ADAPTERS_CACHE"] = os.path.join(_STATE, "cache")  # kernel choices and other per-machine caches
for folder in ("hf", "dataloop", "home"):
    os.makedirs(os.path.join(_STATE, folder), exist_ok=True)

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import importlib  # noqa: E402
import resource  # noqa: E402

import pytest  # noqa: E402
from hypothesis import Phase, settings  # noqa: E402

from tests.model_factory import build_all, build_bart_nli, build_chat_lm, build_distilbert_classifier, sharpen  # noqa: E402

# Mutation testing (scripts/mutation.py, docs/testing.md): mutmut 3 sets MUTANT_UNDER_TEST in every process that runs
# the tests. There, each surviving mutant runs every example of every property test that calls it, and mutmut's
# time limit grows with those tests' usual time, so a mutant that loops waits out minutes: property tests run a
# tenth of their examples, a failure found is not shrunk (a mutant needs one failure, not the smallest), and no
# example database carries failures from one mutant to the next (each is judged by the same examples). A mutant
# that allocates without end fails with MemoryError at 8 GiB instead of starving the machine.
MUTATING = "MUTANT_UNDER_TEST" in os.environ
settings.register_profile("mutation", max_examples=25, phases=(Phase.explicit, Phase.generate), database=None,
                          deadline=None)
if MUTATING:
    settings.load_profile("mutation")
    _, hard_limit = resource.getrlimit(resource.RLIMIT_AS)
    resource.setrlimit(resource.RLIMIT_AS, (8 * 2**30 if hard_limit == resource.RLIM_INFINITY
                                            else min(8 * 2**30, hard_limit), hard_limit))


def examples(count: int) -> int:
    """A property test's number of examples: `count`, or a tenth of it (at least 25) under mutation testing."""
    return max(count // 10, 25) if MUTATING else count

MODULE_MODELS = {
    "models.distilbert_sst2": "distilbert",
    "models.bart_large_mnli": "bart",
    "models.dialogpt_large": "gpt2",
    "models.t5_email": "t5",
}
# Small answer budgets keep generation fast and inside the tiny models' 128-token window.
FAST_SETTINGS = {"models.dialogpt_large": {"max_new_tokens": 8}, "models.t5_email": {"token_count": 8}}


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> dict[str, Path]:
    """Random-weight DistilBERT, BART, GPT-2 and T5 with trained tokenizers, saved like real checkpoints."""
    return build_all(tmp_path_factory.mktemp("tiny-models"))


@pytest.fixture(scope="session")
def chat_models(tmp_path_factory) -> dict[str, Path]:
    """Tiny Qwen2, Llama and GPT-2 chat checkpoints whose tokenizers have a chat template (tests/model_factory.py)."""
    root = tmp_path_factory.mktemp("chat-models")
    return {architecture: build_chat_lm(root / architecture, architecture)
            for architecture in ("qwen2", "llama", "gpt2")}


@pytest.fixture(scope="session")
def make_adapter(tiny_models):
    """make_adapter("models.x", **configuration) -> that module's HuggingAdapter on its tiny model."""
    def make(module_name: str, **configuration):
        module = importlib.import_module(module_name)
        merged = {"model_path": str(tiny_models[MODULE_MODELS[module_name]]), **FAST_SETTINGS.get(module_name, {}),
                  **configuration}
        return module.HuggingAdapter(merged)
    return make


@pytest.fixture
def sst2(make_adapter):
    """A fresh DistilBERT classifier on its tiny model (tests replace its steps: each gets its own)."""
    return make_adapter("models.distilbert_sst2")


@pytest.fixture(scope="session")
def sharp_classifiers(tmp_path_factory) -> dict[str, Path]:
    """Sharpened tiny DistilBERT and BART by module name: their scores differ per text (the plain tiny ones give
    every text the same answer at ~0.5, so comparisons between two runs of them cannot fail)."""
    root = tmp_path_factory.mktemp("sharp-classifiers")
    return {"models.distilbert_sst2": sharpen(build_distilbert_classifier(root / "distilbert")),
            "models.bart_large_mnli": sharpen(build_bart_nli(root / "bart"))}


@pytest.fixture
def nothing_loads(monkeypatch):
    """Fail the test if a tokenizer, model weights or a pickle would be read (refusals must come first)."""
    from types import SimpleNamespace

    from adapters.core import loading
    from adapters.core.module_loader import available_modules, load_model_module

    def refuse(*args, **kwargs):
        raise AssertionError("something was loaded before the configuration was refused")
    monkeypatch.setattr(loading, "AutoTokenizer", SimpleNamespace(from_pretrained=refuse))
    monkeypatch.setattr("torch.load", refuse)
    for name in available_modules():
        monkeypatch.setattr(load_model_module(name).HuggingAdapter, "model_class", SimpleNamespace(from_pretrained=refuse))
