"""LoRA through `peft`: low-rank adapters on every dense layer of the model's body, merged back before saving.

With `lora_r` > 0 the pretrained weights stay frozen and only rank-r updates of each dense layer train (plus,
for classifiers, the whole head: it is small, and may be new). Gradients and optimizer state then cost a few
MB instead of three times the model, which is what lets DialoGPT-large train on a 16 GB T4 (docs/training.md).
`merge` folds the updates into the weights, so the saved folder is the plain `save_pretrained` model that
`model_path` and `load()` read, with no `peft` needed at prediction.
"""
from __future__ import annotations

import logging
import warnings
from typing import Any

from peft import LoraConfig, PeftModel, get_peft_model
from torch import nn
from transformers.pytorch_utils import Conv1D

logger = logging.getLogger(__name__)


def head_modules(model: Any) -> list[str]:
    """A sequence classifier's head: its top-level modules with weights outside the pretrained body."""
    body = getattr(model, model.base_model_prefix, None)
    return [name for name, child in model.named_children()
            if child is not body and any(True for _ in child.parameters())]


def lora_targets(model: Any, classifier: bool) -> tuple[list[str], list[str]]:
    """(dense layers that get LoRA, modules trained whole): every Linear/Conv1D but the output layer and head."""
    heads = head_modules(model) if classifier else []
    output = model.get_output_embeddings()
    targets = [name for name, module in model.named_modules()
               if isinstance(module, (nn.Linear, Conv1D)) and module is not output
               and name.split(".", 1)[0] not in heads]
    return targets, heads


def with_lora(model: Any, configuration: dict[str, Any], classifier: bool) -> PeftModel:
    """Wrap `model` (its layers are changed in place) so that only LoRA weights and the head train."""
    targets, heads = lora_targets(model, classifier)
    config = LoraConfig(r=configuration["lora_r"], lora_alpha=configuration["lora_alpha"],
                        lora_dropout=configuration["lora_dropout"], target_modules=targets,
                        modules_to_save=heads or None, bias="none",
                        fan_in_fan_out=any(isinstance(model.get_submodule(t), Conv1D) for t in targets))
    with warnings.catch_warnings():  # peft still calls transformers' deprecated is_gradient_checkpointing
        warnings.filterwarnings("ignore", category=FutureWarning, message=".*is_gradient_checkpointing")
        wrapped = get_peft_model(model, config)
    trainable = sum(p.numel() for p in wrapped.parameters() if p.requires_grad)
    total = sum(p.numel() for p in wrapped.parameters())
    logger.info("LoRA r=%d on %d dense layers: %d of %d parameters train", config.r, len(targets), trainable, total)
    return wrapped


def merge(wrapped: PeftModel) -> Any:
    """The base model with the LoRA updates folded into its weights and the trained head in place."""
    return wrapped.merge_and_unload(safe_merge=True)
