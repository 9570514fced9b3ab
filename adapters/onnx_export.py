"""Export a sequence classifier to ONNX, optionally with dynamic int8 weights, for the `runtime: onnx` backend.

The exported folder is self-contained: `model.onnx` (token tensors in, `logits` out, batch and sequence axes
dynamic), the model's `config.json` (labels), the tokenizer, and `onnx_export.json` saying what was exported
from where. Weights are read with the same rules as the torch backend: safetensors only, no remote code.
The legacy TorchScript exporter is used: it needs no extra package (the dynamo exporter needs onnxscript) and
traces these encoder classifiers exactly (tests compare it with torch to 1e-4).
"""
from __future__ import annotations

import inspect
import json
import logging
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForSequenceClassification

from .loading import load_pretrained

logger = logging.getLogger(__name__)

ONNX_FILE = "model.onnx"
EXPORT_INFO = "onnx_export.json"
OPSET = 17
QUANTIZATIONS = ("int8",)


class _LogitsOnly(torch.nn.Module):
    """The traced graph: positional token tensors (named like the tokenizer's outputs) in, logits out."""

    def __init__(self, model: Any, input_names: list[str]):
        super().__init__()
        self.model = model
        self.input_names = input_names
        self.extra = {"use_cache": False} if "use_cache" in inspect.signature(model.forward).parameters else {}

    def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
        return self.model(**dict(zip(self.input_names, tensors)), **self.extra).logits


def export_onnx(model_path: str, output_dir: str | Path, quantize: str | None = None,
                model_class: Any = AutoModelForSequenceClassification) -> Path:
    """Write the ONNX folder for `model_path` to `output_dir` and return it; only an earlier export is replaced."""
    if quantize not in (None, *QUANTIZATIONS):
        raise ValueError(f"quantize must be one of {list(QUANTIZATIONS)} or None, got {quantize!r}")
    output_dir = Path(output_dir)
    if output_dir.exists() and any(output_dir.iterdir()) and not (output_dir / EXPORT_INFO).is_file():
        raise FileExistsError(f"{output_dir} exists and is not an earlier ONNX export; choose a new or empty folder")
    model, tokenizer = load_pretrained(model_class, model_path, torch.device("cpu"))
    accepted = inspect.signature(model.forward).parameters
    sample = tokenizer(["a short text", "a somewhat longer text for the sample batch"], padding=True,
                       return_tensors="pt")
    names = [n for n in tokenizer.model_input_names if n in sample and n in accepted]
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".onnx-export-", dir=output_dir.parent))
    try:
        traced = staging / "model-fp32.onnx"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer chatter about constant shapes; equality is tested instead
            torch.onnx.export(_LogitsOnly(model, names).eval(), tuple(sample[n] for n in names), str(traced),
                              dynamo=False, opset_version=OPSET, input_names=names, output_names=["logits"],
                              dynamic_axes={**{n: {0: "batch", 1: "sequence"} for n in names}, "logits": {0: "batch"}})
        if quantize == "int8":
            from onnxruntime.quantization import QuantType, quantize_dynamic
            quantize_dynamic(str(traced), str(staging / ONNX_FILE), weight_type=QuantType.QInt8)
            traced.unlink()
        else:
            traced.rename(staging / ONNX_FILE)
        model.config.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        info = {"source": str(model_path), "architecture": type(model).__name__, "inputs": names,
                "opset": OPSET, "quantize": quantize, "torch": torch.__version__}
        (staging / EXPORT_INFO).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
        if output_dir.exists():
            shutil.rmtree(output_dir)
        staging.rename(output_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    logger.info("exported %s to %s (quantize=%s)", model_path, output_dir, quantize)
    return output_dir
