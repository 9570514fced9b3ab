"""CTranslate2 decodes as the torch runtime decides to: a fresh sample without a seed, and every end token the
model's generation config names."""
from __future__ import annotations

import json
import shutil

from tests.model_factory import build_gpt2_lm
from tests.test_runtimes import adapter, conversion_cache, generations, generators, texts_of  # noqa: F401

HOT = {"do_sample": True, "temperature": 10.0, "top_k": 0, "top_p": 1.0}
# Each is at least two tokens, as every prompt DialoGPT's `preprocess` builds (text, then its end token). A batch
# that mixes a one-token prompt with longer ones is decoded wrongly by CTranslate2 4.8.5's Generator (the longer
# prompts' answers change); no prompt this package builds has one token (docs/testing.md).
QUESTIONS = ["we will have a system update on friday", "please backup your work", "lunch is moved to noon tomorrow",
             "the quarterly report is attached"]


def test_without_a_seed_each_ctranslate2_call_samples_afresh(generators):  # noqa: F811
    """`seed: null` promises a fresh sample per call, on every runtime (the torch runtime's is tested in
    test_generators.py)."""
    def first_sample() -> str:  # a freshly loaded model's first call: where CTranslate2 seeds its generator
        model = adapter(generators, "models.dialogpt_large", runtime="ctranslate2", compute_type="float32",
                        seed=None, **HOT)
        return str(texts_of(generations(model, QUESTIONS)))

    assert len({first_sample() for _ in range(3)}) > 1


def test_ctranslate2_ends_an_answer_at_any_end_token_of_the_generation_config(tmp_path, conversion_cache):  # noqa: F811
    """A model whose generation config names several end tokens (as Llama 3's does): the converted model stops at
    each of them as `generate` does, not only at the tokenizer's end token."""
    path = build_gpt2_lm(tmp_path / "gpt2")
    plain = {"models.dialogpt_large": path}
    first = texts_of(generations(adapter(plain, "models.dialogpt_large"), QUESTIONS))
    answer = [int(t) for t in first[0][0].strip("[]").split(", ")]
    others = {int(t) for row in first[1:] for t in row[0].strip("[]").split(", ") if t}
    stop = next(token for i, token in enumerate(answer) if i > 0 and token not in answer[:i] and token not in others)
    config_file = path / "generation_config.json"
    config = json.loads(config_file.read_text()) if config_file.is_file() else {}
    config["eos_token_id"] = [config.get("eos_token_id", 0), stop]
    ended = tmp_path / "gpt2-two-ends"
    shutil.copytree(path, ended)
    (ended / "generation_config.json").write_text(json.dumps(config))
    models = {"models.dialogpt_large": ended}
    torch_answers = texts_of(generations(adapter(models, "models.dialogpt_large"), QUESTIONS))
    converted = texts_of(generations(adapter(models, "models.dialogpt_large", runtime="ctranslate2",
                                             compute_type="float32"), QUESTIONS))
    assert torch_answers[0][0] == str(answer[:answer.index(stop)])  # torch stops there
    assert converted == torch_answers
