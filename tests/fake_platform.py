"""The Dataloop platform for tests: an in-memory annotation store behind dtlpy's own repositories.

Only the methods that would make HTTP calls are replaced (`Annotations.list/delete/upload/update`, `Items.get`); every
other line that runs is dtlpy's (`predict_items`, `_update_predictions_metadata`, `_upload_model_annotations`,
`PromptItem`) or the project's. Items are real `dl.Item` entities whose JSON dtlpy reads from a local file through
a `file://` link, as it reads a linked item.

`install_dataset` adds what dtlpy's dataset flows call (`evaluate_model`, `prepare_data`, `train_model`): the items
query (`Items._list`, the POST behind `dataset.items.list`, filtered, sorted and paged as the platform does for the
DQL dtlpy sends), the dataset download (`Downloader._download_recursive`, an export job plus one download per item;
`Items.download` for the JSON layout), model updates, model artifacts and metric samples; and what the evaluation
views, the feature sets and dtlpymetrics call: file uploads (`Items.upload`: the model scores dtlpymetrics and the
adapter write under the hidden /.modelscores), the annotation export (`Datasets._export_recursive`, behind
`dataset.download_annotations`), `Datasets.get`, the dataset's recipe and ontology (`Recipes.get`, `Ontologies.get`,
behind `dataset.labels`), feature sets (`FeatureSets._list` and `create`: the queries behind `model.feature_set`
and `project.feature_sets.get`) and feature vectors (`Features.create`).
"""
from __future__ import annotations

import csv
import fnmatch
import io
import itertools
import json
import logging
import mimetypes
import shutil
import time
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


def file_item(folder: Path, filename: str, content: str | bytes, item_id: str, mimetype: str,
              dltype: str | None = None, hidden: bool = False) -> dl.Item:
    """A `dl.Item` of any kind (a text file, an image, a prompt item) at dataset path `filename` (e.g. "/train/a.txt"),
    its content read by `item.download` through file://, with the fields the platform's item queries filter on."""
    path = Path(folder) / filename.lstrip("/")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content.encode("utf-8") if isinstance(content, str) else content)
    shebang: dict[str, Any] = {"linkInfo": {"type": "url", "ref": path.resolve().as_uri()}}
    if dltype is not None:
        shebang["dltype"] = dltype
    name = filename.rsplit("/", 1)[-1]
    return dl.Item.from_json(_json={
        "id": item_id, "name": name, "filename": filename, "dir": filename.rsplit("/", 1)[0] or "/", "type": "file",
        "hidden": hidden, "metadata": {"system": {"mimetype": mimetype, "shebang": shebang}},
    }, client_api=dl.client_api, dataset=None, project=None)


