"""The one training loop every model shares: `transformers`' Trainer, configured from our keys.

Rows are dicts of token ids plus `labels`: an int (classifiers) or a list of token ids with IGNORE_INDEX where
no loss is wanted (generators). The model computes its own loss from `labels`, so the loop knows no task.
Trainer brings AdamW with linear warm-up and decay, clipping, gradient accumulation (token-weighted for
language models), mixed precision, gradient checkpointing, per-epoch checkpoints with exact resume, early
stopping on the validation metric with the best epoch's weights restored, and data parallelism when started
under `torchrun` or `accelerate launch`.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from accelerate.utils import broadcast_object_list
from transformers import EarlyStoppingCallback, PrinterCallback, Trainer, TrainerCallback, TrainingArguments

from ..core.errors import ConfigurationError
from . import IGNORE_INDEX

logger = logging.getLogger(__name__)

Row = dict[str, Any]
VALIDATION_WAIT_SECONDS = 6 * 3600
# Trainer's own per-epoch numbers that are not worth a plot.
_TRAINER_ONLY = ("runtime", "samples_per_second", "steps_per_second", "model_preparation_time")


class Rows(torch.utils.data.Dataset):
    """A list of rows as the map-style dataset Trainer samples from."""

    def __init__(self, rows: Sequence[Row]):
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> Row:
        return self.rows[index]


@dataclass(frozen=True)
class Collator:
    """Pad a batch on the right (positions then start at 0, as at inference): token ids with the pad id, labels
    with IGNORE_INDEX, masks with 0. An encoder-decoder also gets its decoder inputs (the labels shifted right),
    since the loss is computed outside the model (`token_loss`) and the model then never sees the labels."""

    pad_token_id: int
    decoder_inputs: Callable[..., torch.Tensor] | None = None

    def __call__(self, rows: Sequence[Row]) -> dict[str, torch.Tensor]:
        batch = {}
        for key in rows[0]:
            values = [row[key] for row in rows]
            if isinstance(values[0], list):
                pad = self.pad_token_id if key == "input_ids" else IGNORE_INDEX if key == "labels" else 0
                width = max(len(value) for value in values)
                values = [value + [pad] * (width - len(value)) for value in values]
            batch[key] = torch.tensor(values, dtype=torch.long)
        if self.decoder_inputs is not None and batch["labels"].dim() == 2:  # token labels, not a class per row
            batch["decoder_input_ids"] = self.decoder_inputs(labels=batch["labels"])
        return batch


def collator_for(model: Any, tokenizer: Any) -> Collator:
    """The collator of `model`'s rows; an encoder-decoder that generates builds its decoder inputs from labels."""
    is_seq2seq = getattr(model.config, "is_encoder_decoder", False)
    return Collator(tokenizer.pad_token_id,
                    getattr(model, "prepare_decoder_input_ids_from_labels", None) if is_seq2seq else None)


def token_loss(shifted: bool) -> Callable[..., torch.Tensor]:
    """Cross-entropy summed over answer tokens and divided by the answer tokens of the whole optimizer step.

    Trainer counts those tokens across accumulation steps and GPUs (`num_items_in_batch`), so accumulated
    micro-batches of different lengths give exactly the update of one large batch. Models' own losses are a
    mean per micro-batch (T5, BART) and would weight a short answer's tokens more. `shifted`: a causal LM's
    logits at position i predict the label at i + 1.
    """
    def loss(outputs: Any, labels: torch.Tensor, num_items_in_batch: Any = None) -> torch.Tensor:
        logits = outputs["logits"].float()
        if shifted:
            logits, labels = logits[..., :-1, :], labels[..., 1:]
        labels = labels.to(logits.device)
        total = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.size(-1)), labels.reshape(-1),
                                                  ignore_index=IGNORE_INDEX, reduction="sum")
        count = num_items_in_batch if num_items_in_batch is not None else labels.ne(IGNORE_INDEX).sum()
        return total / count
    return loss


def precision_flags(choice: str, device: torch.device) -> dict[str, bool]:
    """`mixed_precision` as Trainer's fp16/bf16 flags; 'auto' takes bf16 where the GPU has it, else fp16."""
    cuda = device.type == "cuda"
    bf16_ok = not cuda or torch.cuda.is_bf16_supported(including_emulation=False)
    if choice == "auto":
        choice = ("bf16" if bf16_ok else "fp16") if cuda else "no"
    if choice == "fp16" and not cuda:
        raise ConfigurationError(f"mixed_precision 'fp16' needs a CUDA GPU, not {device.type}; use 'auto', "
                                 "'no' or 'bf16'")
    if choice == "bf16" and not bf16_ok:
        raise ConfigurationError(f"mixed_precision 'bf16' is not supported by this GPU "
                                 f"({torch.cuda.get_device_name(device)}); use 'auto' or 'fp16'")
    return {"fp16": choice == "fp16", "bf16": choice == "bf16"}


