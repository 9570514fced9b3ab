"""ONNX Runtime for the classifier modules, and the export that feeds it.

With `runtime: onnx`, `model_path` is either a folder written by `python -m adapters export-onnx` (it holds
`model.onnx`; use this for int8 weights) or anything the torch runtime accepts (a hub id or a safetensors
folder), which is then exported once to a cache folder (`$HF_ADAPTERS_ONNX_CACHE`, else `$HF_HOME/onnx-exports`)
keyed by the source's content and the model class (adapters/runtimes/derived.py), and reused; an export of
weights the module's model class cannot run is refused, as torch weights are. The loaded model quacks like the
`transformers` classifier for inference (`model(**inputs).logits`, `.config`), so the model modules do not change.

The exported folder is self-contained: `model.onnx` (token tensors in, `logits` out, batch and sequence axes
dynamic), the model's `config.json` (labels), the tokenizer, and `onnx_export.json` saying what was exported
from where. The legacy TorchScript exporter is used: it needs no extra package (the dynamo exporter needs
onnxscript) and traces these encoder classifiers exactly (tests compare it with torch to float32 rounding).
"""
from __future__ import annotations

import contextlib
import inspect
import logging
import warnings
from pathlib import Path
from typing import Any, Iterator

import torch
from transformers import AutoConfig, AutoModelForSequenceClassification
from transformers.modeling_outputs import SequenceClassifierOutput

from ..core.loading import load_tokenizer, load_weights, resolve_source
from .base import CLASSIFY, InferenceOnlyModel, Runtime
from .derived import DerivedKind, written_folder

logger = logging.getLogger(__name__)

ONNX_FILE = "model.onnx"
EXPORT_INFO = "onnx_export.json"
OPSET = 17
QUANTIZATIONS = ("int8",)


class OnnxModel(InferenceOnlyModel):
    """An exported `model.onnx` run by ONNX Runtime, shaped like the `transformers` classifier it came from."""

    runtime_name = "onnx"
    purpose = "only runs inference"

    def __init__(self, folder: Path, device: torch.device):
        import onnxruntime as ort

        self.config = AutoConfig.from_pretrained(folder, trust_remote_code=False)
        options = ort.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        providers = ["CPUExecutionProvider"]
        if device.type == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        self.session = ort.InferenceSession(str(folder / ONNX_FILE), options, providers=providers)
        self.input_names = [i.name for i in self.session.get_inputs()]

    def __call__(self, **inputs: Any) -> SequenceClassifierOutput:
        """Run the named token tensors the graph takes; other keyword arguments (e.g. use_cache) do not apply."""
        feed = {name: inputs[name].detach().cpu().numpy() for name in self.input_names}
        (logits,) = self.session.run(["logits"], feed)
        return SequenceClassifierOutput(logits=torch.from_numpy(logits))



class OnnxRuntime(Runtime):
    name = "onnx"
    doc = "'onnx': ONNX Runtime, exported once and cached (classifiers; see docs/performance.md)"
    tasks = frozenset({CLASSIFY})

    def load(self, model_class: Any, configuration: dict, device: torch.device) -> tuple[OnnxModel, Any]:
        folder = exported_folder(model_class, configuration["model_path"])
        model = OnnxModel(folder, device)
        logger.info("loaded ONNX model %s with %s", folder, model.session.get_providers())
        return model, load_tokenizer(str(folder))


EXPORTS = DerivedKind("HF_ADAPTERS_ONNX_CACHE", "onnx-exports", EXPORT_INFO, ONNX_FILE)


def exported_folder(model_class: Any, model_path: str) -> Path:
    """The ONNX folder to run: `model_path` itself when it is an export, else its (cached) export."""
    return EXPORTS.folder(model_class, model_path, lambda output: _export_once(model_class, model_path, output))


def _export_once(model_class: Any, model_path: str, folder: Path) -> None:
    logger.warning("exporting %s to ONNX in %s (once; later loads reuse it)", model_path, folder)
    export_onnx(model_path, folder, model_class=model_class, cache=True)


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
                model_class: Any = AutoModelForSequenceClassification, cache: bool = False) -> Path:
    """Write the ONNX folder for `model_path` to `output_dir` and return it; only an earlier export is replaced
    (in the export cache, when `cache`, see `written_folder`)."""
    if quantize not in (None, *QUANTIZATIONS):
        raise ValueError(f"quantize must be one of {list(QUANTIZATIONS)} or None, got {quantize!r}")
    output_dir = Path(output_dir)
    info: dict[str, Any] = {"source": str(model_path), "opset": OPSET, "quantize": quantize, "torch": torch.__version__}
    with written_folder(output_dir, EXPORT_INFO, info, cache=cache) as staging:
        source = resolve_source(model_path)
        tokenizer = load_tokenizer(source)
        model = load_weights(model_class, source)
        accepted = inspect.signature(model.forward).parameters
        sample = tokenizer(["a short text", "a somewhat longer text for the sample batch"], padding=True,
                           return_tensors="pt")
        names = [n for n in tokenizer.model_input_names if n in sample and n in accepted]
        info.update(architecture=type(model).__name__, inputs=names)
        traced = staging / "model-fp32.onnx"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer chatter about constant shapes; equality is tested instead
            torch.onnx.export(_LogitsOnly(model, names).eval(), tuple(sample[n] for n in names), str(traced),
                              dynamo=False, opset_version=OPSET, input_names=names, output_names=["logits"],
                              dynamic_axes={**{n: {0: "batch", 1: "sequence"} for n in names}, "logits": {0: "batch"}})
        if quantize == "int8":
            from onnxruntime.quantization import QuantType, quantize_dynamic
            with _quiet_onnxruntime():
                quantize_dynamic(str(traced), str(staging / ONNX_FILE), weight_type=QuantType.QInt8)
            traced.unlink()
        else:
            traced.rename(staging / ONNX_FILE)
        model.config.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
    logger.info("exported %s to %s (quantize=%s)", model_path, output_dir, quantize)
    return output_dir


@contextlib.contextmanager
def _quiet_onnxruntime() -> Iterator[None]:
    """ONNX Runtime's advice while quantizing (pre-processing hints, per-node warnings) only with DEBUG logging."""
    import onnxruntime as ort

    if logging.getLogger(__name__).isEnabledFor(logging.DEBUG):
        yield
        return
    root = logging.getLogger()
    saved_level = root.level
    ort.set_default_logger_severity(3)  # errors only, for the C++ side
    root.setLevel(max(saved_level, logging.ERROR))  # onnxruntime.quantization logs to the root logger
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        root.setLevel(saved_level)
        ort.set_default_logger_severity(2)
