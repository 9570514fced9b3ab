"""DialoGPT chat and the T5 email writer: history, trimming, n_gen, seeds, and what confidence means."""
import logging

import pytest
import torch

from tests.prompt_factory import answers, current_item, legacy_item
from tests.references import recomputed_confidence
from tests.tolerances import confidence_rtol


def spy_rows(adapter):
    """Record the decoded model input of every question the adapter prepares."""
    seen = []
    preprocess = adapter.preprocess

    def recording(question, history):
        rows = preprocess(question, history)
        seen.append((question.text, adapter.tokenizer.decode(rows[0]["input_ids"]), len(history)))
        return rows
    adapter.preprocess = recording
    return seen


def test_chat_history_is_kept_per_conversation(make_adapter):
    adapter = make_adapter("models.dialogpt_large", do_sample=False)
    seen = spy_rows(adapter)
    legacy = legacy_item({"a": ["hello there", "how are you?", "bye now"], "b": ["thanks for the email"]})
    current = current_item({"2": ["second turn"], "10": ["third turn"], "1": ["first turn"]})
    legacy_answers, current_answers = adapter.predict([legacy, current])
    assert [p for p, _, _ in answers(legacy_answers)] == ["a", "a", "a", "b"]
    assert [p for p, _, _ in answers(current_answers)] == ["2", "10", "1"]  # document order in the output
    inputs = {text: (decoded, depth) for text, decoded, depth in seen}
    first_answer = legacy_answers.annotations[0].coordinates
    assert inputs["how are you?"][1] == 1 and inputs["bye now"][1] == 2 and inputs["thanks for the email"][1] == 0
    assert inputs["how are you?"][0].startswith("hello there<|endoftext|>" + first_answer)
    assert inputs["bye now"][0].endswith("bye now<|endoftext|>")
    # current format: prompts are turns in natural key order: 1, 2, 10
    assert inputs["first turn"][1] == 0 and inputs["second turn"][1] == 1 and inputs["third turn"][1] == 2
    assert inputs["third turn"][0].startswith("first turn<|endoftext|>")


def test_turns_are_batched_across_conversations(make_adapter):
    adapter = make_adapter("models.dialogpt_large", do_sample=False)
    batch_sizes = []
    forward = adapter.forward
    adapter.forward = lambda inputs: (batch_sizes.append(inputs["input_ids"].shape[0]), forward(inputs))[1]
    adapter.predict([legacy_item({"a": ["x1", "x2", "x3"], "b": ["y1", "y2"], "c": ["z1"]})])
    assert batch_sizes == [3, 2, 1]


def test_history_is_trimmed_to_the_context_window_by_whole_turns(make_adapter, caplog):
    adapter = make_adapter("models.dialogpt_large", do_sample=False, max_new_tokens=8)
    seen = spy_rows(adapter)
    turns = [f"turn {i} " + "we will have a system update on friday " * 2 for i in range(12)]
    with caplog.at_level(logging.INFO, logger="models"):
        (collection,) = adapter.predict([legacy_item({"p": turns})])
    assert len(collection.annotations) == 12
    budget = adapter.max_input_tokens - 8
    for text, decoded, _ in seen:
        ids = adapter.tokenizer.encode(decoded)
        assert len(ids) <= budget
        assert decoded.endswith(text + "<|endoftext|>")
        assert decoded.startswith("turn ")  # whole turns only: the oldest kept turn starts at its beginning
    assert "turn 0" not in seen[-1][1]
    assert "dropped the" in caplog.text


def test_a_question_longer_than_the_window_keeps_its_end(make_adapter, caplog):
    adapter = make_adapter("models.dialogpt_large", do_sample=False)
    seen = spy_rows(adapter)
    with caplog.at_level(logging.WARNING, logger="models"):
        (collection,) = adapter.predict([legacy_item({"p": ["word " * 500 + "the end"]})])
    assert len(collection.annotations) == 1 and seen[0][1].endswith("the end<|endoftext|>")
    assert "cut to its last" in caplog.text and "word word" not in caplog.text


