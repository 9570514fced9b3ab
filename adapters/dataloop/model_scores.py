"""Scores of a model's answers in the files the platform's evaluation and comparison views read.

dtlpy's default `evaluate` runs dtlpymetrics' `create_model_score`, which matches each item's ground truth
(annotations by no model) with the model's annotations and uploads two hidden files to the dataset:
`/.modelscores/<model id>.csv`, one row per matched pair (`first_*` the ground truth, `second_*` the model's,
`label_score`, `geometry_score`, `attribute_score`, `annotation_score`...), and
`/.modelscores/<model id>-interpolated.json`, the dataset's precision-recall curves at ten thresholds on
`geometry_score`. It reads the items from dtlpy's shared download folder of the dataset, where it scores every JSON
file it finds, also those an earlier evaluation with another filter left there. So this module scores the items of
this evaluation's own download, then lets dtlpymetrics compute and upload the interpolated JSON from the CSV,
exactly as it does for its own:

- classifications (output type 'class'): dtlpymetrics' own matching (`measure_annotations`, with the arguments
  `create_model_score` passes), one row per matched pair;

It scores classes and shapes only (free text raises "unsupported type: text"), so for text answers the rows are
this module's, one per question with a reference:

- a classifier's answer (a label, as text): `label_score` = `geometry_score` = `annotation_score` = 1 when it is
  one of the question's references, else 0 (their mean over rows is the accuracy; dtlpymetrics' own class rows
  would give a wrong label 0.667, the mean of a geometry of 1 for every class pair, attributes and label);
- a generator's answer: `rouge1`, `rouge2`, `rougeL` (best reference, `rouge-score` with stemming, as the epoch
  metrics), and `rougeL` in `label_score`, `geometry_score` and `annotation_score`; its texts are no labels, so
  `first_label` / `second_label` stay empty (dtlpymetrics would draw a curve per distinct text);
- a question the model did not answer: a row with the reference only and scores 0, as dtlpymetrics writes an
  unmatched ground truth.
"""
from __future__ import annotations

import csv
import json
import logging
import math
import os
import tempfile
from pathlib import Path
from typing import Any

from adapters.training.dataset import Subset, Written
from adapters.training.metrics import question_rouge, truth

logger = logging.getLogger(__name__)

SCORES_FOLDER = "/.modelscores"
# dtlpymetrics' columns (utils/matching.py `Matches.to_df`, then create_model_score's additions), in its order.
COLUMNS = ("first_id", "first_creator", "first_label", "first_confidence", "second_id", "second_creator",
           "second_label", "second_confidence", "item_id", "annotation_score", "attribute_score", "geometry_score",
           "label_score", "annotation_type", "model_id", "dataset_id")
ROUGE_COLUMNS = ("rouge1", "rouge2", "rougeL")


def score_rows(family: str, subset: Subset, model_id: str, dataset_id: str) -> list[dict[str, Any]]:
    """One row per question with a reference: its first answer by the model against its references."""
    rows = []
    for item in subset.items:
        for question, references in item.written["references"].items():
            predicted = item.written["predictions"].get(question) or []
            rows.append(_row(family, references, predicted[0] if predicted else None, item.item_id, model_id,
                             dataset_id))
    return rows


def class_score_rows(json_root: Path, model: Any, dataset: Any) -> list[dict[str, Any]]:
    """dtlpymetrics' rows for the classifications of the items whose JSON files are under `json_root` (this
    evaluation's download, annotations included): each item's ground truth against `model`'s classifications."""
    import dtlpy as dl
    from dtlpymetrics.utils import measure_annotations

    rows = []
    for path in sorted(json_root.rglob("*.json")):
        data = json.loads(path.read_text(encoding="utf-8"))
        item = dl.Item.from_json(_json=data, client_api=dl.client_api, dataset=dataset)
        truth, answers = [], []
        for annotation in dl.AnnotationCollection.from_json(_json=data.get("annotations") or [], item=item):
            by = (annotation.metadata.get("user") or {}).get("model")
            if by is None:
                truth.append(annotation)
            elif by.get("name", "") == model.name:
                answers.append(annotation)
        if not truth and not answers:
            continue
        matches = measure_annotations(annotations_set_one=truth, annotations_set_two=answers, match_threshold=0.01,
                                      ignore_labels=False, compare_types=[model.output_type])
        if model.output_type not in matches:
            continue
        for match in matches[model.output_type].to_df().to_dict("records"):
            rows.append({**{name: None if isinstance(value, float) and math.isnan(value) else value
                            for name, value in match.items()},
                         "item_id": data["id"], "annotation_type": model.output_type, "model_id": model.id,
                         "dataset_id": dataset.id})
    return rows


def _row(family: str, references: list[Written], prediction: Written | None, item_id: str | None, model_id: str,
         dataset_id: str) -> dict[str, Any]:
    texts = [r.text for r in references]
    labelled = family != "generation"
    reference = references[0]
    scores: dict[str, float] = {}
    if prediction is not None:
        if labelled:
            reference = references[texts.index(truth(prediction.text, texts))]
            scores["score"] = float(prediction.text in texts)
        else:
            scores = question_rouge(prediction.text, texts)
            scores["score"] = scores["rougeL"]
    score = scores.pop("score", 0.0)
    row = {"first_id": reference.annotation_id, "first_creator": reference.creator,
           "first_label": reference.text if labelled else None, "first_confidence": 1,
           "second_id": prediction.annotation_id if prediction else None,
           "second_creator": prediction.creator if prediction else None,
           "second_label": prediction.text if prediction and labelled else None,
           "second_confidence": (prediction.confidence if prediction.confidence is not None else 1) if prediction
           else None,
           "item_id": item_id, "annotation_score": score, "attribute_score": 1.0 if prediction else 0.0,
           "geometry_score": score, "label_score": score, "annotation_type": "text", "model_id": model_id,
           "dataset_id": dataset_id}
    if not labelled:
        row.update({name: scores.get(name, 0.0) for name in ROUGE_COLUMNS})
    return row


def upload_scores(rows: list[dict[str, Any]], model: Any, dataset: Any) -> None:
    """Write `rows` as `/.modelscores/<model id>.csv` on `dataset` (replacing the last evaluation's), then have
    dtlpymetrics compute and upload `/.modelscores/<model id>-interpolated.json` from it."""
    import dtlpymetrics

    columns = COLUMNS + (ROUGE_COLUMNS if rows and "rougeL" in rows[0] else ())
    with tempfile.TemporaryDirectory(prefix="hf-adapter-scores-") as folder:
        path = Path(folder) / f"{model.id}.csv"
        with open(path, "w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=columns)
            writer.writeheader()
            writer.writerows(rows)
        dataset.items.upload(local_path=str(path), remote_path=SCORES_FOLDER, overwrite=True)
    # dtlpymetrics writes its JSON into ../.dataloop beside the working folder, which only its own
    # create_model_score makes.
    os.makedirs(os.path.join(os.getcwd(), "../.dataloop"), exist_ok=True)
    dtlpymetrics.calc_and_upload_interpolation(model=model, dataset=dataset)
    logger.info("scores of %d questions uploaded to %s of dataset %s", len(rows), SCORES_FOLDER, dataset.id)
