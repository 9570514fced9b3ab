"""Read the folder layout `dl.BaseModelAdapter.prepare_data` writes into answered items.

    <data>/<subset>/items/<filename>        the item's file: a prompt item (legacy or current format), or a text
                                            item (text/plain, text/markdown, by the item JSON's mimetype)
    <data>/<subset>/json/<dir>/<stem>.json  the item's JSON, with its `annotations`

Reference answers of a prompt item are its text annotations (`type` "text", `coordinates` = the text,
`metadata.system.promptId` = the prompt key). A prompt with one question owns all of its prompt's answers;
a prompt with n questions (legacy format) owns n equal runs of answers in order, as `predict` writes them.
A text item is one question; its answers are its text annotations on no prompt and its class annotations (`type`
"class", `label` = a label of the recipe's ontology), as a classifier with `output_type: class` writes them.
"""
from __future__ import annotations

import json
import logging
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..core.errors import MalformedItemError
from ..core.prompt_items import (
    ParsedItem,
    Question,
    Skipped,
    is_text_item_metadata,
    parse_prompt_item,
    replace_surrogates,
    short_list,
    text_item,
)
from ..dataloop.answers import model_name_of as stored_model_name
from .layout import LayoutError, require_subset

logger = logging.getLogger(__name__)



class DatasetError(ValueError):
    """The training or evaluation data cannot be used; the message says what to fix."""


@dataclass(frozen=True)
class Written:
    """One answer as an annotation holds it: its text (a class annotation's label) and which annotation it is."""

    text: str
    annotation_id: str | None = None
    creator: str | None = None
    confidence: float | None = None


@dataclass
class AnsweredItem:
    """One item, its reference answers per question and (for evaluation) a model's answers; `written` holds the
    annotations behind both (`references`, `predictions`: their texts), for scores that name them."""

    parsed: ParsedItem
    references: dict[Question, list[str]] = field(default_factory=dict)
    predictions: dict[Question, list[str]] = field(default_factory=dict)
    class_labels: set[str] = field(default_factory=set)  # the labels of its class annotations (references)
    item_id: str | None = None
    written: dict[str, dict[Question, list[Written]]] = field(default_factory=lambda: {"references": {},
                                                                                      "predictions": {}})


@dataclass
class Subset:
    """The answered items of one subset and what was skipped while reading it."""

    name: str
    items: list[AnsweredItem]
    skipped: list[Skipped] = field(default_factory=list)

    @property
    def answer_count(self) -> int:
        return sum(len(answers) for item in self.items for answers in item.references.values())

    def references(self) -> list[str]:
        return [text for item in self.items for answers in item.references.values() for text in answers]

    def class_labels(self) -> set[str]:
        """The labels of the reference class annotations of every item."""
        return {label for item in self.items for label in item.class_labels}


def refuse_unknown_labels(subset: Subset, known: list[str] | None) -> None:
    """Raise DatasetError naming the reference class labels that are not among `known` (a classifier's label set):
    the model can never answer them, which usually means the recipe's ontology and the model's labels differ."""
    if known is None:
        return
    unknown = sorted(subset.class_labels() - set(known))
    if unknown:
        raise DatasetError(f"subset {subset.name!r}: {len(unknown)} class label(s) the model does not know: "
                           f"{short_list(unknown)}; the model's labels are {short_list(known, 10)} (set the model's "
                           "labels, e.g. candidate_labels, or the recipe's ontology, so that they match)")


def _object(value: Any, where: str) -> dict:
    """`value` when it is a JSON object, {} when absent; anything else is malformed data, not a default."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise DatasetError(f"{where} must be an object, not {type(value).__name__}")
    return value


def model_name_of(annotation: dict, where: str = "the annotation") -> str | None:
    """The name of the model that wrote an annotation, or None for a human (reference) answer; a malformed
    metadata structure is refused here (training data is checked strictly), the lookup is `answers`'."""
    metadata = _object(annotation.get("metadata"), f"{where}'s metadata")
    for scope in ("system", "user"):
        _object(_object(metadata.get(scope), f"{where}'s metadata.{scope}").get("model"),
                f"{where}'s metadata.{scope}.model")
    return stored_model_name(annotation)