@dataclass(frozen=True)
class LoopSettings:
    """What one run needs besides the model and rows: the validated configuration, the seed, where to write."""

    configuration: dict[str, Any]
    seed: int
    checkpoints: Path
    primary_metric: str | None  # the validation metric that picks the best epoch; None without validation


def training_arguments(settings: LoopSettings, device: torch.device) -> TrainingArguments:
    c = settings.configuration
    validating = settings.primary_metric is not None
    return TrainingArguments(
        output_dir=str(settings.checkpoints), num_train_epochs=c["epochs"], learning_rate=c["learning_rate"],
        per_device_train_batch_size=c["train_batch_size"], per_device_eval_batch_size=c["train_batch_size"],
        gradient_accumulation_steps=c["gradient_accumulation_steps"], weight_decay=c["weight_decay"],
        warmup_steps=c["warmup_ratio"], lr_scheduler_type="linear", max_grad_norm=c["max_grad_norm"],
        **precision_flags(c["mixed_precision"], device), use_cpu=device.type == "cpu",
        seed=settings.seed, data_seed=settings.seed,
        eval_strategy="epoch" if validating else "no", save_strategy="epoch", logging_strategy="epoch",
        save_total_limit=1, load_best_model_at_end=validating,
        metric_for_best_model=settings.primary_metric, greater_is_better=True if validating else None,
        restore_callback_states_from_checkpoint=True, label_names=["labels"], remove_unused_columns=False,
        dataloader_pin_memory=device.type == "cuda", report_to="none", disable_tqdm=True,
        # The other processes wait while the first answers the validation items, which may take long.
        ddp_find_unused_parameters=False, ddp_timeout=VALIDATION_WAIT_SECONDS)


class ValidatingTrainer(Trainer):
    """Trainer whose evaluation adds the task's validation metrics (answering as `predict` does) to the loss.

    The loss is made exact under accumulation and data parallelism: token labels (generators) use `token_loss`;
    a label per row (classifiers) keeps the model's mean over the rows, which Trainer must then average over
    micro-batches itself (it would otherwise trust the model's `**kwargs` to normalise, and it does not).
    """

    def __init__(self, model: Any, args: TrainingArguments, train_rows: Sequence[Row],
                 validation_rows: Sequence[Row], collator: Collator,
                 validate: Callable[[], dict[str, Any]] | None = None, **kwargs: Any):
        token_labels = isinstance(train_rows[0]["labels"], list)
        shifted = not getattr(model.config, "is_encoder_decoder", False)
        super().__init__(model=model, args=args, data_collator=collator, train_dataset=Rows(train_rows),
                         eval_dataset=Rows(validation_rows) if validation_rows else None,
                         compute_loss_func=token_loss(shifted) if token_labels else None, **kwargs)
        if not token_labels:
            self.model_accepts_loss_kwargs = False
        self.remove_callback(PrinterCallback)  # it prints every log line to stdout, which is the CLI's JSON
        self.validate = validate

    running_loss: RunningLoss | None = None

    def _issue_warnings_after_load(self, load_result: Any) -> None:
        """After the best epoch's checkpoint is loaded: a weight tied to another (T5's embed_tokens and lm_head
        share `shared.weight`) is saved once, so it is "missing" from the checkpoint by design; Trainer's
        "There were missing keys" for it is noise. The ties are restored, and only a weight that is really
        missing, or unexpected, is said, in one line of ours."""
        missing = untied_missing(self.model, load_result.missing_keys)
        if len(missing) != len(load_result.missing_keys):
            self.model.tie_weights()
        problems = [f"{len(names)} {kind} weight(s) ({', '.join(names[:3])}{', ...' if len(names) > 3 else ''})"
                    for kind, names in (("missing", missing), ("unexpected", list(load_result.unexpected_keys)))
                    if names]
        if problems:
            logger.warning("the best epoch's checkpoint did not match the model: %s", " and ".join(problems))

    def training_step(self, *args: Any, **kwargs: Any) -> Any:
        loss = super().training_step(*args, **kwargs)
        if self.running_loss is not None:
            self.running_loss.add(loss)
        return loss

    def evaluation_loop(self, *args: Any, **kwargs: Any) -> Any:
        output = super().evaluation_loop(*args, **kwargs)
        if self.validate is not None:
            prefix = kwargs.get("metric_key_prefix", "eval")
            metrics = self.validate() if self.is_world_process_zero() else None
            if self.args.world_size > 1:  # every process must take the same early-stopping decision
                metrics = broadcast_object_list([metrics])[0]
            output.metrics.update({f"{prefix}_{k}": v for k, v in metrics.items()})
        return output


