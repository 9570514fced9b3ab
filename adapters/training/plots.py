"""Pictures a person reads at a glance, written as PNG with matplotlib's Agg backend (no display needed):
the training curve beside trained weights, and a classifier's confusion matrix from `evaluate`.

matplotlib is imported only when a picture is drawn. Drawing is a report, never a reason to fail: callers catch
a failure and say in one line that the picture was not written.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

TRAINING_CURVE = "training_curve.png"
NOT_SCORES = ("epoch", "epochs", "questions", "unanswered", "train_loss", "validation_loss")


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=True)  # files only: no display, no GUI toolkit, the same on a server
    from matplotlib import pyplot

    return pyplot


def training_curve(records: Sequence[dict[str, Any]], kept: dict[str, Any] | None, path: Path) -> Path:
    """Loss (train and validation) and every validation score per epoch, the kept epoch marked; written to `path`."""
    pyplot = _pyplot()
    epochs = [record["epoch"] for record in records]
    scores = sorted({key for record in records for key, value in record.items()
                     if key not in NOT_SCORES and isinstance(value, (int, float))})
    figure, axes = pyplot.subplots(1, 2 if scores else 1, figsize=(11 if scores else 6, 4), squeeze=False)
    loss_axis = axes[0][0]
    for key, label in (("train_loss", "train"), ("validation_loss", "validation")):
        points = [(r["epoch"], r[key]) for r in records if _finite(r.get(key))]
        if points:
            loss_axis.plot(*zip(*points), marker="o", label=label)
    loss_axis.set(title="loss", xlabel="epoch", ylabel="loss")
    if scores:
        score_axis = axes[0][1]
        for key in scores:
            points = [(r["epoch"], r[key]) for r in records if _finite(r.get(key))]
            score_axis.plot(*zip(*points), marker="o", label=key)
        score_axis.set(title="validation score", xlabel="epoch", ylabel="score")
    for axis in axes[0]:
        if kept is not None:
            axis.axvline(kept["epoch"], color="grey", linestyle="--", label=f"kept: epoch {kept['epoch']}")
        axis.set_xticks(epochs)
        if axis.get_legend_handles_labels()[0]:
            axis.legend()
        axis.grid(alpha=0.3)
    return _saved(pyplot, figure, path)


def confusion_matrix(labels: Sequence[str], counts: Sequence[Sequence[int]], path: Path, title: str) -> Path:
    """Rows: the reference label; columns: the predicted one; each cell its count, darker for more."""
    pyplot = _pyplot()
    size = max(4.0, min(0.6 * len(labels) + 2.5, 20.0))
    figure, axis = pyplot.subplots(figsize=(size, size))
    image = axis.imshow(counts, cmap="Blues")
    axis.set_xticks(range(len(labels)), labels=labels, rotation=45, ha="right")
    axis.set_yticks(range(len(labels)), labels=labels)
    axis.set(xlabel="predicted", ylabel="reference", title=title)
    peak = max((max(row) for row in counts), default=0)
    for row, values in enumerate(counts):
        for column, count in enumerate(values):
            axis.text(column, row, str(count), ha="center", va="center",
                      color="white" if peak and count > peak / 2 else "black")
    figure.colorbar(image, ax=axis, fraction=0.046, pad=0.04)
    return _saved(pyplot, figure, path)


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def _saved(pyplot: Any, figure: Any, path: Path) -> Path:
    """Lay `figure` out, write it as PNG to `path`, and free it whatever happens (pyplot keeps figures)."""
    figure.tight_layout()
    try:
        figure.savefig(path, dpi=100)
    finally:
        pyplot.close(figure)
    return path
