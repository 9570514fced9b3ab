"""The Dataloop entry point: a `dl.BaseModelAdapter` that delegates to the module named by `module_name`."""
from __future__ import annotations

import contextlib
import json
import logging
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import dtlpy as dl

from adapters.core.classes import CLASS
from adapters.core.errors import ConfigurationError
from adapters.core.module_loader import load_model_module
from adapters.core.prompt_items import short

# Absolute imports: Dataloop loads this entry point by file path, where relative imports have no parent package.
from adapters.dataloop.answers import replaced_by
from adapters.dataloop.execution import (
    ItemsNotAnswered,
    ItemsNotEmbedded,
    answering_every_prompt,
    answers_every_prompt,
    collecting_unanswered,
    execution_progress,
    record_unanswered,
    reporting_progress,
)
from adapters.dataloop.streaming import streamed_answers
from adapters.dataloop.model_scores import class_score_rows, score_rows, upload_scores
from adapters.training.dataset import DatasetError, read_subset
from adapters.training.evaluation import evaluate_annotations, evaluate_by_predicting
from adapters.training.metrics import PRIMARY
from adapters.training.output import CHECKPOINTS, OutputFolder
from adapters.training.plots import TRAINING_CURVE, training_curve
from adapters.training.reporting import (
    StepProgress,
    call_epoch_callback,
    evaluation_samples,
    kept_epoch,
    plot_samples,
    upload_samples,
)

if TYPE_CHECKING:  # the training loop (transformers' Trainer, accelerate, peft) is imported when training starts
    from adapters.training.trainer import Prepared

logger = logging.getLogger(__name__)

TRAINING_REPORT = "training_metrics.json"


def declared_as_dtlpy_does(function: Callable[..., Any]) -> Callable[..., Any]:
    """Keep dtlpy's declaration (`__dtlpy__`: inputs, outputs, display name) of the service function `function`
    overrides: the platform reads it, and the manifest declares the same (tests/test_manifest.py)."""
    function.__dtlpy__ = getattr(dl.BaseModelAdapter, function.__name__).__dtlpy__
    return function


def has_weights(folder: str | Path | None) -> bool:
    """True when `folder` holds save_pretrained files (e.g. a trained model's downloaded artifacts)."""
    return bool(folder) and Path(folder).is_dir() and (Path(folder) / "config.json").is_file() \
        and any(Path(folder).glob("*.safetensors"))


