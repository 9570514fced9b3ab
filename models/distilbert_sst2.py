"""Sentiment of each question with a sequence classifier (default: DistilBERT fine-tuned on SST-2).

The answer is the label text from the model's own `id2label`; confidence is that label's probability,
computed as `transformers`' text-classification pipeline does (softmax, or sigmoid for one-label and
multi-label models).
"""
from __future__ import annotations

from typing import Any

import torch
from transformers import AutoModelForSequenceClassification

from adapters.errors import ConfigurationError
from adapters.hugging_adapter import Answer, HuggingAdapter as BaseAdapter, Row, Turn
from adapters.prompt_items import Question


class HuggingAdapter(BaseAdapter):
    model_class = AutoModelForSequenceClassification

    def setup(self) -> None:
        config = self.model.config
        if config.problem_type == "regression":
            raise ConfigurationError(f"{self.configuration['model_path']} is a regression model, not a classifier")
        self.use_sigmoid = config.problem_type == "multi_label_classification" or config.num_labels == 1

    def preprocess(self, question: Question, history: list[Turn]) -> list[Row]:
        return self.encode([question.text], where=question.where)

    def forward(self, inputs: dict[str, torch.Tensor]) -> list[torch.Tensor]:
        return list(self.model(**inputs).logits.float().cpu())

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
