"""One loaded model behind one bounded queue: the only way the server calls `HuggingAdapter.predict`.

Task-shaped routes turn their texts into a current-format prompt item (one prompt per text) and read the
answers back from the annotations, so every route runs exactly the path a Dataloop prediction runs.

A request is priced before it queues (413 past `max_request_tokens`), refused when the model already has
`max_queue` requests (503 with Retry-After), and dropped without running the model when its client
disconnects before its turn. Model calls run one at a time in a worker thread, so the event loop (and
`/health`) stays free; on shutdown a running call is abandoned rather than waited for.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Sequence

import anyio
import dtlpy as dl

from ..core.errors import ConfigurationError, ModelFailure
from ..core.hugging_adapter import HuggingAdapter, PredictionReport
from ..core.prompt_items import METADATA_MIMETYPE, ParsedItem, parse_prompt_item
from ..core.settings import resolve_configuration, setting_names
from ..core.streaming import StreamTarget
from .cost import embedding_cost, request_cost
from .limits import ServerLimits, retry_after

logger = logging.getLogger(__name__)

ClientGone = Callable[[], Awaitable[None]]  # returns once the client has disconnected


class RequestRejected(ValueError):
    """The request is well-formed but the model cannot answer it as asked (422)."""


class PredictionFailed(RuntimeError):
    """The model failed on input that passed validation (500)."""


class RequestTooCostly(ValueError):
    """The request would cost the model more than one request may (413)."""


class Unavailable(RuntimeError):
    """The model cannot take the request now (503); `headers` say when to retry."""

    def __init__(self, message: str, seconds: float):
        super().__init__(message)
        self.headers = retry_after(seconds)


class QueueFull(Unavailable):
    """The model has as many requests as it may queue."""


class ServerStopping(Unavailable):
    """The server is shutting down and cancelled this request."""


class ClientLeft(Exception):
    """The client disconnected before the model's turn came; nothing ran and nobody waits for an answer."""


# The status code of each error a request may end in (app.py answers with it; a streamed answer, whose status was
# sent with its first event, names it in its `error` event).
ERROR_STATUS: tuple[tuple[type[Exception], int], ...] = (
    (ConfigurationError, 422), (RequestRejected, 422), (RequestTooCostly, 413), (Unavailable, 503), (ClientLeft, 499),
    (PredictionFailed, 500), (ModelFailure, 500))


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


def parse_items(items: Sequence[dict]) -> list[ParsedItem]:
    """The questions of items the caller already knows to be readable (their names set)."""
    return [parse_prompt_item(item, index, item["name"]) for index, item in enumerate(items)]


