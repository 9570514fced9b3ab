"""Training configuration keys, declared once; each model module lists the ones it reads, the manifest gives defaults."""
from __future__ import annotations

from typing import Any

from ..core.settings import MAX_BATCH_SIZE, MAX_NEW_TOKENS, Setting

MAX_EPOCHS = 1000
MAX_SOURCE_TOKENS = 1 << 16
MAX_ACCUMULATION = 1024
MAX_LORA_RANK = 1024
MIXED_PRECISION = ("auto", "no", "fp16", "bf16")

TRAINING_SETTINGS: tuple[Setting, ...] = (
    Setting("epochs", (int,), "passes over the train subset", minimum=1, maximum=MAX_EPOCHS),
    Setting("learning_rate", (float,), "peak AdamW learning rate, reached after warm-up", minimum=1e-9, maximum=1.0),
    Setting("train_batch_size", (int,), "training rows per forward pass", minimum=1, maximum=MAX_BATCH_SIZE),
    Setting("gradient_accumulation_steps", (int,), "forward passes per optimizer step (the effective batch is "
            "train_batch_size times this, times the GPUs)", minimum=1, maximum=MAX_ACCUMULATION),
    Setting("gradient_checkpointing", (bool,), "recompute activations in the backward pass instead of keeping "
            "them: less memory, more time per step (1.5-2x measured on CPU)"),
    Setting("mixed_precision", (str,), "'auto' (bf16 or fp16 on a GPU that has it, 'no' on CPU), 'no', 'fp16' "
            "(CUDA only) or 'bf16'", choices=MIXED_PRECISION),
    Setting("weight_decay", (float,), "AdamW weight decay (not applied to biases and norms)", minimum=0.0, maximum=1.0),
    Setting("warmup_ratio", (float,), "share of the steps spent warming the learning rate up from 0",
            minimum=0.0, maximum=0.999),
    Setting("max_grad_norm", (float,), "gradient-norm clipping; 0 disables it", minimum=0.0, maximum=1e4),
    Setting("early_stopping_patience", (int,), "stop after this many epochs without a better validation score; "
            "0 never stops early", minimum=0, maximum=MAX_EPOCHS),
    Setting("lora_r", (int,), "LoRA rank; 0 trains every weight (full fine-tuning)", minimum=0, maximum=MAX_LORA_RANK),
    Setting("lora_alpha", (float,), "LoRA scaling numerator (updates are scaled by lora_alpha / lora_r)",
            minimum=1e-3, maximum=1e4),
    Setting("lora_dropout", (float,), "dropout on the LoRA branch's input", minimum=0.0, maximum=0.9),
)

# Modules that already read a sampling `seed` reuse it for training; the others declare this one.
TRAINING_SEED = Setting("seed", (int,), "seed for shuffling, dropout and new heads; null draws a fresh one",
                        minimum=0, maximum=2**32 - 1, nullable=True)


def source_length_setting() -> Setting:
    return Setting("max_source_length", (int,), "training inputs are truncated to this many tokens",
                   minimum=8, maximum=MAX_SOURCE_TOKENS)


def target_length_setting() -> Setting:
    return Setting("max_target_length", (int,), "training answers are truncated to this many tokens",
                   minimum=2, maximum=MAX_NEW_TOKENS)


def training_values(configuration: dict[str, Any]) -> dict[str, Any]:
    """The loop's settings, read from an already validated configuration."""
    return {setting.name: configuration[setting.name] for setting in TRAINING_SETTINGS}
