"""Writing a command's JSON answers as they are finished, so a failure at the end loses nothing already done.

The output is one JSON array, written entry by entry and flushed after each: when a write fails (a full disk, a
closed pipe), the entries before it are complete, and a seekable file is cut back to them and closed into a
valid document. Text that cannot be encoded (a lone surrogate from a prompt key, a file name that is not UTF-8)
is written as its JSON escape (`\\udce9`), which reads back as the same string.
"""
from __future__ import annotations

import json
import textwrap
from typing import Any, BinaryIO


class WriteFailed(Exception):
    """Writing the answers failed; `written` entries were complete before it."""

    def __init__(self, error: OSError, written: int):
        super().__init__(error.strerror or str(error))
        self.error = error
        self.written = written


class JsonArrayWriter:
    """A JSON array of entries on a binary stream, written and flushed one entry at a time."""

    def __init__(self, stream: BinaryIO):
        self.stream = stream
        self.written = 0  # complete entries
        self._complete_bytes = 0  # where the last complete entry ends

    def write(self, entry: dict[str, Any]) -> None:
        """Append `entry`; raise WriteFailed (the entries before it stay complete) when the stream refuses it."""
        text = json.dumps(entry, indent=2, ensure_ascii=False)
        self._write(("[\n" if not self.written else ",\n") + textwrap.indent(text, "  "))
        self.written += 1

    def close(self) -> None:
        """End the array; WriteFailed when even that cannot be written."""
        self._write("\n]\n" if self.written else "[]\n")

    def salvage(self) -> bool:
        """After a failure: cut the stream back to its complete entries and end the array there. False when the
        stream cannot be cut (a pipe, a terminal) or refuses even that."""
        try:
            if not self.stream.seekable():
                return False
            self.stream.seek(self._complete_bytes)
            self.stream.truncate()
            self.stream.write(b"\n]\n" if self.written else b"[]\n")
            self.stream.flush()
        except (OSError, ValueError):
            return False
        return True

    def _write(self, text: str) -> None:
        data = memoryview(text.encode("utf-8", "backslashreplace"))  # a lone surrogate becomes its JSON escape
        size = len(data)
        try:
            while data:  # an unbuffered file may take part of it (a disk filling up), then refuse the rest
                data = data[self.stream.write(data) or 0:]
            self.stream.flush()
        except OSError as error:
            raise WriteFailed(error, self.written) from None
        self._complete_bytes += size
