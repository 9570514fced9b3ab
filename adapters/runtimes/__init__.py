"""Every runtime in one place: what each can run, the settings that choose one, and loading through it.

A runtime is one file of this package (a `Runtime` subclass) plus its line in `RUNTIMES`; a model module
declares its task with `runtime_settings(CLASSIFY)` or `runtime_settings(GENERATE)` and thereby accepts every
runtime that serves that task, with each one's own keys (e.g. `compute_type`). A runtime a module's task cannot
use is refused when the configuration is read, before any weights are.
"""
from __future__ import annotations

from typing import Any

import torch

from ..core.errors import ConfigurationError
from ..core.settings import Setting
from .base import CLASSIFY, GENERATE, Runtime
from .ctranslate2_runtime import CTranslate2Runtime
from .onnx_runtime import OnnxRuntime
from .torch_runtime import TorchRuntime

__all__ = ["CLASSIFY", "GENERATE", "RUNTIMES", "Runtime", "check_runtime_keys", "load_model", "runtime_named",
           "runtime_settings", "runtimes_of"]

RUNTIMES: dict[str, Runtime] = {runtime.name: runtime for runtime in (TorchRuntime(), OnnxRuntime(),
                                                                        CTranslate2Runtime())}


def runtime_settings(task: str) -> tuple[Setting, ...]:
    """The `runtime` key of a module with `task` (the runtimes that serve it), then those runtimes' own keys."""
    names = tuple(name for name, runtime in RUNTIMES.items() if task in runtime.tasks)
    doc = "; ".join(RUNTIMES[name].doc for name in names)
    extra = tuple(setting for name in names for setting in RUNTIMES[name].settings)
    return (Setting("runtime", (str,), doc, choices=names), *extra)


def runtimes_of(settings: tuple[Setting, ...]) -> tuple[str, ...]:
    """The runtimes a module with these settings accepts ('torch' alone when it has no `runtime` key)."""
    return next((s.choices for s in settings if s.name == "runtime"), ("torch",))


def check_runtime_keys(configuration: dict, defaults: dict) -> None:
    """Refuse a key of another runtime set away from its default (`dtype: bfloat16` with `runtime: onnx`, say):
    the chosen runtime would not read it, and the user would believe it applied."""
    chosen = configuration.get("runtime", "torch")
    for name, runtime in RUNTIMES.items():
        for setting in runtime.settings if name != chosen else ():
            if setting.name in configuration and configuration[setting.name] != defaults.get(setting.name):
                raise ConfigurationError(f"configuration {setting.name!r} is read by runtime {name!r} only, and "
                                         f"this configuration runs {chosen!r}; remove the key or set it to "
                                         f"{defaults.get(setting.name)!r}")


def runtime_named(name: str) -> Runtime:
    return RUNTIMES[name]


def load_model(model_class: Any, configuration: dict, device: torch.device) -> tuple[Runtime, Any, Any]:
    """`(runtime, model, tokenizer)` for a resolved configuration (its `runtime` key, 'torch' when it has none)."""
    runtime = runtime_named(configuration.get("runtime", "torch"))
    model, tokenizer = runtime.load(model_class, configuration, device)
    return runtime, model, tokenizer
