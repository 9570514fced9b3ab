"""Training reports to Dataloop: plot samples for `model.metrics`, progress for `on_epoch_end_callback`, and
progress within epochs for the execution (`StepProgress`)."""
from __future__ import annotations

import inspect
import logging
from typing import Any, Callable

import dtlpy as dl

logger = logging.getLogger(__name__)

NOT_PLOTTED = ("epoch", "epochs", "questions", "unanswered")


def plot_samples(metrics: dict[str, Any]) -> list[dl.PlotSample]:
    """An epoch's samples (x: the epoch): losses share the figure "loss" (legends train/validation), each
    validation score has its own figure."""
    x = metrics.get("epoch", 0)
    samples = []
    for name, value in metrics.items():
        if name in NOT_PLOTTED or not isinstance(value, (int, float)):
            continue
        if name.endswith("_loss"):
            samples.append(dl.PlotSample(figure="loss", legend=name[:-len("_loss")], x=x, y=float(value)))
        else:
            samples.append(dl.PlotSample(figure=name, legend="validation", x=x, y=float(value)))
    return samples


EVALUATION_FIGURE = "evaluation"


def evaluation_samples(metrics: dict[str, Any]) -> list[dl.PlotSample]:
    """An evaluation's scores in a figure of their own ("evaluation", one legend per score), apart from the
    training curves, whose x is the epoch; the evaluated dataset goes with them (`upload_samples`)."""
    return [dl.PlotSample(figure=EVALUATION_FIGURE, legend=name, x=0, y=float(value))
            for name, value in metrics.items()
            if name not in NOT_PLOTTED and isinstance(value, (int, float)) and not isinstance(value, bool)]


def upload_samples(model: dl.Model, samples: list[dl.PlotSample], dataset_id: str | None = None) -> None:
    """Post to `model.metrics` (for `dataset_id`, by default the model's dataset); an unreachable platform costs
    the plot, not the training."""
    try:
        model.metrics.create(samples=samples, dataset_id=dataset_id or model.dataset_id)
    except Exception as error:  # noqa: BLE001 - metrics are a report, never a reason to fail
        logger.warning("could not upload %d metric samples of model %r: %s", len(samples), model.name, error)


def call_epoch_callback(callback: Callable[..., Any] | None, metrics: dict[str, Any]) -> None:
    """dtlpy's callback takes (i_epoch, n_epoch); a callback that also takes `metrics` gets them too."""
    if callback is None:
        return
    parameters = inspect.signature(callback).parameters
    takes_metrics = "metrics" in parameters or any(p.kind is p.VAR_KEYWORD for p in parameters.values())
    index = metrics["epoch"] - 1  # dtlpy counts epochs from 0 ("finished epoch: 0/3"); the records from 1
    if takes_metrics:
        callback(index, metrics["epochs"], metrics=metrics)
    else:
        callback(index, metrics["epochs"])


class StepProgress:
    """Progress within epochs for the execution's `dl.Progress`, which dtlpy's `train_model` otherwise updates only
    when an epoch ends ("finished epoch: i/n"): an update whenever the run's steps reach another whole percent,
    so a long epoch moves too. Each update is a call to the platform: at most 100 a run, whatever its length."""

    def __init__(self, progress: Any, epochs: int):
        self.progress = progress
        self.epochs = max(epochs, 1)
        self.shown = 0  # percent last reported: the first update is at 1%

    def __call__(self, step: int, steps: int, loss: float | None = None) -> None:
        percent = 100 * step // steps if steps > 0 else 0
        if percent <= self.shown:
            return
        self.shown = percent
        epoch = min((step - 1) * self.epochs // steps + 1, self.epochs) if steps > 0 else 1
        shown = f", loss {loss:.4g}" if loss is not None else ""
        self.progress.update(progress=percent,
                             message=f"training: epoch {epoch}/{self.epochs}, step {step}/{steps}{shown}")


def kept_epoch(records: list[dict[str, Any]], primary_metric: str | None, epochs: int,
               patience: int) -> dict[str, Any] | None:
    """Which epoch's weights a run keeps, and why, in the words a person reads: the first epoch with the best
    validation `primary_metric` (Trainer's `load_best_model_at_end` takes a later epoch only when it is strictly
    better), else the last one. Also says when early stopping ended the run before `epochs`."""
    if not records:
        return None
    last = records[-1]
    stopped = (f"; early stopping ended the run after epoch {last['epoch']} of {epochs} ({patience} epoch(s) "
               "without a better validation score)") if patience and last["epoch"] < epochs else ""
    scored = [r for r in records if isinstance(r.get(primary_metric), (int, float))] if primary_metric else []
    if not scored:
        return {"epoch": last["epoch"], "reason": "the last epoch (no validation subset to choose by)" + stopped}
    best = max(scored, key=lambda record: record[primary_metric])  # max keeps the first of equal scores
    return {"epoch": best["epoch"], "metric": primary_metric, "value": best[primary_metric],
            "reason": f"the best validation {primary_metric} ({best[primary_metric]:.4g}) of the {len(scored)} "
                      f"epoch(s) validated{stopped}"}
