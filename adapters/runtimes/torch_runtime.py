"""The default runtime: the `transformers` model itself, on CPU with oneDNN dense layers, or on CUDA.

`dtype` chooses the weight and arithmetic type. `float32` (the default) answers as the model was published;
`bfloat16` halves the weights and, on CPUs with AMX or AVX512-BF16 (Intel Xeon since Sapphire Rapids, AMD Zen 4)
or on GPUs, runs the dense layers three to seven times faster (whole predictions about twice as fast), with scores
that move by about 2e-3 (docs/performance.md); `float16` is for CUDA GPUs only (CPUs have no fast float16
arithmetic).
"""
from __future__ import annotations

import logging
from typing import Any, Callable

import torch

from ..core.errors import ConfigurationError
from ..core.generation import generate_with_confidence
from ..core.loading import load_tokenizer, load_weights, resolve_source
from ..core.settings import Setting
from .base import CLASSIFY, GENERATE, Runtime
from .cpu_kernels import use_onednn_linears

logger = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
DTYPE_SETTING = Setting(
    "dtype", (str,), "runtime 'torch' only: weight and arithmetic type; 'bfloat16' is about twice as fast on CPUs "
    "with AMX / AVX512-BF16 and on GPUs, with scores about 2e-3 off float32's; 'float16' on CUDA only",
    choices=tuple(DTYPES))


def native_cpu_bfloat16() -> bool:
    """Whether this CPU computes in bfloat16 in hardware (AMX tiles or AVX512-BF16); elsewhere it is emulated."""
    return any(getattr(torch.cpu, probe, lambda: False)()
               for probe in ("_is_amx_tile_supported", "_is_avx512_bf16_supported"))


def checked_dtype(name: str, device: torch.device) -> torch.dtype:
    """The torch dtype for `name` on `device`; float16 on a CPU is refused (no fast float16 arithmetic there)."""
    if name == "float16" and device.type == "cpu":
        raise ConfigurationError("dtype 'float16' runs on CUDA GPUs only; on a CPU use 'bfloat16' (fast with AMX "
                                 "or AVX512-BF16) or 'float32'")
    if name == "bfloat16" and device.type == "cpu" and not native_cpu_bfloat16():
        logger.warning("dtype 'bfloat16': this CPU has neither AMX nor AVX512-BF16, so bfloat16 is emulated and "
                       "may be slower than 'float32'")
    return DTYPES[name]


class TorchRuntime(Runtime):
    name = "torch"
    doc = "'torch': the transformers model (the only runtime that fine-tunes)"
    tasks = frozenset({CLASSIFY, GENERATE})
    settings = (DTYPE_SETTING,)

    def load(self, model_class: Any, configuration: dict, device: torch.device) -> tuple[Any, Any]:
        dtype = checked_dtype(configuration.get("dtype", "float32"), device)
        source = resolve_source(configuration["model_path"])
        tokenizer = load_tokenizer(source)
        model = load_weights(model_class, source, dtype).to(device)
        if device.type == "cpu":
            use_onednn_linears(model)
        logger.info("loaded %s from %s on %s (%s)", type(model).__name__, configuration["model_path"], device,
                    str(dtype).removeprefix("torch."))
        return model, tokenizer

    def generate(self, model: Any, encoded: dict[str, torch.Tensor], config: Any, seed: int | None,
                 on_token: Callable[[int, int], None] | None = None) -> list[Any]:
        return generate_with_confidence(model, encoded, config, seed, on_token)