def prompt_file_item(folder: Path, filename: str, data: dict, item_id: str) -> dl.Item:
    """A prompt item (`file_item` with the prompt shebang) at dataset path `filename`."""
    return file_item(folder, filename, json.dumps(data), item_id, "application/json", dltype="prompt")


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
        # (monotonic time, "upload" / "update" / "delete", annotation id, text or None) of every annotation write
        self.writes: list[tuple[float, str, str, str | None]] = []
        self.failures: dict[str, BaseException] = {}  # a call's name -> the error it raises instead of answering
        self._ids = itertools.count(1)
        self.artifacts: Path | None = None  # the model's artifacts, once `install_dataset` ran
        self.metric_samples: list[Any] = []
        self.metric_datasets: list[Any] = []  # the dataset id each `metrics.create` call named
        self.uploads: dict[str, bytes] = {}  # dataset path -> content of each file uploaded (`Items.upload`)
        self.labels: list[str] = []  # the labels of the dataset's recipe's ontology
        self.feature_sets: list[dict] = []  # as the platform stores them
        self.features: list[dict] = []  # every vector uploaded: entityId, value, featureSetId, datasetId
        self.dataset: dl.Dataset | None = None
        self.project: dl.Project | None = None

    # ----- test-side helpers -----
    def add_item(self, item: dl.Item, annotations: list[dict] | None = None) -> dl.Item:
        self.items[item.id] = item
        self.annotations[item.id] = [self._stored(a, item.id) for a in annotations or []]
        return item

    def texts(self, item_id: str) -> list[tuple[str, str, str | None]]:
        """(promptId, text, model name) of every stored annotation of the item, in storage order (promptId None for
        an annotation on a text item)."""
        return [(a["metadata"]["system"].get("promptId"), a["coordinates"],
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
            elif isinstance(annotations, (dl.Annotation, dict)):  # one annotation, as `Annotation.upload` sends it
                annotations = [annotations]
            if not annotations:  # dtlpy sends no request for none, and says so
                logging.getLogger("dtlpy").warning("Annotation upload receives 0 annotations. Not doing anything")
                return dl.AnnotationCollection.from_json(_json=[], item=item)
            uploaded = []
            for annotation in annotations:
                data = annotation.to_json() if isinstance(annotation, dl.Annotation) else dict(annotation)
                data = platform._stored({**data, "id": None}, item.id)
                platform.annotations.setdefault(item.id, []).append(data)
                platform.writes.append((time.monotonic(), "upload", data["id"], data.get("coordinates")))
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
                if filters is None or filters.resource != dl.FiltersResource.ANNOTATION:  # dtlpy's own checks
                    raise dl.exceptions.PlatformException(error="400", message="Filters resource must to be "
                                                                              "FiltersResource.ANNOTATION")
                doomed = {a["id"] for a in stored if _matches(a, filters.prepare()["filter"])}
            platform.annotations[item.id] = [a for a in stored if a["id"] not in doomed]
            platform.calls.append(("annotations.delete", item.id, sorted(doomed)))
            platform.writes += [(time.monotonic(), "delete", annotation_id, None) for annotation_id in sorted(doomed)]
            return True

        def annotations_update(repository: dl.repositories.Annotations, annotations: Any,
                               system_metadata: bool = False) -> Any:
            item = repository.item
            for annotation in annotations if isinstance(annotations, list) else [annotations]:
                stored = next(a for a in platform.annotations[item.id] if a["id"] == annotation.id)
                stored["coordinates"] = annotation.coordinates
                platform.calls.append(("annotations.update", item.id, annotation.id))
                platform.writes.append((time.monotonic(), "update", annotation.id, annotation.coordinates))
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

    def install_dataset(self, monkeypatch: Any, artifacts: Path) -> dl.Dataset:
        """`install`, plus the dataset every added item belongs to, and a model's artifacts kept in `artifacts`."""
        self.install(monkeypatch)
        platform = self
        self.artifacts = Path(artifacts)
        self.artifacts.mkdir(parents=True, exist_ok=True)
        project = dl.Project.from_json(_json={"id": "project-1", "name": "project"}, client_api=dl.client_api)
        dataset = dl.Dataset.from_json(_json={"id": "dataset-1", "name": "dataset",
                                              "metadata": {"system": {"recipes": ["recipe-1"]}}},
                                       client_api=dl.client_api, project=project, datasets=project.datasets)
        self.dataset, self.project = dataset, project

        def items_query(repository: dl.repositories.Items, filters: dl.Filters) -> dict:
            query = filters.prepare()
            platform.calls.append(("items.query", query))
            selected = [item.to_json() for item in platform.items.values()
                        if _matches(item.to_json(), query.get("filter", {}))]
            for field, direction in (query.get("sort") or {}).items():
                selected.sort(key=lambda data: _lookup(data, field), reverse=direction == "descending")
            page, size = query.get("page", 0), query.get("pageSize", 1000)
            shown = selected[page * size:(page + 1) * size] if size else []
            return {"items": shown, "totalItemsCount": len(selected), "hasNextPage": (page + 1) * size < len(selected),
                    "totalPagesCount": -(-len(selected) // size) if size else 0}

        def download_layout(local_path: str, filters: dl.Filters | None, annotation_filters: dl.Filters | None,
                            annotation_options: Any) -> list:
            """The layout dtlpy writes: <local_path>/items/<filename> and, only when `annotation_options` asks for
            JSON (dtlpy's default is none), <local_path>/json/<dir>/<stem>.json holding the item's JSON with the
            annotations the annotation filter selects."""
            options = annotation_options if isinstance(annotation_options, (list, tuple)) else [annotation_options]
            with_json = dl.ViewAnnotationOptions.JSON in options
            item_filter = (filters or dl.Filters()).prepare().get("filter", {})
            annotation_filter = annotation_filters.prepare().get("filter", {}) if annotation_filters else {}
            written = []
            for item in platform.items.values():
                data = item.to_json()
                if not _matches(data, item_filter):
                    continue
                filename = data["filename"].lstrip("/")
                target = Path(local_path) / "items" / filename
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(item.download(save_locally=False).read())
                data["annotations"] = [a for a in platform.annotations.get(item.id, [])
                                       if _matches(a, annotation_filter)]
                written.append(str(target))
                if not with_json:
                    continue
                record = Path(local_path) / "json" / Path(filename).parent / (Path(filename).stem + ".json")
                record.parent.mkdir(parents=True, exist_ok=True)
                record.write_text(json.dumps(data), encoding="utf-8")
            platform.calls.append(("dataset.download", local_path, len(written)))
            return written

        def download_recursive(downloader: Any, local_path: str = None, filters: dl.Filters = None,
                               annotation_filters: dl.Filters = None, **kwargs: Any) -> list:
            # dtlpy's JSON download (BaseModelAdapter.prepare_data): the items' files and their annotations' JSON
            return download_layout(local_path, filters, annotation_filters, dl.ViewAnnotationOptions.JSON)

        item_download = dl.repositories.Items.download

        def items_download(repository: dl.repositories.Items, filters: dl.Filters = None, items: Any = None,
                           local_path: str = None, annotation_filters: dl.Filters = None,
                           annotation_options: Any = None, **kwargs: Any) -> Any:
            if items is not None:  # one item's own download (`item.download`): its file, read through file://
                return item_download(repository, filters=filters, items=items, local_path=local_path,
                                     annotation_filters=annotation_filters, annotation_options=annotation_options,
                                     **kwargs)
            return download_layout(local_path, filters, annotation_filters, annotation_options)

        def artifacts_upload(repository: Any, filepath: str, **kwargs: Any) -> None:
            platform.calls.append(("artifacts.upload", filepath))
            shutil.copytree(Path(filepath).parent, platform.artifacts, dirs_exist_ok=True)

        def artifacts_download(repository: Any, local_path: str = None, **kwargs: Any) -> str:
            shutil.copytree(platform.artifacts, local_path, dirs_exist_ok=True)
            return local_path

        def models_update(repository: Any, model: dl.Model, *args: Any, **kwargs: Any) -> dl.Model:
            platform.calls.append(("models.update", model.status))
            return model

        def metrics_create(repository: Any, samples: Any, dataset_id: Any = None) -> bool:
            platform.metric_samples.extend(samples)
            platform.metric_datasets.append(dataset_id)
            return True

        uploads = self.artifacts.parent / "uploaded-files"

        def items_upload(repository: dl.repositories.Items, local_path: str, remote_path: str = "/",
                         remote_name: str | None = None, overwrite: bool = False, **kwargs: Any) -> dl.Item:
            """A file upload: kept as an item of the dataset, hidden under a folder whose name starts with '.'."""
            filename = f"{remote_path.rstrip('/')}/{remote_name or Path(local_path).name}"
            existing = next((i for i in platform.items.values() if i.filename == filename), None)
            platform.calls.append(("items.upload", filename))
            if existing is not None and not overwrite:
                return existing
            content = Path(local_path).read_bytes()
            item_id = existing.id if existing is not None else f"{0xF0000000 + len(platform.uploads):024x}"
            item = file_item(uploads, filename, content, item_id, mimetypes.guess_type(filename)[0] or "text/plain",
                             hidden=any(part.startswith(".") for part in filename.split("/")))
            platform.uploads[filename] = content
            platform.add_item(item)
            return item

        def export_recursive(repository: Any, dataset: Any = None, local_path: str = None, filters: Any = None,
                             annotation_filters: Any = None, **kwargs: Any) -> Any:
            """The export job behind `dataset.download_annotations`: the selected items' JSON with their
            annotations, in one subset file."""
            item_filter = (filters or dl.Filters()).prepare().get("filter", {})
            annotation_filter = annotation_filters.prepare().get("filter", {}) if annotation_filters else {}
            exported = [{**item.to_json(), "annotations": [a for a in platform.annotations.get(item.id, [])
                                                           if _matches(a, annotation_filter)]}
                        for item in platform.items.values() if _matches(item.to_json(), item_filter)]
            platform.calls.append(("dataset.export", len(exported)))
            path = Path(local_path) / "subset-0.json"
            path.write_text(json.dumps(exported), encoding="utf-8")
            yield str(path)

        def datasets_get(repository: Any, dataset_name: str | None = None, dataset_id: str | None = None,
                         *args: Any, **kwargs: Any) -> dl.Dataset:
            platform.calls.append(("datasets.get", dataset_id))
            return dataset

        def recipes_get(repository: Any, recipe_id: str) -> dl.Recipe:
            return dl.Recipe.from_json(_json={"id": recipe_id, "ontologyIds": ["ontology-1"], "projectIds": [project.id]},
                                       client_api=dl.client_api, dataset=dataset, project=project)

        def ontologies_get(repository: Any, ontology_id: str, *args: Any, **kwargs: Any) -> dl.Ontology:
            roots = [{"tag": label, "color": "#ff0000", "children": [], "attributes": []} for label in platform.labels]
            return dl.Ontology.from_json(_json={"id": ontology_id, "roots": roots, "attributes": [], "metadata": {}},
                                         client_api=dl.client_api, recipe=None)

        def feature_sets_query(repository: Any, filters: dl.Filters) -> dict:
            query = filters.prepare()
            platform.calls.append(("feature_sets.query", query.get("filter")))
            selected = [s for s in platform.feature_sets if _matches(s, query.get("filter", {}))]
            return {"items": selected, "totalItemsCount": len(selected), "hasNextPage": False, "totalPagesCount": 1}

        def feature_sets_create(repository: Any, name: str, size: int, set_type: str, entity_type: Any,
                                project_id: str | None = None, model_id: str | None = None,
                                org_id: str | None = None) -> dl.FeatureSet:
            data = {"id": f"feature-set-{len(platform.feature_sets) + 1}", "name": name, "size": size,
                    "type": set_type, "project": project_id or repository.project.id, "modelId": model_id,
                    "entityType": entity_type}
            platform.feature_sets.append(data)
            platform.calls.append(("feature_sets.create", name, size))
            return dl.FeatureSet.from_json(_json=data, client_api=dl.client_api)

        def features_create(repository: Any, value: Any, project_id: str | None = None,
                            feature_set_id: str | None = None, entity: Any = None, **kwargs: Any) -> list:
            entities, values = (entity, value) if isinstance(entity, list) else ([entity], [value])
            if len(values) != len(entities):
                raise ValueError("The number of vectors must be equal to the number of entities")
            stored = [{"id": f"feature-{len(platform.features) + i}", "entityId": e.id, "value": list(v),
                       "featureSetId": feature_set_id, "datasetId": e.dataset.id, "project": project_id}
                      for i, (e, v) in enumerate(zip(entities, values))]
            platform.features.extend(stored)
            platform.calls.append(("features.create", feature_set_id, len(stored)))
            return [dl.Feature.from_json(_json=f, client_api=dl.client_api) for f in stored]

        monkeypatch.setattr(dl.repositories.Items, "_list", items_query)
        monkeypatch.setattr(dl.repositories.Items, "download", items_download)
        monkeypatch.setattr(dl.repositories.Downloader, "_download_recursive", download_recursive)
        monkeypatch.setattr(dl.repositories.Artifacts, "upload", artifacts_upload)
        monkeypatch.setattr(dl.repositories.Artifacts, "download", artifacts_download)
        monkeypatch.setattr(dl.repositories.Artifacts, "list", lambda repository, **kwargs: [])
        monkeypatch.setattr(dl.repositories.Models, "update", models_update)
        monkeypatch.setattr(dl.repositories.Metrics, "create", metrics_create)
        monkeypatch.setattr(dl.repositories.Items, "upload", items_upload)
        monkeypatch.setattr(dl.repositories.Datasets, "_export_recursive", export_recursive)
        monkeypatch.setattr(dl.repositories.Datasets, "get", datasets_get)
        monkeypatch.setattr(dl.repositories.Recipes, "get", recipes_get)
        monkeypatch.setattr(dl.repositories.Ontologies, "get", ontologies_get)
        monkeypatch.setattr(dl.repositories.FeatureSets, "_list", feature_sets_query)
        monkeypatch.setattr(dl.repositories.FeatureSets, "create", feature_sets_create)
        monkeypatch.setattr(dl.repositories.Features, "create", features_create)
        return dataset

    def _fail(self, call: str, item_id: str) -> None:
        """Raise the error `failures` holds for `call`, as the platform's HTTP layer would (nothing is stored)."""
        if call in self.failures:
            self.calls.append((call + " failed", item_id))
            raise self.failures[call]

    def model(self, name: str, configuration: dict, output_type: str = "text") -> dl.Model:
        """A model entity of the installed project and dataset (`install_dataset` first), as the platform returns
        one; its updates go through the faked `Models.update`."""
        return dl.Model.from_json(_json={
            "id": f"{name}-id", "name": name, "configuration": configuration, "inputType": "text",
            "outputType": output_type, "status": "pre-trained", "datasetId": self.dataset.id,
            "context": {"project": self.project.id}}, client_api=dl.client_api, project=self.project,
            package=dl.Package())

    def scores(self, model_id: str) -> list[dict[str, str]]:
        """The rows of the model scores file `/.modelscores/<model_id>.csv` uploaded to the dataset."""
        text = self.uploads[f"/.modelscores/{model_id}.csv"].decode("utf-8")
        return list(csv.DictReader(io.StringIO(text)))

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


_COMPARISONS = {"$gt": lambda a, b: a > b, "$gte": lambda a, b: a >= b, "$lt": lambda a, b: a < b,
                "$lte": lambda a, b: a <= b}


def _field_matches(value: Any, condition: Any) -> bool:
    if isinstance(condition, dict):
        if "$in" in condition:
            return value in condition["$in"]
        if "$eq" in condition:
            return value == condition["$eq"]
        if "$ne" in condition:
            return value != condition["$ne"]
        if "$exists" in condition:
            return (value is not None) == bool(condition["$exists"])
        if set(condition) <= set(_COMPARISONS):
            return value is not None and all(_COMPARISONS[op](value, bound) for op, bound in condition.items())
        raise NotImplementedError(f"filter operator {sorted(condition)}")
    if isinstance(condition, str) and isinstance(value, str) and "*" in condition:
        return fnmatch.fnmatchcase(value, condition)  # a folder query: "/train/**" is everything under /train
    return value == condition
