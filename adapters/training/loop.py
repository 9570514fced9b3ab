"""The one training loop every model shares: AdamW, linear warm-up then decay, clipping, seeded shuffling.

Rows are dicts of token ids plus `labels`: an int (classifiers) or a list of token ids with IGNORE_INDEX where
no loss is wanted (generators). The model computes its own loss from `labels`, so the loop knows no task.
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

import torch
from transformers import get_linear_schedule_with_warmup

IGNORE_INDEX = -100
Row = dict[str, Any]


@dataclass(frozen=True)
class LoopSettings:
    epochs: int
    learning_rate: float
    train_batch_size: int
    weight_decay: float
    warmup_ratio: float
    max_grad_norm: float
    seed: int


def collate(tokenizer: Any, rows: Sequence[Row], device: torch.device) -> dict[str, torch.Tensor]:
    """Pad a batch on the right (positions then start at 0, as at inference); labels pad with IGNORE_INDEX."""
    labels = [row["labels"] for row in rows]
    features = [{k: v for k, v in row.items() if k != "labels"} for row in rows]
    batch = dict(tokenizer.pad(features, padding=True, padding_side="right", return_tensors="pt"))
    if isinstance(labels[0], list):
        width = max(len(label) for label in labels)
        labels = [label + [IGNORE_INDEX] * (width - len(label)) for label in labels]
    batch["labels"] = torch.tensor(labels, dtype=torch.long)
    return {k: v.to(device) for k, v in batch.items()}


def batches(rows: Sequence[Row], size: int, rng: random.Random | None = None) -> Iterator[list[Row]]:
    order = list(range(len(rows)))
    if rng is not None:
        rng.shuffle(order)
    for start in range(0, len(order), size):
        yield [rows[i] for i in order[start:start + size]]


def _parameter_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Decay matrices only: decaying biases and norm gains only shrinks them toward a worse default."""
    decay, no_decay = [], []
    for name, parameter in model.named_parameters():
        if parameter.requires_grad:
            (no_decay if parameter.ndim < 2 or "norm" in name.lower() else decay).append(parameter)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def mean_loss(model: Any, tokenizer: Any, rows: Sequence[Row], batch_size: int, device: torch.device) -> float:
    """Row-weighted mean loss without gradients (validation)."""
    total = 0.0
    model.eval()
    with torch.inference_mode():
        for batch in batches(rows, batch_size):
            total += float(model(**collate(tokenizer, batch, device)).loss) * len(batch)
    return total / max(len(rows), 1)


def train(model: Any, tokenizer: Any, rows: Sequence[Row], settings: LoopSettings, device: torch.device,
          after_epoch: Callable[[int, float], None]) -> None:
    """Fine-tune `model` in place; `after_epoch(epoch, mean training loss)` runs with the model in eval mode."""
    optimizer = torch.optim.AdamW(_parameter_groups(model, settings.weight_decay), lr=settings.learning_rate)
    steps = settings.epochs * math.ceil(len(rows) / settings.train_batch_size)
    scheduler = get_linear_schedule_with_warmup(optimizer, int(settings.warmup_ratio * steps), steps)
    rng = random.Random(settings.seed)
    for epoch in range(settings.epochs):
        model.train()
        total = 0.0
        for batch in batches(rows, settings.train_batch_size, rng):
            loss = model(**collate(tokenizer, batch, device)).loss
            loss.backward()
            if settings.max_grad_norm > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), settings.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            total += float(loss.detach()) * len(batch)
        model.eval()
        after_epoch(epoch, total / len(rows))