def test_budget_past_the_context_window_is_refused(make_adapter):
    from adapters.core.errors import ConfigurationError
    with pytest.raises(ConfigurationError, match="context window"):
        make_adapter("models.dialogpt_large", max_new_tokens=128)


SAMPLING = [{"do_sample": True, "temperature": 1.3, "top_k": 20}, {"do_sample": False}]


def padded(adapter, texts):
    """One padded batch of `texts` (left-padded for the chat model), and its rows."""
    rows = [row for text in texts for row in adapter.encode(text)]
    return rows, dict(adapter.tokenizer.pad(rows, padding=True, return_tensors="pt"))


def generator_of(adapter) -> str:
    return "t5" if adapter.model.config.is_encoder_decoder else "gpt2"


def assert_confidences_recomputed(adapter, rows, generated, config) -> list[bool]:
    """Each answer's confidence equals the recomputed one over its tokens plus, if it ended early, its end token.

    Returns which answers ended before the token budget.
    """
    assert len(generated) == len(rows)
    ended = [len(result.token_ids) < config.max_new_tokens for result in generated]
    for row, result, early in zip(rows, generated, ended):
        answer = result.token_ids + ([config.eos_token_id] if early else [])
        # another forward pass (unpadded, no cache): float32 rounding of the logits, through exp(mean log p)
        assert result.confidence == pytest.approx(recomputed_confidence(adapter.model, row, answer),
                                                  rel=confidence_rtol(generator_of(adapter)))
    return ended


@pytest.mark.parametrize("module", ["models.dialogpt_large", "models.t5_email"])
@pytest.mark.parametrize("sampling", SAMPLING)
def test_confidence_is_the_geometric_mean_of_the_generated_tokens_raw_probabilities(make_adapter, module, sampling):
    from adapters.core.generation import generate_with_confidence
    adapter = make_adapter(module, seed=3, **sampling)
    rows, inputs = padded(adapter, ["please backup your work", "hi"])
    generated = generate_with_confidence(adapter.model, inputs, adapter.generation_config, seed=3)
    assert_confidences_recomputed(adapter, rows, generated, adapter.generation_config)
    assert len({round(g.confidence, 4) for g in generated}) == 2  # not all ~1.0: the comparison can fail


@pytest.mark.parametrize("module", ["models.dialogpt_large", "models.t5_email"])
@pytest.mark.parametrize("sampling", SAMPLING)
def test_confidence_of_an_answer_that_ends_early_includes_its_end_of_sequence_token(make_adapter, module, sampling):
    """The end-of-sequence token is a token the model chose: leaving it out would score "stop here" as certain."""
    import copy

    from adapters.core.generation import generate_with_confidence
    adapter = make_adapter(module, seed=3, **sampling)
    rows, inputs = padded(adapter, ["please send the invoice by friday", "lunch", "hi"])
    config = adapter.generation_config
    if module == "models.dialogpt_large":
        # The tiny GPT-2 never writes <|endoftext|> within 8 tokens: make a token it writes after the first its end
        # token. The tokens before it are unchanged (same logits, same seed), so the first answer now ends there.
        first, second, _ = (g.token_ids for g in generate_with_confidence(adapter.model, inputs, config, seed=3))
        config = copy.deepcopy(config)
        config.eos_token_id = next(token for i, token in enumerate(first)
                                   if i > 0 and token not in first[:i] and token not in second)
    generated = generate_with_confidence(adapter.model, inputs, config, seed=3)
    ended = assert_confidences_recomputed(adapter, rows, generated, config)
    assert ended[0] and not all(ended)  # answers that end early and answers cut at the budget, in one batch


