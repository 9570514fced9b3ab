"""Bounded resources, through `predict`: inputs never pass the context window, and memory does not grow with the batch.

Memory is measured deterministically as the padded size of the largest tensor `forward` receives (for generative
modules, with the answer budget and generations it will grow to): that, not the number of questions, is what
a micro-batch costs. `benchmarks/memory_flat.py` measures the process's peak RSS for the same claim.
"""
from __future__ import annotations

import logging

import pytest

from adapters.core.settings import MAX_BATCH_TOKENS
from tests.prompt_factory import answers, current_item, legacy_item

LONG = "the service was slow but the food was wonderful " * 300  # ~3000 tokens, far past the 128/512 windows


def spy_forward(adapter) -> list[tuple[int, int]]:
    """Record the (rows, padded length) of every micro-batch the model runs, and its input ids."""
    shapes = []
    forward = adapter.forward

    def recording(inputs):
        shapes.append(tuple(inputs["input_ids"].shape))
        adapter.seen_ids = getattr(adapter, "seen_ids", []) + inputs["input_ids"].tolist()
        return forward(inputs)
    adapter.forward = recording
    return shapes


# ----- long inputs -----
@pytest.mark.parametrize("module", ["models.distilbert_sst2", "models.bart_large_mnli", "models.t5_email"])
def test_inputs_past_the_window_are_truncated_with_a_warning(make_adapter, caplog, module):
    adapter = make_adapter(module)
    shapes = spy_forward(adapter)
    with caplog.at_level(logging.WARNING, logger="adapters"):
        (collection,) = adapter.predict([legacy_item({"p": [LONG, "short", LONG + LONG]})])
    assert len(collection.annotations) == 3 and adapter.last_report.skipped == []
    assert max(length for _, length in shapes) == adapter.max_input_tokens
    assert caplog.text.count(f"truncated to the model's limit of {adapter.max_input_tokens}") == 2


def test_nli_truncates_the_premise_and_keeps_every_hypothesis_whole(make_adapter):
    adapter = make_adapter("models.bart_large_mnli", candidate_labels=["good", "bad"])
    spy_forward(adapter)
    adapter.predict([legacy_item({"p": [LONG]})])
    decoded = [adapter.tokenizer.decode(ids, skip_special_tokens=True) for ids in adapter.seen_ids]
    assert [text.endswith(f"This example is {label}.") for text, label in zip(decoded, ["good", "bad"])] == [True] * 2
    assert all(len(ids) == adapter.max_input_tokens for ids in adapter.seen_ids)


def test_an_oversized_hypothesis_is_reported_and_its_neighbours_answered(make_adapter):
    adapter = make_adapter("models.bart_large_mnli", batch_size=32)
    huge = {"1": {"candidate_labels": ["x9 " * 66, "other"]}}  # within the 200-character cap, 200 tokens
    collections = adapter.predict([current_item({"1": ["first"], "2": ["second"]}, metadata=huge),
                                   legacy_item({"p": ["third", LONG]})])
    assert [len(c.annotations) for c in collections] == [1, 2]
    (skipped,) = adapter.last_report.skipped
    assert (skipped.prompt_key, skipped.element_key) == ("1", "0") and "could not prepare" in skipped.reason
    assert "leaves no room for the question in the model's window of 128 tokens" in skipped.reason


@pytest.mark.parametrize("budget", [8, 127])  # 127: one token left for the prompt
def test_chat_prompt_plus_answer_budget_never_passes_the_window(make_adapter, budget):
    adapter = make_adapter("models.dialogpt_large", max_new_tokens=budget, do_sample=False)
    shapes = spy_forward(adapter)
    collections = adapter.predict([legacy_item({"p": ["hello there", LONG]}),
                                   current_item({"1": [LONG], "2": ["and then?"]})])
    assert [len(c.annotations) for c in collections] == [2, 2]
    assert all(length + budget <= adapter.max_input_tokens for _, length in shapes)
    assert all(a.metadata["user"]["model_output"]["generated_tokens"] <= budget for c in collections
               for a in c.annotations)


def test_email_answer_budget_caps_every_generation(make_adapter):
    adapter = make_adapter("models.t5_email", token_count=5, n_gen=3, seed=0)
    (collection,) = adapter.predict([legacy_item({"p": [LONG, "lunch friday"]})])
    generations = [g for a in collection.annotations for g in a.metadata["user"]["model_output"]["generations"]]
    assert len(collection.annotations) == 2 and len(generations) == 6
    assert all(g["generated_tokens"] <= 5 for g in generations)


