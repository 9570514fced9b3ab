"""Rate limit for repeated warnings and errors, so one fault repeated in a loop cannot flood the log.

Measured before this existed: with file handles exhausted, asyncio logged "socket.accept() out of system
resource" (with its traceback) 214k times in 45 seconds. Python's logging has no rate limit of its own.
"""
from __future__ import annotations

import logging
import re
import time
from contextlib import contextmanager
from typing import Callable, Iterable, Iterator

MAX_TRACKED_MESSAGES = 1024
MAX_KEYED_CHARS = 16_384  # of a message, read to key it (messages are short; a pathological one costs no more)
_NUMBERS = re.compile(r"\d+")


class RepeatedLogFilter(logging.Filter):
    """Lets through `burst` WARNING-or-worse records of one message per `window` seconds; the last one let
    through says that further repeats are dropped. Lower levels always pass.

    A message is its logger, level and text with numbers blanked, so "refused a connection: 193 are open" repeats
    "...: 192 are open", while warnings about different items stay apart.
    """

    def __init__(self, burst: int = 5, window: float = 60.0, clock: Callable[[], float] = time.monotonic):
        super().__init__()
        self.burst, self.window, self.clock = burst, window, clock
        self._seen: dict[tuple[str, int, str], tuple[float, int]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        now = self.clock()
        # Numbers blanked before the text is cut: a long number must not push what tells two warnings apart out
        key = (record.name, record.levelno, _NUMBERS.sub("#", _text(record)[:MAX_KEYED_CHARS])[:200])
        started, count = self._seen.get(key, (now, 0))
        if now - started >= self.window:
            started, count = now, 0
        if key not in self._seen and len(self._seen) >= MAX_TRACKED_MESSAGES:
            self._forget_older_than(now - self.window)
        self._seen[key] = (started, count + 1)
        if count + 1 < self.burst:
            return True
        if count + 1 == self.burst:
            record.msg = f"{record.msg} [repeated {self.burst} times; further repeats dropped for " \
                         f"{self.window - (now - started):.0f} s]"
            return True
        return False

    def _forget_older_than(self, cutoff: float) -> None:
        self._seen = {k: v for k, v in self._seen.items() if v[0] >= cutoff}
        if len(self._seen) >= MAX_TRACKED_MESSAGES:  # all recent and distinct: start over rather than grow
            self._seen.clear()


def _text(record: logging.LogRecord) -> str:
    try:
        return record.getMessage()
    except Exception:  # noqa: BLE001 - arguments that do not fit the format: the handler reports that, not us
        return str(record.msg)


def limit_repeats(logger_names: Iterable[str] = ("", "uvicorn", "uvicorn.error", "uvicorn.access"),
                  log_filter: logging.Filter | None = None) -> logging.Filter:
    """Put one shared `RepeatedLogFilter` on every handler of these loggers (the root logger is "")."""
    log_filter = log_filter or RepeatedLogFilter()
    for name in logger_names:
        for handler in logging.getLogger(name).handlers:
            if log_filter not in handler.filters:
                handler.addFilter(log_filter)
    return log_filter


@contextmanager
def repeats_limited(logger_names: Iterable[str] = ("", "uvicorn", "uvicorn.error", "uvicorn.access")) -> Iterator[None]:
    """`limit_repeats` while the block runs (the server's life), then the handlers as they were: a caller that
    serves in-process keeps its own handlers' behaviour once the server stops."""
    names = list(logger_names)
    log_filter = limit_repeats(names)
    try:
        yield
    finally:
        for name in names:
            for handler in logging.getLogger(name).handlers:
                handler.removeFilter(log_filter)
