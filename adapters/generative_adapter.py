"""Base for modules that write text: generation settings, batched generation through the runtime, decoding."""
from __future__ import annotations

from typing import Any, ClassVar

import torch

from .generation import Generated, build_generation_config
from .hugging_adapter import Answer, HuggingAdapter
from .prompt_items import Question


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
        self.generation_config = build_generation_config(self.model, self.tokenizer, self.configuration,
                                                         self.answer_budget, self.generations_per_question)

    def batch_cost(self, rows: int, longest: int) -> int:
        beams = self.configuration.get("num_beams", 1)
        return rows * self.generations_per_question * beams * (longest + self.answer_budget)

    def forward(self, inputs: dict[str, torch.Tensor]) -> list[list[Generated]]:
        generated = self.runtime.generate(self.model, inputs, self.generation_config, self.configuration["seed"])
        n = self.generations_per_question
        return [generated[i:i + n] for i in range(0, len(generated), n)]

    def postprocess(self, question: Question, outputs: list[Any]) -> list[Answer]:
        answers = []
        for index, generated in enumerate(outputs[0]):
            details: dict[str, Any] = {"generated_tokens": len(generated.token_ids)}
            if self.generations_per_question > 1:
                details["generation"] = index
            text = self.tokenizer.decode(generated.token_ids, skip_special_tokens=True).strip()
            answers.append(Answer(text, generated.confidence, details))
        return answers

    # ----- fine-tuning -----
    metric_family: ClassVar[str] = "generation"