class CountingTokenizer:
    """Delegates to a tokenizer, counting the characters of every text it is asked to tokenize."""

    def __init__(self, tokenizer):
        self.__dict__.update(inner=tokenizer, characters=0, calls=0)

    def _count(self, *texts) -> None:
        for text in texts:
            self.__dict__["characters"] += len(text) if isinstance(text, str) else sum(map(len, text or []))
        self.__dict__["calls"] += 1

    def __call__(self, text, text_pair=None, *args, **kwargs):
        self._count(text, text_pair)
        return self.inner(text, text_pair, *args, **kwargs)

    def encode(self, text, *args, **kwargs):
        self._count(text)
        return self.inner.encode(text, *args, **kwargs)

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def __setattr__(self, name, value):
        setattr(self.inner, name, value)


MEGABYTE = ("the service was slow but the food was wonderful " * 22000)[:1_000_000]


@pytest.mark.parametrize("module, items, questions", [
    ("models.bart_large_mnli", [current_item({"1": [MEGABYTE]}, {"1": {"candidate_labels": [f"topic {i}" for i in
                                                                                              range(20)]}})], 1),
    ("models.distilbert_sst2", [legacy_item({"p": [MEGABYTE, "short"]})], 2),
    ("models.t5_email", [legacy_item({"p": [MEGABYTE]})], 1),
    ("models.dialogpt_large", [current_item({"1": [MEGABYTE], "2": [MEGABYTE], "3": ["short", MEGABYTE]})], 3),
])
def test_a_megabyte_question_is_tokenized_only_as_far_as_the_model_reads(make_adapter, module, items, questions):
    """1 MB x 20 labels used to tokenize 20 MB twice (3.9 GB peak); the premise is now cut before it is
    tokenized, and tokenized once per question, whatever the number of labels or turns."""
    adapter = make_adapter(module)
    adapter.tokenizer = counter = CountingTokenizer(adapter.tokenizer)
    collections = adapter.predict(items)
    assert sum(len(c.annotations) for c in collections) == questions and adapter.last_report.skipped == []
    assert counter.characters < 20_000 * questions  # a few windows of 128-512 tokens each, not megabytes
    assert counter.calls <= 6 * questions  # not once per label


# Characters a tokenizer drops (zero-width, controls), merges into one token (runs of unknown characters), or
# gives few tokens per character (combining marks, space runs). 1 MB of them before one word took the whole
# megabyte through the tokenizer (10 MB: +1.8 GB to +5.8 GB, 18 to 56 s); the read bound now stops it.
SPARSE_UNITS = ["\u200b", "e\u0301\u0301\u0301", "\x00\x01\x1b", "  \t", "\u200b \u200b", "\ufeff\u2060"]