@pytest.mark.parametrize("sampling", SAMPLING)
def test_an_answer_ends_at_the_first_of_any_of_several_end_of_sequence_tokens(make_adapter, sampling):
    """A model may declare several end tokens (a list): each row ends at whichever of them it writes first, and its
    confidence counts the tokens up to that one, not the padding after it."""
    import copy

    from adapters.core.generation import generate_with_confidence
    adapter = make_adapter("models.dialogpt_large", seed=3, **sampling)
    rows, inputs = padded(adapter, ["please send the invoice by friday", "lunch", "hi"])
    config = copy.deepcopy(adapter.generation_config)
    answers = [g.token_ids for g in generate_with_confidence(adapter.model, inputs, config, seed=3)]
    # for each of the first two answers a token it writes (after its first) that no other answer writes: its own
    # end token; the third answer writes neither, runs to the budget, and both others are padded after their end
    ends = [next(token for i, token in enumerate(own) if i > 0 and token not in own[:i]
                 and not any(token in other for other in answers if other is not own)) for own in answers[:2]]
    config.eos_token_id = ends
    generated = generate_with_confidence(adapter.model, inputs, config, seed=3)
    assert len(generated) == len(rows) == 3
    assert generated[2].token_ids == answers[2]
    for own, row, result, end in zip(answers, rows, generated, ends):
        assert result.token_ids == own[:own.index(end)]
        assert result.confidence == pytest.approx(recomputed_confidence(adapter.model, row, result.token_ids + [end]),
                                                  rel=confidence_rtol("gpt2"))  # another pass: float32 rounding


MODEL_DEFAULTS = {"do_sample": True, "temperature": 0.3, "top_k": 3, "top_p": 0.5, "min_length": 20, "min_new_tokens": 4}


@pytest.mark.parametrize("configuration, expected", [
    ({"do_sample": True, "temperature": 0.7, "top_k": 5, "top_p": 0.9},
     {"do_sample": True, "temperature": 0.7, "top_k": 5, "top_p": 0.9}),
    ({"do_sample": True, "temperature": 0.7, "top_k": 0, "top_p": 0.9},  # top_k 0 disables it
     {"do_sample": True, "temperature": 0.7, "top_k": None, "top_p": 0.9}),
    ({"do_sample": True, "temperature": 0.0, "top_k": 5, "top_p": 0.9},  # temperature 0 means greedy
     {"do_sample": False, "temperature": None, "top_k": None, "top_p": None}),
    ({"do_sample": False, "temperature": 0.7, "top_k": 5, "top_p": 0.9},
     {"do_sample": False, "temperature": None, "top_k": None, "top_p": None}),
    ({"do_sample": True, "temperature": 0.01, "top_k": 5, "top_p": 0.9},  # the floor samples
     {"do_sample": True, "temperature": 0.01, "top_k": 5, "top_p": 0.9}),
    ({"do_sample": True, "temperature": 0.00999, "top_k": 5, "top_p": 0.9},  # below it: greedy in effect, and so
     {"do_sample": False, "temperature": None, "top_k": None, "top_p": None}),
])
@pytest.mark.parametrize("model_eos, expected_eos", [(None, 2), (5, 5)])
def test_the_configured_sampling_settings_replace_the_models_own_generation_defaults(configuration, expected,
                                                                                      model_eos, expected_eos):
    """The user's sampling settings reach `generate`, whatever the model's generation_config says; greedy decoding
    leaves no sampling flag (transformers warns on every call that it ignores them); the model's own minimum
    lengths do not apply (an answer may end at its first token); per-step scores are kept only for beam search
    (rows x steps x vocabulary floats); the tokenizer's end token is used only when the model has none."""
    from types import SimpleNamespace

    from transformers import GenerationConfig

    from adapters.core.generation import build_generation_config
    model = SimpleNamespace(generation_config=GenerationConfig(eos_token_id=model_eos, **MODEL_DEFAULTS))
    tokenizer = SimpleNamespace(pad_token_id=0, eos_token_id=2)
    config = build_generation_config(model, tokenizer, configuration, max_new_tokens=8)
    assert {key: getattr(config, key) for key in expected} == expected
    assert (config.max_new_tokens, config.min_length, config.min_new_tokens) == (8, 0, None)
    assert (config.num_beams, config.num_return_sequences, config.output_scores) == (1, 1, False)
    assert (config.eos_token_id, config.pad_token_id) == (expected_eos, 0)
    beams = build_generation_config(model, tokenizer, {**configuration, "num_beams": 2}, max_new_tokens=8)
    assert (beams.num_beams, beams.output_scores) == (2, True)  # a beam's confidence is read from its scores