def _inside(folder: Path, relative: str, what: str) -> Path:
    """`folder / relative`, refused when it resolves (through `..` or symlinks) outside `folder` or is not a file.

    Item JSON is data from the platform or a user: its `filename` chooses which file is opened, so it is
    confined to the subset's items folder. Only regular files are read (a FIFO would block forever).
    """
    root = folder.resolve()
    path = (root / relative.lstrip("/")).resolve()
    if not path.is_relative_to(root):
        raise DatasetError(f"its {what} points outside {folder}")
    if not path.is_file() or path.stat().st_size == 0:
        raise DatasetError(f"its {what} {folder / relative.lstrip('/')} is missing, empty or not a regular file")
    return path


def read_subset(folder: str | Path, name: str, predictions_of: str | None = None) -> Subset:
    """Read one subset folder; with `predictions_of`, that model's annotations are predictions, not references.

    Raises DatasetError when the folder has no items or an item file is missing or unreadable.
    """
    folder = Path(folder)
    json_root = folder / "json"
    json_files = sorted(p for p in json_root.rglob("*.json")) if json_root.is_dir() else []
    if not json_files:
        raise DatasetError(f"subset {name!r} at {folder} has no items: expected item JSON files under "
                           f"{folder / 'json'} next to the prompt items under {folder / 'items'}")
    subset = Subset(name, [])
    problems = []
    for index, json_file in enumerate(json_files):
        try:
            subset.items.append(_read_item(folder, json_file, index, predictions_of, subset.skipped))
        except (MalformedItemError, OSError, ValueError) as error:
            problems.append(f"{json_file.relative_to(folder)}: {error}")
        except RecursionError:  # json and the prompt-item parser recurse per nesting level
            problems.append(f"{json_file.relative_to(folder)}: nested too deeply to be an item")
    if problems:
        raise DatasetError(f"subset {name!r} has {len(problems)} unreadable or empty item(s): " + "; ".join(problems[:5]))
    for skipped in subset.skipped:
        logger.warning("subset %r: not used: %s", name, skipped.describe())
    return subset


def read_layout(data_path: str | Path, predictions_of: str | None = None) -> dict[str, Subset]:
    """Every subset of `data_path` that `prepare_data` wrote; `train` is required, `validation` optional."""
    data_path = Path(data_path)
    try:
        present = require_subset(data_path, "train")
    except LayoutError as error:
        raise DatasetError(str(error)) from None
    subsets = {name: read_subset(data_path / name, name, predictions_of) for name in present}
    if subsets["train"].answer_count == 0:
        raise DatasetError(f"the train subset of {data_path} has no answers: every item needs reference answers, "
                           "text annotations on a prompt item's prompts, text or class annotations on a text item")
    if "validation" not in subsets:
        logger.warning("%s has no 'validation' subset: epochs report the training loss only", data_path)
    elif subsets["validation"].answer_count == 0:
        raise DatasetError(f"the validation subset of {data_path} has items but no answers to validate against")
    return subsets


def _read_item(folder: Path, json_file: Path, index: int, predictions_of: str | None,
               skipped: list[Skipped]) -> AnsweredItem:
    json_file = _inside(folder / "json", str(json_file.relative_to(folder / "json")), "item JSON")
    item_json = json.loads(json_file.read_text(encoding="utf-8"))
    if not isinstance(item_json, dict) or not isinstance(item_json.get("filename"), str):
        raise DatasetError("the item JSON has no 'filename'")
    on_item = is_text_item_metadata(item_json.get("metadata"))
    item_file = _inside(folder / "items", item_json["filename"], "text item file" if on_item else "prompt item file")
    name = str(item_json.get("name") or item_json["filename"])
    if on_item:
        parsed = text_item(item_file.read_bytes().decode("utf-8-sig"), index, name)
    else:
        parsed = parse_prompt_item(json.loads(item_file.read_text(encoding="utf-8")), index, name)
    skipped.extend(parsed.skipped)
    if not parsed.questions:
        skipped.append(Skipped(name, None, None, "no text question in this item"))
    annotations = item_json.get("annotations")
    if annotations is not None and not isinstance(annotations, list):
        raise DatasetError(f"its 'annotations' must be a list, not {type(annotations).__name__}")
    item_id = item_json.get("id")
    item = AnsweredItem(parsed, item_id=item_id if isinstance(item_id, str) else None)
    references, predictions = _split_annotations(annotations or [], predictions_of, name, skipped, on_item,
                                                 item.class_labels)
    for kind, answers in (("references", references), ("predictions", predictions)):
        _assign(parsed, answers, item.written[kind], skipped)
        getattr(item, kind).update({q: [w.text for w in written] for q, written in item.written[kind].items()})
    return item


