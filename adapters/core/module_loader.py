"""Resolve a configuration's `module_name` to a module of the package's own `models/` folder, and nothing else."""
from __future__ import annotations

import importlib
import pkgutil
import re
from pathlib import Path
from types import ModuleType

from .errors import ConfigurationError
from .prompt_items import short

MODELS_DIR = Path(__file__).resolve().parents[2] / "models"
_NAME = re.compile(r"models\.([a-z][a-z0-9_-]*)")


def available_modules() -> list[str]:
    """Module names that may be loaded: the plain modules of models/ (sub-packages and private ones excluded)."""
    return sorted(f"models.{m.name}" for m in pkgutil.iter_modules([str(MODELS_DIR)])
                  if not m.ispkg and not m.name.startswith("_"))


def canonical_module_name(module_name: object) -> str:
    """Validate `module_name` as data and return its canonical form (the seed's hyphens become underscores)."""
    valid = available_modules()
    if not isinstance(module_name, str) or not module_name.strip():
        raise ConfigurationError(f"configuration 'module_name' must be a non-empty string; valid names: {valid}")
    match = _NAME.fullmatch(module_name.strip())
    name = f"models.{match.group(1).replace('-', '_')}" if match else None
    if name not in valid:
        raise ConfigurationError(f"module_name {short(module_name)} is not a module of this package's models/ folder; "
                                 f"valid names: {valid}")
    return name


def load_model_module(module_name: object) -> ModuleType:
    """Import the vetted module; it must define a `HuggingAdapter` class."""
    name = canonical_module_name(module_name)
    module = importlib.import_module(name)
    if not isinstance(getattr(module, "HuggingAdapter", None), type):
        raise ConfigurationError(f"{name} defines no HuggingAdapter class")
    return module
