"""Multi-turn chat with a causal language model (default: Microsoft DialoGPT-large; any chat checkpoint by model_path).

Legacy items: the questions of one prompt are one conversation. Current items: the prompts of an item, in
key order, are the user turns of one conversation. Each turn sees the earlier turns and the model's answers
to them, in the tokenizer's chat template when it has one (today's instruct models: Qwen2.5, Llama 3, SmolLM2,
...) and otherwise as DialoGPT was trained (every utterance ends with the end-of-text token), trimmed to fit the
context window minus the answer budget by dropping the oldest whole turns (adapters/core/chat_formats.py).
Answers stop at the end-of-turn tokens the checkpoint's generation config names. A system prompt (configuration,
or per prompt in its metadata element) opens the conversation when the template has a system turn.
Fine-tuning builds the same input from the reference answers and puts the loss on the answer's tokens only.
"""
from __future__ import annotations

import logging
from typing import Sequence

from transformers import AutoModelForCausalLM

from adapters.core.chat_formats import chat_format
from adapters.core.errors import ConfigurationError, InputError
from adapters.core.generation import SAMPLING_SETTINGS, end_token_ids, token_budget_setting
from adapters.core.generative_adapter import GenerativeAdapter
from adapters.core.hugging_adapter import Row, Turn
from adapters.core.prompt_items import ParsedItem, Question, natural_key
from adapters.core.settings import Setting
from adapters.core.streaming import STREAM_SETTINGS
from adapters.runtimes import GENERATE, runtime_settings
from adapters.training import IGNORE_INDEX
from adapters.training.settings import TRAINING_SETTINGS

logger = logging.getLogger(__name__)

SYSTEM_PROMPT = Setting("system_prompt", (str,), "opens every conversation as its system turn (a prompt's metadata "
                        "element may set its own); empty: none. Refused for a model whose chat template has no "
                        "system turn")


class HuggingAdapter(GenerativeAdapter):
    model_class = AutoModelForCausalLM
    family = "causal language models (…ForCausalLM, GPT-2's GPT2LMHeadModel), for chat"
    padding_side = "left"
    settings = (token_budget_setting("max_new_tokens", "longest answer, in tokens"), SYSTEM_PROMPT,
                *SAMPLING_SETTINGS, *STREAM_SETTINGS, *runtime_settings(GENERATE), *TRAINING_SETTINGS)

    def check_with_model(self, configuration: dict) -> None:
        budget = configuration["max_new_tokens"]
        if budget >= self.max_input_tokens:
            raise ConfigurationError(f"max_new_tokens {budget} leaves no room for the question in "
                                     f"the model's context window of {self.max_input_tokens} tokens")
        self._check_system_prompt(configuration)

    def setup(self) -> None:
        super().setup()
        self.chat = chat_format(self.tokenizer, self.segments, end_token_ids(self.generation_config))
        self._check_system_prompt(self.configuration)  # at load, once the chat format is known

    def _check_system_prompt(self, configuration: dict) -> None:
        chat = getattr(self, "chat", None)  # None while loading: `setup` checks it then
        if configuration["system_prompt"] and chat is not None and not chat.takes_system:
            raise ConfigurationError(f"configuration 'system_prompt' is refused: {self._no_system_turn()}")

    def _no_system_turn(self) -> str:
        if self.chat.name == "chat template":
            return "this model's chat template has no system turn (it drops or refuses one)"
        return "this model's tokenizer has no chat template (DialoGPT's end-of-text format), so it has no system turn"

    def conversations(self, parsed: ParsedItem) -> list[list[Question]]:
        if parsed.format == "current":
            return [sorted(parsed.questions, key=lambda q: natural_key(q.prompt_key))] if parsed.questions else []
        by_prompt: dict[str, list[Question]] = {}
        for question in parsed.questions:
            by_prompt.setdefault(question.prompt_key, []).append(question)
        return list(by_prompt.values())

    def system_prompt(self, question: Question) -> str:
        """The prompt's own `system_prompt` (its metadata element) over the configuration's; empty means none."""
        system = question.prompt_metadata.get("system_prompt", self.configuration["system_prompt"])
        if not isinstance(system, str):
            raise InputError(f"the prompt's system_prompt must be a string, got {type(system).__name__}")
        if system and not self.chat.takes_system:
            raise InputError(f"the prompt's system_prompt is refused: {self._no_system_turn()}")
        return system

    def preprocess(self, question: Question, history: list[Turn]) -> list[Row]:
        budget = self.max_input_tokens - self.answer_budget
        prompt = self.chat.prompt(self.system_prompt(question), _turns(history), question.text, budget)
        if prompt.question_cut:
            logger.warning("%s: question cut to its last tokens to fit the context window of %d tokens",
                           question.where, budget)
        if prompt.kept_turns < len(history):
            logger.info("%s: dropped the %d oldest turns to fit the context window", question.where,
                        len(history) - prompt.kept_turns)
        return [{"input_ids": prompt.ids, "attention_mask": [1] * len(prompt.ids)}]

    def answer_text(self, token_ids: Sequence[int]) -> str:
        return self.chat.decode(token_ids)

    # ----- fine-tuning -----
    def training_rows(self, question: Question, history: list[Turn], reference: str) -> list[Row]:
        budget = self.max_input_tokens - self.answer_budget
        prompt = self.chat.prompt(self.system_prompt(question), _turns(history), question.text, budget)
        answer = self.chat.answer_ids(prompt, reference)
        if len(answer) > self.answer_budget:  # what generation could have written: the budget, ending the turn
            answer = answer[:self.answer_budget - 1] + answer[-1:]
        ids = prompt.ids + answer
        return [{"input_ids": ids, "attention_mask": [1] * len(ids),
                 "labels": [IGNORE_INDEX] * len(prompt.ids) + answer}]


def _turns(history: list[Turn]) -> list[tuple[str, str]]:
    return [(turn.question.text, turn.answers[0].text) for turn in history]
