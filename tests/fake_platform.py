"""The Dataloop platform for tests: an in-memory annotation store behind dtlpy's own repositories.

Only the methods that would make HTTP calls are replaced (`Annotations.list/delete/upload/update`, `Items.get`); every
other line that runs is dtlpy's (`predict_items`, `_update_predictions_metadata`, `_upload_model_annotations`,
`PromptItem`) or the project's. Items are real `dl.Item` entities whose JSON dtlpy reads from a local file through
a `file://` link, as it reads a linked item.
"""
from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import dtlpy as dl


def linked_item(folder: Path, name: str, data: dict, item_id: str, dltype: str | None = "prompt") -> dl.Item:
    """A `dl.Item` whose content is `data`, written to `folder/name` and read by `item.download` through file://."""
    path = Path(folder) / name
    path.write_text(json.dumps(data), encoding="utf-8")
    shebang: dict[str, Any] = {"linkInfo": {"type": "url", "ref": path.resolve().as_uri()}}
    if dltype is not None:
        shebang["dltype"] = dltype
    return dl.Item.from_json(_json={
        "id": item_id, "name": name, "filename": f"/{name}", "type": "file",
        "metadata": {"system": {"mimetype": "application/json", "shebang": shebang}},
    }, client_api=dl.client_api, dataset=None, project=None)


def answer_json(prompt_id: str, text: str, model_name: str | None, annotation_id: str | None = None) -> dict:
    """A text annotation answering prompt `prompt_id` as the platform stores it (`model_name` None: a person's)."""
    metadata: dict[str, Any] = {"system": {"promptId": str(prompt_id)}}
    if model_name is not None:
        metadata["user"] = {"model": {"name": model_name, "confidence": 0.5}}
        metadata["system"]["model"] = {"name": model_name}
    return {"id": annotation_id, "type": "text", "label": "free-text", "coordinates": text, "metadata": metadata}


class FakePlatform:
    """Annotations per item id, and a log of the calls that would have reached the platform."""

    def __init__(self) -> None:
        self.annotations: dict[str, list[dict]] = {}
        self.items: dict[str, dl.Item] = {}
        self.calls: list[tuple[str, Any]] = []
        self.failures: dict[str, BaseException] = {}  # a call's name -> the error it raises instead of answering
        self._ids = itertools.count(1)

    # ----- test-side helpers -----
    def add_item(self, item: dl.Item, annotations: list[dict] | None = None) -> dl.Item:
        self.items[item.id] = item
        self.annotations[item.id] = [self._stored(a, item.id) for a in annotations or []]
        return item

    def texts(self, item_id: str) -> list[tuple[str, str, str | None]]:
        """(promptId, text, model name) of every stored annotation of the item, in storage order."""
        return [(a["metadata"]["system"]["promptId"], a["coordinates"],
                 ((a["metadata"].get("user") or {}).get("model") or {}).get("name")) for a in self.annotations[item_id]]

    def install(self, monkeypatch: Any) -> "FakePlatform":
        platform = self

        def annotations_list(repository: dl.repositories.Annotations, filters: Any = None, page_offset: Any = None,
                             page_size: Any = None) -> dl.AnnotationCollection:
            item = repository.item
            platform.calls.append(("annotations.list", item.id))
            stored = [dl.Annotation.from_json(_json=a, item=item) for a in platform.annotations.get(item.id, [])]
            return dl.AnnotationCollection(item=item, annotations=stored)

        def annotations_upload(repository: dl.repositories.Annotations, annotations: Any, merge: bool = False
                               ) -> dl.AnnotationCollection:
            item = repository.item
            platform._fail("annotations.upload", item.id)
            if isinstance(annotations, dl.AnnotationCollection):
                annotations = annotations.annotations
            uploaded = []
            for annotation in annotations:
                data = annotation.to_json() if isinstance(annotation, dl.Annotation) else dict(annotation)
                data = platform._stored({**data, "id": None}, item.id)
                platform.annotations.setdefault(item.id, []).append(data)
                uploaded.append(data)
            platform.calls.append(("annotations.upload", item.id, len(uploaded)))
            return dl.AnnotationCollection.from_json(_json=uploaded, item=item)

        def annotations_delete(repository: dl.repositories.Annotations, annotation: Any = None,
                               annotation_id: str | None = None, filters: Any = None) -> bool:
            item = repository.item
            platform._fail("annotations.delete", item.id)
            stored = platform.annotations.get(item.id, [])
            if annotation is not None or annotation_id is not None:
                doomed = {annotation_id or annotation.id}
            else:
                doomed = {a["id"] for a in stored if _matches(a, filters.prepare()["filter"])}
            platform.annotations[item.id] = [a for a in stored if a["id"] not in doomed]
            platform.calls.append(("annotations.delete", item.id, sorted(doomed)))
            return True

        def annotations_update(repository: dl.repositories.Annotations, annotations: Any,
                               system_metadata: bool = False) -> Any:
            item = repository.item
            for annotation in annotations if isinstance(annotations, list) else [annotations]:
                stored = next(a for a in platform.annotations[item.id] if a["id"] == annotation.id)
                stored["coordinates"] = annotation.coordinates
                platform.calls.append(("annotations.update", item.id, annotation.id))
            return annotations

        def items_get(repository: dl.repositories.Items, filepath: Any = None, item_id: str | None = None,
                      *args: Any, **kwargs: Any) -> dl.Item:
            platform.calls.append(("items.get", item_id))
            return platform.items[item_id]

        monkeypatch.setattr(dl.repositories.Annotations, "list", annotations_list)
        monkeypatch.setattr(dl.repositories.Annotations, "upload", annotations_upload)
        monkeypatch.setattr(dl.repositories.Annotations, "delete", annotations_delete)
        monkeypatch.setattr(dl.repositories.Annotations, "update", annotations_update)
        monkeypatch.setattr(dl.repositories.Items, "get", items_get)
        return self

    def _fail(self, call: str, item_id: str) -> None:
        """Raise the error `failures` holds for `call`, as the platform's HTTP layer would (nothing is stored)."""
        if call in self.failures:
            self.calls.append((call + " failed", item_id))
            raise self.failures[call]

    def _new_id(self) -> str:
        return f"annotation-{next(self._ids)}"

    def _stored(self, annotation: dict, item_id: str) -> dict:
        """The annotation as the platform keeps it: with an id, its item, and who made it when."""
        return {"creator": "someone@example.com", "createdAt": "2026-12-01T00:00:00.000Z", "updatedBy": None,
                "updatedAt": None, **annotation, "id": annotation.get("id") or self._new_id(), "itemId": item_id}


def _matches(annotation: dict, query: Any) -> bool:
    """Evaluate the subset of Dataloop's filter language that annotation deletes use ($and/$or, $in, $eq, values)."""
    if isinstance(query, dict):
        for key, condition in query.items():
            if key == "$and":
                if not all(_matches(annotation, part) for part in condition):
                    return False
            elif key == "$or":
                if not any(_matches(annotation, part) for part in condition):
                    return False
            elif not _field_matches(_lookup(annotation, key), condition):
                return False
        return True
    return bool(query)


def _lookup(annotation: dict, dotted: str) -> Any:
    value: Any = annotation
    for part in dotted.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def _field_matches(value: Any, condition: Any) -> bool:
    if isinstance(condition, dict):
        if "$in" in condition:
            return value in condition["$in"]
        if "$eq" in condition:
            return value == condition["$eq"]
        if "$ne" in condition:
            return value != condition["$ne"]
        raise NotImplementedError(f"filter operator {sorted(condition)}")
    return value == condition
