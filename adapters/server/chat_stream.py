"""The chat route's streamed answer (`"stream": true`): server-sent events while the last turn's reply is written.

Events, in order (each `data` is JSON):
- `delta` `{"text": ...}`: text added to the reply; the deltas joined are the reply so far;
- `reply`: the whole answer as the unstreamed route returns it (`ChatResponse`: reply, confidence, replies);
- or, instead of `reply`, `error` `{"detail": ..., "status": ...}` when the request fails once its stream has
  started (a request refused before that, too costly or queued past the limit, gets its usual status and body).
The earlier turns are answered first, unstreamed (their replies come in the `reply` event). The model writes in a
worker thread; it only signals the event loop, which reads the reply so far and sends what is new.
"""
from __future__ import annotations

import asyncio
import json
import logging
import math
from typing import Any, Callable

import anyio
from anyio.streams.memory import MemoryObjectSendStream
from sse_starlette import EventSourceResponse, ServerSentEvent

from ..core.prompt_items import Question
from ..core.streaming import AnswerListener, PartialAnswer
from .responses import first_line
from .runner import ERROR_STATUS, ModelRunner, Reply, prompt_item
from .schemas import ChatResponse

logger = logging.getLogger(__name__)

PING_SECONDS = 15  # a comment line this often keeps proxies from closing a connection that waits for a long turn


def streamed_chat(runner: ModelRunner, turns: list[str], configuration: dict[str, Any]) -> EventSourceResponse:
    """The response that streams the reply to the last of `turns`; admission is checked before it starts."""
    runner.check_admission([prompt_item(turns)], configuration)
    send, receive = anyio.create_memory_object_stream[ServerSentEvent](max_buffer_size=math.inf)

    async def produce() -> None:
        async with send:
            await _produce(runner, turns, configuration, send)
    return EventSourceResponse(receive, data_sender_callable=produce, ping=PING_SECONDS)


async def _produce(runner: ModelRunner, turns: list[str], configuration: dict[str, Any],
                   send: MemoryObjectSendStream[ServerSentEvent]) -> None:
    woken = asyncio.Event()
    loop = asyncio.get_running_loop()
    heard: list[PartialAnswer] = []
    stream_to = _last_turn_listener(str(len(turns) - 1), heard, lambda: loop.call_soon_threadsafe(woken.set))
    outcome: dict[str, Any] = {}
    sent = ""

    async def run() -> None:
        try:
            outcome["replies"] = [r[0] for r in await runner.answer(turns, configuration=configuration,
                                                                     stream_to=stream_to)]
        except Exception as error:  # noqa: BLE001 - reported in the stream's error event
            outcome["error"] = error
        finally:
            woken.set()

    async with anyio.create_task_group() as group:
        group.start_soon(run)
        while not outcome:
            await woken.wait()
            woken.clear()
            if heard:
                sent = await _send_growth(send, sent, heard[0].text())
    if "error" in outcome:
        await send.send(_error_event(outcome["error"]))
        return
    replies: list[Reply] = outcome["replies"]
    await _send_growth(send, sent, replies[-1].text)
    response = ChatResponse(model=runner.name, reply=replies[-1].text, confidence=replies[-1].confidence,
                            replies=[r.text for r in replies])
    await send.send(ServerSentEvent(event="reply", data=response.model_dump_json()))


def _last_turn_listener(last_key: str, heard: list[PartialAnswer], wake: Callable[[], None]
                        ) -> Callable[[Question], AnswerListener | None]:
    def stream_to(question: Question) -> AnswerListener | None:
        if question.prompt_key != last_key:
            return None

        def listener(partial: PartialAnswer) -> None:
            if not heard:
                heard.append(partial)
            wake()
        return listener
    return stream_to


async def _send_growth(send: MemoryObjectSendStream[ServerSentEvent], sent: str, text: str) -> str:
    """Send what `text` adds to `sent` as a `delta`; returns what the client has now. A text that is not `sent`
    continued (a decoder that revises its last characters) waits: the `reply` event has the whole answer."""
    if len(text) > len(sent) and text.startswith(sent):
        await send.send(ServerSentEvent(event="delta", data=json.dumps({"text": text[len(sent):]})))
        return text
    return sent


def _error_event(error: Exception) -> ServerSentEvent:
    """The `error` event of a failure, with the status and detail the unstreamed route would answer (app.py)."""
    status = next((code for kind, code in ERROR_STATUS if isinstance(error, kind)), None)
    if status is None:  # a fault of the server: its message stays in the log
        logger.error("a streamed chat failed", exc_info=error)
        status, detail = 500, "internal server error; see the server log"
    else:
        detail = first_line(error)
        if status >= 500 and status != 503:
            logger.error("a streamed chat failed: %s", detail)
    return ServerSentEvent(event="error", data=json.dumps({"detail": detail, "status": status}))
