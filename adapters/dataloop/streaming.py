"""Answers streamed into their prompt items while they are generated (`stream: true`), as Dataloop's LLM apps do.

The first tokens of an answer create its annotation with `dl.PromptItem.add` (a FreeText on its prompt, named for
the model, confidence 0 while it is a draft); later calls of `PromptItem.add` update that annotation's text as the
answer grows, at most once per `stream_interval` seconds. One writer thread per `predict` call makes these writes,
so generation never waits on the platform; the generating thread only notes that an answer grew.

When `predict` returns, the writer finishes its last write and stops; the finished answer is then uploaded as an
unstreamed one is (same text, confidence and `model_output`) and replaces the draft together with the model's earlier
answer on that prompt (`ModelAdapter._upload_model_annotations`): the final annotation is the unstreamed answer.
The draft is a separate annotation until then, so the earlier answer stays whole while the new one is written. If
`predict` fails, the drafts are deleted and the item is as it was.

Only current-format prompts of platform items are streamed; a legacy prompt holds several questions, which
`PromptItem` cannot address, and a dict has no item to write to. Those answers arrive whole, at the end.
"""
from __future__ import annotations

import contextlib
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Iterator, Sequence

import dtlpy as dl

from ..core.hugging_adapter import HuggingAdapter, LoadedItem
from ..core.prompt_items import Question
from ..core.streaming import AnswerListener, PartialAnswer

logger = logging.getLogger(__name__)


@contextlib.contextmanager
def streamed_answers(hugging: HuggingAdapter, batch: Sequence[Any], model_name: str,
                     model_id: str | None) -> Iterator[None]:
    """Stream the answers `hugging.predict(batch)` writes inside this block, when its configuration says `stream`."""
    if not hugging.configuration.get("stream"):
        yield
        return
    streams = PromptItemStreams(batch, model_name, model_id, hugging.configuration["stream_interval"])
    hugging.stream_to = streams.listener
    try:
        yield
    except BaseException:
        streams.close()
        streams.delete_drafts()
        raise
    finally:
        hugging.stream_to = None
        streams.close()


@dataclass(eq=False)
class Draft:
    """One answer being streamed: what the model wrote so far and what the platform shows."""

    question: Question
    item: dl.Item
    partial: PartialAnswer | None = None
    shown: str = ""
    shown_at: float = float("-inf")
    annotation_id: str | None = None
    failed: bool = field(default=False)


