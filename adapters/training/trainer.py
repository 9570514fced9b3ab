"""Fine-tune a model module on a prepared data folder: validate, build rows, run the loop, validate per epoch."""
from __future__ import annotations

import contextlib
import logging
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import torch

from ..errors import ConfigurationError
from ..hugging_adapter import Answer, Turn
from .dataset import DatasetError, Subset, read_layout
from .evaluation import evaluate_by_predicting
from .loop import LoopSettings, Row, mean_loss, train
from .settings import training_values

logger = logging.getLogger(__name__)
MAX_LISTED_PROBLEMS = 5


@dataclass
class Prepared:
    """A validated data folder turned into training rows for one adapter."""

    data_path: Path
    subsets: dict[str, Subset]
    seed: int
    train_rows: list[Row]
    validation_rows: list[Row]

    @property
    def validation(self) -> Subset | None:
        return self.subsets.get("validation")


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Seed torch for the block without disturbing the caller's random state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def build_rows(adapter: Any, subset: Subset) -> list[Row]:
    """Training rows for every answered question; turns see the reference answers of earlier turns as history."""
    rows: list[Row] = []
    problems: list[str] = []
    unanswered = 0
    with adapter.training_input_limit():
        for item in subset.items:
            for conversation in adapter.conversations(item.parsed):
                history: list[Turn] = []
                for position, question in enumerate(conversation):
                    references = item.references.get(question)
                    if not references:  # later turns would miss what was said here
                        unanswered += len(conversation) - position
                        break
                    for reference in references:
                        try:
                            rows.extend(adapter.training_rows(question, history, reference))
                        except DatasetError as error:
                            problems.append(str(error))
                    history.append(Turn(question, [Answer(references[0], 1.0)]))
    if problems:
        raise DatasetError(f"subset {subset.name!r}: {len(problems)} answer(s) cannot be used: "
                           + "; ".join(problems[:MAX_LISTED_PROBLEMS]))
    if unanswered:
        logger.warning("subset %r: %d question(s) without a reference answer (or after one) are not used",
                       subset.name, unanswered)
    if not rows:
        raise DatasetError(f"subset {subset.name!r} gives no training rows: no question has an answer")
    return rows


def prepare(adapter: Any, data_path: str | Path) -> Prepared:
    """Read and validate `data_path`, fit the model to its labels, and build every row (errors name the data)."""
    adapter.check_trainable()
    runtime = adapter.configuration.get("runtime", "torch")
    if runtime != "torch":
        raise ConfigurationError(f"fine-tuning needs runtime 'torch' (the weights are trained), not {runtime!r}")
    subsets = read_layout(data_path)
    seed = adapter.configuration["seed"]
    if seed is None:
        seed = random.SystemRandom().randrange(2**32)
        logger.info("training seed drawn: %d", seed)
    with seeded(seed):
        adapter.prepare_training(subsets["train"].references())
    validation = subsets.get("validation")
    return Prepared(Path(data_path), subsets, seed, build_rows(adapter, subsets["train"]),
                    build_rows(adapter, validation) if validation else [])


def fit(adapter: Any, prepared: Prepared, on_epoch: Callable[[dict[str, Any]], None]) -> list[dict[str, Any]]:
    """Train `adapter.model` in place; after each epoch report and return its metrics."""
    settings = LoopSettings(**training_values(adapter.configuration), seed=prepared.seed)
    history: list[dict[str, Any]] = []

    def after_epoch(epoch: int, train_loss: float) -> None:
        metrics: dict[str, Any] = {"epoch": epoch, "epochs": settings.epochs, "train_loss": train_loss}
        if prepared.validation is not None:
            metrics["validation_loss"] = mean_loss(adapter.model, adapter.tokenizer, prepared.validation_rows,
                                                   settings.train_batch_size, adapter.device)
            metrics.update(evaluate_by_predicting(adapter, prepared.validation))
        logger.info("epoch %d/%d: %s", epoch + 1, settings.epochs,
                    {k: v for k, v in metrics.items() if isinstance(v, float)})
        history.append(metrics)
        on_epoch(metrics)

    with seeded(prepared.seed):
        train(adapter.model, adapter.tokenizer, prepared.train_rows, settings, adapter.device, after_epoch)
    return history
