"""Multi-turn chat with a causal language model (default: Microsoft DialoGPT-large).

Legacy items: the questions of one prompt are one conversation. Current items: the prompts of an item, in
key order, are the user turns of one conversation. Each turn sees the earlier turns and the model's answers
to them, as DialoGPT was trained (every utterance ends with the end-of-text token), trimmed to fit the
context window minus the answer budget by dropping the oldest whole turns. Fine-tuning builds the same
history from the reference answers and puts the loss on the answer's tokens only.
"""
from __future__ import annotations

import logging

from transformers import AutoModelForCausalLM

from adapters.core.errors import ConfigurationError
from adapters.core.generation import SAMPLING_SETTINGS, token_budget_setting
from adapters.core.generative_adapter import GenerativeAdapter
from adapters.core.hugging_adapter import Row, Turn
from adapters.core.prompt_items import ParsedItem, Question, natural_key
from adapters.runtimes import GENERATE, runtime_settings
from adapters.training import IGNORE_INDEX
from adapters.training.settings import TRAINING_SETTINGS

logger = logging.getLogger(__name__)


class HuggingAdapter(GenerativeAdapter):
    model_class = AutoModelForCausalLM
    padding_side = "left"
    settings = (token_budget_setting("max_new_tokens", "longest answer, in tokens"), *SAMPLING_SETTINGS,
                *runtime_settings(GENERATE), *TRAINING_SETTINGS)

    def setup(self) -> None:
        if self.answer_budget >= self.max_input_tokens:
            raise ConfigurationError(f"max_new_tokens {self.answer_budget} leaves no room for the question in "
                                     f"the model's context window of {self.max_input_tokens} tokens")
        super().setup()

    def conversations(self, parsed: ParsedItem) -> list[list[Question]]:
        if parsed.format == "current":
            return [sorted(parsed.questions, key=lambda q: natural_key(q.prompt_key))] if parsed.questions else []
        by_prompt: dict[str, list[Question]] = {}
        for question in parsed.questions:
            by_prompt.setdefault(question.prompt_key, []).append(question)
        return list(by_prompt.values())

    def utterance(self, text: str) -> list[int]:
        return self.tokenizer.encode(text) + [self.tokenizer.eos_token_id]

    def preprocess(self, question: Question, history: list[Turn]) -> list[Row]:
        budget = self.max_input_tokens - self.answer_budget
        ids, cut = self.segments.ids(question.text, budget - 1, keep_end=True)  # tokenizes only the end it keeps
        ids.append(self.tokenizer.eos_token_id)
        if cut:
            logger.warning("%s: question cut to its last %d tokens to fit the context window", question.where, budget)
        kept = 0
        for turn in reversed(history):
            asked = self._fitting_utterance(turn.question.text, budget - len(ids))
            answered = asked and self._fitting_utterance(turn.answers[0].text, budget - len(ids) - len(asked))
            if not answered:
                break
            ids = asked + answered + ids
            kept += 1
        if kept < len(history):
            logger.info("%s: dropped the %d oldest turns to fit the context window", question.where, len(history) - kept)
        return [{"input_ids": ids, "attention_mask": [1] * len(ids)}]

    def _fitting_utterance(self, text: str, room: int) -> list[int] | None:
        """`utterance(text)` when it fits in `room` tokens, else None; a long turn is not tokenized past `room`."""
        if room < 1:
            return None
        ids, cut = self.segments.ids(text, room - 1, keep_end=True)
        return None if cut else ids + [self.tokenizer.eos_token_id]

    # ----- fine-tuning -----
    def training_rows(self, question: Question, history: list[Turn], reference: str) -> list[Row]:
        context = self.preprocess(question, history)[0]["input_ids"]
        answer = self.utterance(reference)
        if len(answer) > self.answer_budget:  # what generation could have written: the budget, ending in eos
            answer = answer[:self.answer_budget - 1] + [self.tokenizer.eos_token_id]
        ids = context + answer
        return [{"input_ids": ids, "attention_mask": [1] * len(ids),
                 "labels": [IGNORE_INDEX] * len(context) + answer}]