def _split_annotations(annotations: list[Any], predictions_of: str | None, item_name: str, skipped: list[Skipped],
                       on_item: bool, class_labels: set[str]) -> tuple[dict[str | None, list[Written]],
                                                                       dict[str | None, list[Written]]]:
    """Answers per prompt key (None: the item itself, a text item's): references, and the predictions of model
    `predictions_of`, a model's class answers most confident first. The labels of reference class annotations
    are added to `class_labels`."""
    references: dict[str | None, list[Written]] = defaultdict(list)
    predictions: dict[str | None, list[Written]] = defaultdict(list)
    for position, annotation in enumerate(annotations):
        where = f"annotation {position}"
        if not isinstance(annotation, dict):
            raise DatasetError(f"{where} must be an object, not {type(annotation).__name__}")
        kind = annotation.get("type")
        if kind not in ("text", "class"):
            continue  # other annotation types are not answers
        system = _object(_object(annotation.get("metadata"), f"{where}'s metadata").get("system"),
                         f"{where}'s metadata.system")
        answer = _answer_of(annotation, kind, system, on_item)
        if isinstance(answer, str):  # why it is not an answer
            skipped.append(Skipped(item_name, None, None, f"{where} {answer}"))
            continue
        key, text = answer
        author = model_name_of(annotation, where)
        text = replace_surrogates(text)[0].strip()  # as in questions: no tokenizer takes a lone surrogate
        written = Written(text, *(value if isinstance(value, str) else None
                                  for value in (annotation.get("id"), annotation.get("creator"))),
                          _confidence(annotation))
        if predictions_of is None or author is None:
            references[key].append(written)
            if kind == "class":
                class_labels.add(written.text)
        elif author == predictions_of:
            predictions[key].append(written)
    if None in predictions:  # a text item's answers, most confident first (a multi-label class answer); a legacy
        predictions[None].sort(key=lambda w: -(w.confidence or 0.0))  # prompt's stay in order (see _assign)
    return references, predictions


def _answer_of(annotation: dict, kind: str, system: dict, on_item: bool) -> tuple[str | None, str] | str:
    """(prompt key, text) an annotation answers, or why it is no answer."""
    prompt_id = system.get("promptId")
    if kind == "class":
        label = annotation.get("label")
        if not on_item:
            return "is a class annotation on a prompt item: its answers are text annotations on its prompts"
        if not isinstance(label, str) or not label.strip():
            return "is a class annotation without a label"
        return None, label
    text = annotation.get("coordinates")
    if on_item:
        if not isinstance(text, str) or prompt_id is not None:
            return "is a text annotation without a text 'coordinates', or on a prompt: not an answer to a text item"
        return None, text
    if not isinstance(text, str) or not isinstance(prompt_id, (str, int)) or isinstance(prompt_id, bool):
        return ("is a text annotation without a text 'coordinates' and a metadata.system.promptId: not an answer "
                "to a prompt")
    return str(prompt_id), text


def _confidence(annotation: dict) -> float | None:
    model = ((annotation.get("metadata") or {}).get("user") or {}).get("model")
    confidence = model.get("confidence") if isinstance(model, dict) else None
    return float(confidence) if isinstance(confidence, (int, float)) and not isinstance(confidence, bool) else None


def _assign(parsed: ParsedItem, answers: dict[str | None, list[Written]], into: dict[Question, list[Written]],
            skipped: list[Skipped]) -> None:
    by_prompt: dict[str | None, list[Question]] = defaultdict(list)
    for question in parsed.questions:
        by_prompt[question.prompt_key].append(question)
    for prompt_key, texts in answers.items():
        questions = by_prompt.get(prompt_key, [])
        if not questions:
            skipped.append(Skipped(parsed.name, prompt_key, None, "answers a prompt with no text question"))
        elif len(texts) % len(questions):
            skipped.append(Skipped(parsed.name, prompt_key, None, f"{len(texts)} answers for {len(questions)} "
                                   "questions: cannot tell which answer belongs to which question"))
        else:
            run = len(texts) // len(questions)
            for i, question in enumerate(questions):
                kept = [t for t in texts[i * run:(i + 1) * run] if t.text]
                if kept:
                    into[question] = kept
