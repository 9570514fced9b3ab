"""How a chat model reads a conversation: its tokenizer's chat template, or DialoGPT's end-of-text format.

Today's instruct checkpoints (Qwen2.5, Llama 3, SmolLM2, Phi, Mistral) were trained on their chat template's turns
and answer poorly without them; DialoGPT (2019) was trained on utterances that each end with the end-of-text token.
`chat_format` picks the template when the tokenizer has one. Both formats follow the same rules: the model input
fits `budget` tokens (the context window minus the answer budget); a question that alone is too long keeps its end;
earlier turns are dropped oldest first, whole; only the pieces of text that can fit are tokenized, so a huge
question or history costs what its readable part costs.

Template conversations are rendered by `apply_chat_template` with the generation prompt, as `transformers` renders
them, with `sanitize_control_tokens`: a `<|im_end|>` typed by a user is text, not the end of their turn.
"""
from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from .errors import InputError
from .truncation import Segments

Turn = tuple[str, str]  # an earlier (question, answer) of the conversation
# A system prompt no template would drop, to find out whether a template renders a system turn at all.
_SYSTEM_PROBE = "system-prompt-probe-5b1f"
# Renders tried to cut a question to fit when a template's own tokens around it push the input past the budget.
_MAX_CUTS = 4


@dataclass
class ChatPrompt:
    """The model input for one question, and what had to go to fit the budget."""

    ids: list[int]
    kept_turns: int  # earlier turns in the input, the newest ones
    question_cut: bool  # the question lost its beginning
    messages: list[dict[str, str]]  # template format: the conversation rendered (training appends the answer)


class ChatFormat(abc.ABC):
    """Builds a conversation's model input and reads the model's answer back as text."""

    name: str
    takes_system: bool = False

    def __init__(self, tokenizer: Any, segments: Segments, end_ids: Sequence[int]):
        self.tokenizer = tokenizer
        self.segments = segments
        self.end_ids = list(end_ids)  # what ends the model's turn (its generation config's end-of-sequence ids)

    @abc.abstractmethod
    def prompt(self, system: str | None, history: Sequence[Turn], question: str, budget: int) -> ChatPrompt:
        """The input that asks `question` after `history`, within `budget` tokens."""

    @abc.abstractmethod
    def answer_ids(self, prompt: ChatPrompt, answer: str) -> list[int]:
        """`answer` as the model should write it after `prompt`, its end-of-turn token last (fine-tuning)."""

    def decode(self, token_ids: Sequence[int]) -> str:
        """An answer's text: special tokens dropped, surrounding whitespace stripped."""
        return self.tokenizer.decode(list(token_ids), skip_special_tokens=True).strip()

    def _system_tokens(self, system: str | None, budget: int) -> int:
        """How many tokens `system` takes; refused when it alone passes `budget` (only that much is tokenized)."""
        if not system:
            return 0
        ids, cut = self.segments.ids(system, budget)
        if cut:
            raise InputError(f"the system prompt is longer than the {budget} tokens the context window leaves "
                             "after the answer budget; shorten it")
        return len(ids)


class EndOfTextFormat(ChatFormat):
    """DialoGPT's format: each utterance (question or answer) followed by the end-of-text token."""

    name = "end-of-text"

    def utterance(self, text: str) -> list[int]:
        return self.segments.user_text_ids(text) + [self.tokenizer.eos_token_id]

    def prompt(self, system: str | None, history: Sequence[Turn], question: str, budget: int) -> ChatPrompt:
        if system:
            raise InputError("this model's tokenizer has no chat template (DialoGPT's end-of-text format), so it has "
                             "no system turn; remove system_prompt")
        ids, cut = self.segments.ids(question, budget - 1, keep_end=True)  # tokenizes only the end it keeps
        ids.append(self.tokenizer.eos_token_id)
        kept = 0
        for asked, answered in reversed(history):
            asked_ids = self._fitting_utterance(asked, budget - len(ids))
            answered_ids = asked_ids and self._fitting_utterance(answered, budget - len(ids) - len(asked_ids))
            if not answered_ids:
                break
            ids = asked_ids + answered_ids + ids
            kept += 1
        return ChatPrompt(ids, kept, cut, [])

    def _fitting_utterance(self, text: str, room: int) -> list[int] | None:
        """`utterance(text)` when it fits in `room` tokens, else None; a long turn is not tokenized past `room`."""
        if room < 1:
            return None
        ids, cut = self.segments.ids(text, room - 1, keep_end=True)
        return None if cut else ids + [self.tokenizer.eos_token_id]

    def answer_ids(self, prompt: ChatPrompt, answer: str) -> list[int]:
        return self.utterance(answer)


