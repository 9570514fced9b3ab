"""The server's JSON response: every non-ASCII character escaped, so anything a client sent can be echoed.

JSON text may hold lone surrogates ("\\ud800" is valid JSON, though not Unicode); an item name, prompt key or
label holding one, echoed back in UTF-8, cannot be encoded, and a good answer would become a 500. Escaped,
the client gets back exactly what it sent.
"""
from __future__ import annotations

import json
from typing import Any

from starlette.responses import JSONResponse


class JSONAnswer(JSONResponse):
    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=True, allow_nan=False, separators=(",", ":")).encode("ascii")


MAX_DETAIL_CHARS = 300


def first_line(error: Exception) -> str:
    """An error's message as a response's `detail`: its first line, cut to MAX_DETAIL_CHARS (or its type's name)."""
    return (str(error).strip().splitlines() or [type(error).__name__])[0][:MAX_DETAIL_CHARS]
