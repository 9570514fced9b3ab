"""One loaded model behind one lock: the only way the server calls `HuggingAdapter.predict`.

Task-shaped routes turn their texts into a current-format prompt item (one prompt per text) and read the
answers back from the annotations, so every route runs exactly the path a Dataloop prediction runs.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, Sequence

import anyio
import dtlpy as dl

from ..errors import ConfigurationError, ModelFailure
from ..hugging_adapter import HuggingAdapter, PredictionReport
from ..prompt_items import METADATA_MIMETYPE
from ..settings import resolve_configuration, setting_names

class RequestRejected(ValueError):
    """The request is well-formed but the model cannot answer it as asked (422)."""


class PredictionFailed(RuntimeError):
    """The model failed on input that passed validation (500)."""


@dataclass
class Reply:
    """One answer read back from its annotation."""

    text: str
    confidence: float
    details: dict[str, Any]

    @classmethod
    def of(cls, annotation: dl.Annotation) -> "Reply":
        user = annotation.metadata["user"]
        return cls(annotation.coordinates, float(user["model"]["confidence"]), user.get("model_output", {}))


@dataclass
class Prediction:
    collections: list[dl.AnnotationCollection]
    report: PredictionReport


def prompt_item(texts: Sequence[str], metadata: dict[str, Any] | None = None, name: str = "request") -> dict:
    """A current-format prompt item with one prompt per text, keyed "0", "1", ...; `metadata` rides on each prompt."""
    return {"name": name, "prompts": {
        str(index): [{"mimetype": "application/text", "value": text},
                     {"mimetype": METADATA_MIMETYPE, "value": {"role": "user", **(metadata or {})}}]
        for index, text in enumerate(texts)}}


class ModelRunner:
    """Serializes calls to one adapter (a model is never run by two requests at once) and applies overrides."""

    def __init__(self, name: str, adapter: HuggingAdapter):
        self.name = name
        self.adapter = adapter
        # The configuration the server was started with; overrides are applied to a copy of it, never to this.
        self.configuration = dict(adapter.configuration)
        self._lock = threading.Lock()
        self._limiter: anyio.CapacityLimiter | None = None

    def resolve(self, overrides: dict[str, Any]) -> dict[str, Any]:
        """The server's configuration with per-request `overrides`, validated exactly as a model configuration is."""
        unknown = sorted(set(overrides) - setting_names(type(self.adapter).settings))
        if unknown:
            raise ConfigurationError(f"{self.name} has no setting {unknown}")
        resolved = resolve_configuration(self.configuration["module_name"], type(self.adapter).settings,
                                         {**self.configuration, **overrides})
        self.adapter.check_configuration(resolved)
        return resolved

    def predict(self, items: list[Any], configuration: dict[str, Any] | None = None) -> Prediction:
        """`adapter.predict(items)` under the lock, with `configuration` (from `resolve`) for this call only."""
        with self._lock:
            if configuration is None or configuration == self.configuration:
                return Prediction(self.adapter.predict(items), self.adapter.last_report)
            with self.adapter.configured(configuration):
                return Prediction(self.adapter.predict(items), self.adapter.last_report)

    async def run(self, items: list[Any], configuration: dict[str, Any] | None = None) -> Prediction:
        """`predict` in a worker thread; requests queue here in the event loop, so /health stays responsive."""
        if self._limiter is None:
            self._limiter = anyio.CapacityLimiter(1)
        return await anyio.to_thread.run_sync(self.predict, items, configuration, limiter=self._limiter)

    async def answer(self, texts: Sequence[str], metadata: dict[str, Any] | None = None,
                     configuration: dict[str, Any] | None = None) -> list[list[Reply]]:
        """The replies to each text (one prompt each), or an error when any text went unanswered."""
        try:
            prediction = await self.run([prompt_item(texts, metadata)], configuration)
        except ModelFailure as failure:
            raise PredictionFailed(str(failure)) from failure
        unanswered = (*prediction.report.failed_items, *prediction.report.skipped)
        if unanswered:
            raise RequestRejected(f"{self.name} did not answer every text: "
                                  + "; ".join(s.describe() for s in unanswered))
        by_prompt: dict[str, list[Reply]] = {}
        for annotation in prediction.collections[0].annotations:
            by_prompt.setdefault(annotation.metadata["system"]["promptId"], []).append(Reply.of(annotation))
        replies = [by_prompt.get(str(index), []) for index in range(len(texts))]
        if not all(replies):
            raise PredictionFailed(f"{self.name} returned no answer for some texts")
        return replies