@pytest.mark.parametrize("temperature", [1e-300, 5e-324, 1e-40, 0.00999])
@pytest.mark.parametrize("module", ["models.dialogpt_large", "models.t5_email"])
def test_a_temperature_below_the_floor_decodes_greedily_instead_of_failing(make_adapter, module, temperature):
    """1e-300 was accepted as > 0 and made sampling divide the logits into inf and NaN: a ModelFailure (HTTP 500, a
    failed platform execution) for a temperature that is greedy in effect."""
    item = legacy_item({"p": ["lunch friday", "meeting monday at ten"]})
    greedy = make_adapter(module, do_sample=False).predict([item])
    tiny = make_adapter(module, do_sample=True, temperature=temperature, seed=1).predict([item])
    assert answers(tiny[0]) == answers(greedy[0]) and len(answers(tiny[0])) == 2


@pytest.mark.parametrize("module", ["models.dialogpt_large", "models.t5_email"])
def test_seed_makes_sampling_reproducible(make_adapter, module):
    item = legacy_item({"p": ["we will have a system update on friday", "please backup your work"]})
    first = answers(make_adapter(module, seed=7, temperature=10.0).predict([item])[0])
    again = answers(make_adapter(module, seed=7, temperature=10.0).predict([item])[0])
    other = [answers(make_adapter(module, seed=s, temperature=10.0).predict([item])[0]) for s in (8, 9, 10)]
    assert first == again
    assert any(o != first for o in other)


@pytest.mark.parametrize("module", ["models.dialogpt_large", "models.t5_email"])
def test_without_a_seed_each_call_samples_afresh(make_adapter, module):
    """seed null "draws a fresh one": repeated calls must not replay one sample (torch's RNG is forked per call)."""
    adapter = make_adapter(module, seed=None, temperature=1.0)
    item = legacy_item({"p": ["we will have a system update on friday", "please backup your work"]})
    samples = [answers(adapter.predict([item])[0]) for _ in range(3)]
    assert samples[0] != samples[1] or samples[1] != samples[2]


def test_t5_writes_n_gen_emails_per_question_in_one_answer_with_the_prefix(make_adapter):
    adapter = make_adapter("models.t5_email", n_gen=3, seed=1, prefix="write an email: ")
    seen = spy_rows(adapter)
    legacy_answers, current_answers = adapter.predict([legacy_item({"p": ["system update friday", "lunch"]}),
                                                       current_item({"1": ["meeting moved"]})])
    assert [p for p, _, _ in answers(legacy_answers)] == ["p", "p"]  # one answer per question, not per generation
    assert len(current_answers.annotations) == 1
    for annotation in (*legacy_answers.annotations, *current_answers.annotations):
        output = annotation.metadata["user"]["model_output"]
        generations = output["generations"]
        assert len(generations) == 3
        best = max(range(3), key=lambda i: (generations[i]["confidence"], -i))
        assert output["generation"] == best and annotation.coordinates == generations[best]["text"]
        assert output["generated_tokens"] == generations[best]["generated_tokens"]  # the chosen email's length
        assert annotation.metadata["user"]["model"]["confidence"] == generations[best]["confidence"]  # one number
    assert seen[0][1].startswith("write an email: system update friday")


