"""Tokenize only what a model can read, so a long text costs what its readable part costs, not its size.

A text is read in windows, from its start (or, for a model that keeps the end, from its end), each cut at a word
boundary so that the tokens kept are the ones the whole text would give, and each tokenized on its own; reading
stops as soon as the windows hold more tokens than the limit, and the tokens are then cut exactly to it. Windows
double in size as they go (dense text needs one). Characters that make few or no tokens (zero-width, combining
and control characters, runs of spaces) cannot make a window bigger than the reading bound: at most
`READ_CHARS_PER_TOKEN` characters per token of the limit are read, whatever the text, so the characters
tokenized and the tokenizer calls follow the limit, never the text's length. A text that holds fewer tokens
than the limit in that many characters is cut there (a word longer than the bound is cut inside it).
Rows are then assembled from token ids with the tokenizer's own special-token layout, so a question paired
with several second segments (zero-shot hypotheses) is tokenized once, not once per pair.
"""
from __future__ import annotations

import re
from typing import Any, Callable, Sequence

from .errors import InputError

# Characters per token of the first window: English runs at about 4 to 5 with its spaces; 8 covers most text at once.
CHARS_PER_TOKEN = 8
# The smallest first window: long enough to hold a word boundary in any sensible text.
MIN_PIECE_CHARS = 256
# The most characters read per token of the limit (and at least MIN_READ_CHARS): text packs one token in a few
# characters; only characters a tokenizer drops or merges (zero-width, combining marks, controls, space runs)
# pack fewer, and they cannot buy more reading than this.
READ_CHARS_PER_TOKEN = 64
MIN_READ_CHARS = 16_384
# Word boundaries: ASCII spaces only, which every tokenizer's pre-tokenizer splits on (Python's \s also takes
# characters such as U+001C that byte-level BPE reads as punctuation).
_WORD_END = re.compile(r"\S(?=[ \t\n\r])")  # a cut right after this keeps whole words at the end of a piece
_WORD_START = re.compile(r"[ \t\n\r](?=\S)")  # a piece starting here keeps whole words at its start


def read_bound(limit: int) -> int:
    """The most characters of one text read to find its first (or last) `limit` tokens."""
    return max(limit * READ_CHARS_PER_TOKEN, MIN_READ_CHARS)


Row = dict[str, list[int]]


class Segments:
    """Token ids of bounded pieces of text, and model rows built from them with the tokenizer's special tokens."""

    def __init__(self, tokenizer: Any):
        self.tokenizer = tokenizer
        self.names = [n for n in ("input_ids", "token_type_ids", "attention_mask") if n in tokenizer.model_input_names]
        self.keep_end = getattr(tokenizer, "truncation_side", "right") == "left"
        self._join = _layout_join(tokenizer) if hasattr(tokenizer, "backend_tokenizer") else _python_join(tokenizer)
        self.specials = {pair: len(self._join([], [] if pair else None)[0]) for pair in (False, True)}
        # Ids only the tokenizer's own markup may write (end of text, separators, turn markers); unknown is text.
        self.control_ids = frozenset(tokenizer.all_special_ids) - {tokenizer.unk_token_id}

    def user_text_ids(self, text: str) -> list[int]:
        """Ids of text a user wrote: a special token's spelling in it (`<|endoftext|>`, `[SEP]`) is split as text,
        and a control id the vocabulary itself matches (T5's sentencepiece reads `</s>`) is dropped, so a user can
        neither end a turn nor an input early."""
        (ids,) = self.tokenizer([text], add_special_tokens=False, split_special_tokens=True, verbose=False)["input_ids"]
        return [token for token in ids if token not in self.control_ids]

    def tokenize(self, texts: Sequence[str]) -> list[list[int]]:
        """Ids of whole texts without special tokens: only for texts already bounded (labels, templates)."""
        return self.tokenizer(list(texts), add_special_tokens=False, verbose=False)["input_ids"] if texts else []

    def ids(self, text: str, limit: int, keep_end: bool = False) -> tuple[list[int], bool]:
        """The first (or, with `keep_end`, the last) `limit` token ids of `text`, read as user text (`user_text_ids`:
        no control token), and whether `text` holds more; `text` is read in windows only until they hold more than
        `limit` tokens, and never past `read_bound(limit)` characters."""
        bound = read_bound(limit)
        size = max(limit * CHARS_PER_TOKEN, MIN_PIECE_CHARS)
        pieces: list[list[int]] = []
        count = read = 0
        while count <= limit and read < min(len(text), bound):
            allowed = min(len(text), bound) - read
            length = _window(text, read, min(size, allowed), allowed, keep_end)
            piece = text[len(text) - read - length:len(text) - read] if keep_end else text[read:read + length]
            piece_ids = self.user_text_ids(piece)
            pieces.append(piece_ids)
            count += len(piece_ids)
            read += length
            size *= 2
        ids = [token for piece_ids in (reversed(pieces) if keep_end else pieces) for token in piece_ids]
        more = len(ids) > limit or read < len(text)
        if len(ids) > limit:
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


def _window(text: str, read: int, wanted: int, allowed: int, keep_end: bool) -> int:
    """The length of the next window, after the `read` characters already read from the start (or the end): about
    `wanted` characters, cut between words; longer, up to `allowed`, when no word boundary comes sooner, and cut
    inside a word only at `allowed`, where reading stops."""
    if keep_end:
        end = len(text) - read
        near, far = end - wanted, end - allowed
        if near <= 0:
            return end
        boundary = _WORD_START.search(text, near, end)  # the first word start in the window keeps the most
        if boundary is None:  # one word longer than the window: take it whole, up to `allowed`
            starts = [match.start() for match in _WORD_START.finditer(text, far, near + 1)]
            return end - starts[-1] if starts else allowed
        return end - boundary.start()
    near, far = read + wanted, read + allowed
    if near >= len(text):
        return len(text) - read
    ends = [match.end() for match in _WORD_END.finditer(text, read, near + 1)]
    if ends:  # the last word end in the window keeps the most
        return ends[-1] - read
    boundary = _WORD_END.search(text, near, far + 1)  # one word longer than the window: up to `allowed`
    return boundary.end() - read if boundary else allowed


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
