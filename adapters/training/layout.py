"""Write data in the layout `dl.BaseModelAdapter.prepare_data` produces, to train or evaluate locally."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any


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
