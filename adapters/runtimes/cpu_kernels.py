"""Run a model's dense layers through oneDNN on CPU for inference, where this machine runs them faster.

Which kernel is faster depends on the CPU: on AMD EPYC machines torch's default float32 matrix product (MKL's
sgemm) reached about 180 GFLOP/s and oneDNN 350-480 on the same shapes and threads, while on an Intel Xeon
(Sapphire Rapids) oneDNN was about a quarter slower than MKL (`python -m benchmarks.gemm`,
docs/performance.md). So by default (`HF_ADAPTERS_ONEDNN=auto`) both kernels are timed on the model's layer shapes
(in the model's own type: float32, or bfloat16 where `dtype` asks for it), and oneDNN is used only when it is
clearly faster; `1` always routes, `0` never does; a type oneDNN has no kernel for on this CPU (bfloat16 without
AVX-512) is never routed. A choice is timed once per machine, not per load: it is kept in a small file
(`kernels.json` in `HF_ADAPTERS_CACHE`, by default ~/.cache/hf-adapters) under the CPU's model, the torch version
and the thread count, since it holds for the same three. The layers are not replaced: their `forward` takes the
oneDNN route only when no gradient is being recorded, on CPU tensors of the layer's type, so training, saving and
`state_dict` are untouched. Results differ from the default kernel's only by rounding
(about 1e-6 relative in float32).
"""
from __future__ import annotations

import functools
import json
import logging
import os
import platform
import tempfile
import time
import types
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

logger = logging.getLogger(__name__)


DISABLE_VARIABLE = "HF_ADAPTERS_ONEDNN"  # auto (default): measured; 1: always oneDNN; 0: torch's default kernels
SMALL_ROWS = 64  # products with fewer rows (generation's decoding steps) are timed and routed on their own
PROBE_ROWS = {False: 16, True: 256}  # rows of the probe product: a decoding step, a prefill / classifier batch
ROUTED_DTYPES = (torch.float32, torch.bfloat16)  # the types a layer may be routed in (`dtype` of the torch runtime)
PROBE_WORK_ROWS = 512  # each timing runs the product this many rows' worth, so small ones are not all noise
REQUIRED_GAIN = 1.1  # oneDNN must beat the default kernel by 10% to be used: a tie is not worth switching
CACHE_VARIABLE = "HF_ADAPTERS_CACHE"  # folder of the package's per-machine caches
CHOICES_FILE = "kernels.json"
MAX_REMEMBERED = 4096  # choices kept per machine (a model has tens of layer shapes)
MAX_MACHINES = 8  # machines kept in one file (a home folder shared by a cluster's nodes); the oldest go first


def kernel_mode() -> str:
    """'auto', '1' or '0' from the environment; anything else reads as 'auto'."""
    value = os.environ.get(DISABLE_VARIABLE, "auto").strip().lower()
    return value if value in ("0", "1") else "auto"


def onednn_available() -> bool:
    return (kernel_mode() != "0" and torch.backends.mkldnn.is_available()
            and hasattr(torch.ops.mkldnn, "_linear_pointwise"))


@functools.lru_cache(maxsize=None)
def onednn_runs(dtype: torch.dtype) -> bool:
    """Whether oneDNN has a dense kernel for `dtype` on this CPU: bfloat16 needs AVX-512 (or AMX); a CPU with AVX2
    only (AMD EPYC before Zen 4, older Xeons) has none, and the call fails instead of falling back."""
    x = torch.ones(2, 4, dtype=dtype)
    try:
        with torch.inference_mode():
            torch.ops.mkldnn._linear_pointwise(x, torch.ones(3, 4, dtype=dtype), None, "none", [], "")
    except RuntimeError as error:
        logger.debug("oneDNN cannot run %s dense layers on this CPU (%s): default kernels", dtype, error)
        return False
    return True


def _best_seconds(run: Callable[[], Any], calls: int, repeats: int = 3) -> float:
    run()  # warm-up: first-call allocation and kernel selection
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        for _ in range(calls):
            run()
        best = min(best, time.perf_counter() - started)
    return best


def choices_path() -> Path:
    folder = os.environ.get(CACHE_VARIABLE) or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "hf-adapters")
    return Path(folder) / CHOICES_FILE


def machine_key() -> str:
    """What a kernel choice holds for: the CPU's model, the torch version and the threads a product may use."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as info:
            cpu = next((line.split(":", 1)[1].strip() for line in info if line.startswith("model name")), cpu)
    except OSError:
        pass
    return f"{cpu} | torch {torch.__version__} | {torch.get_num_threads()} threads"


def _read_choices(path: Path) -> dict[str, dict[str, bool]]:
    """The remembered choices by machine; an unreadable or foreign file reads as none (it is only a cache)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    machines = data.get("machines") if isinstance(data, dict) else None
    if not isinstance(machines, dict):
        return {}
    return {machine: {k: v for k, v in choices.items() if isinstance(v, bool)}
            for machine, choices in machines.items() if isinstance(choices, dict)}


def remembered_choice(shape: str) -> bool | None:
    return _read_choices(choices_path()).get(machine_key(), {}).get(shape)