@pytest.mark.parametrize("search", [{"num_beams": 4, "do_sample": False}, {"do_sample": True, "temperature": 1.0}])
def test_t5_n_gen_answers_are_the_distinct_sequences_generate_returns(make_adapter, search):
    """Every one of the n_gen generations, in order, is the one `generate` itself returns (not n copies of one)."""
    adapter = make_adapter("models.t5_email", n_gen=3, seed=5, prefix="", **search)
    question = "quarterly report attached"
    (collection,) = adapter.predict([legacy_item({"p": [question]})])
    (annotation,) = collection.annotations
    generations = annotation.metadata["user"]["model_output"]["generations"]

    model, tokenizer = adapter.model, adapter.tokenizer
    encoded = tokenizer(question, return_tensors="pt")
    sampling = {"do_sample": True, "temperature": 1.0, "top_k": 50, "top_p": 1.0} if search["do_sample"] else {}
    torch.manual_seed(5)
    with torch.no_grad():
        reference = model.generate(**encoded, max_new_tokens=8, num_return_sequences=3, return_dict_in_generate=True,
                                   output_scores=True, num_beams=search.get("num_beams", 1), **sampling)
    expected = []
    for sequence in reference.sequences[:, 1:].tolist():  # after the decoder start token
        ids = sequence[:sequence.index(tokenizer.eos_token_id)] if tokenizer.eos_token_id in sequence else sequence
        ids = [token for token in ids if token != tokenizer.pad_token_id]
        expected.append((tokenizer.decode(ids, skip_special_tokens=True).strip(), len(ids)))
    assert len(generations) == len(expected) == 3
    assert [(g["text"], g["generated_tokens"]) for g in generations] == expected
    assert len({g["text"] for g in generations}) == 3  # three different emails: the comparison can fail
    if "num_beams" in search:  # beam confidence: exp of the beam's length-normalised log-probability
        assert [g["confidence"] for g in generations] == pytest.approx(  # another run of the model: its rounding
            torch.exp(reference.sequences_scores).tolist(), rel=confidence_rtol("t5"))
    else:
        row = {"input_ids": encoded["input_ids"][0].tolist()}
        for generation, (_, length), sequence in zip(generations, expected, reference.sequences[:, 1:].tolist()):
            answer = sequence[:length + (1 if length < 8 else 0)]  # its tokens, and its end token if it ended early
            assert generation["confidence"] == pytest.approx(recomputed_confidence(model, row, answer),
                                                             rel=confidence_rtol("t5"))  # another pass: rounding


def test_questions_generated_in_one_micro_batch_each_get_their_own_n_gen_generations(make_adapter, monkeypatch):
    """The runtime returns n_gen sequences per row, row after row: a question's answer holds the n_gen of its own
    row, whatever else shared its micro-batch (rows run longest first, so row order is not question order)."""
    adapter = make_adapter("models.t5_email", n_gen=3, num_beams=4, do_sample=False, prefix="")
    calls = []
    generate = adapter.runtime.generate

    def recording(model, encoded, *args):
        rows = [ids[mask.bool()].tolist() for ids, mask in zip(encoded["input_ids"], encoded["attention_mask"])]
        calls.append((rows, generate(model, encoded, *args)))
        return calls[-1][1]
    monkeypatch.setattr(adapter.runtime, "generate", recording)
    texts = ["quarterly report attached", "lunch on friday at noon with the whole team"]
    (collection,) = adapter.predict([legacy_item({"p": texts})])
    ((rows, raw),) = calls  # both questions in one micro-batch
    assert len(rows) == 2 and len(raw) == 6 and len(collection.annotations) == 2
    for text, annotation in zip(texts, collection.annotations):
        row = rows.index(adapter.tokenizer(text)["input_ids"])
        expected = [(adapter.tokenizer.decode(g.token_ids, skip_special_tokens=True).strip(), g.confidence,
                     len(g.token_ids)) for g in raw[3 * row:3 * row + 3]]
        generations = annotation.metadata["user"]["model_output"]["generations"]
        assert [(g["text"], g["confidence"], g["generated_tokens"]) for g in generations] == expected
        assert len({text for text, _, _ in expected}) == 3  # three different beams: a shifted slice cannot match