def untied_missing(model: Any, missing: Sequence[str]) -> list[str]:
    """The names of `missing` that are not tied to (sharing storage with) a weight that was loaded."""
    state = model.state_dict()
    storage = {name: tensor.untyped_storage().data_ptr() for name, tensor in state.items()}
    loaded = {storage[name] for name in state if name not in set(missing)}
    return [name for name in missing if storage.get(name) not in loaded]


class _NotAProblem(logging.Filter):
    """Drops Trainer's "mtime may not be reliable on this filesystem, falling back to numerical ordering": two
    epochs saved within a second of each other (small data, a fast disk) are ordered by their step numbers,
    which is what this package's checkpoints are named by anyway. Nothing is wrong, so nothing is said."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "mtime may not be reliable" not in record.getMessage()


logging.getLogger("transformers.trainer_utils").addFilter(_NotAProblem())


def epoch_records(log_history: list[dict[str, Any]], epochs: int) -> list[dict[str, Any]]:
    """One record per epoch from Trainer's log: `epoch` (counted from 1, as on screen), `train_loss`,
    `validation_loss` and the validation metrics."""
    records: dict[int, dict[str, Any]] = {}
    for entry in log_history:
        if "epoch" not in entry or "train_runtime" in entry:
            continue
        epoch = round(entry["epoch"])
        record = records.setdefault(epoch, {"epoch": epoch, "epochs": epochs})
        if "loss" in entry:
            record["train_loss"] = entry["loss"]
        for key, value in entry.items():
            if key == "eval_loss":
                record["validation_loss"] = value
            elif key.startswith("eval_") and not key.endswith(_TRAINER_ONLY):
                record[key[len("eval_"):]] = value
    return [records[epoch] for epoch in sorted(records)]


class EpochReporter(TrainerCallback):
    """After each epoch's checkpoint is on disk, hand that epoch's record to `on_epoch` (first process only)."""

    def __init__(self, on_epoch: Callable[[dict[str, Any]], None], epochs: int):
        self.on_epoch = on_epoch
        self.epochs = epochs

    def on_save(self, args: TrainingArguments, state: Any, control: Any, **kwargs: Any) -> None:
        records = epoch_records(state.log_history, self.epochs)
        if records and state.is_world_process_zero:
            logger.info("epoch %d/%d: %s", records[-1]["epoch"], self.epochs,
                        {k: v for k, v in records[-1].items() if isinstance(v, float)})
            self.on_epoch(records[-1])


class RunningLoss(TrainerCallback):
    """The training loss of the epoch so far: the mean over its optimizer steps of what each step's micro-batches
    returned, which is what Trainer logs as the epoch's `loss` when it ends (`ValidatingTrainer.training_step`
    adds each micro-batch's loss; no device sync until it is read)."""

    def __init__(self) -> None:
        self.total: Any = None
        self.first_step = 0

    def add(self, loss: Any) -> None:
        self.total = loss if self.total is None else self.total + loss

    def on_epoch_begin(self, args: TrainingArguments, state: Any, control: Any, **kwargs: Any) -> None:
        self.total, self.first_step = None, state.global_step

    def mean(self, step: int) -> float | None:
        steps = step - self.first_step
        return float(self.total) / steps if self.total is not None and steps > 0 else None


class StepReporter(TrainerCallback):
    """After each optimizer step, hand (steps done, steps in the run, the epoch's loss so far) to `on_step`
    (first process only)."""

    def __init__(self, on_step: Callable[[int, int, float | None], None], loss: RunningLoss):
        self.on_step = on_step
        self.loss = loss

    def on_step_end(self, args: TrainingArguments, state: Any, control: Any, **kwargs: Any) -> None:
        if state.is_world_process_zero:
            self.on_step(state.global_step, state.max_steps, self.loss.mean(state.global_step))


def train(model: Any, collator: Collator, train_rows: Sequence[Row], validation_rows: Sequence[Row],
          settings: LoopSettings, device: torch.device, on_epoch: Callable[[dict[str, Any]], None],
          validate: Callable[[], dict[str, Any]] | None, resume: Path | None,
          on_step: Callable[[int, int, float | None], None] | None = None) -> list[dict[str, Any]]:
    """Fine-tune `model` in place (the best epoch's weights when validating); returns one record per epoch."""
    running_loss = RunningLoss()
    callbacks: list[TrainerCallback] = [EpochReporter(on_epoch, settings.configuration["epochs"]), running_loss]
    if on_step is not None:
        callbacks.append(StepReporter(on_step, running_loss))
    patience = settings.configuration["early_stopping_patience"]
    if patience and settings.primary_metric is not None:
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=patience))
    trainer = ValidatingTrainer(model, training_arguments(settings, device), train_rows,
                                validation_rows if settings.primary_metric else [], collator, validate,
                                callbacks=callbacks)
    trainer.running_loss = running_loss
    trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    model.eval()
    return epoch_records(trainer.state.log_history, settings.configuration["epochs"])
