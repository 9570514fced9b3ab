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


def write_item(subset_dir: str | Path, name: str, prompt_item: dict[str, Any],
               annotations: list[dict[str, Any]]) -> Path:
    """`<subset>/items/<name>.json` (the prompt item) and `<subset>/json/<name>.json` (item JSON + annotations)."""
    subset_dir = Path(subset_dir)
    filename = f"{name}.json"
    item_file = subset_dir / "items" / filename
    item_file.parent.mkdir(parents=True, exist_ok=True)
    item_file.write_text(json.dumps(prompt_item, ensure_ascii=False), encoding="utf-8")
    item_json = {"id": name, "name": filename, "filename": f"/{filename}", "type": "file",
                 "metadata": {"system": {"mimetype": "application/json"}}, "annotations": annotations}
    json_file = subset_dir / "json" / filename
    json_file.parent.mkdir(parents=True, exist_ok=True)
    json_file.write_text(json.dumps(item_json, ensure_ascii=False, indent=2), encoding="utf-8")
    return item_file
