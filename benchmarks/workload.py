"""A deterministic, realistic workload: prompt items of mixed lengths, several prompts each.

Texts are drawn from the words of the tokenizers' training corpus (so random-weight models see in-vocabulary
words), with lengths spread log-uniformly between the bounds: many short texts and a tail of long ones, as in
real datasets. Items are in the current dtlpy prompt format; the zero-shot items carry each prompt's
candidate labels (3 to 10) in the prompt's metadata, drawn from a few label sets as a project would have.
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Iterator

from tests.model_factory import CORPUS
from tests.prompt_factory import TEXT, current_item

WORDS = sorted({word for line in CORPUS for word in line.split()})
TOPICS = ["sports", "politics", "cooking", "travel", "music", "finance", "health", "science", "weather",
          "movies", "shopping", "education"]


@dataclass(frozen=True)
class Workload:
    """Items for `predict`, plus what the baselines need to answer the same questions."""

    items: list[dict]
    min_words: int
    max_words: int

    def questions(self) -> Iterator[tuple[dict, str, str, dict]]:
        """(item, prompt key, text, prompt metadata) of every question, in item and prompt order."""
        for item in self.items:
            for key, elements in item["prompts"].items():
                metadata = next((e["value"] for e in elements if e["mimetype"] == "metadata"), {})
                for element in elements:
                    if element["mimetype"] == TEXT:
                        yield item, key, element["value"], metadata


def _text(rng: random.Random, min_words: int, max_words: int) -> str:
    words = round(math.exp(rng.uniform(math.log(min_words), math.log(max_words))))
    return " ".join(rng.choice(WORDS) for _ in range(words))


def label_sets(count: int = 8, seed: int = 0) -> list[list[str]]:
    """`count` candidate-label lists of 3 to 10 labels."""
    rng = random.Random(seed)
    return [rng.sample(TOPICS, 3 + (i * 7) // max(count - 1, 1)) for i in range(count)]


def build_workload(items: int, prompts_per_item: int, min_words: int, max_words: int, *, zero_shot: bool = False,
                   labels_per_question: int | None = None, seed: int = 0) -> Workload:
    """`items` prompt items of `prompts_per_item` one-question prompts each (a conversation, for chat models).

    Zero-shot prompts get 3 to 10 labels from `label_sets`, or `labels_per_question` from 8 sets of that size.
    """
    rng = random.Random(seed)
    sets = label_sets(seed=seed)
    if labels_per_question:
        sets = [random.Random(seed + i).sample(TOPICS, labels_per_question) for i in range(len(sets))]
    built = []
    for index in range(items):
        prompts = {str(p + 1): [_text(rng, min_words, max_words)] for p in range(prompts_per_item)}
        metadata = {key: {"candidate_labels": sets[(index * prompts_per_item + p) % len(sets)]}
                    for p, key in enumerate(prompts)} if zero_shot else None
        item = current_item(prompts, metadata)
        item["name"] = f"item-{index:04d}"
        built.append(item)
    return Workload(built, min_words, max_words)
