"""Fine-tune a model module on a prepared data folder: validate, build rows, claim the output, run the loop."""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
from accelerate import PartialState
from accelerate.utils import broadcast_object_list

from ..core.errors import ConfigurationError
from ..core.hugging_adapter import Answer, Turn
from .dataset import DatasetError, Subset, read_layout
from .evaluation import evaluate_by_predicting
from .loop import LoopSettings, Row, collator_for, train
from .lora import merge, with_lora
from .metrics import PRIMARY
from .output import CHECKPOINTS, OutputFolder, other_architecture

logger = logging.getLogger(__name__)
MAX_LISTED_PROBLEMS = 5
# Keys that change where or how fast a run computes, not what it learns.
NOT_FINGERPRINTED = frozenset({"device", "batch_size", "max_batch_tokens", "reanswer"})


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
    """Seed torch, random and numpy for the block (Trainer seeds all three) and give the caller's state back."""
    python_state, numpy_state = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        try:
            yield
        finally:
            random.setstate(python_state)
            np.random.set_state(numpy_state)


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
    if adapter.configuration.get("dtype", "float32") != "float32":
        raise ConfigurationError(f"fine-tuning trains float32 weights, not dtype {adapter.configuration['dtype']!r}; "
                                 "set dtype 'float32' and choose 'mixed_precision' for faster training")
    subsets = read_layout(data_path)
    seed = adapter.configuration["seed"]
    if seed is None:
        seed = agreed(random.SystemRandom().randrange(2**32))
        logger.info("training seed drawn: %d", seed)
    with seeded(seed):
        adapter.prepare_training(subsets["train"].references())
    validation = subsets.get("validation")
    return Prepared(Path(data_path), subsets, seed, build_rows(adapter, subsets["train"]),
                    build_rows(adapter, validation) if validation else [])


def agreed(value: Any) -> Any:
    """The first process's `value` on every process of a `torchrun` / `accelerate launch` run (else `value`)."""
    if PartialState().num_processes == 1:
        return value
    return broadcast_object_list([value])[0]


def fingerprint(adapter: Any, prepared: Prepared) -> str:
    """What makes two runs the same run: module, configuration, base weights and the exact training rows.

    The device and prediction batching do not change what is learned, so a run may resume on other hardware.
    """
    configuration = {k: v for k, v in adapter.configuration.items() if k not in NOT_FINGERPRINTED}
    digest = hashlib.sha256(json.dumps([type(adapter).__module__, configuration], sort_keys=True,
                                       default=str).encode())
    for rows in (prepared.train_rows, prepared.validation_rows):
        digest.update(json.dumps(rows, sort_keys=True).encode())
    return digest.hexdigest()


def fit(adapter: Any, prepared: Prepared, on_epoch: Callable[[dict[str, Any]], None], output: OutputFolder,
        stored_checkpoints: Path | None = None,
        on_step: Callable[[int, int, float | None], None] | None = None) -> list[dict[str, Any]]:
    """Train `adapter.model` in place, checkpointing into `output`, and return one record per epoch; `on_step`
    hears (steps done, steps in the run, the epoch's training loss so far) after every optimizer step.

    A run with the same fingerprint that left checkpoints in `output` (or in `stored_checkpoints`) continues
    from its last complete epoch. With a validation subset the best epoch's weights are kept; LoRA updates are
    merged, so `adapter.model` is a plain model again afterwards.
    """
    configuration = adapter.configuration
    validation = prepared.validation
    if configuration["early_stopping_patience"] and validation is None:
        raise DatasetError("early_stopping_patience needs a 'validation' subset to measure improvement; add one "
                           "or set early_stopping_patience to 0")
    run = fingerprint(adapter, prepared)
    with PartialState().main_process_first():  # the first process claims the folder, the others then read it
        resume = output.begin(run, prepared.seed, stored_checkpoints)
    prepared.seed = resume.seed
    trained = trainable_model(adapter.model, configuration, adapter.metric_family == "classification")
    problem = other_architecture(resume.checkpoint, trained) if resume.checkpoint is not None else None
    if problem:  # the same run's fingerprint over weights replaced under the same model_path
        with PartialState().main_process_first():
            resume = output.refuse_or_start_over(run, resume.seed, f"{CHECKPOINTS}/{resume.checkpoint.name}: {problem}")
    settings = LoopSettings(configuration, resume.seed, output.checkpoints,
                            PRIMARY[adapter.metric_family] if validation is not None else None)
    validate = (lambda: evaluate_by_predicting(adapter, validation)) if validation is not None else None
    try:
        with seeded(resume.seed):
            history = train(trained, collator_for(trained, adapter.tokenizer), prepared.train_rows,
                            prepared.validation_rows, settings, adapter.device, on_epoch, validate, resume.checkpoint,
                            on_step)
    finally:
        adapter.model = plain_model(trained, configuration)
    return history


def trainable_model(model: Any, configuration: dict[str, Any], classifier: bool) -> Any:
    """`model` set up for training as the configuration says: float32 master weights (what the optimizer and
    mixed precision want), gradient checkpointing, and LoRA (a peft wrapper) when `lora_r` > 0."""
    model = model.float()
    if configuration["gradient_checkpointing"]:
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    return with_lora(model, configuration, classifier) if configuration["lora_r"] else model


def plain_model(trained: Any, configuration: dict[str, Any]) -> Any:
    """Undo `trainable_model`: LoRA merged into the weights, no checkpointing, eval mode."""
    model = merge(trained) if configuration["lora_r"] else trained
    if configuration["gradient_checkpointing"]:
        model.activation_checkpointing_disable()
    return model.eval()


def is_main_process() -> bool:
    """False on the other processes of a multi-GPU run: only the first one writes the model and reports."""
    return PartialState().is_main_process


def use_local_gpu() -> None:
    """Under `torchrun` / `accelerate launch`, make `cuda` mean this process's GPU before any weights load."""
    local_rank = os.environ.get("LOCAL_RANK")
    if local_rank is not None and torch.cuda.is_available():
        torch.cuda.set_device(int(local_rank))
