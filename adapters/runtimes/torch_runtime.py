"""The default runtime: the `transformers` model itself, on CPU with oneDNN dense layers, or on CUDA."""
from __future__ import annotations

import logging
from typing import Any

import torch

from ..cpu_kernels import use_onednn_linears
from ..generation import generate_with_confidence
from ..loading import load_tokenizer, load_weights, resolve_source
from .base import CLASSIFY, GENERATE, Runtime

logger = logging.getLogger(__name__)


class TorchRuntime(Runtime):
    name = "torch"
    doc = "'torch': the transformers model (the only runtime that fine-tunes)"
    tasks = frozenset({CLASSIFY, GENERATE})

    def load(self, model_class: Any, configuration: dict, device: torch.device) -> tuple[Any, Any]:
        source = resolve_source(configuration["model_path"])
        tokenizer = load_tokenizer(source)
        model = load_weights(model_class, source).to(device)
        if device.type == "cpu":
            use_onednn_linears(model)
        logger.info("loaded %s from %s on %s", type(model).__name__, configuration["model_path"], device)
        return model, tokenizer

    def generate(self, model: Any, encoded: dict[str, torch.Tensor], config: Any, seed: int | None) -> list[Any]:
        return generate_with_confidence(model, encoded, config, seed)
