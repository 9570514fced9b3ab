"""Base for modules that write text: generation settings, batched generation through the runtime, decoding."""
from __future__ import annotations

import json
from typing import Any, ClassVar, Hashable, Sequence

import torch
from transformers import GenerationConfig

from .generation import Generated, build_generation_config
from .hugging_adapter import Answer, HuggingAdapter
from .prompt_items import Question
from .streaming import AnswerListener, row_streams


# Per-call configurations whose GenerationConfig is kept (a server's requests may each bring their own).
GENERATION_CONFIGS_KEPT = 64


class GenerativeAdapter(HuggingAdapter):
    """A HuggingAdapter whose rows are prompts for `generate`; `budget_key` names the max-new-tokens setting."""

    budget_key: ClassVar[str] = "max_new_tokens"
    min_batch_tokens: ClassVar[int | None] = None

    @property
    def answer_budget(self) -> int:
        return self.configuration[self.budget_key]

    @property
    def generations_per_question(self) -> int:
        return 1

    def setup(self) -> None:
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self._generation_configs: dict[str, GenerationConfig] = {}

    @property
    def generation_config(self) -> GenerationConfig:
        """The `GenerationConfig` of the configuration this thread's call runs with, built once per configuration."""
        key = json.dumps(self.configuration, sort_keys=True, default=repr)
        config = self._generation_configs.get(key)
        if config is None:
            config = build_generation_config(self.model, self.tokenizer, self.configuration, self.answer_budget,
                                             self.generations_per_question)
            if len(self._generation_configs) >= GENERATION_CONFIGS_KEPT:
                self._generation_configs.clear()
            self._generation_configs[key] = config
        return config

    def batch_key(self, configuration: dict) -> Hashable:
        """Sampling with a fixed seed draws for the whole batch from one seeded stream, so a row's answer would
        depend on the other rows: such a call runs alone (a key of its own), and answers the same whatever else
        runs. Other calls share forward passes with calls of equal settings."""
        if configuration["do_sample"] and configuration["temperature"] > 0 and configuration["seed"] is not None:
            return object()
        return super().batch_key(configuration)

    def batch_cost(self, rows: int, longest: int) -> int:
        beams = self.configuration.get("num_beams", 1)
        return rows * self.generations_per_question * beams * (longest + self.answer_budget)

    def forward(self, inputs: dict[str, torch.Tensor],
                listeners: Sequence[AnswerListener | None] | None = None) -> list[list[Generated]]:
        """Generate for a padded batch; `listeners` (one per row, or None) hear each row's answer as it is written,
        when a row is one answer (no beams, one generation per question)."""
        extra = {}
        if listeners and self.generations_per_question == 1 and self.generation_config.num_beams == 1:
            extra["on_token"] = row_streams(listeners, self.answer_text)
        generated = self.runtime.generate(self.model, inputs, self.generation_config, self.configuration["seed"],
                                          **extra)
        n = self.generations_per_question
        return [generated[i:i + n] for i in range(0, len(generated), n)]

    def answer_text(self, token_ids: Sequence[int]) -> str:
        """The text of a generated answer (a streamed one's too): special tokens dropped, whitespace stripped."""
        return self.tokenizer.decode(list(token_ids), skip_special_tokens=True).strip()

    def postprocess(self, question: Question, outputs: list[Any]) -> list[Answer]:
        """One answer per question, whatever `n_gen` is: the platform shows one answer per model per prompt.

        Its text is the most confident generation (the first on a tie); `generations` in the details holds every
        generation, in generation order, with its confidence.
        """
        generations = [{"text": self.answer_text(g.token_ids),
                        "confidence": g.confidence, "generated_tokens": len(g.token_ids)} for g in outputs[0]]
        best = max(range(len(generations)), key=lambda i: (generations[i]["confidence"], -i))
        chosen = generations[best]
        return [Answer(chosen["text"], chosen["confidence"], {
            "generated_tokens": chosen["generated_tokens"], "generation": best, "generations": generations})]

    # ----- fine-tuning -----
    metric_family: ClassVar[str] = "generation"
