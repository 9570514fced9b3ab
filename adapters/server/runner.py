"""One loaded model behind its admission: the only way the server calls `HuggingAdapter.predict`.

Task-shaped routes turn their texts into a current-format prompt item (one prompt per text) and read the
answers back from the annotations, so every route runs exactly the path a Dataloop prediction runs.

A request is priced before it is admitted (413 past `max_request_tokens`) and admitted while the priced cost of
the model's admitted requests, running or waiting, stays within `max_queue_tokens` (503 with Retry-After past
it: the time the model takes to serve the excess, at the rate it has served so far). Admitted requests call
`predict` in worker threads at once, so the model's batcher runs the rows of concurrent requests together
(adapters/core/dynamic_batching.py); the event loop (and `/health`) stays free. A request whose client
disconnects is answered at once and its rows are dropped unrun if their turn has not come; on shutdown a
running call is abandoned rather than waited for.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Sequence

import anyio
import dtlpy as dl

from ..core.dynamic_batching import CallAbandoned, abandoned_when
from ..core.errors import ConfigurationError, ModelFailure
from ..core.hugging_adapter import HuggingAdapter, PredictionReport
from ..core.prompt_items import METADATA_MIMETYPE, ParsedItem, parse_prompt_item
from ..core.settings import resolve_configuration, setting_names
from ..core.streaming import StreamTarget
from .cost import embedding_cost, request_cost
from .limits import CALLS_AT_ONCE, ServerLimits, retry_after

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
    """The model's admitted requests already cost as much as it may queue."""


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


@dataclass
class ServedRate:
    """Priced tokens served per second while the model had admitted requests: how fast its queue drains."""

    tokens: int = 0
    seconds: float = 0.0
    admitted: int = 0
    busy_since: float = field(default_factory=time.monotonic)

    def admit(self) -> None:
        if self.admitted == 0:
            self.busy_since = time.monotonic()
        self.admitted += 1

    def release(self, served_tokens: int) -> None:
        self.admitted -= 1
        self.tokens += served_tokens
        if self.admitted == 0:
            self.seconds += time.monotonic() - self.busy_since

    def seconds_to_serve(self, tokens: int) -> float:
        """How long `tokens` take at the rate measured so far (1 s before anything was served)."""
        busy = self.seconds + (time.monotonic() - self.busy_since if self.admitted else 0.0)
        return tokens * busy / self.tokens if self.tokens and busy > 0 else 1.0


@dataclass
class _Raised:
    """What a worker thread raised, carried out of the task group (which would wrap it)."""

    error: Exception


