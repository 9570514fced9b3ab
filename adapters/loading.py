"""Load weights and tokenizer safely: safetensors only, never `trust_remote_code`, on the chosen device."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from transformers import AutoTokenizer

from .cpu_kernels import use_onednn_linears
from .errors import ConfigurationError

logger = logging.getLogger(__name__)

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
# A context window larger than this is a tokenizer's "no limit" sentinel, not a real limit.
UNBOUNDED_LENGTH = 1_000_000


def resolve_device(name: str) -> torch.device:
    """'auto' means CUDA when present, else CPU; an explicit CUDA device that is absent is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigurationError(f"device {name!r} was asked for but CUDA is not available; use 'auto' or 'cpu'")
    return torch.device(name)


def check_local_weights(model_path: str) -> None:
    """A local folder must hold safetensors weights; pickle checkpoints can run code when loaded, so they are refused."""
    folder = Path(model_path)
    if not folder.is_dir():
        if folder.exists() or model_path.startswith((".", "/", "~")):
            raise ConfigurationError(f"model_path {model_path!r} is not a folder of save_pretrained files")
        return  # a hub id
    if any(folder.glob("*.safetensors")):
        return
    pickles = sorted(p.name for p in folder.iterdir() if p.suffix in PICKLE_SUFFIXES)
    detail = f" (found pickle checkpoints {pickles}, which are refused)" if pickles else ""
    raise ConfigurationError(f"model_path {model_path!r} holds no .safetensors weights{detail}; "
                             "convert them with save_pretrained(safe_serialization=True)")


def load_pretrained(model_class: Any, model_path: str, device: torch.device, runtime: str = "torch") -> tuple[Any, Any]:
    """Load `(model, tokenizer)` from a hub id or a local folder, in eval mode on `device` (see onnx_backend)."""
    if runtime == "onnx":
        from .onnx_backend import load_onnx
        return load_onnx(model_class, model_path, device)
    check_local_weights(model_path)
    tokenizer = AutoTokenizer.from_pretrained(model_path, trust_remote_code=False)
    model = model_class.from_pretrained(model_path, use_safetensors=True, trust_remote_code=False)
    model.to(device)
    model.eval()
    if device.type == "cpu":
        use_onednn_linears(model)
    logger.info("loaded %s from %s on %s", type(model).__name__, model_path, device)
    return model, tokenizer


def context_window(model: Any, tokenizer: Any, fallback: int = 512) -> int:
    """The longest input the model accepts: the smaller of the tokenizer's and the position table's limits."""
    limits = [getattr(tokenizer, "model_max_length", None)]
    for attribute in ("max_position_embeddings", "n_positions"):
        limits.append(getattr(model.config, attribute, None))
    limits = [int(x) for x in limits if isinstance(x, (int, float)) and 0 < x < UNBOUNDED_LENGTH]
    return min(limits) if limits else fallback
