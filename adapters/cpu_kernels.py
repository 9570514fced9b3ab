"""Run a model's dense layers through oneDNN on CPU for inference.

torch's default CPU matrix product (MKL's sgemm) reaches about 180 GFLOP/s on this project's AMD EPYC machines,
while oneDNN reaches 350-480 on the same shapes and threads (`python -m benchmarks.gemm`). The layers are
not replaced: their `forward` takes the oneDNN route only when no gradient is being recorded, on float32 CPU
tensors, so training, saving and `state_dict` are untouched. Results differ from MKL's only by float rounding
(about 1e-6 relative).
"""
from __future__ import annotations

import logging
import os
import types
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

logger = logging.getLogger(__name__)


DISABLE_VARIABLE = "HF_ADAPTERS_ONEDNN"  # set to 0 to keep torch's default kernels (e.g. to compare numerics)


def onednn_available() -> bool:
    return (os.environ.get(DISABLE_VARIABLE, "1") != "0" and torch.backends.mkldnn.is_available()
            and hasattr(torch.ops.mkldnn, "_linear_pointwise"))


def _fast_path(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """Inference on float32 CPU tensors only; tracing (ONNX export) and autograd take the standard route."""
    return (not torch.is_grad_enabled() and x.device.type == "cpu" and x.dtype == torch.float32
            and weight.dtype == torch.float32 and x.dim() >= 2 and not torch.jit.is_tracing())


def _linear_forward(self: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    if _fast_path(x, self.weight):
        return torch.ops.mkldnn._linear_pointwise(x, self.weight, self.bias, "none", [], "")
    return F.linear(x, self.weight, self.bias)


def _conv1d_forward(self: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """transformers' GPT-2 `Conv1D` stores the weight as (in, out); oneDNN reads the transposed view in place."""
    if _fast_path(x, self.weight):
        return torch.ops.mkldnn._linear_pointwise(x, self.weight.t(), self.bias, "none", [], "")
    return torch.addmm(self.bias, x.view(-1, x.size(-1)), self.weight).view(*x.shape[:-1], self.nf)


def use_onednn_linears(model: Any) -> int:
    """Route every `nn.Linear` (and GPT-2 `Conv1D`) of `model` through oneDNN for inference; returns how many."""
    if not onednn_available():
        return 0
    from transformers.pytorch_utils import Conv1D

    routed = 0
    for module in model.modules():
        if type(module) is nn.Linear:
            module.forward = types.MethodType(_linear_forward, module)
            routed += 1
        elif type(module) is Conv1D:
            module.forward = types.MethodType(_conv1d_forward, module)
            routed += 1
    logger.debug("routed %d dense layers through oneDNN", routed)
    return routed
