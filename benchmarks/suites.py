"""The benchmarked models: real architecture sizes (or tiny ones with --quick), workloads and baselines."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from tests import model_factory

from . import baselines

CLASSIFIER_BATCH_SIZES = (1, 8, 32, 64)


@dataclass
class Suite:
    """One model: how to build it, its workload, this package's configuration, and what it is compared with."""

    name: str
    module_name: str
    build: Callable[..., Any]
    sizes: dict[str, Any]
    items: int
    prompts_per_item: int
    min_words: int
    max_words: int
    configuration: dict[str, Any] = field(default_factory=dict)
    kind: str = "classifier"  # or "generator"
    onnx: bool = False
    pipeline_batch_sizes: tuple[int, ...] = ()
    note: str = ""
    labels_per_question: int | None = None  # zero-shot: a fixed label count instead of 3 to 10

    def naive(self, model: Any, tokenizer: Any, workload: Any, c: dict[str, Any]) -> list:
        """The reference loop, with `c` the resolved configuration of this package's run."""
        if self.module_name == "models.distilbert_sst2":
            return baselines.naive_sentiment(model, tokenizer, workload)
        if self.module_name == "models.bart_large_mnli":
            return baselines.naive_zero_shot(model, tokenizer, workload, c["hypothesis_template"])
        if self.module_name == "models.dialogpt_large" and tokenizer.chat_template:
            return baselines.naive_template_chat(model, tokenizer, workload, c["max_new_tokens"])
        if self.module_name == "models.dialogpt_large":
            return baselines.naive_chat(model, tokenizer, workload, c["max_new_tokens"])
        return baselines.naive_text2text(model, tokenizer, workload, c["prefix"], c["token_count"])

    def pipeline(self, model: Any, tokenizer: Any) -> Callable | None:
        if self.module_name == "models.distilbert_sst2":
            return baselines.sentiment_pipeline(model, tokenizer)
        if self.module_name == "models.bart_large_mnli":
            return baselines.zero_shot_pipeline(model, tokenizer, self.configuration["hypothesis_template"])
        return None  # transformers 5 has no text2text or conversational pipeline


GREEDY = {"do_sample": False, "seed": None}


def build_qwen2_chat(path: Any, config_overrides: dict[str, Any] | None = None) -> Any:
    """A Qwen2 chat checkpoint (Qwen2.5-Instruct's ChatML template and end-of-turn tokens) of the given sizes."""
    return model_factory.build_chat_lm(path, "qwen2", config_overrides=config_overrides)


def all_suites(quick: bool, new_tokens: int) -> list[Suite]:
    """Full sizes: DistilBERT-base, BART-large, GPT-2 medium (DialoGPT-medium's shape), Qwen2.5-0.5B-Instruct's
    shape, T5-small and T5-base."""
    def sizes(full: dict[str, Any]) -> dict[str, Any]:
        return {} if quick else full

    def count(full: int, tiny: int) -> int:
        return tiny if quick else full

    template = "This example is {}."
    tokens = 4 if quick else new_tokens
    batch_sizes = (1, 8) if quick else CLASSIFIER_BATCH_SIZES
    suites = [
        Suite("distilbert-base-sst2", "models.distilbert_sst2", model_factory.build_distilbert_classifier,
              sizes(dict(dim=768, n_layers=6, n_heads=12, hidden_dim=3072, vocab_size=30522,
                         max_position_embeddings=512)),
              items=count(150, 3), prompts_per_item=3, min_words=4, max_words=120, onnx=True,
              pipeline_batch_sizes=batch_sizes),
        Suite("bart-large-mnli", "models.bart_large_mnli", model_factory.build_bart_nli,
              sizes(dict(d_model=1024, encoder_layers=12, decoder_layers=12, encoder_attention_heads=16,
                         decoder_attention_heads=16, encoder_ffn_dim=4096, decoder_ffn_dim=4096, vocab_size=50265,
                         max_position_embeddings=1024)),
              items=count(16, 2), prompts_per_item=2, min_words=4, max_words=60, onnx=True,
              configuration={"hypothesis_template": template}, pipeline_batch_sizes=batch_sizes,
              note="fewer items than the others: BART-large is 6x DistilBERT's FLOPs per token and each question "
                   "runs once per label"),
        Suite("bart-base-mnli", "models.bart_large_mnli", model_factory.build_bart_nli,
              sizes(dict(d_model=768, encoder_layers=6, decoder_layers=6, encoder_attention_heads=12,
                         decoder_attention_heads=12, encoder_ffn_dim=3072, decoder_ffn_dim=3072, vocab_size=50265,
                         max_position_embeddings=1024)),
              items=count(32, 2), prompts_per_item=2, min_words=4, max_words=120, labels_per_question=5,
              configuration={"hypothesis_template": template}, pipeline_batch_sizes=batch_sizes,
              note="issue 13's zero-shot workload: 64 texts of 4 to 120 words x 5 labels on BART-base's shape"),
        Suite("gpt2-medium-dialogpt", "models.dialogpt_large", model_factory.build_gpt2_lm,
              sizes(dict(n_embd=1024, n_layer=24, n_head=16, n_positions=1024, vocab_size=50257)),
              items=count(24, 2), prompts_per_item=2, min_words=4, max_words=40, kind="generator",
              configuration={"max_new_tokens": tokens, **GREEDY},
              note="GPT-2 medium (355M, DialoGPT-medium's shape) stands in for DialoGPT-large (774M) to keep the run "
                   "within minutes; every item is a 2-turn conversation"),
        Suite("qwen2-0.5b-instruct", "models.dialogpt_large", build_qwen2_chat,
              sizes(dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
                         num_key_value_heads=2, vocab_size=151936, max_position_embeddings=32768,
                         tie_word_embeddings=True, rms_norm_eps=1e-6, initializer_range=0.02)),
              items=count(8, 2), prompts_per_item=2, min_words=4, max_words=40, kind="generator",
              configuration={"max_new_tokens": tokens, **GREEDY},
              note="Qwen2.5-0.5B-Instruct's shape (494M parameters, 136M of them its tied 151,936-token embedding) "
                   "with random weights, in its ChatML template; every item is a 2-turn conversation"),
        Suite("t5-small-email", "models.t5_email", model_factory.build_t5,
              sizes(dict(d_model=512, d_kv=64, d_ff=2048, num_layers=6, num_decoder_layers=6, num_heads=8,
                         vocab_size=32128)),
              items=count(64, 2), prompts_per_item=2, min_words=4, max_words=60, kind="generator",
              configuration={"token_count": tokens, "n_gen": 1, "num_beams": 1, **GREEDY}),
        Suite("t5-base-email", "models.t5_email", model_factory.build_t5,
              sizes(dict(d_model=768, d_kv=64, d_ff=3072, num_layers=12, num_decoder_layers=12, num_heads=12,
                         vocab_size=32128)),
              items=count(32, 3), prompts_per_item=2, min_words=4, max_words=60, kind="generator",
              configuration={"token_count": tokens, "n_gen": 1, "num_beams": 1, **GREEDY}),
    ]
    tiny_repeats = {"t5-base-email", "bart-base-mnli"}  # tiny T5-base / BART-base would be T5-small / BART-large again
    return [s for s in suites if not quick or s.name not in tiny_repeats]
