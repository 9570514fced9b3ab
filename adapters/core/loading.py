"""Find and read weights safely, for every runtime: safetensors only, never `trust_remote_code`, and a short error
for each way it goes wrong (no such folder, no hub access, weights of another architecture).

A hub id is looked up once with a single short request; when the hub cannot be reached, the local Hugging Face
cache is used, and when the weights are not there either, `WeightsUnavailable` says so in one line at once
(instead of `huggingface_hub`'s minute of retries).
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import torch
from transformers import AutoTokenizer

from .errors import ConfigurationError
from .local_weights import PICKLE_SUFFIXES, check_local_weights  # noqa: F401 - imported from here too

logger = logging.getLogger(__name__)

# A context window larger than this is a tokenizer's "no limit" sentinel, not a real limit.
UNBOUNDED_LENGTH = 1_000_000
# Seconds the one look-up of a hub id may take; HF_HUB_ETAG_TIMEOUT overrides it as for huggingface_hub.
HUB_PROBE_SECONDS = 5.0


class WeightsUnavailable(ConfigurationError):
    """The weights of a hub id could not be fetched and are not in the local cache."""

    def __init__(self, model_path: str, reason: str):
        self.model_path = model_path
        self.reason = reason
        super().__init__(self.advice("set configuration 'model_path' to a local folder of save_pretrained files"))

    def advice(self, knob: str) -> str:
        """The message with `knob`, how the interface in use points at local weights (the configuration's
        `model_path` on the platform, `--model-path` on the command line, an environment variable for Cog)."""
        return (f"the weights of {self.model_path!r} could not be fetched from the Hugging Face hub ({self.reason}) "
                f"and are not in the local cache; {knob}, or download them where the hub is reachable "
                "(HF_HUB_OFFLINE=1 then uses the local cache only)")


def resolve_device(name: str) -> torch.device:
    """'auto' means CUDA when present, else CPU; a device this machine or torch build does not have is a
    configuration error before any weights load (moving the weights there would fail with a library traceback)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigurationError(f"device {name!r} was asked for but CUDA is not available; use 'auto' or 'cpu'")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise ConfigurationError(f"device {name!r} was asked for but this machine has {torch.cuda.device_count()} "
                                 "CUDA device(s), numbered from 0; use 'cuda' or 'auto'")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigurationError("device 'mps' is not available (it needs Apple silicon, macOS 12.3+ and a torch "
                                 "build with MPS); use 'auto' or 'cpu'")
    return device


def _hub_unreachable(repo_id: str) -> str | None:
    """Why the hub cannot serve `repo_id` right now (one request, no retries), or None when it can."""
    from huggingface_hub import constants, get_session, hf_hub_url
    from huggingface_hub.errors import HTTPError
    from huggingface_hub.utils import build_hf_headers

    timeout = float(os.environ.get("HF_HUB_ETAG_TIMEOUT") or HUB_PROBE_SECONDS)
    url = hf_hub_url(repo_id, "config.json")
    try:
        response = get_session().head(url, headers=build_hf_headers(), timeout=timeout, follow_redirects=False)
    except HTTPError as error:  # connection refused, DNS, timeout
        return f"{constants.ENDPOINT} is unreachable: {error or type(error).__name__}"
    if response.status_code == 404:
        return f"{constants.ENDPOINT} has no model {repo_id!r} (HTTP 404)"
    if response.status_code >= 500:
        return f"{constants.ENDPOINT} answered HTTP {response.status_code}"
    return None  # 2xx/3xx, or 401/403 (gated or private: transformers reports those with the token in use)


def resolve_source(model_path: str) -> str:
    """What to load `model_path` from: a local folder (checked), a hub id the hub can serve now, or the cached
    snapshot folder of a hub id the hub cannot serve; raises `WeightsUnavailable` when there is none."""
    check_local_weights(model_path)
    if Path(model_path).expanduser().is_dir():
        return str(Path(model_path).expanduser())
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError

    reason = "HF_HUB_OFFLINE is set" if constants.HF_HUB_OFFLINE else None
    try:
        reason = reason or _hub_unreachable(model_path)
        if reason is None:
            return model_path
        snapshot = snapshot_download(model_path, local_files_only=True)
    except HFValidationError:
        raise ConfigurationError(f"model_path {model_path!r} is neither a local folder nor a valid hub id") from None
    except LocalEntryNotFoundError:
        raise WeightsUnavailable(model_path, reason) from None
    if not any(Path(snapshot).glob("*.safetensors")):
        raise WeightsUnavailable(model_path, reason)
    logger.info("using the cached snapshot of %s (%s)", model_path, reason)
    return snapshot


def load_tokenizer(source: str) -> Any:
    return AutoTokenizer.from_pretrained(source, trust_remote_code=False)


def load_weights(model_class: Any, source: str, dtype: torch.dtype = torch.float32) -> Any:
    """The `transformers` model of `model_class` from `source` (see resolve_source), on the CPU, in eval mode.

    Its weights are `dtype` (float32 unless asked), whatever type they were saved in: `transformers` 5 would
    otherwise load a checkpoint saved in half precision as half precision, slow and imprecise on a CPU.

    Weights that do not cover the model are refused: a checkpoint of another architecture or task would
    otherwise load with randomly initialised layers (a T5 folder given to a sentiment classifier gets a random
    classification head) and answer nonsense without any error.
    """
    try:
        model, info = model_class.from_pretrained(source, use_safetensors=True, trust_remote_code=False,
                                                  output_loading_info=True, dtype=dtype)
    except ValueError as error:
        if "Unrecognized configuration class" not in str(error):
            raise
        raise ConfigurationError(f"model_path {source!r} holds a {_model_type(source)!r} model, which "
                                 f"{getattr(model_class, '__name__', model_class)} cannot run") from None
    missing, unexpected = sorted(info["missing_keys"]), sorted(info["unexpected_keys"])
    if missing or unexpected:
        problems = [f"{len(keys)} {kind} weights ({_abbreviated(keys)})"
                    for kind, keys in (("missing", missing), ("unexpected", unexpected)) if keys]
        raise ConfigurationError(f"the weights at {source!r} do not fit {type(model).__name__}: "
                                 f"{' and '.join(problems)}; they are of another architecture or task")
    model.eval()
    return model


def _model_type(source: str) -> str:
    from transformers import AutoConfig
    try:
        return AutoConfig.from_pretrained(source, trust_remote_code=False).model_type
    except Exception:  # noqa: BLE001 - only used to word an error
        return "different"


def _abbreviated(keys: list[str], shown: int = 4) -> str:
    return ", ".join(keys[:shown]) + (f", ... {len(keys) - shown} more" if len(keys) > shown else "")


def context_window(model: Any, tokenizer: Any, fallback: int = 512) -> int:
    """The longest input the model accepts: the smaller of the tokenizer's and the position table's limits."""
    limits = [getattr(tokenizer, "model_max_length", None)]
    for attribute in ("max_position_embeddings", "n_positions"):
        limits.append(getattr(model.config, attribute, None))
    limits = [int(x) for x in limits if isinstance(x, (int, float)) and 0 < x < UNBOUNDED_LENGTH]
    return min(limits) if limits else fallback