class PromptItemStreams:
    """The drafts of one `predict` call and the thread that writes them."""

    def __init__(self, batch: Sequence[Any], model_name: str, model_id: str | None, interval: float,
                 clock: Any = time.monotonic):
        self.batch = batch
        self.model_info = {"name": model_name, "confidence": 0.0, "model_id": model_id}
        self.interval = interval
        self.clock = clock
        self.drafts: list[Draft] = []
        self._grown: set[Draft] = set()  # drafts with text the platform does not show yet
        self._prompt_items: dict[str, dl.PromptItem | None] = {}  # by item id; None: the item cannot be streamed
        self._condition = threading.Condition()
        self._closing = False
        self._writer: threading.Thread | None = None

    # ----- the generating thread -----
    def listener(self, question: Question) -> AnswerListener | None:
        """What hears `question`'s answer grow, or None when it cannot be streamed (see the module's docstring)."""
        item = _streamable_item(self.batch, question)
        if item is None:
            return None
        draft = Draft(question, item)
        with self._condition:
            self.drafts.append(draft)
            if self._writer is None:
                self._writer = threading.Thread(target=self._write_loop, name="answer-stream", daemon=True)
                self._writer.start()

        def heard(partial: PartialAnswer) -> None:
            with self._condition:
                draft.partial = partial
                self._grown.add(draft)
                self._condition.notify()
        return heard

    # ----- the writer thread -----
    def _write_loop(self) -> None:
        while True:
            with self._condition:
                due = self._due()
                while not due and not self._closing:
                    self._condition.wait(self._seconds_to_next())
                    due = self._due()
                if not due and self._closing:
                    return
                self._grown.difference_update(due)
            for draft in due:
                self._write(draft)

    def _due(self) -> list[Draft]:
        now = self.clock()
        return [d for d in self.drafts if d in self._grown and not d.failed and now - d.shown_at >= self.interval]

    def _seconds_to_next(self) -> float | None:
        waiting = [d.shown_at + self.interval - self.clock() for d in self._grown if not d.failed]
        return max(min(waiting), 0.01) if waiting else None

    def _write(self, draft: Draft) -> None:
        text = draft.partial.text() if draft.partial else ""
        if not text or text == draft.shown:
            return
        try:
            prompt_item = self._prompt_item(draft.item)
            if prompt_item is None:
                draft.failed = True
                return
            prompt_item.add(message={"role": "assistant", "content": [{"mimetype": dl.PromptType.TEXT, "value": text}]},
                            prompt_key=draft.question.prompt_key, model_info=dict(self.model_info))
            draft.annotation_id = draft.annotation_id or _own_answer_id(prompt_item, draft.question.prompt_key,
                                                                        self.model_info["name"])
            draft.shown, draft.shown_at = text, self.clock()
        except Exception as error:  # noqa: BLE001 - streaming stops for this answer; it still arrives whole
            draft.failed = True
            logger.warning("%s: could not stream the answer (%s: %s); it will arrive when it is finished",
                           draft.question.where, type(error).__name__, error)

    def _prompt_item(self, item: dl.Item) -> dl.PromptItem | None:
        """The item as `dl.PromptItem` reads it, without this model's answers: a draft never overwrites one."""
        if item.id not in self._prompt_items:
            try:
                prompt_item = dl.PromptItem.from_item(item)
            except Exception as error:  # noqa: BLE001 - e.g. a non-text annotation PromptItem cannot read
                logger.info("item %r is not streamed: dl.PromptItem cannot read it (%s)", item.name, error)
                prompt_item = None
            if prompt_item is not None:
                prompt_item.assistant_prompts = [
                    prompt for prompt in prompt_item.assistant_prompts
                    if prompt.metadata.get("model_info", {}).get("name") != self.model_info["name"]]
            self._prompt_items[item.id] = prompt_item
        return self._prompt_items[item.id]

    # ----- the end of predict -----
    def close(self) -> None:
        """Stop the writer after the write it is making; later growth is not shown (the final answer follows)."""
        with self._condition:
            self._closing = True
            self._condition.notify_all()
            writer = self._writer
        if writer is not None:
            writer.join()

    def delete_drafts(self) -> None:
        """Delete every draft written (predict failed: no answer replaces them)."""
        for draft in self.drafts:
            if draft.annotation_id is None:
                continue
            try:
                draft.item.annotations.delete(annotation_id=draft.annotation_id)
            except Exception as error:  # noqa: BLE001 - the other drafts are still deleted
                logger.error("%s: could not delete the draft answer %s (%s: %s)", draft.question.where,
                             draft.annotation_id, type(error).__name__, error)


def _streamable_item(batch: Sequence[Any], question: Question) -> dl.Item | None:
    """The platform item a question's answer can be streamed into: a current-format prompt of a `dl.Item`."""
    entry = batch[question.item_index] if question.item_index < len(batch) else None
    if not isinstance(entry, LoadedItem) or not isinstance(entry.data, dict):
        return None
    source = entry.source.item if isinstance(entry.source, dl.PromptItem) else entry.source
    prompts = entry.data.get("prompts")
    if not isinstance(source, dl.Item) or not isinstance(prompts, dict):
        return None
    return source if isinstance(prompts.get(question.prompt_key), list) else None


def _own_answer_id(prompt_item: dl.PromptItem, prompt_key: str, model_name: str) -> str | None:
    """The id of the annotation `PromptItem.add` keeps for this model's answer to `prompt_key`."""
    for prompt in prompt_item.assistant_prompts:
        if prompt.key == prompt_key and prompt.metadata.get("model_info", {}).get("name") == model_name:
            return prompt.metadata.get("id")
    return None