def test_an_earlier_turn_is_kept_only_when_it_fits_the_window_whole(make_adapter):
    """The oldest turns go first, whole: a turn that fits to the token is kept, one token more and it is dropped.
    An empty answer (the model wrote only end-of-text) is one token: it too is kept when it fills the last one."""
    from adapters.core.hugging_adapter import Answer, Turn
    from adapters.core.prompt_items import Question
    adapter = make_adapter("models.dialogpt_large", do_sample=False, max_new_tokens=8)
    budget = adapter.max_input_tokens - 8
    utterance = adapter.chat.utterance  # DialoGPT's end-of-text format: the tiny GPT-2 has no chat template
    questions = {len(utterance(text)): text for text in (" ".join(["a"] * n) for n in range(1, 130))}
    for answer in ("fine thanks", ""):
        turn = Turn(Question(0, "item", "1", "0", "hello there"), [Answer(answer, 1.0)])
        earlier = utterance("hello there") + utterance(answer)
        for room, kept in ((len(earlier), True), (len(earlier) - 1, False)):
            question = Question(0, "item", "2", "0", questions[budget - room])
            (row,) = adapter.preprocess(question, [turn])
            assert row["input_ids"] == (earlier if kept else []) + utterance(question.text)
    (long,) = adapter.preprocess(Question(0, "item", "3", "0", "word " * 500 + "the end"), [turn])
    assert len(long["input_ids"]) == budget  # a question longer than the window fills it, and leaves no room


def test_the_later_turns_of_a_chat_whose_turn_could_not_be_prepared_are_reported_not_answered(make_adapter):
    """A chat turn that fails to prepare breaks its conversation: each later turn is reported (answering it without
    that turn would be answering a different conversation), and other conversations are answered."""
    adapter = make_adapter("models.dialogpt_large", do_sample=False)
    preprocess = adapter.preprocess

    def failing_on_first(question, history):
        if question.text == "first":
            raise ValueError("cannot prepare")
        return preprocess(question, history)
    adapter.preprocess = failing_on_first
    (collection,) = adapter.predict([{**legacy_item({"a": ["first", "second", "third"], "b": ["other", "more"]}),
                                      "name": "chat.json"}])
    assert [prompt for prompt, _, _ in answers(collection)] == ["b", "b"]  # its turns after a's break too
    broken = "an earlier turn of this conversation was not answered"
    assert [(s.item, s.prompt_key, s.element_key, s.reason) for s in adapter.last_report.skipped][1:] == [
        ("chat.json", "a", "question-2", broken), ("chat.json", "a", "question-3", broken)]
    assert adapter.last_report.skipped[0].reason.startswith("could not prepare the question: failed with ValueError")


def test_a_lone_surrogate_in_a_stored_answer_is_replaced_and_the_later_turns_answered(make_adapter):
    """A stored answer holding "\\ud800" skipped the next turn ("failed with TypeError") and lost the ones after it,
    though lone surrogates are replaced by U+FFFD wherever they come from."""
    adapter = make_adapter("models.dialogpt_large", do_sample=False)
    seen = spy_rows(adapter)
    item = current_item({"1": ["hello there"], "2": ["and then?"], "3": ["bye"]})
    item["annotations"] = [{"type": "text", "coordinates": "fine \ud800 thanks", "metadata": {
        "system": {"promptId": "1"}, "user": {"model": {"name": "dialogpt-large"}}}}]
    (collection,) = adapter.predict([item])
    assert adapter.last_report.skipped == [] and [p for p, _, _ in answers(collection)] == ["2", "3"]
    assert "fine \ufffd thanks" in seen[0][1]