class ModelRunner:
    """Queues, prices and serializes calls to one adapter, and applies per-request overrides."""

    def __init__(self, name: str, adapter: HuggingAdapter, limits: ServerLimits = ServerLimits()):
        self.name = name
        self.adapter = adapter
        self.limits = limits
        # The configuration the server was started with; overrides are applied to a copy of it, never to this.
        self.configuration = dict(adapter.configuration)
        self._lock = threading.Lock()  # held by the worker thread while the model runs
        self._turn: anyio.Lock | None = None  # FIFO turns in the event loop
        self._queued = 0  # requests admitted: running or waiting
        self._seconds_per_call = 1.0  # moving average, for Retry-After

    @property
    def busy(self) -> bool:
        """Whether the model is running a request right now (in its worker thread)."""
        return self._lock.locked()

    def resolve(self, overrides: dict[str, Any]) -> dict[str, Any]:
        """The server's configuration with per-request `overrides`, validated exactly as a model configuration is."""
        unknown = sorted(set(overrides) - setting_names(type(self.adapter).settings))
        if unknown:
            raise ConfigurationError(f"{self.name} has no setting {unknown}")
        resolved = resolve_configuration(self.configuration["module_name"], type(self.adapter).settings,
                                         {**self.configuration, **overrides})
        self.adapter.check_configuration(resolved)
        self.adapter.check_against_model(resolved)
        return resolved

    def predict(self, items: list[Any], configuration: dict[str, Any] | None = None,
                stream_to: StreamTarget | None = None) -> Prediction:
        """`adapter.predict(items)` under the lock, with `configuration` (from `resolve`) and `stream_to` (who hears
        answers as they are written, adapters/core/streaming.py) for this call only."""
        with self._lock:
            self.adapter.stream_to = stream_to
            try:
                if configuration is None or configuration == self.configuration:
                    return Prediction(self.adapter.predict(items), self.adapter.last_report)
                with self.adapter.configured(configuration):
                    return Prediction(self.adapter.predict(items), self.adapter.last_report)
            finally:
                self.adapter.stream_to = None

    def check_cost(self, parsed: Sequence[ParsedItem], configuration: dict[str, Any] | None = None) -> None:
        cost = request_cost(self.adapter, configuration or self.configuration, parsed)
        if cost > self.limits.max_request_tokens:
            raise RequestTooCostly(
                f"this request would cost {self.name} about {cost} tokens (rows x (input + answer budget), inputs "
                f"counted in bytes up to the context window, a zero-shot row with the bytes of the label and score "
                f"its answer echoes), more than the server's limit of {self.limits.max_request_tokens}; send fewer "
                "or shorter texts, or ask for fewer tokens, generations or labels")

    def check_admission(self, items: list[dict], configuration: dict[str, Any] | None = None) -> None:
        """Raise RequestTooCostly or QueueFull when `items` would not be admitted now (a streamed answer is checked
        before its response starts, so these still get their own status codes)."""
        self.check_cost(parse_items(items), configuration)
        self.check_queue()

    def check_queue(self) -> None:
        """Raise QueueFull when the model already has its limit of requests running or waiting."""
        if self._queued >= self.limits.max_queue:
            raise QueueFull(f"{self.name} already has {self._queued} requests running or waiting, its limit; "
                            "retry later", self._seconds_per_call * self._queued)

    async def run(self, items: list[dict], configuration: dict[str, Any] | None = None,
                  client_gone: ClientGone | None = None, stream_to: StreamTarget | None = None) -> Prediction:
        """Price `items` (readable prompt items, names set), wait for the model's turn, and run them.

        Raises RequestTooCostly, QueueFull, or ClientLeft when `client_gone` returns before the turn comes.
        """
        self.check_admission(items, configuration)
        return await self._in_turn(self.predict, (items, configuration, stream_to), client_gone)

    def embed_texts(self, texts: list[str]) -> list[list[float]]:
        """`adapter.embed_texts(texts)` under the lock."""
        with self._lock:
            return self.adapter.embed_texts(texts)

    async def embed(self, texts: list[str], client_gone: ClientGone | None = None) -> list[list[float]]:
        """One vector per text, priced, queued and run in turn exactly as `run` runs a prediction."""
        cost = embedding_cost(self.adapter, texts)
        if cost > self.limits.max_request_tokens:
            raise RequestTooCostly(
                f"embedding these texts would cost {self.name} about {cost} tokens (inputs counted in bytes up to "
                f"the context window), more than the server's limit of {self.limits.max_request_tokens}; send fewer "
                "or shorter texts")
        return await self._in_turn(self.embed_texts, (texts,), client_gone)

    async def _in_turn(self, work: Callable[..., Any], args: tuple, client_gone: ClientGone | None) -> Any:
        """`work(*args)` in a worker thread once the model's turn comes (FIFO), if the queue has room."""
        self.check_queue()
        if self._turn is None:
            self._turn = anyio.Lock()
        self._queued += 1
        try:
            if not await self._wait_for_turn(client_gone):
                logger.info("%s: a client left before its turn; its request was dropped unrun", self.name)
                raise ClientLeft()
            try:
                started = time.monotonic()
                # Abandoned on cancellation (shutdown): the thread finishes alone, and `_lock` keeps the next
                # call from starting on the model until it does.
                result = await anyio.to_thread.run_sync(work, *args, abandon_on_cancel=True)
                self._seconds_per_call = 0.7 * self._seconds_per_call + 0.3 * (time.monotonic() - started)
                return result
            finally:
                self._turn.release()
        except anyio.get_cancelled_exc_class():
            # Only uvicorn cancels a request, when its shutdown grace is over: answer 503 rather than let the
            # cancellation reach uvicorn, which would log a traceback per request and answer 500.
            raise ServerStopping(f"the server stopped before {self.name} answered; retry later",
                                 self._seconds_per_call) from None
        finally:
            self._queued -= 1

    async def _wait_for_turn(self, client_gone: ClientGone | None) -> bool:
        """Take the model's turn (FIFO); False, holding nothing, when the client disconnects first."""
        assert self._turn is not None
        if client_gone is None:
            await self._turn.acquire()
            return True
        left = anyio.Event()
        acquired = False
        async with anyio.create_task_group() as group:
            async def leave_when_gone() -> None:
                await client_gone()
                left.set()
                group.cancel_scope.cancel()

            group.start_soon(leave_when_gone)
            await self._turn.acquire()
            acquired = True
            group.cancel_scope.cancel()
        if left.is_set() and acquired:  # the client left just as the turn came
            self._turn.release()
        return acquired and not left.is_set()

    async def answer(self, texts: Sequence[str], metadata: dict[str, Any] | None = None,
                     configuration: dict[str, Any] | None = None, client_gone: ClientGone | None = None,
                     stream_to: StreamTarget | None = None) -> list[list[Reply]]:
        """The replies to each text (one prompt each, keyed "0", "1", ...), or an error when any text went
        unanswered; `stream_to` hears the answers as they are written."""
        prediction = await self.run([prompt_item(texts, metadata)], configuration, client_gone, stream_to)
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