def sparse_text(unit: str, size: int = 1_000_000) -> str:
    return unit * (size // len(unit)) + " word"


@pytest.mark.parametrize("unit", SPARSE_UNITS)
@pytest.mark.parametrize("module", ["models.distilbert_sst2", "models.bart_large_mnli", "models.t5_email",
                                    "models.dialogpt_large"])
def test_characters_that_make_few_tokens_cannot_buy_reading(make_adapter, module, unit):
    """Cost follows the token budget, not the text: the characters tokenized and the tokenizer calls stay within
    the read bound of the model's window whatever the characters, and the question is still answered."""
    from adapters.core.truncation import read_bound

    adapter = make_adapter(module)
    adapter.tokenizer = counter = CountingTokenizer(adapter.tokenizer)
    shapes = spy_forward(adapter)
    (collection,) = adapter.predict([legacy_item({"1": [sparse_text(unit)], "2": ["short"]})])
    assert len(collection.annotations) == 2 and adapter.last_report.skipped == []
    assert counter.characters <= read_bound(adapter.max_input_tokens) + 1_000  # + the short question and labels
    assert counter.calls <= 12
    assert max(length for _, length in shapes) <= adapter.max_input_tokens


@pytest.mark.parametrize("keep_end", [False, True])
def test_the_read_bound_at_its_limit_and_one_past_it(tiny_models, keep_end):
    """A word after zero-width characters is found when the text fits the read bound, and not read one past it."""
    from transformers import AutoTokenizer

    from adapters.core.truncation import Segments, read_bound
    segments = Segments(AutoTokenizer.from_pretrained(tiny_models["distilbert"]))
    bound = read_bound(8)
    word = segments.tokenize(["word"])[0]
    sparse = "\u200b" * (bound - 5)
    fits = "word " + sparse if keep_end else sparse + " word"  # the word is where reading ends
    past = fits + "\u200b" if keep_end else "\u200b" + fits
    assert len(fits) == bound and segments.ids(fits, 8, keep_end) == (word, False)
    ids, more = segments.ids(past, 8, keep_end)
    assert more and ids != word  # reading stopped inside the word


def test_a_chat_question_of_sparse_characters_keeps_its_end_within_the_read_bound(make_adapter):
    """The `keep_end` cut skipped to the next word start, kept only ` word`, and widened 4x until the whole run was
    tokenized as one piece (7 GB peak from the CLI): it now reads back from the end only as far as the bound."""
    from adapters.core.truncation import read_bound

    adapter = make_adapter("models.dialogpt_large")
    adapter.tokenizer = counter = CountingTokenizer(adapter.tokenizer)
    history_turn = "\u200b" * 300_000 + " word"
    (collection,) = adapter.predict([current_item({"1": [history_turn], "2": ["\u200b" * 1_000_000 + " word"]})])
    assert len(collection.annotations) == 2
    assert counter.characters <= 4 * read_bound(adapter.max_input_tokens)  # two questions, one history turn
    assert counter.calls <= 20


# ----- memory -----
def questions(count: int, per_prompt: int = 50) -> list[dict]:
    """`count` questions of 1 to 40 words in a few items, so micro-batches mix lengths as real data does.

    The chat model answers a prompt's questions turn by turn: with `per_prompt` 1 every question can join one batch.
    """
    texts = [" ".join(["word"] * (1 + i * 7 % 40)) for i in range(count)]
    return [legacy_item({f"p{j}": texts[i:i + per_prompt]
                         for j, i in enumerate(range(start, min(start + 500, count), per_prompt))})
            for start in range(0, count, 500)]


def peak_padded_tokens(adapter, count: int) -> tuple[int, int]:
    """(largest padded micro-batch in tokens, number of micro-batches) to answer `count` questions."""
    shapes = spy_forward(adapter)
    collections = adapter.predict(questions(count))
    assert sum(len(c.annotations) for c in collections) == count and adapter.last_report.skipped == []
    return max(rows * length for rows, length in shapes), len(shapes)


def test_peak_micro_batch_stays_flat_as_the_batch_grows(make_adapter):
    small, small_batches = peak_padded_tokens(make_adapter("models.distilbert_sst2", batch_size=256,
                                                           max_batch_tokens=1024), 100)
    large, large_batches = peak_padded_tokens(make_adapter("models.distilbert_sst2", batch_size=256,
                                                           max_batch_tokens=1024), 3000)
    assert 512 < small <= 1024 and 512 < large <= 1024
    assert large_batches >= 15 * small_batches  # 30x the questions: more micro-batches, not bigger ones


def test_the_token_cap_not_the_row_count_bounds_a_micro_batch(make_adapter):
    """Filling micro-batches greedily, the row cap alone (256) lets 3000 questions build a 256 x 42 tensor."""
    peaks = []
    for cap in (MAX_BATCH_TOKENS, 1024):
        adapter = make_adapter("models.distilbert_sst2", batch_size=256, max_batch_tokens=cap)
        adapter.min_batch_tokens = None  # greedy: each micro-batch as full as the caps allow
        peaks.append(peak_padded_tokens(adapter, 3000)[0])
    assert peaks[0] > 10 * 1024 and peaks[1] <= 1024


def test_generation_micro_batches_count_the_answers_they_will_grow(make_adapter):
    adapter = make_adapter("models.t5_email", token_count=4, n_gen=2, seed=0, batch_size=1024, max_batch_tokens=512)
    shapes = spy_forward(adapter)
    (collection, *_) = adapter.predict([legacy_item({"p": [" ".join(["word"] * (1 + i % 30)) for i in range(80)]})])
    assert len(answers(collection)) == 80
    assert all(len(a.metadata["user"]["model_output"]["generations"]) == 2 for a in collection.annotations)
    assert max(rows * 2 * (length + 4) for rows, length in shapes) <= 512


@pytest.mark.parametrize("module, beams, n_gen, sampling", [
    ("models.t5_email", 1, 1, False), ("models.t5_email", 2, 1, False), ("models.t5_email", 3, 3, False),
    ("models.t5_email", 1, 3, True), ("models.dialogpt_large", 1, 1, False)])
def test_a_generators_micro_batch_counts_every_beam_and_generation_against_max_batch_tokens(make_adapter, module,
                                                                                              beams, n_gen, sampling):
    """Generation holds rows x n_gen x beams sequences of prompt + answer budget: that is what max_batch_tokens
    caps, so more beams or generations mean fewer questions per forward pass, never a larger peak. The chat model
    has neither key: one sequence per question, so its batches are not halved either."""
    budget, cap = 8, 1200
    options = ({"num_beams": beams, "n_gen": n_gen, "token_count": budget} if module == "models.t5_email"
               else {"max_new_tokens": budget})
    adapter = make_adapter(module, batch_size=64, max_batch_tokens=cap, do_sample=sampling, seed=1, **options)
    shapes = spy_forward(adapter)
    collections = adapter.predict(questions(60, per_prompt=50 if module == "models.t5_email" else 1))
    assert sum(len(c.annotations) for c in collections) == 60
    held = [rows * n_gen * beams * (length + budget) for rows, length in shapes if rows > 1]  # one row runs alone
    assert held and max(held) <= cap  # the cap holds, counted as generation holds it
    assert max(held) > cap // 2  # and batches are not needlessly small
