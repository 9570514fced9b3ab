"""Read `dataloop.json`, the single source of each model's configuration defaults."""
from __future__ import annotations

import copy
import functools
import json
from pathlib import Path
from typing import Any

_PACKAGE = Path(__file__).resolve().parents[1]
# A clone (and Dataloop's codebase) keeps the manifest at its root; an installed distribution inside `adapters/`.
MANIFEST_PATH = next((p for p in (_PACKAGE.parent / "dataloop.json", _PACKAGE / "dataloop.json") if p.is_file()),
                     _PACKAGE.parent / "dataloop.json")


@functools.lru_cache(maxsize=4)
def _load(path: str) -> dict[str, Any]:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def load_manifest(path: Path | str = MANIFEST_PATH) -> dict[str, Any]:
    """The parsed manifest (a deep copy, so callers may mutate it)."""
    return copy.deepcopy(_load(str(path)))


def model_entries(path: Path | str = MANIFEST_PATH) -> list[dict[str, Any]]:
    """The manifest's `components.models` entries."""
    return load_manifest(path).get("components", {}).get("models", [])


def model_entry(name: str, path: Path | str = MANIFEST_PATH) -> dict[str, Any]:
    """The manifest entry of the model called `name`; the error lists the names there are."""
    entries = model_entries(path)
    for entry in entries:
        if entry.get("name") == name:
            return entry
    from .prompt_items import short
    from .suggestions import did_you_mean

    names = sorted(str(e.get("name", "?")) for e in entries)
    raise KeyError(f"unknown model {short(name)}{did_you_mean(name, names)}; the models of this app are: "
                   f"{', '.join(names)}")


def defaults_for_module(module_name: str, path: Path | str = MANIFEST_PATH) -> dict[str, Any]:
    """Configuration defaults of the first manifest model whose `module_name` is `module_name`."""
    for entry in model_entries(path):
        configuration = entry.get("configuration", {})
        if configuration.get("module_name") == module_name:
            return copy.deepcopy(configuration)
    return {"module_name": module_name}