class TemplateFormat(ChatFormat):
    """The tokenizer's chat template: system turn (when the template has one), user and assistant turns, then the
    template's generation prompt."""

    name = "chat template"

    def __init__(self, tokenizer: Any, segments: Segments, end_ids: Sequence[int]):
        super().__init__(tokenizer, segments, end_ids)
        template = tokenizer.get_chat_template()
        self.takes_system = _renders_system_turn(tokenizer)
        # Turn markers a template writes are added tokens; those not flagged special would otherwise print.
        self.hidden_ids = {index for index, token in tokenizer.added_tokens_decoder.items()
                           if token.special or (token.content in template and not token.content.isspace())}

    def render(self, messages: list[dict[str, str]], generation_prompt: bool = True) -> list[int]:
        return self.tokenizer.apply_chat_template(messages, add_generation_prompt=generation_prompt, tokenize=True,
                                                  return_dict=False, sanitize_control_tokens=True)

    def prompt(self, system: str | None, history: Sequence[Turn], question: str, budget: int) -> ChatPrompt:
        if system and not self.takes_system:
            raise InputError("this model's chat template has no system turn; remove system_prompt")
        opening = [{"role": "system", "content": system}] if system else []
        room = budget - self._system_tokens(system, budget)
        question_ids, cut = self.segments.ids(question, max(room, 1), keep_end=True)
        if cut:
            question = self.tokenizer.decode(question_ids)
        # The newest turns whose texts alone fit: the template only adds tokens around them.
        room -= len(question_ids)
        candidates = 0
        for asked, answered in reversed(history):
            asked_ids, asked_cut = self.segments.ids(asked, max(room, 0))
            answered_ids, answered_cut = self.segments.ids(answered, max(room - len(asked_ids), 0))
            room -= len(asked_ids) + len(answered_ids)
            if asked_cut or answered_cut or room < 0:
                break
            candidates += 1

        def messages(kept: int, question: str) -> list[dict[str, str]]:
            turns = [{"role": role, "content": text} for asked, answered in history[len(history) - kept:]
                     for role, text in (("user", asked), ("assistant", answered))]
            return [*opening, *turns, {"role": "user", "content": question}]

        for _ in range(_MAX_CUTS):
            fitting = _largest_fitting(candidates, lambda kept: self.render(messages(kept, question)), budget)
            if fitting is not None:
                kept, ids = fitting
                return ChatPrompt(ids, kept, cut, messages(kept, question))
            # Even alone, the question with the template's tokens around it passes the budget: keep less of it.
            overshoot = len(self.render(messages(0, question))) - budget
            if overshoot >= len(question_ids):
                raise InputError(f"the chat template's own tokens{' and the system prompt' if system else ''} leave "
                                 f"no room for the question in the {budget} tokens the context window leaves after "
                                 "the answer budget")
            question_ids, cut, candidates = question_ids[overshoot:], True, 0
            question = self.tokenizer.decode(question_ids)
        raise InputError(f"the question could not be cut to fit the {budget} tokens the context window leaves after "
                         "the answer budget")

    def answer_ids(self, prompt: ChatPrompt, answer: str) -> list[int]:
        """The answer's tokens as the template writes them after the generation prompt, up to and including its
        end-of-turn token (what generation stops at); the template's text after that token is never generated."""
        whole = self.render([*prompt.messages, {"role": "assistant", "content": answer}], generation_prompt=False)
        if whole[:len(prompt.ids)] == prompt.ids:
            written = whole[len(prompt.ids):]
            end = next((i for i, token in enumerate(written) if token in self.end_ids), None)
            if end is not None:
                return written[:end + 1]
        # A template that writes the last assistant turn differently from the generation prompt (some drop or
        # reword earlier turns): the answer's own tokens after the prompt, then the first end-of-turn token.
        return self.segments.tokenize([answer])[0] + self.end_ids[:1]

    def decode(self, token_ids: Sequence[int]) -> str:
        return super().decode([token for token in token_ids if token not in self.hidden_ids])


def chat_format(tokenizer: Any, segments: Segments, end_ids: Sequence[int]) -> ChatFormat:
    """The tokenizer's chat template when it has one, else DialoGPT's end-of-text format."""
    if getattr(tokenizer, "chat_template", None):
        return TemplateFormat(tokenizer, segments, end_ids)
    return EndOfTextFormat(tokenizer, segments, end_ids)


def _renders_system_turn(tokenizer: Any) -> bool:
    """Whether the template writes a system message: some refuse one (Gemma, Mistral v0.1), others drop it."""
    probe = [{"role": "system", "content": _SYSTEM_PROBE}, {"role": "user", "content": "hello"}]
    try:
        rendered = tokenizer.apply_chat_template(probe, add_generation_prompt=True, tokenize=False)
    except Exception:  # noqa: BLE001 - a template refuses a system turn with its own exception (raise_exception)
        return False
    return _SYSTEM_PROBE in rendered


def _largest_fitting(most: int, render: Callable[[int], list[int]], budget: int) -> tuple[int, list[int]] | None:
    """The largest k in [0, most] whose rendering fits `budget`, with that rendering; None when even k = 0 does not.

    A rendering grows with k (more turns), so the common case (everything fits) is one render and the worst
    a binary search."""
    ids = render(most)
    if len(ids) <= budget:
        return most, ids
    best, low, high = None, 0, most - 1
    while low <= high:
        middle = (low + high) // 2
        ids = render(middle)
        if len(ids) <= budget:
            best, low = (middle, ids), middle + 1
        else:
            high = middle - 1
    return best