def remember_choice(shape: str, faster: bool) -> None:
    """Add one choice to the file, written whole beside it and renamed into place (a concurrent reader sees the
    old file or the new one); a folder that cannot be written costs the next load a timing, nothing else."""
    path = choices_path()
    machines = _read_choices(path)
    machine = machine_key()
    choices = machines.pop(machine, {})  # re-inserted last: the most recently used machine
    choices[shape] = faster
    machines[machine] = dict(list(choices.items())[-MAX_REMEMBERED:])
    machines = dict(list(machines.items())[-MAX_MACHINES:])
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("w", dir=path.parent, prefix=".kernels-", suffix=".tmp", delete=False,
                                         encoding="utf-8") as temporary:
            json.dump({"machines": machines}, temporary)
        os.replace(temporary.name, path)
    except OSError as error:
        logger.debug("could not remember the kernel choice in %s: %s", path, error)


@functools.lru_cache(maxsize=None)
def onednn_is_faster(in_features: int, out_features: int, rows: int, dtype: torch.dtype = torch.float32) -> bool:
    """Whether oneDNN runs a (rows x in) @ (in x out) product of `dtype` clearly faster than torch's default
    kernel on this machine with the current threads: remembered per machine, else timed (tens of milliseconds)."""
    shape = f"{in_features}x{out_features}x{rows}:{str(dtype).removeprefix('torch.')}"
    remembered = remembered_choice(shape)
    if remembered is not None:
        return remembered
    faster = _time_kernels(in_features, out_features, rows, dtype)
    remember_choice(shape, faster)
    return faster


def _time_kernels(in_features: int, out_features: int, rows: int, dtype: torch.dtype) -> bool:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(rows, in_features, generator=generator).to(dtype)
    weight = torch.randn(out_features, in_features, generator=generator).to(dtype)
    bias = torch.randn(out_features, generator=generator).to(dtype)
    calls = max(1, PROBE_WORK_ROWS // rows)
    with torch.inference_mode():
        default = _best_seconds(lambda: F.linear(x, weight, bias), calls)
        onednn = _best_seconds(lambda: torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], ""), calls)
    faster = default >= REQUIRED_GAIN * onednn
    logger.debug("dense %dx%d, %d rows, %s: default kernel %.3f ms, oneDNN %.3f ms: %s", in_features,
                 out_features, rows, dtype, default / calls * 1e3, onednn / calls * 1e3,
                 "oneDNN" if faster else "default kernel")
    return faster


def routes(in_features: int, out_features: int, dtype: torch.dtype = torch.float32) -> tuple[bool, bool]:
    """(oneDNN for products of fewer than SMALL_ROWS rows, oneDNN for larger ones) for a layer of this shape."""
    if not onednn_runs(dtype):
        return False, False
    if kernel_mode() == "1":
        return True, True
    return tuple(onednn_is_faster(in_features, out_features, PROBE_ROWS[large], dtype) for large in (False, True))


def _use_onednn(self: nn.Module, x: torch.Tensor) -> bool:
    return _fast_path(x, self.weight) and self.onednn_routes[x.numel() >= SMALL_ROWS * x.shape[-1]]


def _fast_path(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """Inference on CPU tensors of the layer's own (routed) type only; tracing (ONNX export) and autograd take
    the standard route."""
    return (not torch.is_grad_enabled() and x.device.type == "cpu" and x.dtype == weight.dtype
            and weight.dtype in ROUTED_DTYPES and x.dim() >= 2 and not torch.jit.is_tracing())


def _linear_forward(self: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    if _use_onednn(self, x):
        return torch.ops.mkldnn._linear_pointwise(x, self.weight, self.bias, "none", [], "")
    return F.linear(x, self.weight, self.bias)


def _conv1d_forward(self: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """transformers' GPT-2 `Conv1D` stores the weight as (in, out); oneDNN reads the transposed view in place."""
    if _use_onednn(self, x):
        return torch.ops.mkldnn._linear_pointwise(x, self.weight.t(), self.bias, "none", [], "")
    return torch.addmm(self.bias, x.view(-1, x.size(-1)), self.weight).view(*x.shape[:-1], self.nf)


def use_onednn_linears(model: Any) -> int:
    """Route each `nn.Linear` (and GPT-2 `Conv1D`) of `model` through oneDNN for inference where it is faster
    for that layer's shape (always with mode '1', where oneDNN runs the layer's type), per row regime; returns how
    many layers were routed."""
    if not onednn_available():
        return 0
    from transformers.pytorch_utils import Conv1D

    forwards = {nn.Linear: _linear_forward, Conv1D: _conv1d_forward}
    routed = 0
    for module in model.modules():
        forward = forwards.get(type(module))
        if forward is None or module.weight.dtype not in ROUTED_DTYPES:
            continue
        in_features, out_features = (module.weight.shape[1], module.weight.shape[0]) if type(module) is nn.Linear \
            else tuple(module.weight.shape)
        module.onednn_routes = routes(in_features, out_features, module.weight.dtype)
        if any(module.onednn_routes):
            module.forward = types.MethodType(forward, module)
            routed += 1
    logger.debug("routed %d dense layers through oneDNN", routed)
    return routed
