"""A new classification head when the training answers name labels the model does not have."""
from __future__ import annotations

import logging
from typing import Any

from ..core.loading import check_local_weights

logger = logging.getLogger(__name__)


def with_new_head(adapter: Any, labels: list[str]) -> Any:
    """The adapter's weights reloaded with a freshly initialised head for `labels` (the body is kept).

    Reloading with `ignore_mismatched_sizes` lets `transformers` re-initialise exactly the mismatched head
    layers of any architecture, and keeps the same safety rules as loading: safetensors, no remote code.
    """
    model_path = adapter.configuration["model_path"]
    check_local_weights(model_path)
    logger.warning("the training answers name %d labels the model's head does not have all of; "
                   "a new head is initialised for them", len(labels))
    logger.debug("new labels %s replace %s", labels, sorted(adapter.model.config.label2id))
    model = adapter.model_class.from_pretrained(
        model_path, num_labels=len(labels), id2label=dict(enumerate(labels)),
        label2id={label: i for i, label in enumerate(labels)}, problem_type="single_label_classification",
        ignore_mismatched_sizes=True, use_safetensors=True, trust_remote_code=False)
    return model.to(adapter.device).eval()
