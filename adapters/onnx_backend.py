"""The `runtime` setting and the ONNX Runtime backend of the classifier modules.

With `runtime: onnx`, `model_path` is either a folder written by `python -m adapters export-onnx` (it holds
`model.onnx`; use this for int8 weights) or anything the torch backend accepts (a hub id or a safetensors
folder), which is then exported once to a cache folder (`$HF_ADAPTERS_ONNX_CACHE`, else
`$HF_HOME/onnx-exports`) keyed by the source, and reused. The loaded model quacks like the `transformers`
model for inference (`model(**inputs).logits`, `.config`), so the model modules do not change.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

import torch
from transformers import AutoConfig, AutoTokenizer
from transformers.modeling_outputs import SequenceClassifierOutput

from .settings import Setting

logger = logging.getLogger(__name__)

RUNTIMES = ("torch", "onnx")
RUNTIME_SETTING = Setting("runtime", (str,), "'torch', or 'onnx' for ONNX Runtime (see docs/performance.md)",
                          choices=RUNTIMES)


class OnnxModel:
    """An exported `model.onnx` run by ONNX Runtime, shaped like the `transformers` classifier it came from."""

    def __init__(self, folder: Path, device: torch.device):
        import onnxruntime as ort

        self.config = AutoConfig.from_pretrained(folder, trust_remote_code=False)
        options = ort.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        providers = ["CPUExecutionProvider"]
        if device.type == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        self.session = ort.InferenceSession(str(folder / "model.onnx"), options, providers=providers)
        self.input_names = [i.name for i in self.session.get_inputs()]

    def __call__(self, **inputs: Any) -> SequenceClassifierOutput:
        """Run the named token tensors the graph takes; other keyword arguments (e.g. use_cache) do not apply."""
        feed = {name: inputs[name].detach().cpu().numpy() for name in self.input_names}
        (logits,) = self.session.run(["logits"], feed)
        return SequenceClassifierOutput(logits=torch.from_numpy(logits))

    def to(self, device: Any) -> "OnnxModel":
        return self

    def eval(self) -> "OnnxModel":
        return self

    def __getattr__(self, name: str) -> Any:
        raise AttributeError(f"{name!r}: a runtime 'onnx' model only runs inference; use runtime 'torch' to "
                             "fine-tune or change the model")


def cache_folder(model_path: str) -> Path:
    """Where the on-the-fly export of `model_path` lives; a local source's file sizes and times are in the key."""
    source = Path(model_path).expanduser()
    if source.is_dir():
        stamp = [(p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(source.iterdir()) if p.is_file()]
        key = json.dumps([str(source.resolve()), stamp])
    else:
        key = model_path
    root = os.environ.get("HF_ADAPTERS_ONNX_CACHE") or os.path.join(
        os.environ.get("HF_HOME") or os.path.expanduser("~/.cache/huggingface"), "onnx-exports")
    return Path(root) / hashlib.sha256(key.encode("utf-8")).hexdigest()[:16]


def exported_folder(model_class: Any, model_path: str) -> Path:
    """The ONNX folder to run: `model_path` itself when it is an export, else its (cached) export."""
    from .onnx_export import ONNX_FILE, export_onnx

    if (Path(model_path).expanduser() / ONNX_FILE).is_file():
        return Path(model_path).expanduser()
    folder = cache_folder(model_path)
    if not (folder / ONNX_FILE).is_file():
        logger.warning("exporting %s to ONNX in %s (once; later loads reuse it)", model_path, folder)
        export_onnx(model_path, folder, model_class=model_class)
    return folder


def load_onnx(model_class: Any, model_path: str, device: torch.device) -> tuple[OnnxModel, Any]:
    """`(model, tokenizer)` for the ONNX Runtime backend."""
    folder = exported_folder(model_class, model_path)
    tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=False)
    model = OnnxModel(folder, device)
    logger.info("loaded ONNX model %s with %s", folder, model.session.get_providers())
    return model, tokenizer
