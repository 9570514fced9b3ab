"""The folder layout `dl.BaseModelAdapter.prepare_data` produces: find its subsets (a missing or empty folder said
as such, before any model loads), and write data in it to train or evaluate locally."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

SUBSETS = ("train", "validation")


class LayoutError(ValueError):
    """The data folder is missing or lacks a subset that is needed; the message says what to fix."""


def subsets_present(data_path: str | Path) -> list[str]:
    """The subsets of `data_path` (folders with a `json/` folder), sorted; LayoutError when `data_path` does not
    exist or is not a folder (said as such, not as a folder with no subsets)."""
    data_path = Path(data_path)
    if not data_path.exists():
        raise LayoutError(f"data folder {str(data_path)!r} does not exist")
    if not data_path.is_dir():
        raise LayoutError(f"data folder {str(data_path)!r} is a file, not a folder of subsets")
    return sorted(p.name for p in data_path.iterdir() if (p / "json").is_dir())


def require_subset(data_path: str | Path, subset: str) -> list[str]:
    """`subsets_present(data_path)`, LayoutError unless `subset` is among them (the message lists those found)."""
    present = subsets_present(data_path)
    if subset not in present:
        found = ", ".join(repr(name) for name in present) if present else "no subset folders at all"
        raise LayoutError(f"{data_path} has no {subset!r} subset (found: {found}); expected <data>/<subset>/items "
                          f"and <data>/<subset>/json folders for subsets {list(SUBSETS)}, as "
                          "dl.BaseModelAdapter.prepare_data writes them (set the model's metadata.system.subsets)")
    return present


def text_annotation(prompt_id: str, text: str, model_name: str | None = None) -> dict[str, Any]:
    """A text annotation answering prompt `prompt_id`, as the platform stores it; `model_name` marks a prediction."""
    metadata: dict[str, Any] = {"system": {"promptId": str(prompt_id)}}
    if model_name is not None:
        metadata["user"] = {"model": {"name": model_name, "confidence": 1.0}}
    return {"type": "text", "label": "free-text", "coordinates": text, "metadata": metadata}


def class_annotation(label: str, model_name: str | None = None, confidence: float = 1.0) -> dict[str, Any]:
    """A class annotation (on a text item), as the platform stores it; `model_name` marks a prediction."""
    metadata: dict[str, Any] = {"system": {}}
    if model_name is not None:
        metadata["user"] = {"model": {"name": model_name, "confidence": confidence}}
    return {"type": "class", "label": label, "coordinates": [], "metadata": metadata}


def write_text_item(subset_dir: str | Path, name: str, text: str, annotations: list[dict[str, Any]],
                    mimetype: str = "text/plain") -> Path:
    """`<subset>/items/<name>.txt` (a text item) and `<subset>/json/<name>.json` (item JSON + annotations)."""
    return _write(Path(subset_dir), f"{name}.txt", text, mimetype, annotations)


def write_item(subset_dir: str | Path, name: str, prompt_item: dict[str, Any],
               annotations: list[dict[str, Any]]) -> Path:
    """`<subset>/items/<name>.json` (the prompt item) and `<subset>/json/<name>.json` (item JSON + annotations)."""
    return _write(Path(subset_dir), f"{name}.json", json.dumps(prompt_item, ensure_ascii=False), "application/json",
                  annotations)


def _write(subset_dir: Path, filename: str, content: str, mimetype: str, annotations: list[dict[str, Any]]) -> Path:
    item_file = subset_dir / "items" / filename
    item_file.parent.mkdir(parents=True, exist_ok=True)
    item_file.write_text(content, encoding="utf-8")
    item_json = {"id": Path(filename).stem, "name": filename, "filename": f"/{filename}", "type": "file",
                 "metadata": {"system": {"mimetype": mimetype}}, "annotations": annotations}
    json_file = subset_dir / "json" / (Path(filename).stem + ".json")
    json_file.parent.mkdir(parents=True, exist_ok=True)
    json_file.write_text(json.dumps(item_json, ensure_ascii=False, indent=2), encoding="utf-8")
    return item_file
