"""The Dataloop entry point: a `dl.BaseModelAdapter` that delegates to the module named by `module_name`."""
from __future__ import annotations

import json
import logging
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable

import dtlpy as dl

# Absolute imports: Dataloop loads this entry point by file path, where relative imports have no parent package.

from adapters.answers import stored_answers
from adapters.module_loader import load_model_module
from adapters.training.dataset import read_subset
from adapters.training.evaluation import evaluate_annotations, evaluate_by_predicting
from adapters.training.reporting import call_epoch_callback, plot_samples, upload_samples
from adapters.training.trainer import Prepared, fit, prepare

logger = logging.getLogger(__name__)

TRAINING_REPORT = "training_metrics.json"


def has_weights(folder: str | Path | None) -> bool:
    """True when `folder` holds save_pretrained files (e.g. a trained model's downloaded artifacts)."""
    return bool(folder) and Path(folder).is_dir() and (Path(folder) / "config.json").is_file() \
        and any(Path(folder).glob("*.safetensors"))


class ModelAdapter(dl.BaseModelAdapter):
    """Loads `configuration["module_name"]` from models/ and hands it prediction, training and evaluation."""

    _prepared: Prepared | None = None
    training_history: list[dict[str, Any]] | None = None
    evaluation_metrics: dict[str, Any] | None = None

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

    def _upload_model_annotations(self, item: dl.Item, predictions: Any) -> Any:
        """Replace only what was answered again: upload the new answers, then delete this model's earlier answers
        on those prompts and nowhere else.

        dtlpy's default deletes every annotation of the model on the item first, which would wipe the answers to
        prompts this call kept (see `reanswer`). Uploading before deleting means a failed upload loses nothing.
        """
        annotations = list(predictions.annotations if isinstance(predictions, dl.AnnotationCollection) else predictions)
        if not annotations:
            return predictions
        answered = {str(a.metadata["system"]["promptId"]) for a in annotations}
        replaced = [answer.annotation_id for answer in stored_answers(item.annotations.list())
                    if answer.model_name == self.model_entity.name and answer.prompt_key in answered
                    and answer.annotation_id]
        uploaded = item.annotations.upload(annotations=annotations)
        if replaced:
            item.annotations.delete(filters=dl.Filters(resource=dl.FiltersResource.ANNOTATION, field="id",
                                                       values=replaced, operator=dl.FiltersOperations.IN))
        return uploaded

    # ----- training -----
    @property
    def training_seed(self) -> int | None:
        """The seed of the last prepared training run (drawn fresh when the configuration's is null)."""
        return self._prepared.seed if self._prepared else None

    def convert_from_dtlpy(self, data_path: str, **kwargs: Any) -> None:
        """Validate the downloaded layout and build the training rows; errors say what the data lacks."""
        self._prepared = prepare(self.hugging, data_path)
        logger.info("training data: %d train rows, %d validation rows", len(self._prepared.train_rows),
                    len(self._prepared.validation_rows))

    def train(self, data_path: str, output_path: str, on_epoch_end_callback: Callable[..., Any] | None = None,
              **kwargs: Any) -> list[dict[str, Any]]:
        """Fine-tune in place; each epoch's metrics go to `model.metrics` and the callback. Returns the history."""
        if self._prepared is None or self._prepared.data_path != Path(data_path):
            self.convert_from_dtlpy(data_path)

        def on_epoch(metrics: dict[str, Any]) -> None:
            upload_samples(self.model_entity, plot_samples(metrics))
            call_epoch_callback(on_epoch_end_callback, metrics)

        self.training_history = fit(self.hugging, self._prepared, on_epoch)
        return self.training_history

    def save(self, local_path: str, **kwargs: Any) -> None:
        """safetensors weights, tokenizer and config: `load()` of the next run, or `model_path`, reads them."""
        folder = Path(local_path)
        folder.mkdir(parents=True, exist_ok=True)
        self.hugging.model.save_pretrained(folder, safe_serialization=True)
        self.hugging.tokenizer.save_pretrained(folder)
        if self.training_history:
            report = {"seed": self.training_seed, "epochs": self.training_history}
            (folder / TRAINING_REPORT).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")

    # ----- evaluation -----
    def evaluate(self, model: dl.Model, dataset: dl.Dataset, filters: dl.Filters | dict | None = None) -> dl.Model:
        """Score the answers `evaluate_model` just uploaded against the items' reference answers.

        The items are downloaded in the training layout; annotations by `model.name` are its answers, annotations
        by no model are the references. Metrics go to `model.metrics` and to `self.evaluation_metrics`.
        """
        if isinstance(filters, dict):
            filters = dl.Filters(custom_filter=filters)
        folder = tempfile.mkdtemp(prefix="hf-adapter-evaluate-")
        try:
            dataset.items.download(filters=filters or dl.Filters(), local_path=folder,
                                   annotation_options=dl.ViewAnnotationOptions.JSON)
            subset = read_subset(folder, "evaluation", predictions_of=model.name)
            self.evaluation_metrics = evaluate_annotations(self.hugging.metric_family, subset)
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        upload_samples(model, plot_samples(self.evaluation_metrics, x=0))
        return model

    def evaluate_path(self, data_path: str, subset: str = "validation") -> dict[str, Any]:
        """Run the model on one subset of a local layout and score it (no platform needed)."""
        return evaluate_by_predicting(self.hugging, read_subset(Path(data_path) / subset, subset))
