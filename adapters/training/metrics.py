"""Evaluation metrics: the classifiers' from their definitions, ROUGE from `rouge-score` (as papers report it).

- accuracy: share of questions whose predicted label equals a reference label.
- macro-F1: the unweighted mean over labels (those in the references or the predictions) of each label's F1,
  2 * precision * recall / (precision + recall), 0 when the label is never right.
- ROUGE-1, ROUGE-2, ROUGE-L (Lin, 2004) F-measures by Google's `rouge-score` package with the Porter stemmer on,
  as summarization papers report them (AESLC included): a question's score is its best over its references
  (`score_multi`), the corpus score is the mean over questions, in [0, 1].
"""
from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING, Sequence

if TYPE_CHECKING:
    from rouge_score import rouge_scorer

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")


def truth(prediction: str, references: Sequence[str]) -> str:
    """The reference a classifier's prediction is judged against: the one it names, else the first."""
    return prediction if prediction in references else references[0]


def accuracy(predictions: Sequence[str], references: Sequence[Sequence[str]]) -> float:
    if not predictions:
        return 0.0
    return sum(p in refs for p, refs in zip(predictions, references)) / len(predictions)


def macro_f1(predictions: Sequence[str], references: Sequence[Sequence[str]]) -> float:
    truths = [truth(p, refs) for p, refs in zip(predictions, references)]
    labels = set(truths) | set(predictions)
    if not labels:
        return 0.0
    scores = []
    for label in labels:
        hits = sum(p == t == label for p, t in zip(predictions, truths))
        predicted, actual = predictions.count(label), truths.count(label)
        scores.append(2 * hits / (predicted + actual) if hits else 0.0)
    return sum(scores) / len(scores)


@lru_cache(maxsize=1)
def _scorer() -> rouge_scorer.RougeScorer:
    from rouge_score import rouge_scorer  # imports nltk (about 1 s): only when a generator is scored

    return rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=True)


def question_rouge(prediction: str, references: Sequence[str]) -> dict[str, float]:
    """One prediction's best-reference ROUGE-1/2/L F-measures."""
    scores = _scorer().score_multi(list(references), prediction)
    return {name: scores[name].fmeasure for name in ROUGE_TYPES}


def rouge(predictions: Sequence[str], references: Sequence[Sequence[str]]) -> dict[str, float]:
    """Mean over questions of the best-reference ROUGE-1/2/L F-measure of each prediction."""
    totals = dict.fromkeys(ROUGE_TYPES, 0.0)
    for prediction, refs in zip(predictions, references):
        for name, value in question_rouge(prediction, refs).items():
            totals[name] += value
    count = max(len(predictions), 1)
    return {name: total / count for name, total in totals.items()}


NO_ANSWER = "(no answer)"


def confusion(predictions: Sequence[str], references: Sequence[Sequence[str]]) -> dict[str, list]:
    """`labels` (sorted) and `counts[reference][predicted]`: how often each reference label was answered with
    each label; a question left unanswered counts under NO_ANSWER. The reference of a question with several is
    the one the prediction names, else the first (as accuracy and macro-F1 judge it)."""
    answered = [p or NO_ANSWER for p in predictions]
    truths = [truth(p, refs) for p, refs in zip(answered, references)]
    labels = sorted(set(truths) | set(answered))
    position = {label: index for index, label in enumerate(labels)}
    counts = [[0] * len(labels) for _ in labels]
    for predicted, reference in zip(answered, truths):  # not `truth`: that name is the function above
        counts[position[reference]][position[predicted]] += 1
    return {"labels": labels, "counts": counts}


PRIMARY = {"classification": "accuracy", "generation": "rougeL"}


def score(family: str, predictions: Sequence[str], references: Sequence[Sequence[str]]) -> dict[str, float]:
    """Every metric of `family` ("classification" or "generation"); each question needs >= 1 reference."""
    predictions = list(predictions)
    if family == "generation":
        return rouge(predictions, references)
    return {"accuracy": accuracy(predictions, references), "macro_f1": macro_f1(predictions, references)}
