"""Answers as they are written: the generation side of streaming, which the platform and the server consume.

A consumer sets `HuggingAdapter.stream_to`: a function of a question that returns an `AnswerListener` for it, or
None when that question is not streamed. While the question's answer is generated, its listener is called from
the generating thread with the answer's `PartialAnswer` each time a token is added. Listeners run between decoding
steps, so they only take note; whatever is slow (an upload, a network write) happens on the consumer's own thread,
which reads `PartialAnswer.text()` when it is ready to send.
"""
from __future__ import annotations

import logging
from typing import Callable, Sequence

from .prompt_items import Question
from .settings import Setting

logger = logging.getLogger(__name__)

STREAM_SETTINGS: tuple[Setting, ...] = (
    Setting("stream", (bool,), "on the platform, write each answer into its prompt item while it is generated: "
            "created at the first tokens, updated every stream_interval seconds, then replaced by the finished "
            "answer (as Dataloop's LLM apps stream)"),
    Setting("stream_interval", (float,), "seconds between two updates of a streamed answer on the platform",
            minimum=0.1, maximum=60.0),
)


class PartialAnswer:
    """The tokens of an answer written so far; `text()` reads them as the finished answer's text will read."""

    def __init__(self, decode: Callable[[Sequence[int]], str]):
        self.token_ids: list[int] = []
        self._decode = decode

    def text(self) -> str:
        """The answer so far, without a last character whose bytes are not all written yet (byte-level tokens
        split a character, which decodes as U+FFFD until its last byte comes)."""
        return self._decode(list(self.token_ids)).rstrip("\ufffd").rstrip()


AnswerListener = Callable[[PartialAnswer], None]
StreamTarget = Callable[[Question], "AnswerListener | None"]


def row_streams(listeners: Sequence[AnswerListener | None], decode: Callable[[Sequence[int]], str]
                ) -> Callable[[int, int], None]:
    """`on_token(row, token)` for a runtime's `generate`: the token joins the row's answer and its listener hears.

    A listener that raises is not called again (its answer still finishes, unstreamed): a consumer's fault must
    not cost the model call.
    """
    partials = [PartialAnswer(decode) if listener is not None else None for listener in listeners]
    live = list(listeners)

    def on_token(row: int, token: int) -> None:
        listener, partial = live[row], partials[row]
        if listener is None or partial is None:
            return
        partial.token_ids.append(token)
        try:
            listener(partial)
        except Exception:  # noqa: BLE001 - logged; only the streaming of this answer stops
            logger.exception("streaming an answer failed; it will arrive whole when it is finished")
            live[row] = None
    return on_token
