"""Zero-shot classification as natural-language inference (default: BART-large fine-tuned on MNLI).

Each candidate label becomes a hypothesis (the label in place of the template's one `{}`) paired with the question as
premise; all (question, label) pairs of a batch run through the model together. Scores follow `transformers`'
zero-shot-classification pipeline: a softmax of the entailment logits over the labels, or, with `multi_label`
(or a single label), a softmax of entailment against contradiction for each label on its own.
A prompt's metadata element may override `candidate_labels`, `hypothesis_template` and `multi_label`.
With `output_type: class` a text item's answer is a `dl.Classification` of the best label, or with `multi_label`
one per label scoring at least `threshold`.
Fine-tuning on (question, label) answers: the answer's hypothesis is entailment, every other candidate label's
is contradiction, as zero-shot classifiers are trained from NLI data.
"""
from __future__ import annotations

import logging
import string
from typing import Any

import torch
from transformers import AutoModelForSequenceClassification

from adapters.architectures.bart_classification import eos_classifier
from adapters.core.checkpoints import entailment_id
from adapters.core.classes import OUTPUT_TYPE, THRESHOLD
from adapters.core.errors import ConfigurationError
from adapters.core.hugging_adapter import Answer, Row, Turn
from adapters.core.hugging_adapter import HuggingAdapter as BaseAdapter
from adapters.core.prompt_items import Question, short, short_list
from adapters.core.settings import Setting, control_character_problem, unicode_problem
from adapters.runtimes import CLASSIFY, runtime_settings
from adapters.training.dataset import DatasetError
from adapters.training.settings import TRAINING_SEED, TRAINING_SETTINGS, source_length_setting

logger = logging.getLogger(__name__)
MAX_LABELS = 100
# A label or template is a few words; these caps keep every hypothesis small whatever a prompt's metadata says.
MAX_LABEL_CHARS = 200
MAX_TEMPLATE_CHARS = 200


def _labels_problem(labels: list) -> str | None:
    if not labels or len(labels) > MAX_LABELS:
        return f"give 1 to {MAX_LABELS} labels"
    if not all(isinstance(label, str) and label.strip() for label in labels):
        return "every label must be a non-empty string"
    if any(len(label) > MAX_LABEL_CHARS for label in labels):
        return f"every label must be at most {MAX_LABEL_CHARS} characters"
    for check in (unicode_problem, control_character_problem):
        problem = next(filter(None, map(check, labels)), None)
        if problem:
            return f"every label {problem}"
    if len(set(labels)) != len(labels):
        return "labels must be unique"
    return None


def template_parts(template: str) -> tuple[str, str]:
    """The text before and after the template's one plain `{}`, where the label goes.

    The template is never `str.format`ted: a format spec (`{:>20000000}`) would pad each hypothesis to any size
    and a field name (`{__class__}`) reads attributes, so only a bare `{}` is accepted, and `{{`/`}}` are braces.
    """
    if len(template) > MAX_TEMPLATE_CHARS:
        raise ValueError(f"must be at most {MAX_TEMPLATE_CHARS} characters")
    problem = unicode_problem(template) or control_character_problem(template)
    if problem:
        raise ValueError(problem)
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError:
        raise ValueError("is not a valid template: write a literal brace as '{{' or '}}'") from None
    fields = [index for index, (_, name, _, _) in enumerate(parsed) if name is not None]
    if len(fields) != 1 or parsed[fields[0]][1:] != ("", "", None):
        raise ValueError("must contain exactly one plain '{}' where the label goes (no field name, format spec or "
                         "conversion; write literal braces as '{{' and '}}')")
    split = fields[0]
    return ("".join(literal for literal, *_ in parsed[:split + 1]),
            "".join(literal for literal, *_ in parsed[split + 1:]))


def _template_problem(template: str) -> str | None:
    try:
        template_parts(template)
    except ValueError as problem:
        return str(problem)
    return None


TASK_SETTINGS = (
    Setting("candidate_labels", (list,), "labels to score each question against", check=_labels_problem),
    Setting("hypothesis_template", (str,), "turns a label into an NLI hypothesis", check=_template_problem),
    Setting("multi_label", (bool,), "score labels independently instead of as one distribution"),
)


class HuggingAdapter(BaseAdapter):
    model_class = AutoModelForSequenceClassification
    family = "NLI sequence classifiers (…ForSequenceClassification with an 'entailment' label), for zero-shot"
    settings = (OUTPUT_TYPE, *TASK_SETTINGS, THRESHOLD, *runtime_settings(CLASSIFY), *TRAINING_SETTINGS, TRAINING_SEED,
                source_length_setting())

    @classmethod
    def serves(cls, config: Any) -> bool:
        return super().serves(config) and entailment_id(config) is not None

    def setup(self) -> None:
        self.eos_classifier = eos_classifier(self.model)
        label2id = {str(k).lower(): int(v) for k, v in self.model.config.label2id.items()}
        found = entailment_id(self.model.config)
        self.entailment_id = -1 if found is None else found
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

    @classmethod
    def configured_labels(cls, configuration: dict) -> list[str]:
        return list(configuration["candidate_labels"])

    def label_set(self, question: Question | None = None) -> list[str]:
        return self.task(question)[0] if question is not None else self.configured_labels(self.configuration)

    def classes(self, question: Question, answer: Answer) -> list[tuple[str, float]]:
        """Multi-label: every label scoring at least `threshold` (best first), maybe none; else the best label."""
        if not answer.details["multi_label"]:
            return super().classes(question, answer)
        threshold = self.configuration["threshold"]
        return [(label, score) for label, score in zip(answer.details["labels"], answer.details["scores"])
                if score >= threshold]

    def preprocess(self, question: Question, history: list[Turn]) -> list[Row]:
        labels, template, _ = self.task(question)
        before, after = template_parts(template)
        return self.encode(question.text, [before + label + after for label in labels], where=question.where)

    def forward(self, inputs: dict[str, torch.Tensor]) -> list[torch.Tensor]:
        if self.eos_classifier is not None:  # torch BART: the last decoder layer at the classified token only
            logits = self.eos_classifier(inputs["input_ids"], inputs["attention_mask"])
        else:
            logits = self.model(**inputs, use_cache=False).logits
        return list(logits.float().cpu())

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
            raise DatasetError(f"{question.where}: answer {short(reference)} is not one of the candidate labels "
                               f"{short_list(labels, 10)}")
        return [{**row, "labels": self.entailment_id if label == reference else self.contradiction_id}
                for row, label in zip(self.preprocess(question, history), labels)]