class ModelAdapter(dl.BaseModelAdapter):
    """Loads `configuration["module_name"]` from models/ and hands it prediction, training and evaluation."""

    _prepared: Prepared | None = None
    _prepared_unused: bool = False  # rows built by convert_from_dtlpy that no `train` has used yet
    training_history: list[dict[str, Any]] | None = None
    kept_epoch: dict[str, Any] | None = None  # which epoch's weights the last run kept, and why
    evaluation_metrics: dict[str, Any] | None = None
    # The platform's output folder belongs to this adapter, so what is in it may be replaced; the CLI asks the user.
    overwrite_output: bool = True
    # A new run whatever checkpoints the output folder holds (the CLI's --overwrite); on the platform a restarted
    # execution resumes instead.
    fresh_run: bool = False
    stored_checkpoints: Path | None = None  # checkpoints of an interrupted run among the model's artifacts
    _training_complete: bool = False
    _upload_checkpoints: bool = False  # set by train_model: each epoch's checkpoint goes to the model's artifacts
    # `stream: true` writes answers into platform items as they grow; the local runner's files have no viewer
    streams_answers: bool = True

    def load(self, local_path: str, **kwargs: Any) -> None:
        configuration = dict(self.model_entity.configuration or {})
        module = load_model_module(configuration.get("module_name"))
        if has_weights(local_path):
            configuration["model_path"] = str(local_path)
        self.stored_checkpoints = Path(local_path) / CHECKPOINTS if local_path else None
        self.hugging = module.HuggingAdapter(configuration, model_name=self.model_entity.name)
        self.describe_on_entity()

    def describe_on_entity(self) -> None:
        """Make the model entity say what this model is, where the platform reads it: `embeddings_size`, the size
        of its vectors (dtlpy's feature set and `embed_items` read it; its default, 256, would drop every vector),
        and for a classifier its `outputType` and, with output_type 'class', its `labels` (the studio shows them,
        and `prepare_data` downloads only annotations of the entity's output type). One update, when it differs."""
        model = self.model_entity
        changed = []
        size = self.hugging.embedding_size
        if model.configuration.get("embeddings_size") != size:
            model.configuration["embeddings_size"] = size
            changed.append(f"embeddings_size {size}")
        labels = self.hugging.label_set()
        if labels is not None:
            output_type = self.hugging.output_type
            if model.output_type != output_type:
                model.output_type = output_type
                changed.append(f"outputType {output_type!r}")
            if output_type == CLASS and model.labels != labels:
                model.labels = labels
                changed.append(f"{len(labels)} labels")
        if not changed:
            return
        logger.info("model %s: set %s", short(model.name), ", ".join(changed))
        try:
            model.update(reload_services=False)
        except Exception as error:  # noqa: BLE001 - this run uses the values; the entity keeps its old ones
            logger.warning("could not update model %s (%s): %s", short(model.name), ", ".join(changed), error)

    def prepare_item_func(self, item: dl.Item) -> Any:
        return self.hugging.prepare_item_func(item)

    @declared_as_dtlpy_does
    def predict_items(self, items: list, batch_size: int | None = None, **kwargs: Any) -> tuple[list, list]:
        """dtlpy's `predict_items`, which also fails the execution when an item got no answer (an image, a JSON file
        that is no prompt item, a prompt with nothing a text model can answer): after every batch ran and every
        other answer was uploaded, naming each such item and why."""
        return _raising_after_the_last_batch(lambda: super(ModelAdapter, self).predict_items(
            items, batch_size=batch_size, **kwargs), ItemsNotAnswered, len(items))

    def predict(self, batch: list, **kwargs: Any) -> list[dl.AnnotationCollection]:
        reanswer = answers_every_prompt() or None
        streaming = (streamed_answers(self.hugging, batch, self.model_entity.name, self.model_entity.id)
                     if self.streams_answers else contextlib.nullcontext())
        with streaming:
            collections, report = self.hugging.predict_with_report(batch, reanswer=reanswer)
        record_unanswered(batch, report.unanswered)
        return collections

    @declared_as_dtlpy_does
    def evaluate_model(self, model: dl.Model, dataset: dl.Dataset, filters: dl.Filters | None = None,
                       progress: dl.Progress | None = None, context: dl.Context | None = None) -> tuple:
        """dtlpy's `evaluate_model`; the predictions it runs (with `overwrite_annotations`, its default) answer
        every prompt of every item again, replacing this model's earlier answers, so that what is scored is what
        the model answers now (after training in place, or a configuration change), not what it answered once."""
        with answering_every_prompt():
            return super().evaluate_model(model, dataset, filters, progress=progress, context=context)

    def _upload_model_annotations(self, item: dl.Item, predictions: Any) -> Any:
        """Replace only what was answered again: upload the new answers, then delete this model's earlier answers
        on those prompts (on a text item: its earlier answers on the item, also when the new answer is no
        annotation: a multi-label class answer with no label at the threshold) and nowhere else.

        dtlpy's default deletes every annotation of the model on the item first, which would wipe the answers to
        prompts this call kept. Uploading before deleting means a failed upload loses nothing.
        """
        annotations = list(predictions.annotations if isinstance(predictions, dl.AnnotationCollection) else predictions)
        answered = set(getattr(predictions, "answered_prompts", ()))  # may hold answers that are no annotation
        answered |= {None if a.metadata["system"].get("promptId") is None else str(a.metadata["system"]["promptId"])
                     for a in annotations}
        if not answered:
            return predictions
        replaced = replaced_by(item.annotations.list(), self.model_entity.name, answered)
        uploaded = item.annotations.upload(annotations=annotations) if annotations else predictions
        if replaced:
            item.annotations.delete(filters=dl.Filters(resource=dl.FiltersResource.ANNOTATION, field="id",
                                                       values=replaced, operator=dl.FiltersOperations.IN))
        return uploaded

    # ----- embeddings -----
    def embed(self, batch: list, **kwargs: Any) -> list[list[float] | None]:
        """dtlpy's contract: exactly one vector (or None) per item of `batch`, in order (adapters/core/embedding.py);
        an item with nothing to embed gets None and fails the execution at the end of `embed_items`."""
        vectors, report = self.hugging.embed_items(batch)
        record_unanswered(batch, report.unanswered)
        return vectors

    @declared_as_dtlpy_does
    def embed_items(self, items: list, upload_features: bool | None = None, batch_size: int | None = None,
                    progress: dl.Progress | None = None, **kwargs: Any) -> tuple[list, list]:
        """dtlpy's `embed_items` into the model's feature set (found by the model's id, else created once with
        `embeddings_size`), refused up front when that set holds vectors of another size; like `predict_items`,
        it fails the execution naming the items that got no vector, after every other vector is uploaded."""
        self.check_feature_set()
        return _raising_after_the_last_batch(lambda: super(ModelAdapter, self).embed_items(
            items, upload_features=upload_features, batch_size=batch_size, progress=progress, **kwargs),
            ItemsNotEmbedded, len(items))

    def check_feature_set(self) -> None:
        """Refuse to embed into a feature set whose vectors have another size (the model's weights changed since
        it was created): the platform would refuse every vector, or mix two spaces in one search."""
        feature_set = self.feature_set
        size = self.hugging.embedding_size
        if feature_set.size is not None and int(feature_set.size) != size:
            raise ConfigurationError(
                f"feature set {short(feature_set.name)} ({feature_set.id}) of model {short(self.model_entity.name)} "
                f"holds vectors of size {feature_set.size}, and this model's are of size {size} (its weights "
                "changed); delete that feature set, and the next embedding creates one of the right size")

    # ----- training -----
    @property
    def training_seed(self) -> int | None:
        """The seed of the last prepared training run (drawn fresh when the configuration's is null)."""
        return self._prepared.seed if self._prepared else None

    def convert_from_dtlpy(self, data_path: str, **kwargs: Any) -> None:
        """Validate the downloaded layout and build the training rows; errors say what the data lacks."""
        from adapters.training.trainer import prepare

        self._prepared = prepare(self.hugging, data_path)
        self._prepared_unused = True
        logger.info("training data: %d train rows, %d validation rows", len(self._prepared.train_rows),
                    len(self._prepared.validation_rows))

    @declared_as_dtlpy_does
    def train_model(self, model: dl.Model, cleanup: bool = False, progress: dl.Progress | None = None,
                    context: dl.Context | None = None) -> dl.Model:
        """dtlpy's platform entry point, with dtlpy's parameters named (the platform passes `progress` and
        `context` only to a function whose signature names them): progress at each epoch's end (dtlpy's) and
        within epochs (`StepProgress`), and each epoch's checkpoint stored with the model, so a restarted
        execution (another pod, after preemption) continues from the last complete epoch."""
        self._upload_checkpoints = True
        try:
            with reporting_progress(progress):
                return super().train_model(model, cleanup=cleanup, progress=progress, context=context)
        finally:
            self._upload_checkpoints = False

    def train(self, data_path: str, output_path: str, on_epoch_end_callback: Callable[..., Any] | None = None,
              on_step: Callable[[int, int, float | None], None] | None = None, **kwargs: Any) -> list[dict[str, Any]]:
        """Fine-tune in place, checkpointing into `output_path` (see adapters/training/output.py for its rules);
        each epoch's metrics go to `model.metrics` and the callback, and `on_step(step, steps, loss)` hears every
        optimizer step (by default, on the platform, the execution's progress). Returns one record per epoch of
        the run (epochs counted from 1)."""
        self._training_complete, self.training_history = False, []  # a failure from here on saves no weights
        self.kept_epoch = None
        output = OutputFolder(Path(output_path), overwrite=self.overwrite_output, keep=(Path(data_path),),
                              fresh=self.fresh_run)
        output.check()
        # dtlpy's prepare_data converts just before train; any other call reads the data as it is now
        if not self._prepared_unused or self._prepared.data_path != Path(data_path):
            self.convert_from_dtlpy(data_path)
        self._prepared_unused = False

        def on_epoch(metrics: dict[str, Any]) -> None:
            self.training_history.append(metrics)
            upload_samples(self.model_entity, plot_samples(metrics))
            if self._upload_checkpoints:
                self._store_checkpoints(output.path)
            call_epoch_callback(on_epoch_end_callback, metrics)

        from adapters.training.trainer import fit

        progress = execution_progress()
        if on_step is None and progress is not None:
            on_step = StepProgress(progress, self.hugging.configuration["epochs"])
        self.training_history = fit(self.hugging, self._prepared, on_epoch, output,
                                    None if self.fresh_run else self.stored_checkpoints, on_step)
        configuration = self.hugging.configuration
        primary = PRIMARY[self.hugging.metric_family] if self._prepared.validation is not None else None
        self.kept_epoch = kept_epoch(self.training_history, primary, configuration["epochs"],
                                     configuration["early_stopping_patience"])
        self._training_complete = True
        self.describe_on_entity()  # a new head has new labels
        return self.training_history

    def _store_checkpoints(self, output_path: Path) -> None:
        """Upload the checkpoints folder to the model's artifacts; a failed upload costs resumability, not the run."""
        try:
            self.model_entity.artifacts.upload(filepath=str(output_path / "*"), overwrite=True)
        except Exception as error:  # noqa: BLE001 - the local checkpoint still exists
            logger.warning("could not store the epoch's checkpoint with model %r: %s", self.model_entity.name, error)

    def save_to_model(self, local_path: str | None = None, cleanup: bool = False, replace: bool = True,
                      **kwargs: Any) -> None:
        """dtlpy's upload of `save`'s folder; once a finished model is stored, its run's stored checkpoints go."""
        super().save_to_model(local_path=local_path, cleanup=cleanup, replace=replace, **kwargs)
        if self._upload_checkpoints and self._training_complete:
            self._drop_stored_checkpoints()

    def _drop_stored_checkpoints(self) -> None:
        """Delete the `checkpoints/` artifacts, which every later `load()` would otherwise download."""
        model = self.model_entity
        try:
            stale = {a.id for a in model.artifacts.list() if f"/{CHECKPOINTS}/" in (a.filename or "")}
            for artifact_id in stale:
                model.artifacts.delete(artifact_id=artifact_id)
            if stale:
                model.model_artifacts = [a for a in model.model_artifacts if a.id not in stale]
                model.update()
        except Exception as error:  # noqa: BLE001 - the model is stored; the leftovers only cost space
            logger.warning("could not delete the stored checkpoints of model %r: %s", model.name, error)

    def save(self, local_path: str, **kwargs: Any) -> None:
        """safetensors weights, tokenizer, config and training_metrics.json, written beside `local_path` and
        renamed into its place, so `load()` of the next run (or `model_path`) never reads a half-written model.

        After a failed `train` (dtlpy saves on failure too) only the report is added: the checkpoints already in
        `local_path` are what a rerun resumes from, and half-trained weights must not pass for a model.
        """
        from adapters.training.trainer import is_main_process

        if not is_main_process():
            return
        if self.training_history is not None and not self._training_complete:
            folder = Path(local_path)
            folder.mkdir(parents=True, exist_ok=True)
            self._write_report(folder)
            return

        def write(folder: Path) -> None:
            self.hugging.model.save_pretrained(folder, safe_serialization=True)
            self.hugging.tokenizer.save_pretrained(folder)
            self._write_report(folder)
            if self.training_history:
                self._draw_training_curve(folder)

        OutputFolder(Path(local_path), overwrite=True).publish(write)

    def _draw_training_curve(self, folder: Path) -> None:
        """training_curve.png beside the weights; a picture that cannot be drawn costs a warning, not the model."""
        try:
            training_curve(self.training_history, self.kept_epoch, folder / TRAINING_CURVE)
        except Exception as error:  # noqa: BLE001 - a report, never a reason to lose the trained model
            logger.warning("could not draw %s: %s", TRAINING_CURVE, error)

    def _write_report(self, folder: Path) -> None:
        if self.training_history:
            report = {"seed": self.training_seed, "kept": self.kept_epoch, "epochs": self.training_history}
            (folder / TRAINING_REPORT).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")

    # ----- evaluation -----
    def evaluate(self, model: dl.Model, dataset: dl.Dataset, filters: dl.Filters | dict | None = None) -> dl.Model:
        """Score the answers `evaluate_model` just uploaded against the items' reference answers (annotations by no
        model), in the files the platform's evaluation and comparison views read, `/.modelscores/<model id>.csv`
        and its interpolated JSON: with output_type 'class', dtlpymetrics' matching of classifications, as dtlpy's
        default (`create_model_score`) runs it, but on this evaluation's items only (dtlpy's default also scores
        the files an earlier evaluation left in its shared download folder); for text answers, this package's
        scores in the same files (adapters/dataloop/model_scores.py).

        The dataset's metrics (accuracy and macro-F1, or ROUGE-1/2/L) go to `self.evaluation_metrics` and to the
        model's metrics, in their own figure ("evaluation"), apart from the training curves. Reference class
        labels the model does not know are refused, naming them.
        """
        if isinstance(filters, dict):
            filters = dl.Filters(custom_filter=filters)
        filters = filters or dl.Filters()
        folder = tempfile.mkdtemp(prefix="hf-adapter-evaluate-")
        try:
            dataset.items.download(filters=filters, local_path=folder,
                                   annotation_options=dl.ViewAnnotationOptions.JSON)
            json_root = Path(folder) / "json"  # the items' JSON, annotations included
            if not any(json_root.rglob("*.json")):
                raise DatasetError(f"the evaluation's filter selects no item of dataset {short(dataset.name)} "
                                   f"({dataset.id}): nothing to evaluate")
            subset = read_subset(folder, "evaluation", predictions_of=model.name)
            self.evaluation_metrics = evaluate_annotations(self.hugging.metric_family, subset,
                                                           self.hugging.label_set())
            if self.hugging.output_type == CLASS:
                rows = class_score_rows(json_root, model, dataset)
            else:
                rows = score_rows(self.hugging.metric_family, subset, model.id, dataset.id)
            upload_scores(rows, model, dataset)
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        upload_samples(model, evaluation_samples(self.evaluation_metrics), dataset_id=dataset.id)
        return model

    def evaluate_path(self, data_path: str, subset: str = "validation", with_confusion: bool = False) -> dict[str, Any]:
        """Run the model on one subset of a local layout and score it (no platform needed); a classifier's
        `confusion_matrix` too when `with_confusion`."""
        return evaluate_by_predicting(self.hugging, read_subset(Path(data_path) / subset, subset), with_confusion)


def _raising_after_the_last_batch(run: Callable[[], Any], error_class: type[Exception], total: int) -> Any:
    """`run()` (dtlpy's loop over every batch), then `error_class` naming the items left without an answer, if
    any: raised only after every batch ran and every other answer was uploaded; dtlpy's own report of failed
    batches, raised after its last batch, comes first in it."""
    with collecting_unanswered() as unanswered:
        try:
            result = run()
        except Exception as error:
            if unanswered:
                raise error_class(unanswered, total, error) from error
            raise
    if unanswered:
        raise error_class(unanswered, total)
    return result
