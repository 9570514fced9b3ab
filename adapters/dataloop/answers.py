"""Answers already stored on a prompt item: which prompts a model has answered, and what it answered.

On the platform they are the item's text annotations: `metadata.system.promptId` names the prompt and
`metadata.user.model.name` (or `metadata.system.model.name`) the model that wrote it; a person who edits an answer
changes its text, not those. They are read with the item, as `dl.PromptItem.fetch` reads them
(`item.annotations.list()`). Offline, a prompt item given as a dict may carry the same JSON in an "annotations" list.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

import dtlpy as dl

from ..core.prompt_items import replace_surrogates


@dataclass(frozen=True)
class StoredAnswer:
    """One text answer on a prompt, as it stands now (lone surrogates replaced by U+FFFD, as in questions)."""

    prompt_key: str
    text: str
    model_name: str | None
    annotation_id: str | None = None


def model_name_of(annotation: dict) -> str | None:
    """The name of the model that wrote an annotation (JSON), or None for one a person wrote."""
    metadata = annotation.get("metadata") if isinstance(annotation, dict) else None
    for scope in ("user", "system"):
        section = metadata.get(scope) if isinstance(metadata, dict) else None
        model = section.get("model") if isinstance(section, dict) else None
        name = model.get("name") if isinstance(model, dict) else None
        if isinstance(name, str) and name:
            return name
    return None


def stored_answers(annotations: Iterable[Any] | None) -> list[StoredAnswer]:
    """The text answers among `annotations` (dl.Annotation entities or their JSON), in order; others are ignored."""
    answers = []
    for annotation in annotations or []:
        data = annotation.to_json() if isinstance(annotation, dl.Annotation) else annotation
        if not isinstance(data, dict) or data.get("type") != "text" or not isinstance(data.get("coordinates"), str):
            continue
        system = (data.get("metadata") or {}).get("system") if isinstance(data.get("metadata"), dict) else None
        prompt_key = system.get("promptId") if isinstance(system, dict) else None
        if prompt_key is None or isinstance(prompt_key, (dict, list)):
            continue
        answer_id = data.get("id")
        answers.append(StoredAnswer(str(prompt_key), replace_surrogates(data["coordinates"])[0], model_name_of(data),
                                    answer_id if isinstance(answer_id, str) else None))
    return answers


def prompt_item_answers(prompt_item: dl.PromptItem) -> list[StoredAnswer]:
    """The assistant answers a fetched `dl.PromptItem` holds (`assistant_prompts`), as stored answers."""
    answers = []
    for prompt in prompt_item.assistant_prompts:
        texts = [e["value"] for e in prompt.elements if e.get("mimetype") == dl.PromptType.TEXT
                 and isinstance(e.get("value"), str)]
        model_info = prompt.metadata.get("model_info") or {}
        if texts and prompt.key is not None:
            answers.append(StoredAnswer(str(prompt.key), replace_surrogates(texts[-1])[0], model_info.get("name"),
                                        prompt.metadata.get("id")))
    return answers


def answers_by(model_name: str, answers: Iterable[StoredAnswer]) -> dict[str, list[str]]:
    """The texts `model_name` stored per prompt key, in order."""
    by_prompt: dict[str, list[str]] = {}
    for answer in answers:
        if answer.model_name == model_name:
            by_prompt.setdefault(answer.prompt_key, []).append(answer.text)
    return by_prompt
