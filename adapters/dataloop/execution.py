"""What one platform execution asked for, kept per call rather than on the adapter (calls may run side by side):
whether it answers every prompt again (`evaluate_model`), which items it could not answer (or embed), so that
`predict_items` (`embed_items`) fails the execution, naming them, once every batch has run and every other answer
(vector) is uploaded,
and the execution's progress (`train_model`), which dtlpy does not pass on to `train`.

dtlpy runs `predict` in the thread that called `predict_items` (only item reading and uploads go to its thread
pool), so context variables set around `predict_items` reach it.
"""
from __future__ import annotations

import contextlib
import reprlib
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Iterator

# How many unanswered items an execution's error lists; the log has every one.
LISTED_ITEMS = 20
_SHORT = reprlib.Repr()
_SHORT.maxstring = _SHORT.maxother = 60

_EVERY_PROMPT: ContextVar[bool] = ContextVar("hf_adapters_answer_every_prompt", default=False)
_PROGRESS: ContextVar[Any] = ContextVar("hf_adapters_execution_progress", default=None)
_UNANSWERED: ContextVar[list["UnansweredItem"] | None] = ContextVar("hf_adapters_unanswered_items", default=None)


@dataclass(frozen=True)
class UnansweredItem:
    """An item a call was asked to answer and did not, and why."""

    name: str
    item_id: str | None
    reason: str

    def describe(self) -> str:
        return f"item {_SHORT.repr(self.name)} ({self.item_id or 'no id'}): {self.reason}"


class ItemsNotAnswered(Exception):
    """An execution that left items without an answer: it fails, naming each item and why, after the answers to
    every other item were uploaded (and after dtlpy's own failures, when a batch failed too)."""

    done, others_done = "answered", "the answers to every other item were uploaded"

    def __init__(self, unanswered: list[UnansweredItem], total: int, platform_error: Exception | None = None):
        self.unanswered = list(unanswered)
        listed = "\n".join(item.describe() for item in self.unanswered[:LISTED_ITEMS])
        more = len(self.unanswered) - LISTED_ITEMS
        if more > 0:
            listed += f"\n... and {more} more (each is in the log)"
        others = "" if platform_error else f"; {self.others_done}"
        message = f"{len(self.unanswered)} of {total} items were not {self.done}{others}:\n{listed}"
        if platform_error is not None:
            message = f"{platform_error}\n{message}"
        super().__init__(message)


class ItemsNotEmbedded(ItemsNotAnswered):
    """An `embed_items` execution that left items without a vector (nothing to embed in them), likewise."""

    done, others_done = "embedded", "the vectors of every other item were uploaded"


@contextlib.contextmanager
def _holding(variable: ContextVar, value: Any) -> Iterator[Any]:
    """`variable` is `value` within the block (in this thread and context only), and what it was after it."""
    token = variable.set(value)
    try:
        yield value
    finally:
        variable.reset(token)


def answering_every_prompt() -> contextlib.AbstractContextManager[bool]:
    """Within the block (dtlpy's `evaluate_model`), every prompt of every item is answered again."""
    return _holding(_EVERY_PROMPT, True)


def answers_every_prompt() -> bool:
    return _EVERY_PROMPT.get()


def reporting_progress(progress: Any) -> contextlib.AbstractContextManager[Any]:
    """Within the block (dtlpy's `train_model`), `execution_progress()` is the execution's `dl.Progress` (or None)."""
    return _holding(_PROGRESS, progress)


def execution_progress() -> Any:
    return _PROGRESS.get()


def collecting_unanswered() -> contextlib.AbstractContextManager[list[UnansweredItem]]:
    """The items the `predict` (`embed`) calls within the block (one `predict_items`, `embed_items`) could not
    answer (embed)."""
    return _holding(_UNANSWERED, [])


def record_unanswered(batch: list[Any], unanswered: dict[int, str]) -> None:
    """Add the items of `batch` at the positions `unanswered` maps to reasons, when a `predict_items` (`embed_items`)
    collects."""
    collected = _UNANSWERED.get()
    if collected is None:
        return
    for index, reason in sorted(unanswered.items()):
        entry = batch[index]
        collected.append(UnansweredItem(str(getattr(entry, "name", None) or f"batch[{index}]"),
                                        getattr(entry, "item_id", None) or getattr(entry, "id", None), reason))

