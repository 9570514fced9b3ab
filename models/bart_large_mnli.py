"""Zero-shot classification as natural-language inference (default: BART-large fine-tuned on MNLI).

Each candidate label becomes a hypothesis (`hypothesis_template.format(label)`) paired with the question as
premise; all (question, label) pairs of a batch run through the model together. Scores follow `transformers`'
zero-shot-classification pipeline: a softmax of the entailment logits over the labels, or, with `multi_label`
(or a single label), a softmax of entailment against contradiction for each label on its own.
A prompt's metadata element may override `candidate_labels`, `hypothesis_template` and `multi_label`.
Fine-tuning on (question, label) answers: the answer's hypothesis is entailment, every other candidate label's
is contradiction, as zero-shot classifiers are trained from NLI data.
"""
from __future__ import annotations

import logging
from typing import Any

import torch
from transformers import AutoModelForSequenceClassification

from adapters.errors import ConfigurationError
from adapters.hugging_adapter import Answer, HuggingAdapter as BaseAdapter, Row, Turn
from adapters.prompt_items import Question
from adapters.runtimes import CLASSIFY, runtime_settings
from adapters.settings import Setting
from adapters.training.dataset import DatasetError
from adapters.training.settings import TRAINING_SEED, TRAINING_SETTINGS, source_length_setting

logger = logging.getLogger(__name__)
MAX_LABELS = 100


def _labels_problem(labels: list) -> str | None:
    if not labels or len(labels) > MAX_LABELS:
        return f"give 1 to {MAX_LABELS} labels"
    if not all(isinstance(label, str) and label.strip() for label in labels):
        return "every label must be a non-empty string"
    if len(set(labels)) != len(labels):
        return "labels must be unique"
    return None


def _template_problem(template: str) -> str | None:
    return None if template.count("{}") == 1 else "must contain exactly one '{}' where the label goes"


TASK_SETTINGS = (
    Setting("candidate_labels", (list,), "labels to score each question against", check=_labels_problem),
    Setting("hypothesis_template", (str,), "turns a label into an NLI hypothesis", check=_template_problem),
    Setting("multi_label", (bool,), "score labels independently instead of as one distribution"),
)


class HuggingAdapter(BaseAdapter):
    model_class = AutoModelForSequenceClassification
    settings = (*TASK_SETTINGS, *runtime_settings(CLASSIFY), *TRAINING_SETTINGS, TRAINING_SEED, source_length_setting())

    def setup(self) -> None:
        label2id = {str(k).lower(): int(v) for k, v in self.model.config.label2id.items()}
        self.entailment_id = next((i for name, i in label2id.items() if name.startswith("entail")), -1)
        if self.entailment_id == -1:
            logger.warning("no 'entailment' label in the model config; using the last logit as entailment")
        fallback = -1 if self.entailment_id == 0 else 0
        self.contradiction_id = next((i for name, i in label2id.items() if name.startswith("contradict")), fallback)

    def task(self, question: Question) -> tuple[list[str], str, bool]:
        """Labels, template and multi-label flag for this question: the prompt's metadata over the configuration."""
        values = []
        for setting in TASK_SETTINGS:
            value = question.prompt_metadata.get(setting.name, self.configuration[setting.name])
            values.append(setting.validate(value))
        return values[0], values[1], values[2]

    def preprocess(self, question: Question, history: list[Turn]) -> list[Row]:
        labels, template, _ = self.task(question)
        return self.encode([question.text] * len(labels), [template.format(label) for label in labels],
                           where=question.where)

    def forward(self, inputs: dict[str, torch.Tensor]) -> list[torch.Tensor]:
        return list(self.model(**inputs, use_cache=False).logits.float().cpu())

    def postprocess(self, question: Question, outputs: list[Any]) -> list[Answer]:
        labels, template, multi_label = self.task(question)
        logits = torch.stack(outputs)
        if multi_label or len(labels) == 1:
            pairs = logits[:, [self.contradiction_id, self.entailment_id]]
            scores = torch.softmax(pairs, dim=-1)[:, 1]
        else:
            scores = torch.softmax(logits[:, self.entailment_id], dim=0)
        order = sorted(range(len(labels)), key=lambda i: -float(scores[i]))
        ranked = [labels[i] for i in order]
        ranked_scores = [float(scores[i]) for i in order]
        return [Answer(ranked[0], ranked_scores[0], {
            "sequence": question.text,
            "labels": ranked,
            "scores": ranked_scores,
            "hypothesis_template": template,
            "multi_label": multi_label,
        })]

    # ----- fine-tuning -----
    def prepare_training(self, references: list[str]) -> None:
        if self.entailment_id == -1:
            raise ConfigurationError("fine-tuning needs a model whose config names an 'entailment' label")

    def training_rows(self, question: Question, history: list[Turn], reference: str) -> list[Row]:
        labels, _, _ = self.task(question)
        if reference not in labels:
            raise DatasetError(f"{question.where}: answer {reference!r} is not one of the candidate labels {labels}")
        return [{**row, "labels": self.entailment_id if label == reference else self.contradiction_id}
                for row, label in zip(self.preprocess(question, history), labels)]
