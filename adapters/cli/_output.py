"""Writing a command's answers as they are finished, so a failure at the end loses nothing already done.

Every writer takes one entry (a file's result) at a time, writes it whole and flushes: when a write fails (a full
disk, a closed pipe), the entries before it are complete, and a seekable file is cut back to them (and, for the
JSON array, closed into a valid document). Text that cannot be encoded (a lone surrogate from a prompt key, a file
name that is not UTF-8) is written as its escape (`\\udce9`), which JSON reads back as the same string.

- `JsonArrayWriter`: the full results (every annotation) as one JSON array: `--json`, `--out`.
- `JsonLinesWriter`: one compact JSON object per answer (item, prompt, question, answer, confidence), for a pipe.
- `TableWriter`: the same rows as a table (`rich`), for a terminal; printed file by file as they finish.
"""
from __future__ import annotations

import abc
import json
import textwrap
from typing import Any, BinaryIO, Callable


class WriteFailed(Exception):
    """Writing the answers failed; `written` entries were complete before it."""

    def __init__(self, error: OSError, written: int):
        super().__init__(error.strerror or str(error))
        self.error = error
        self.written = written


class EntryWriter(abc.ABC):
    """Entries on a binary stream, each written whole and flushed before the next."""

    incomplete = "its last entry may be cut short"  # what a stream that cannot be cut back holds after a failure

    def __init__(self, stream: BinaryIO):
        self.stream = stream
        self.written = 0  # complete entries
        self._complete_bytes = 0  # where the last complete entry ends

    def write(self, entry: dict[str, Any]) -> None:
        """Append `entry`; raise WriteFailed (the entries before it stay complete) when the stream refuses it."""
        self._write(self.render(entry))
        self.written += 1

    @abc.abstractmethod
    def render(self, entry: dict[str, Any]) -> str:
        """The text of one entry, as this format writes it."""

    def close(self) -> None:
        """End the output; WriteFailed when even that cannot be written."""
        self._write(self.ending())

    def ending(self) -> str:
        return ""

    def salvage(self) -> bool:
        """After a failure: cut the stream back to its complete entries and end the output there. False when the
        stream cannot be cut (a pipe, a terminal) or refuses even that."""
        try:
            if not self.stream.seekable():
                return False
            self.stream.seek(self._complete_bytes)
            self.stream.truncate()
            self.stream.write(self.ending().encode("utf-8"))
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


class JsonArrayWriter(EntryWriter):
    """A JSON array of entries, written and flushed one entry at a time."""

    incomplete = "the JSON array is not closed"

    def render(self, entry: dict[str, Any]) -> str:
        text = json.dumps(entry, indent=2, ensure_ascii=False)
        return ("[\n" if not self.written else ",\n") + textwrap.indent(text, "  ")

    def ending(self) -> str:
        return "\n]\n" if self.written else "[]\n"


# ----- the compact view: one row per answer (or per question not answered, or file not read) -----
Questions = Callable[[str], dict[tuple[str | None, str | None], str]]


def answer_rows(result: dict[str, Any], questions: dict[tuple[str | None, str | None], str]) -> list[dict[str, Any]]:
    """A file's result as rows: `item`, `prompt` (key), `question` (its text, when the file still has it), then
    `answer` and `confidence`, or `skipped` / `kept` (why it got no new answer), or `error` (the file)."""
    item = result["file"]
    if result.get("error"):
        return [{"item": item, "error": result["error"]}]
    rows = []
    for annotation in result.get("annotations", []):
        metadata = annotation.get("metadata") or {}
        prompt = (metadata.get("system") or {}).get("promptId")
        user = metadata.get("user") or {}
        element = ((user.get("model_output") or {}).get("answered") or {}).get("element")
        rows.append({"item": item, "prompt": prompt, "question": questions.get((prompt, element)),
                     "answer": annotation.get("coordinates"), "confidence": (user.get("model") or {}).get("confidence")})
    for kind in ("skipped", "kept"):
        for entry in result.get(kind, []):
            rows.append({"item": item, "prompt": entry.get("prompt"),
                         "question": questions.get((entry.get("prompt"), entry.get("element"))),
                         kind: entry.get("reason")})
    return rows


class JsonLinesWriter(EntryWriter):
    """One compact JSON object per row (`answer_rows`), a file's rows at a time: for `jq`, `grep`, a spreadsheet."""

    def __init__(self, stream: BinaryIO, questions: Questions):
        super().__init__(stream)
        self.questions = questions

    def render(self, entry: dict[str, Any]) -> str:
        rows = answer_rows(entry, self.questions(entry["file"]))
        return "".join(json.dumps({k: v for k, v in row.items() if v is not None}, ensure_ascii=False) + "\n"
                       for row in rows)


class TableWriter(EntryWriter):
    """The rows as a table on a terminal: item, prompt (the question's text), answer, confidence. Each file's rows
    are printed as soon as it is finished, under one header, in columns of fixed widths."""

    def __init__(self, stream: BinaryIO, questions: Questions, width: int, color: bool):
        super().__init__(stream)
        self.questions = questions
        self.width = max(width, 40)
        self.color = color

    def render(self, entry: dict[str, Any]) -> str:
        from rich import box
        from rich.console import Console
        from rich.table import Table
        from rich.text import Text

        rows = answer_rows(entry, self.questions(entry["file"]))
        table = Table(box=box.SIMPLE_HEAD, show_header=not self.written, show_edge=False, pad_edge=False,
                      header_style="bold", expand=True, width=self.width)
        item_width = max((self.width - 16) * 2 // 9, 8)
        table.add_column("item", ratio=2, no_wrap=True, overflow="ellipsis")
        table.add_column("prompt", ratio=3, no_wrap=True, overflow="ellipsis")
        table.add_column("answer", ratio=4, overflow="fold")
        table.add_column("confidence", width=10, justify="right", no_wrap=True)
        for row in rows:
            item = row["item"] if len(row["item"]) <= item_width else "…" + row["item"][-item_width + 1:]
            question = " ".join((row.get("question") or "").split()) or (
                f"prompt {row['prompt']}" if row.get("prompt") is not None else "")
            if "answer" in row:
                confidence = row.get("confidence")
                table.add_row(Text(item), Text(question), Text(str(row["answer"])),
                              "" if confidence is None else f"{confidence:.3f}")
            else:
                kind = next(k for k in ("error", "skipped", "kept") if k in row)
                table.add_row(Text(item), Text(question),
                              Text(f"{kind}: {row[kind]}", style="red" if kind == "error" else "dim"), "")
        console = Console(width=self.width, force_terminal=self.color, no_color=not self.color,
                          color_system="standard" if self.color else None, record=False, file=_Sink())
        with console.capture() as captured:
            console.print(table)
        return captured.get()


class _Sink:
    """Where a capturing console would write if it did not capture (it never does)."""

    def write(self, text: str) -> int:
        return len(text)

    def flush(self) -> None:
        pass


def question_texts(path: str) -> dict[tuple[str | None, str | None], str]:
    """(prompt key, element key) -> question text of a prompt-item file, read again for the compact view ({} when
    it no longer reads)."""
    from adapters.core.errors import MalformedItemError
    from adapters.core.prompt_items import parse_prompt_item

    try:
        with open(path, "rb") as handle:
            parsed = parse_prompt_item(json.loads(handle.read()), 0, path)
    except (OSError, ValueError, RecursionError, MalformedItemError):
        return {}
    return {(q.prompt_key, q.element_key): q.text for q in parsed.questions}
