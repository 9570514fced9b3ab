"""Cutting a text before tokenizing it, on the texts that make the cut hard: runs of whitespace and words far apart.

`Segments` cuts a text to a character bound (8 per token, at least 256) between words, and grows the bound while
the piece holds too few tokens. Ordinary text never grows it: a 256-character piece of words holds more tokens
than any limit tested. Here a piece can hold one word or none, so the bound grows several times, the cut lands
in a run of spaces or right after a word, and T5's SentencePiece (which folds runs of whitespace into one) and
the byte-level tokenizers (which keep every space as a token) disagree on what a run costs.
"""
from __future__ import annotations

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from tests.conftest import examples
from tests.model_factory import CORPUS

WORDS = st.sampled_from(sorted({w for line in CORPUS for w in line.split()}))
GAPS = st.sampled_from([" " * 40, "\n" * 30, "\t" * 25, " \n\t" * 20, " " * 300, "\r\n" * 90, " ", "  "])
SPARSE = st.lists(st.tuples(WORDS, GAPS), min_size=1, max_size=40).map(lambda parts: "".join(w + g for w, g in parts))
PADDED = st.tuples(GAPS, SPARSE, GAPS).map("".join)  # whitespace before the first word and after the last


@pytest.fixture(scope="module")
def tokenizers(tiny_models):
    from transformers import AutoTokenizer
    return {name: AutoTokenizer.from_pretrained(tiny_models[name]) for name in ("t5", "bart", "distilbert", "gpt2")}


@settings(max_examples=examples(200), deadline=None)
@given(st.sampled_from(["t5", "t5", "bart", "distilbert", "gpt2"]), SPARSE | PADDED, st.sampled_from([2, 5, 12, 64]),
       st.booleans())
@example("t5", "Hello" + " " * 300 + "there" + " " * 300 + "friend", 2, False)
@example("t5", " " * 600 + "Hello", 2, False)
@example("gpt2", "a" + " " * 2000 + "b", 5, True)
# Words apart by newlines only: the 1024-character piece (limit 2) ends 2 characters into "automatically", whose
# cut start "au" is 2 T5 tokens unlike the word's own; a cut there (not after "a") changes the second token. And
# the same from the end: a piece that starts inside it.
@example("t5", "a" + "\n" * 1021 + "automatically\nfriend", 2, False)
@example("t5", "friend\nautomatically" + "\n" * 1021 + "a", 2, False)
# From the end, a piece must start at the space before its first word: GPT-2 reads " about" as one token, "about"
# as two, and the last 2 tokens would then hold half a word.
@example("gpt2", "hello" + " " * 300 + "about b", 2, False)
def test_whitespace_heavy_and_sparse_text_keeps_the_tokens_the_whole_text_gives(tokenizers, name, text, max_length,
                                                                                paired):
    from adapters.core.truncation import Segments
    tokenizer = tokenizers[name]
    segments = Segments(tokenizer)
    whole = tokenizer(text, add_special_tokens=False)["input_ids"]
    for limit in (1, max_length):
        for keep_end in (False, True):
            ids, more = segments.ids(text, limit, keep_end=keep_end)
            kept = (whole[-limit:] if keep_end else whole[:limit]) if len(whole) > limit else whole
            assert (ids, more) == (kept, len(whole) > limit), (limit, keep_end)
    pair = ["It is sports."] if paired else None
    length = max_length + 16  # room for the special tokens and the pair
    rows, truncated = segments.rows(text, pair, length)
    expected = (tokenizer([text], pair, truncation="only_first", max_length=length) if paired
                else tokenizer([text], truncation=True, max_length=length))
    assert rows == [{key: expected[key][0] for key in rows[0]}]
    assert truncated == (len(tokenizer([text], pair)["input_ids"][0]) > length)


@pytest.mark.parametrize("text, pair, max_length", [("héllo wörld " * 5, None, 20), ("short", None, 20),
                                                    ("héllo wörld " * 5, "It is sports.", 40),
                                                    ("short", "It is sports.", 40)])
def test_a_pure_python_tokenizer_gets_the_rows_it_would_make_itself(text, pair, max_length):
    """ByT5's tokenizer has no fast (Rust) version: its special tokens are added by its own Python methods."""
    from transformers import ByT5Tokenizer

    from adapters.core.truncation import Segments
    tokenizer = ByT5Tokenizer()
    assert not hasattr(tokenizer, "backend_tokenizer")  # the path under test
    pairs = None if pair is None else [pair]
    rows, truncated = Segments(tokenizer).rows(text, pairs, max_length)
    expected = tokenizer([text], pairs, truncation="only_first" if pair else True, max_length=max_length)
    assert rows == [{key: expected[key][0] for key in tokenizer.model_input_names}]
    assert truncated == (len(tokenizer([text], pairs)["input_ids"][0]) > max_length)
