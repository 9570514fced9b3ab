"""Build prompt items in both formats for tests."""
from __future__ import annotations

from typing import Any

TEXT = "application/text"


def legacy_item(prompts: dict[str, list[Any]]) -> dict:
    """Seed-001 format: each prompt maps question keys to {"mimetype", "value"}; non-string entries pass as they are."""
    return {"shebang": "dataloop", "metadata": {"dltype": "prompt"}, "prompts": {
        key: {f"question-{i + 1}": ({"mimetype": TEXT, "value": q} if isinstance(q, str) else q)
              for i, q in enumerate(questions)}
        for key, questions in prompts.items()}}


def current_item(prompts: dict[str, list[Any]], metadata: dict[str, dict] | None = None) -> dict:
    """dtlpy's current format: each prompt is a list of elements plus a metadata element."""
    metadata = metadata or {}
    return {"shebang": "dataloop", "metadata": {"dltype": "prompt"}, "prompts": {
        key: [*({"mimetype": TEXT, "value": q} if isinstance(q, str) else q for q in questions),
              {"mimetype": "metadata", "value": {"role": "user", **metadata.get(key, {})}}]
        for key, questions in prompts.items()}}


def answers(collection) -> list[tuple[str, str, float]]:
    """(prompt id, text, confidence) of each annotation, in order."""
    return [(a.metadata["system"]["promptId"], a.coordinates, a.metadata["user"]["model"]["confidence"])
            for a in collection.annotations]


def own_and_best_score(text: str, model_output: dict) -> tuple[float, float]:
    """The score the model's own output gives the answer `text`, and the best score in that output (before the
    annotation's confidence is clamped to [0, 1]): an answer is its model's top choice and carries that score."""
    if "generations" in model_output:  # generators: every generation with its confidence, the chosen one named
        generations = model_output["generations"]
        chosen = generations[model_output["generation"]]
        assert chosen["text"] == text
        return chosen["confidence"], max(g["confidence"] for g in generations)
    scores = model_output["scores"]
    if isinstance(scores, dict):  # sentiment: a score per label
        return scores[text], max(scores.values())
    return scores[model_output["labels"].index(text)], max(scores)  # zero-shot: ranked labels, their scores
