"""Score a model against the reference answers of a subset: by running it, or from annotations it wrote."""
from __future__ import annotations

import logging
from typing import Any

from ..core.prompt_items import Question
from .dataset import DatasetError, Subset, refuse_unknown_labels
from .metrics import confusion, score

logger = logging.getLogger(__name__)


def _pairs(subset: Subset, predicted: dict[Question, str]) -> tuple[list[str], list[list[str]], int]:
    """(predictions, references, unanswered) over every question with a reference; no answer is ""."""
    predictions, references, unanswered = [], [], 0
    for item in subset.items:
        for question, answers in item.references.items():
            text = predicted.get(question)
            unanswered += text is None
            predictions.append(text or "")
            references.append(answers)
    return predictions, references, unanswered


def score_subset(family: str, subset: Subset, predicted: dict[Question, str]) -> dict[str, Any]:
    """Metrics over every question with a reference; a question the model did not answer scores as wrong/empty."""
    predictions, references, unanswered = _pairs(subset, predicted)
    if not predictions:
        raise DatasetError(f"subset {subset.name!r} has no reference answers to evaluate against")
    if unanswered:
        logger.warning("subset %r: %d of %d questions got no prediction; they count as wrong",
                       subset.name, unanswered, len(predictions))
    return {**score(family, predictions, references), "questions": len(predictions), "unanswered": unanswered}


def evaluate_by_predicting(adapter: Any, subset: Subset, with_confusion: bool = False) -> dict[str, Any]:
    """Answer the subset's items exactly as `predict` does and score the first answer of each question; reference
    class labels a classifier does not know are refused (DatasetError); a classifier's metrics also get its
    `confusion_matrix` when `with_confusion`."""
    refuse_unknown_labels(subset, adapter.label_set())
    answers, _ = adapter.answer_questions([item.parsed for item in subset.items])
    predicted = {q: a[0].text for q, a in answers.items() if a}
    metrics = score_subset(adapter.metric_family, subset, predicted)
    if with_confusion and adapter.metric_family == "classification":
        metrics["confusion_matrix"] = confusion(*_pairs(subset, predicted)[:2])
    return metrics


def evaluate_annotations(family: str, subset: Subset, labels: list[str] | None = None) -> dict[str, Any]:
    """Score the model answers already stored as annotations (read with `predictions_of`), the first (most
    confident) of each question's; reference class labels not among a classifier's `labels` are refused."""
    refuse_unknown_labels(subset, labels)
    predicted = {q: texts[0] for item in subset.items for q, texts in item.predictions.items() if texts}
    return score_subset(family, subset, predicted)
