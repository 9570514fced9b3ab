"""Sentiment of each question with a sequence classifier (default: DistilBERT fine-tuned on SST-2).

The answer is the label text from the model's own `id2label`; confidence is that label's probability,
computed as `transformers`' text-classification pipeline does (softmax, or sigmoid for one-label and
multi-label models). With `output_type: class` a text item's answer is a `dl.Classification` of that label.
Fine-tuning learns the labels the answers name; new labels get a new head.
"""
from __future__ import annotations

from typing import Any

import torch
from transformers import AutoConfig, AutoModelForSequenceClassification

from adapters.architectures.distilbert_classification import cls_classifier
from adapters.core.checkpoints import entailment_id
from adapters.core.classes import OUTPUT_TYPE
from adapters.core.errors import ConfigurationError
from adapters.core.hugging_adapter import Answer, Row, Turn
from adapters.core.loading import resolve_source
from adapters.core.hugging_adapter import HuggingAdapter as BaseAdapter
from adapters.core.prompt_items import Question, short, short_list
from adapters.runtimes import CLASSIFY, runtime_settings
from adapters.training.dataset import DatasetError
from adapters.training.heads import with_new_head
from adapters.training.settings import TRAINING_SEED, TRAINING_SETTINGS, source_length_setting


def labels_of(config: Any) -> list[str]:
    """The label names of a classifier's config, in class-index order."""
    return [str(config.id2label[i]) for i in range(len(config.id2label))]


class HuggingAdapter(BaseAdapter):
    model_class = AutoModelForSequenceClassification
    family = "sequence classifiers (…ForSequenceClassification) other than NLI and regression models"
    settings = (OUTPUT_TYPE, *runtime_settings(CLASSIFY), *TRAINING_SETTINGS, TRAINING_SEED, source_length_setting())
    prune_last_layer = True  # DistilBERT's last layer runs at the [CLS] position only (adapters/architectures)

    @classmethod
    def serves(cls, config: Any) -> bool:
        return (super().serves(config) and entailment_id(config) is None
                and getattr(config, "problem_type", None) != "regression")

    def setup(self) -> None:
        config = self.model.config
        if config.problem_type == "regression":
            raise ConfigurationError(f"{self.configuration['model_path']} is a regression model, not a classifier")
        self.use_sigmoid = config.problem_type == "multi_label_classification" or config.num_labels == 1

    @classmethod
    def configured_labels(cls, configuration: dict) -> list[str]:
        return labels_of(AutoConfig.from_pretrained(resolve_source(configuration["model_path"])))

    def label_set(self, question: Question | None = None) -> list[str]:
        return labels_of(self.model.config)

    def preprocess(self, question: Question, history: list[Turn]) -> list[Row]:
        return self.encode(question.text, where=question.where)

    def forward(self, inputs: dict[str, torch.Tensor]) -> list[torch.Tensor]:
        # torch DistilBERT: the last layer at the classified first token only (built per call, from the model as it
        # is now: training may have replaced it)
        pruned = cls_classifier(self.model) if self.prune_last_layer else None
        if pruned is not None and set(inputs) == {"input_ids", "attention_mask"}:
            logits = pruned(inputs["input_ids"], inputs["attention_mask"])
        else:
            logits = self.model(**inputs).logits
        return list(logits.float().cpu())

    def postprocess(self, question: Question, outputs: list[Any]) -> list[Answer]:
        logits = outputs[0]
        scores = torch.sigmoid(logits) if self.use_sigmoid else torch.softmax(logits, dim=-1)
        best = int(scores.argmax())
        id2label = self.model.config.id2label
        label = str(id2label[best])
        return [Answer(label, float(scores[best]), {
            "label": label,
            "class_index": best,
            "scores": {str(id2label[i]): float(s) for i, s in enumerate(scores.tolist())},
        })]

    # ----- fine-tuning -----
    def prepare_training(self, references: list[str]) -> None:
        labels = sorted(set(references))
        if len(labels) < 2:
            raise DatasetError(f"a classifier needs answers with at least 2 different labels, got {short(labels)}")
        if not set(labels) <= set(self.model.config.label2id):
            self.model = with_new_head(self, labels)
            self.setup()

    def training_rows(self, question: Question, history: list[Turn], reference: str) -> list[Row]:
        label2id = self.model.config.label2id
        if reference not in label2id:
            raise DatasetError(f"{question.where}: label {short(reference)} is not among the training labels "
                               f"{short_list(sorted(label2id), 10)}")
        return [{**row, "labels": int(label2id[reference])} for row in self.preprocess(question, history)]
