"""Tokenize only what a model can read, so a long text costs what its readable part costs, not its size.

A text is cut to a character bound derived from the token limit, at a word boundary so that the tokens kept
are the ones the whole text would give, tokenized once, and then cut exactly to the limit in tokens. The bound
grows (4x at a time) only while the piece holds too few tokens, as long words or runs of spaces can make it;
the work stays within a small multiple of what is kept, or of the text itself when the text is that dense.
Rows are then assembled from token ids with the tokenizer's own special-token layout, so a question paired
with several second segments (zero-shot hypotheses) is tokenized once, not once per pair.
"""
from __future__ import annotations

import re
from typing import Any, Callable, Sequence

from .errors import InputError

# Characters per token to start from: English runs at about 4 to 5 with its spaces; 8 covers most text at once.
CHARS_PER_TOKEN = 8
# The smallest piece tried: long enough to hold a word boundary in any sensible text.
MIN_PIECE_CHARS = 256
# Word boundaries: ASCII spaces only, which every tokenizer's pre-tokenizer splits on (Python's \s also takes
# characters such as U+001C that byte-level BPE reads as punctuation).
_WORD_END = re.compile(r"\S(?=[ \t\n\r])")  # a cut right after this keeps whole words at the end of a piece
_WORD_START = re.compile(r"[ \t\n\r](?=\S)")  # a piece starting here keeps whole words at its start

Row = dict[str, list[int]]


class Segments:
    """Token ids of bounded pieces of text, and model rows built from them with the tokenizer's special tokens."""

    def __init__(self, tokenizer: Any):
        self.tokenizer = tokenizer
        self.names = [n for n in ("input_ids", "token_type_ids", "attention_mask") if n in tokenizer.model_input_names]
        self.keep_end = getattr(tokenizer, "truncation_side", "right") == "left"
        self._join = _layout_join(tokenizer) if hasattr(tokenizer, "backend_tokenizer") else _python_join(tokenizer)
        self.specials = {pair: len(self._join([], [] if pair else None)[0]) for pair in (False, True)}

    def tokenize(self, texts: Sequence[str]) -> list[list[int]]:
        """Ids of whole texts without special tokens: only for texts already bounded (labels, templates)."""
        return self.tokenizer(list(texts), add_special_tokens=False, verbose=False)["input_ids"] if texts else []

    def ids(self, text: str, limit: int, keep_end: bool = False) -> tuple[list[int], bool]:
        """The first (or, with `keep_end`, the last) `limit` token ids of `text`, without special tokens, and
        whether `text` holds more; only a piece of `text` a little longer than `limit` tokens is tokenized."""
        bound = max(limit * CHARS_PER_TOKEN, MIN_PIECE_CHARS)
        while True:
            piece = text if len(text) <= bound else _piece(text, bound, keep_end)
            (ids,) = self.tokenize([piece])
            if len(ids) > limit or piece is text:
                break
            bound *= 4
        more = len(ids) > limit
        if more:
            ids = ids[len(ids) - limit:] if keep_end else ids[:limit]
        return ids, more

    def rows(self, text: str, pairs: Sequence[str] | None, max_length: int) -> tuple[list[Row], bool]:
        """Rows for `text` alone or paired with each of `pairs`, at most `max_length` tokens each; only `text` is
        cut to fit (from the side the tokenizer truncates), and the flag says whether it was."""
        seconds: list[list[int] | None] = list(self.tokenize(pairs)) if pairs is not None else [None]
        if not seconds:
            return [], False
        room = [max_length - self.specials[second is not None] - len(second or ()) for second in seconds]
        if min(room) < 1:
            raise InputError(f"a second segment (e.g. a zero-shot hypothesis) of {max_length - min(room)} tokens "
                             f"with its special tokens leaves no room for the question in the model's window of "
                             f"{max_length} tokens")
        first, more = self.ids(text, max(room), self.keep_end)
        rows = []
        for second, fits in zip(seconds, room):
            kept = first[len(first) - fits:] if self.keep_end and len(first) > fits else first[:fits]
            more = more or len(kept) < len(first)
            ids, type_ids = self._join(kept, second)
            row = {"input_ids": ids, "token_type_ids": type_ids, "attention_mask": [1] * len(ids)}
            rows.append({name: row[name] for name in self.names})
        return rows, more


def _piece(text: str, bound: int, keep_end: bool) -> str:
    """At most `bound` characters from the start (or end) of `text`, cut between words. Only a piece that is all
    one word (no space in `bound` characters) is cut inside it, where its tokens are approximate."""
    if keep_end:
        boundary = _WORD_START.search(text, len(text) - bound)
        return text[boundary.start() if boundary else len(text) - bound:]
    end = bound
    for end_of_word in _WORD_END.finditer(text, 0, bound + 1):
        end = end_of_word.end()
    return text[:end]


Join = Callable[[list[int], "list[int] | None"], tuple[list[int], list[int]]]


def _layout_join(tokenizer: Any) -> Join:
    """Add special tokens as a `tokenizers` post-processor does, from the layout it gives two sample segments."""
    backend = tokenizer.backend_tokenizer
    samples = [backend.encode(text, add_special_tokens=False) for text in ("a", "b")]
    first_length = len(samples[0].ids)
    layouts = {}
    for pair in (False, True):
        processed = backend.post_process(samples[0], samples[1] if pair else None, add_special_tokens=True)
        layout: list[tuple[int | None, int, int]] = []  # (segment index or None for a special token, id, type id)
        position = 0  # among the samples' own tokens
        for token, type_id, special in zip(processed.ids, processed.type_ids, processed.special_tokens_mask):
            if special:
                layout.append((None, token, type_id))
                continue
            if position in (0, first_length):
                layout.append((int(position > 0), 0, type_id))
            position += 1
        layouts[pair] = layout

    def join(first: list[int], second: list[int] | None) -> tuple[list[int], list[int]]:
        segments = (first, second)
        ids: list[int] = []
        type_ids: list[int] = []
        for segment, token, type_id in layouts[second is not None]:
            part = [token] if segment is None else segments[segment]
            ids += part
            type_ids += [type_id] * len(part)
        return ids, type_ids
    return join


def _python_join(tokenizer: Any) -> Join:
    """A pure-Python tokenizer (e.g. ByT5's) adds its special tokens itself."""
    def join(first: list[int], second: list[int] | None) -> tuple[list[int], list[int]]:
        return (tokenizer.build_inputs_with_special_tokens(first, second),
                tokenizer.create_token_type_ids_from_sequences(first, second))
    return join
