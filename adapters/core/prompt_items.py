"""Read Dataloop prompt items, legacy and current format, into questions, and report whatever is skipped.

Legacy (seed 001):  {"prompts": {"<prompt>": {"<question>": {"mimetype": ..., "value": ...}, ...}}}
Current (dtlpy):    {"prompts": {"<prompt>": [{"mimetype": ..., "value": ...}, ...,
                                             {"mimetype": "metadata", "value": {"role": "user", ...}}]}}

A legacy prompt holds several questions, each answered on its own. A current-format prompt is one user message,
as `dl.PromptItem` and Dataloop's LLM apps read it: its text elements, joined in order by a newline, are one
question with one answer. A plain-text item (`text_item`) is one question, its whole text, on no prompt.
"""
from __future__ import annotations

import hashlib
import logging
import re
import reprlib
from dataclasses import dataclass, field
from typing import Any

from .errors import MalformedItemError

logger = logging.getLogger(__name__)

METADATA_MIMETYPE = "metadata"
TEXT_MIMETYPES = frozenset({"application/text", "text"})
# What dtlpy's `_item_to_text` reads for a model whose manifest declares `inputType: text`.
TEXT_ITEM_MIMETYPES = ("text/plain", "text/markdown")
# Lone UTF-16 surrogates: valid in JSON text ("\ud800") and in a Python str, but not Unicode, so no tokenizer takes them.
_SURROGATE = re.compile("[\ud800-\udfff]")
# Values from the item that end up in a skip reason or a log line (mimetypes, roles, item names, prompt and
# element keys) are shown short and escaped: a 100 KB prompt key must not become 100 KB per skipped element.


class _ShortRepr(reprlib.Repr):
    """reprlib's short repr, which also survives integers past Python's 4300-digit limit (`repr` raises on them)."""

    def repr_int(self, x: int, level: int) -> str:
        if x.bit_length() > 4 * self.maxlong:
            return f"<an integer of about {int(x.bit_length() * 0.30103) + 1} digits>"
        return super().repr_int(x, level)


_REPR = _ShortRepr()
_REPR.maxstring = _REPR.maxother = _REPR.maxlong = 40
_REPR.maxlevel = 2


def short(value: Any) -> str:
    """`value` quoted, escaped and cut to about 40 characters (the middle elided), lists to their first six
    entries, for logs, reasons and error messages: whatever a user sent, the line stays short."""
    return _REPR.repr(value)


def short_list(values: Any, shown: int = 5) -> str:
    """Up to `shown` values, each `short`, and how many more: user values in a message, never their whole length."""
    values = list(values)
    listed = ", ".join(short(value) for value in values[:shown])
    return listed + (f" and {len(values) - shown} more" if len(values) > shown else "")


def system_metadata(metadata: Any) -> dict:
    """An item's `metadata.system` (from its JSON), or {} when absent or not an object."""
    system = metadata.get("system") if isinstance(metadata, dict) else None
    return system if isinstance(system, dict) else {}


def is_prompt_metadata(metadata: Any) -> bool:
    """Whether an item's metadata marks a prompt item (`system.shebang.dltype` "prompt")."""
    shebang = system_metadata(metadata).get("shebang")
    return isinstance(shebang, dict) and shebang.get("dltype") == "prompt"


def is_text_item_metadata(metadata: Any) -> bool:
    """Whether an item's metadata marks a plain-text file (text/plain, text/markdown), not a prompt item."""
    return not is_prompt_metadata(metadata) and system_metadata(metadata).get("mimetype") in TEXT_ITEM_MIMETYPES


def location(item: str, prompt_key: str | None = None, element_key: str | None = None) -> str:
    """Where something is, for logs and skip reasons: identifiers shortened, never the text."""
    where = f"item {short(item)}"
    if prompt_key is not None:
        where += f", prompt {short(prompt_key)}"
    if element_key is not None:
        where += f", element {short(element_key)}"
    return where


@dataclass(frozen=True)
class Question:
    """One text element of one prompt (or a text item's whole text, on no prompt): the unit that gets an answer."""

    item_index: int
    item_name: str
    prompt_key: str | None
    element_key: str | None
    text: str
    prompt_metadata: dict = field(default_factory=dict, hash=False, compare=False)

    @property
    def where(self) -> str:
        """Where the question is, for logs: never its text, which is user data."""
        return location(self.item_name, self.prompt_key, self.element_key)

    @property
    def fingerprint(self) -> str:
        """SHA-256 of the text: stored with an answer, it tells later calls whether the prompt was edited since."""
        return text_fingerprint(self.text)


