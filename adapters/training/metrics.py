"""Evaluation metrics, written from their definitions so scores need no extra package.

- accuracy: share of questions whose predicted label equals a reference label.
- macro-F1: the unweighted mean over labels (those in the references or the predictions) of each label's F1,
  2 * precision * recall / (precision + recall), 0 when the label is never right.
- ROUGE-L (Lin, 2004): with LCS the longest common subsequence of the lower-cased word tokens of a prediction
  (n tokens) and a reference (m tokens), R = LCS / m, P = LCS / n, F = 2PR / (P + R); a question's score is
  its best over its references; the corpus score is the mean over questions.
"""
from __future__ import annotations

import re
from typing import Sequence

_TOKEN = re.compile(r"\w+", re.UNICODE)


def _truth(prediction: str, references: Sequence[str]) -> str:
    """The reference a classifier's prediction is judged against: the one it names, else the first."""
    return prediction if prediction in references else references[0]


def accuracy(predictions: Sequence[str], references: Sequence[Sequence[str]]) -> float:
    if not predictions:
        return 0.0
    return sum(p in refs for p, refs in zip(predictions, references)) / len(predictions)


def macro_f1(predictions: Sequence[str], references: Sequence[Sequence[str]]) -> float:
    truths = [_truth(p, refs) for p, refs in zip(predictions, references)]
    labels = set(truths) | set(predictions)
    if not labels:
        return 0.0
    scores = []
    for label in labels:
        hits = sum(p == t == label for p, t in zip(predictions, truths))
        predicted, actual = predictions.count(label), truths.count(label)
        scores.append(2 * hits / (predicted + actual) if hits else 0.0)
    return sum(scores) / len(scores)


def tokens(text: str) -> list[str]:
    return _TOKEN.findall(text.lower())


def lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    """Longest common subsequence by dynamic programming over one row."""
    if len(a) < len(b):
        a, b = b, a
    row = [0] * (len(b) + 1)
    for x in a:
        diagonal = 0
        for j, y in enumerate(b, start=1):
            diagonal, row[j] = row[j], diagonal + 1 if x == y else max(row[j], row[j - 1])
    return row[-1]


def rouge_l_pair(prediction: str, reference: str) -> float:
    predicted, wanted = tokens(prediction), tokens(reference)
    common = lcs_length(predicted, wanted)
    if not common:
        return 0.0
    precision, recall = common / len(predicted), common / len(wanted)
    return 2 * precision * recall / (precision + recall)


def rouge_l(predictions: Sequence[str], references: Sequence[Sequence[str]]) -> float:
    if not predictions:
        return 0.0
    return sum(max(rouge_l_pair(p, r) for r in refs) for p, refs in zip(predictions, references)) / len(predictions)


METRICS = {"classification": (accuracy, macro_f1), "generation": (rouge_l,)}
PRIMARY = {"classification": "accuracy", "generation": "rouge_l"}


def score(family: str, predictions: Sequence[str], references: Sequence[Sequence[str]]) -> dict[str, float]:
    """Every metric of `family` ("classification" or "generation"); each question needs >= 1 reference."""
    return {metric.__name__: metric(list(predictions), references) for metric in METRICS[family]}
