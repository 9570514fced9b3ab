"""Whether a `model_path` names local save_pretrained weights this package may read: safetensors only.

Kept apart from `loading` (torch, transformers) so that the CLI refuses a wrong --model-path in a fraction of a
second, before the heavy libraries are imported.
"""
from __future__ import annotations

import os
from pathlib import Path

from .errors import ConfigurationError

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")


def looks_local(model_path: str) -> bool:
    """A path rather than a hub id: explicit (/, ., ~) or under a folder that exists here (`models/my-bert`)."""
    if model_path.startswith((".", "/", "~")) or os.sep != "/" and os.sep in model_path:
        return True
    parent = Path(model_path).parent
    return str(parent) != "." and parent.is_dir()


def check_local_weights(model_path: str) -> None:
    """A local folder must hold safetensors weights; pickle checkpoints can run code when loaded, so they are refused."""
    folder = Path(model_path).expanduser()
    if not folder.is_dir():
        if folder.exists():
            raise ConfigurationError(f"model_path {model_path!r} is a file, not a folder of save_pretrained files")
        if looks_local(model_path):
            raise ConfigurationError(f"model_path {model_path!r} does not exist")
        return  # a hub id
    if any(folder.glob("*.safetensors")):
        return
    pickles = sorted(p.name for p in folder.iterdir() if p.suffix in PICKLE_SUFFIXES)
    detail = f" (found pickle checkpoints {pickles}, which are refused)" if pickles else ""
    raise ConfigurationError(f"model_path {model_path!r} holds no .safetensors weights{detail}; "
                             "convert them with save_pretrained(safe_serialization=True)")