def text_fingerprint(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


@dataclass(frozen=True)
class Skipped:
    """Something that was not answered, and why; every one is logged and returned to the caller."""

    item: str
    prompt_key: str | None
    element_key: str | None
    reason: str

    def describe(self) -> str:
        return f"{location(self.item, self.prompt_key, self.element_key)}: {self.reason}"


@dataclass
class ParsedItem:
    """The questions of one item in document order, and what was skipped in it.

    `format` is "legacy" or "current" (prompt items) or "text" (a plain-text item); `prompts` lists the keys of the
    item's user prompts, answerable or not, in document order.
    """

    name: str
    format: str
    questions: list[Question]
    skipped: list[Skipped]
    prompts: list[str] = field(default_factory=list)

    @property
    def last_prompt(self) -> str | None:
        """The newest user prompt, in the order chat turns are read (`natural_key`): "10" after "9"."""
        return max(self.prompts, key=natural_key) if self.prompts else None


def natural_key(key: str) -> list[Any]:
    """Sort "2" before "10": prompt keys are usually numbers written as strings.

    Runs of ASCII digits compare by (length without leading zeros, digits), which is numeric order without
    `int()`: that refuses digit-like characters such as "²" and numbers of more than 4300 digits.
    """
    parts: list[Any] = re.split(r"([0-9]+)", key)
    for i in range(1, len(parts), 2):
        digits = parts[i].lstrip("0")
        parts[i] = (len(digits), digits)
    return parts


def is_text_mimetype(mimetype: str) -> bool:
    return mimetype in TEXT_MIMETYPES or mimetype.startswith("text/")


def parse_prompt_item(data: Any, item_index: int, name: str) -> ParsedItem:
    """Parse one prompt item; raise MalformedItemError when the item as a whole is unreadable."""
    if not isinstance(data, dict):
        raise MalformedItemError(f"a prompt item must be a JSON object, got {type(data).__name__}")
    prompts = data.get("prompts")
    if not isinstance(prompts, dict):
        raise MalformedItemError("a prompt item needs a 'prompts' object mapping prompt keys to their questions")
    is_current = any(isinstance(p, list) for p in prompts.values())
    parsed = ParsedItem(name=name, format="current" if is_current else "legacy", questions=[], skipped=[])
    for prompt_key, content in prompts.items():
        prompt_key = str(prompt_key)
        if isinstance(content, list):
            _parse_current_prompt(parsed, item_index, prompt_key, content)
        elif isinstance(content, dict):
            parsed.prompts.append(prompt_key)
            _parse_legacy_prompt(parsed, item_index, prompt_key, content)
        else:
            parsed.prompts.append(prompt_key)
            parsed.skipped.append(Skipped(name, prompt_key, None,
                                          f"a prompt must be a list or an object of elements, got {type(content).__name__}"))
    return parsed


def text_item(text: str, item_index: int, name: str) -> ParsedItem:
    """A plain-text item (text/plain, text/markdown) as one question: its whole text, answered on the item itself
    (no prompt), as Dataloop's Hugging Face apps answer text. Empty text is reported, like an empty prompt."""
    parsed = ParsedItem(name=name, format="text", questions=[], skipped=[])
    if text.strip():
        _add_question(parsed, item_index, None, None, text, {})
    else:
        parsed.skipped.append(Skipped(name, None, None, "empty text: nothing to answer"))
    return parsed


def _parse_current_prompt(parsed: ParsedItem, item_index: int, prompt_key: str, elements: list) -> None:
    metadata: dict = {}
    for element in elements:
        if isinstance(element, dict) and element.get("mimetype") == METADATA_MIMETYPE:
            if isinstance(element.get("value"), dict):
                metadata.update(element["value"])
            else:
                parsed.skipped.append(Skipped(parsed.name, prompt_key, None, "a metadata element's value must be an object"))
    role = metadata.get("role", "user")
    if role != "user":
        parsed.skipped.append(Skipped(parsed.name, prompt_key, None, f"prompt role {short(role)} is not a user prompt"))
        return
    parsed.prompts.append(prompt_key)
    texts: list[tuple[str, str]] = []
    for index, element in enumerate(elements):
        if isinstance(element, dict) and element.get("mimetype") == METADATA_MIMETYPE:
            continue
        reason = _element_problem(element)
        if reason is None:
            texts.append((str(index), element["value"]))
        else:
            parsed.skipped.append(Skipped(parsed.name, prompt_key, str(index), reason))
    if texts:  # one user message, one answer: its text elements are read together, in order
        _add_question(parsed, item_index, prompt_key, texts[0][0], "\n".join(text for _, text in texts), metadata)


def _parse_legacy_prompt(parsed: ParsedItem, item_index: int, prompt_key: str, questions: dict) -> None:
    for question_key, element in questions.items():
        reason = _element_problem(element)
        if reason is None:
            _add_question(parsed, item_index, prompt_key, str(question_key), element["value"], {})
        else:
            parsed.skipped.append(Skipped(parsed.name, prompt_key, str(question_key), reason))


def replace_surrogates(text: str) -> tuple[str, int]:
    """`text` with each lone surrogate replaced by U+FFFD, as a UTF-8 decoder does, and how many there were."""
    return _SURROGATE.subn("\ufffd", text)


def _add_question(parsed: ParsedItem, item_index: int, prompt_key: str | None, element_key: str | None, value: str,
                  metadata: dict) -> None:
    text, replaced = replace_surrogates(value)
    question = Question(item_index, parsed.name, prompt_key, element_key, text, metadata)
    if replaced:
        logger.warning("%s: %d lone surrogate(s) replaced by U+FFFD, as a UTF-8 decoder does", question.where, replaced)
    parsed.questions.append(question)


def _element_problem(element: Any) -> str | None:
    """Why an element cannot be answered as text, or None when it can."""
    if not isinstance(element, dict):
        return f"unknown element shape: expected an object with 'mimetype' and 'value', got {type(element).__name__}"
    mimetype = element.get("mimetype")
    if not isinstance(mimetype, str):
        return "unknown element shape: no 'mimetype' string"
    if not is_text_mimetype(mimetype):
        return f"non-text element ({short(mimetype)[1:-1]}) skipped: this model reads text only"
    value = element.get("value")
    if not isinstance(value, str):
        return f"text element value must be a string, got {type(value).__name__}"
    if not value.strip():
        return "empty text: nothing to answer"
    return None
