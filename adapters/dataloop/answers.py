"""Answers already stored on a prompt item: which prompts a model has answered, and what it answered.

On the platform they are the item's text annotations: `metadata.system.promptId` names the prompt and
`metadata.user.model.name` (or `metadata.system.model.name`) the model that wrote it; a person who edits an answer
changes its text, not those. This package also records what it answered, `metadata.user.model_output.answered`
(the question's element and the SHA-256 of its text), so that a prompt edited since is answered again. They are
read with the item, as `dl.PromptItem.fetch` reads them (`item.annotations.list()`). Offline, a prompt item given
as a dict may carry the same JSON in an "annotations" list.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

import dtlpy as dl

from ..core.prompt_items import replace_surrogates


@dataclass(frozen=True)
class StoredAnswer:
    """One text answer on a prompt, as it stands now; `element` and `fingerprint` say what question it answered
    (None for answers this package did not write, or wrote before it recorded them); lone surrogates
    are replaced by U+FFFD, as in questions."""

    prompt_key: str
    text: str
    model_name: str | None
    annotation_id: str | None = None
    element: str | None = None
    fingerprint: str | None = None


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
        element, fingerprint = _answered(data)
        answers.append(StoredAnswer(str(prompt_key), replace_surrogates(data["coordinates"])[0], model_name_of(data),
                                    answer_id if isinstance(answer_id, str) else None, element, fingerprint))
    return answers


def _answered(annotation: dict) -> tuple[str | None, str | None]:
    """(element, fingerprint) recorded in `metadata.user.model_output.answered`, each None when absent or odd."""
    user = (annotation.get("metadata") or {}).get("user")
    output = user.get("model_output") if isinstance(user, dict) else None
    answered = output.get("answered") if isinstance(output, dict) else None
    if not isinstance(answered, dict):
        return None, None
    element, fingerprint = answered.get("element"), answered.get("sha256")
    return (element if isinstance(element, str) else None), (fingerprint if isinstance(fingerprint, str) else None)


def replaced_by(annotations: Iterable[Any], model_name: str, prompt_keys: set[str | None]) -> list[str]:
    """Ids of the annotations (entities or JSON) of model `model_name` on the prompts `prompt_keys`; the key None
    stands for annotations on no prompt (a text item's answers). What a new answer to those prompts replaces."""
    doomed = []
    for annotation in annotations or []:
        data = annotation.to_json() if isinstance(annotation, dl.Annotation) else annotation
        if not isinstance(data, dict) or model_name_of(data) != model_name or not isinstance(data.get("id"), str):
            continue
        system = (data.get("metadata") or {}).get("system")
        prompt_key = system.get("promptId") if isinstance(system, dict) else None
        if (None if prompt_key is None else str(prompt_key)) in prompt_keys:
            doomed.append(data["id"])
    return doomed


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


def answers_by(model_name: str, answers: Iterable[StoredAnswer]) -> dict[str, list[StoredAnswer]]:
    """The answers `model_name` stored per prompt key, in order."""
    by_prompt: dict[str, list[StoredAnswer]] = {}
    for answer in answers:
        if answer.model_name == model_name:
            by_prompt.setdefault(answer.prompt_key, []).append(answer)
    return by_prompt
