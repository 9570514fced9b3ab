"""The Dataloop entry point: a `dl.BaseModelAdapter` that delegates to the module named by `module_name`."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import dtlpy as dl

from .module_loader import load_model_module

logger = logging.getLogger(__name__)


def has_weights(folder: str | Path | None) -> bool:
    """True when `folder` holds save_pretrained files (e.g. a trained model's downloaded artifacts)."""
    return bool(folder) and Path(folder).is_dir() and (Path(folder) / "config.json").is_file() \
        and any(Path(folder).glob("*.safetensors"))


class ModelAdapter(dl.BaseModelAdapter):
    """Loads `configuration["module_name"]` from models/ and hands it prediction (and later training)."""

    def load(self, local_path: str, **kwargs: Any) -> None:
        configuration = dict(self.model_entity.configuration or {})
        module = load_model_module(configuration.get("module_name"))
        if has_weights(local_path):
            configuration["model_path"] = str(local_path)
        self.hugging = module.HuggingAdapter(configuration, model_name=self.model_entity.name)

    def prepare_item_func(self, item: dl.Item) -> Any:
        return self.hugging.prepare_item_func(item)

    def predict(self, batch: list, **kwargs: Any) -> list[dl.AnnotationCollection]:
        return self.hugging.predict(batch, **kwargs)
