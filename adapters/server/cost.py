"""An upper estimate of what a request will cost a model, in padded tokens, made before it is queued.

The unit is the one `max_batch_tokens` counts: rows x (input tokens + answer budget), with every generation
and beam a row. Inputs are counted as their UTF-8 bytes (no tokenizer makes more tokens than bytes, bar a few
special tokens) up to the model's context window, so nothing is tokenized to price a request; a chat turn
counts its conversation so far, up to the window; a zero-shot question counts one row per candidate label.
The answer is priced too: a zero-shot answer echoes every label with its score for every text (4.5 KB of
request once bought a 941 KB response), so each of its rows also counts the bytes its label takes in the answer.
"""
from __future__ import annotations

import json
from typing import Any, Iterable

from ..core.hugging_adapter import HuggingAdapter
from ..core.prompt_items import ParsedItem, Question

SPECIAL_TOKENS = 8  # start/end/separator tokens and a module's prefix, per row
SCORE_BYTES = 24  # a score as the answer writes it, with its separators


def request_cost(adapter: HuggingAdapter, configuration: dict[str, Any], items: Iterable[ParsedItem]) -> int:
    window = adapter.max_input_tokens
    budget_key = getattr(type(adapter), "budget_key", None)
    budget = int(configuration.get(budget_key, 0)) if budget_key else 0
    sequences = int(configuration.get("n_gen", 1)) * int(configuration.get("num_beams", 1))
    total = 0
    for parsed in items:
        for conversation in _conversations(adapter, parsed):
            context = 0
            for question in conversation:
                context += _bytes(question.text) + SPECIAL_TOKENS
                rows, extra, echoed = _label_rows(question, configuration)
                total += rows * sequences * (min(context + extra, window) + budget + echoed)
                context += budget  # the answer becomes history for the next turn
    return total


def embedding_cost(adapter: HuggingAdapter, texts: Iterable[str]) -> int:
    """Padded tokens of embedding `texts`: one row each, its bytes up to the context window; no answer budget."""
    return sum(min(_bytes(text) + SPECIAL_TOKENS, adapter.max_input_tokens) for text in texts)


def _conversations(adapter: HuggingAdapter, parsed: ParsedItem) -> list[list[Question]]:
    try:
        return adapter.conversations(parsed)
    except Exception:  # noqa: BLE001 - predict reports this item's problem; price its questions one by one
        return [[question] for question in parsed.questions]


def _label_rows(question: Question, configuration: dict[str, Any]) -> tuple[int, int, int]:
    """Rows per question (one per candidate label for zero-shot), the bytes a hypothesis adds to each, and the bytes
    each row's label and score take in the answer (labels escaped as the JSON answer writes them)."""
    if "candidate_labels" not in configuration:
        return 1, 0, 0
    labels = question.prompt_metadata.get("candidate_labels", configuration["candidate_labels"])
    template = question.prompt_metadata.get("hypothesis_template", configuration.get("hypothesis_template", ""))
    if not isinstance(labels, list) or not labels:
        labels = configuration["candidate_labels"]
    texts = [label for label in labels if isinstance(label, str)] or [""]
    longest = max(_bytes(label) for label in texts)
    echoed = max(len(json.dumps(label)) for label in texts) + SCORE_BYTES
    return len(labels), longest + (_bytes(template) if isinstance(template, str) else 0), echoed


def _bytes(text: str) -> int:
    return len(text.encode("utf-8", "surrogatepass"))