class ModelRunner:
    """Prices and admits requests to one adapter, applies per-request overrides, and runs them side by side."""

    def __init__(self, name: str, adapter: HuggingAdapter, limits: ServerLimits = ServerLimits()):
        self.name = name
        self.adapter = adapter
        self.limits = limits
        # The configuration the server was started with; overrides are applied to a copy of it, never to this.
        self.configuration = dict(adapter.configuration)
        self._queued_tokens = 0  # priced cost of the admitted requests: running or waiting (event loop only)
        self._served = ServedRate()
        self._threads: anyio.CapacityLimiter | None = None  # worker threads of this model's requests
        self._calls = 0  # requests inside `predict`, in worker threads
        self._calls_lock = threading.Lock()

    @property
    def busy(self) -> bool:
        """Whether a request is inside the model's `predict` right now (in a worker thread)."""
        return self._calls > 0

    def resolve(self, overrides: dict[str, Any]) -> dict[str, Any]:
        """The server's configuration with per-request `overrides`, validated exactly as a model configuration is."""
        unknown = sorted(set(overrides) - setting_names(type(self.adapter).settings))
        if unknown:
            raise ConfigurationError(f"{self.name} has no setting {unknown}")
        resolved = resolve_configuration(self.configuration["module_name"], type(self.adapter).settings,
                                         {**self.configuration, **overrides})
        self.adapter.check_configuration(resolved)
        self.adapter.check_with_model(resolved)
        return resolved

    def predict(self, items: list[Any], configuration: dict[str, Any] | None = None,
                abandoned: Callable[[], bool] | None = None, stream_to: StreamTarget | None = None) -> Prediction:
        """`adapter.predict(items)` with `configuration` (from `resolve`) and `stream_to` (who hears answers as they
        are written, adapters/core/streaming.py) for this call only; calls from several threads run at once, their
        rows batched together. Once `abandoned()` is true, rows not yet run are dropped."""
        def predict() -> Prediction:
            if configuration is None or configuration == self.configuration:
                return Prediction(self.adapter.predict(items), self.adapter.last_report)
            with self.adapter.configured(configuration):
                return Prediction(self.adapter.predict(items), self.adapter.last_report)
        return self._counted(predict, abandoned, stream_to)

    def embed_texts(self, texts: list[str], abandoned: Callable[[], bool] | None = None) -> list[list[float]]:
        """`adapter.embed_texts(texts)`, batched with concurrent calls as `predict` is."""
        return self._counted(lambda: self.adapter.embed_texts(texts), abandoned)

    def _counted(self, work: Callable[[], Any], abandoned: Callable[[], bool] | None,
                 stream_to: StreamTarget | None = None) -> Any:
        with self._calls_lock:
            self._calls += 1
        self.adapter.stream_to = stream_to  # this thread's calls only
        try:
            with abandoned_when(abandoned):
                return work()
        finally:
            self.adapter.stream_to = None
            with self._calls_lock:
                self._calls -= 1

    def check_cost(self, parsed: Sequence[ParsedItem], configuration: dict[str, Any] | None = None) -> int:
        """The request's priced cost; RequestTooCostly past `max_request_tokens`."""
        cost = request_cost(self.adapter, configuration or self.configuration, parsed)
        if cost > self.limits.max_request_tokens:
            raise RequestTooCostly(
                f"this request would cost {self.name} about {cost} tokens (rows x (input + answer budget), inputs "
                f"counted in bytes up to the context window, a zero-shot row with the bytes of the label and score "
                f"its answer echoes), more than the server's limit of {self.limits.max_request_tokens}; send fewer "
                "or shorter texts, or ask for fewer tokens, generations or labels")
        return cost

    def check_admission(self, items: list[dict], configuration: dict[str, Any] | None = None) -> None:
        """Raise RequestTooCostly or QueueFull when `items` would not be admitted now (a streamed answer is checked
        before its response starts, so these still get their own status codes)."""
        self.check_queue(self.check_cost(parse_items(items), configuration))

    def check_queue(self, cost: int) -> None:
        """QueueFull when the admitted requests and one of `cost` would cost more than `max_queue_tokens`; a
        request alone is always admitted."""
        queued, limit = self._queued_tokens, self.limits.max_queue_tokens
        if queued and queued + cost > limit:
            raise QueueFull(f"{self.name} already has requests running or waiting that cost about {queued} tokens; "
                            f"this one (about {cost}) would pass its limit of {limit}; retry later",
                            self._served.seconds_to_serve(queued + cost - limit))

    def admit(self, cost: int) -> None:
        """Admit a request of `cost`, or refuse it (QueueFull, see `check_queue`)."""
        self.check_queue(cost)
        self._queued_tokens += cost
        self._served.admit()

    async def run(self, items: list[dict], configuration: dict[str, Any] | None = None,
                  client_gone: ClientGone | None = None, stream_to: StreamTarget | None = None) -> Prediction:
        """Price and admit `items` (readable prompt items, names set) and run them alongside other requests.

        Raises RequestTooCostly, QueueFull, or ClientLeft when `client_gone` returns before the answer is ready.
        """
        cost = self.check_cost(parse_items(items), configuration)
        return await self._admitted(cost, self.predict, (items, configuration), client_gone, stream_to)

    async def embed(self, texts: list[str], client_gone: ClientGone | None = None) -> list[list[float]]:
        """One vector per text, priced and admitted exactly as `run` admits a prediction."""
        cost = embedding_cost(self.adapter, texts)
        if cost > self.limits.max_request_tokens:
            raise RequestTooCostly(
                f"embedding these texts would cost {self.name} about {cost} tokens (inputs counted in bytes up to "
                f"the context window), more than the server's limit of {self.limits.max_request_tokens}; send fewer "
                "or shorter texts")
        return await self._admitted(cost, self.embed_texts, (texts,), client_gone)

    async def _admitted(self, cost: int, work: Callable[..., Any], args: tuple, client_gone: ClientGone | None,
                        stream_to: StreamTarget | None = None) -> Any:
        """`work(*args, abandoned)` in a worker thread once a request of `cost` is admitted; its cost is released
        when it ends, however it ends."""
        self.admit(cost)
        if self._threads is None:
            self._threads = anyio.CapacityLimiter(CALLS_AT_ONCE)
        served = 0
        try:
            result = await self._unless_gone(work, args, client_gone, stream_to)
            served = cost
            return result
        except anyio.get_cancelled_exc_class():
            # Only uvicorn cancels a request, when its shutdown grace is over: answer 503 rather than let the
            # cancellation reach uvicorn, which would log a traceback per request and answer 500.
            raise ServerStopping(f"the server stopped before {self.name} answered; retry later", 1.0) from None
        finally:
            self._queued_tokens -= cost
            self._served.release(served)

    async def _unless_gone(self, work: Callable[..., Any], args: tuple, client_gone: ClientGone | None,
                           stream_to: StreamTarget | None) -> Any:
        """`work` in a worker thread; ClientLeft as soon as the client disconnects (the thread, abandoned, drops
        the rows whose turn has not come, and finishes alone)."""
        gone = threading.Event()
        outcome: list[Any] = []
        extra = (stream_to,) if stream_to is not None else ()
        async with anyio.create_task_group() as group:
            if client_gone is not None:
                async def leave_when_gone() -> None:
                    await client_gone()
                    gone.set()
                    group.cancel_scope.cancel()

                group.start_soon(leave_when_gone)
            try:
                outcome.append(await anyio.to_thread.run_sync(work, *args, gone.is_set, *extra,
                                                               abandon_on_cancel=True, limiter=self._threads))
            except Exception as error:  # noqa: BLE001 - raised below, outside the task group (which would wrap it)
                outcome.append(_Raised(error))
            group.cancel_scope.cancel()
        if gone.is_set() or not outcome or (isinstance(outcome[0], _Raised)
                                            and isinstance(outcome[0].error, CallAbandoned)):
            logger.info("%s: a client left before its answer; what of its request had not run was dropped",
                        self.name)
            raise ClientLeft()
        if isinstance(outcome[0], _Raised):
            raise outcome[0].error
        return outcome[0]

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
