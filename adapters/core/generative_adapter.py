"""Base for modules that write text: generation settings, batched generation through the runtime, decoding."""
from __future__ import annotations

from typing import Any, ClassVar, Sequence

import torch

from .generation import Generated, build_generation_config
from .hugging_adapter import Answer, HuggingAdapter
from .prompt_items import Question
from .streaming import AnswerListener, row_streams


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
