"""Read the folder layout `dl.BaseModelAdapter.prepare_data` writes into answered prompt items.

    <data>/<subset>/items/<filename>        the prompt item file (legacy or current format)
    <data>/<subset>/json/<dir>/<stem>.json  the item's JSON, with its `annotations`

Reference answers are the item's text annotations (`type` "text", `coordinates` = the text,
`metadata.system.promptId` = the prompt key). A prompt with one question owns all of its prompt's answers;
a prompt with n questions (legacy format) owns n equal runs of answers in order, as `predict` writes them.
"""
from __future__ import annotations

import json
import logging
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..core.errors import MalformedItemError
from ..core.prompt_items import ParsedItem, Question, Skipped, parse_prompt_item, replace_surrogates
from ..dataloop.answers import model_name_of as stored_model_name
from .layout import LayoutError, require_subset

logger = logging.getLogger(__name__)



class DatasetError(ValueError):
    """The training or evaluation data cannot be used; the message says what to fix."""


@dataclass
class AnsweredItem:
    """One prompt item, its reference answers per question and (for evaluation) a model's answers."""

    parsed: ParsedItem
    references: dict[Question, list[str]] = field(default_factory=dict)
    predictions: dict[Question, list[str]] = field(default_factory=dict)


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
        raise DatasetError(f"the train subset of {data_path} has no answers: every prompt item needs text "
                           "annotations (the reference answers) on its prompts")
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
    item_file = _inside(folder / "items", item_json["filename"], "prompt item file")
    name = str(item_json.get("name") or item_json["filename"])
    parsed = parse_prompt_item(json.loads(item_file.read_text(encoding="utf-8")), index, name)
    skipped.extend(parsed.skipped)
    if not parsed.questions:
        skipped.append(Skipped(name, None, None, "no text question in this item"))
    annotations = item_json.get("annotations")
    if annotations is not None and not isinstance(annotations, list):
        raise DatasetError(f"its 'annotations' must be a list, not {type(annotations).__name__}")
    references, predictions = _split_annotations(annotations or [], predictions_of, name, skipped)
    item = AnsweredItem(parsed)
    _assign(parsed, references, item.references, skipped)
    _assign(parsed, predictions, item.predictions, skipped)
    return item


def _split_annotations(annotations: list[Any], predictions_of: str | None, item_name: str,
                       skipped: list[Skipped]) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """Text answers per prompt key: references, and the predictions of model `predictions_of`."""
    references: dict[str, list[str]] = defaultdict(list)
    predictions: dict[str, list[str]] = defaultdict(list)
    for position, annotation in enumerate(annotations):
        where = f"annotation {position}"
        if not isinstance(annotation, dict):
            raise DatasetError(f"{where} must be an object, not {type(annotation).__name__}")
        if annotation.get("type") != "text":
            continue  # other annotation types are not answers
        text = annotation.get("coordinates")
        system = _object(_object(annotation.get("metadata"), f"{where}'s metadata").get("system"),
                         f"{where}'s metadata.system")
        prompt_id = system.get("promptId")
        if not isinstance(text, str) or not isinstance(prompt_id, (str, int)) or isinstance(prompt_id, bool):
            skipped.append(Skipped(item_name, None, None, f"{where} is a text annotation without a text "
                                   "'coordinates' and a metadata.system.promptId: not an answer to a prompt"))
            continue
        author = model_name_of(annotation, where)
        text = replace_surrogates(text)[0].strip()  # as in questions: no tokenizer takes a lone surrogate
        if predictions_of is None or author is None:
            references[str(prompt_id)].append(text)
        elif author == predictions_of:
            predictions[str(prompt_id)].append(text)
    return references, predictions


def _assign(parsed: ParsedItem, answers: dict[str, list[str]], into: dict[Question, list[str]],
            skipped: list[Skipped]) -> None:
    by_prompt: dict[str, list[Question]] = defaultdict(list)
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
                kept = [t for t in texts[i * run:(i + 1) * run] if t]
                if kept:
                    into[question] = kept
