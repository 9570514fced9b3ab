"""Concurrent calls to one model share its forward passes, and each gets exactly what it would get alone.

The layer itself is tested with stand-in recipes (no model): gathering, budgets, keys, waiting, departed clients,
failures. Then through real tiny models: concurrent callers' answers, skips and reports equal their answers
alone (classifiers and generators, mixed settings), a failing batch reaches only the calls whose rows fail, and
`predict` under dtlpy's own `predict_items` from several threads at once, with only the platform's HTTP faked.
"""
from __future__ import annotations

import threading
from typing import Any, Callable

import pytest

from adapters.core.batching import plan_micro_batches
from adapters.core.dynamic_batching import (
    GATHERED_MICRO_BATCHES,
    CallAbandoned,
    DynamicBatcher,
    Recipe,
    abandoned_when,
)
from adapters.core.errors import ModelFailure
from adapters.core.settings import resolve_configuration
from tests.prompt_factory import answers, current_item, legacy_item

TIMEOUT = 60


# ----- the layer, with stand-in recipes -----

class Model:
    """A stand-in model: records each micro-batch it runs (rows' first ids), holds them while `gate` is closed,
    fails those `fails` refuses, and answers each row with its first id times ten."""

    def __init__(self, fails: Callable[[list[int]], bool] = lambda ids: False):
        self.batches: list[list[int]] = []
        self.gate = threading.Event()
        self.gate.set()
        self.running = threading.Event()
        self.fails = fails

    def recipe(self, key: Any = "same", max_rows: int = 4, max_tokens: int = 1000, wait: float = 0.0) -> Recipe:
        def run(rows):
            ids = [row["input_ids"][0] for row in rows]
            self.batches.append(ids)
            self.running.set()
            assert self.gate.wait(TIMEOUT)
            if self.fails(ids):
                raise RuntimeError(f"cannot run {sorted(ids)}")
            return [10 * i for i in ids]
        return Recipe(key=key, max_rows=max_rows, max_tokens=max_tokens, wait_seconds=wait,
                      plan=lambda lengths: plan_micro_batches(lengths, max_rows, max_tokens), run=run)


def rows_of(*ids: int, length: int = 1) -> list[dict]:
    return [{"input_ids": [i] * length} for i in ids]


class Caller(threading.Thread):
    """One call from its own thread; `result` is its outputs or the exception it raised."""

    def __init__(self, batcher: DynamicBatcher, rows: list[dict], recipe: Recipe, inside: bool = False,
                 abandoned: Callable[[], bool] | None = None):
        super().__init__(daemon=True)
        self.batcher, self.rows, self.recipe, self.inside, self.abandoned = batcher, rows, recipe, inside, abandoned
        self.result: Any = None

    def run(self) -> None:
        try:
            with abandoned_when(self.abandoned):
                self.result = self.batcher.run(self.rows, [len(r["input_ids"]) for r in self.rows], self.recipe)
        except Exception as error:  # noqa: BLE001 - the test reads it
            self.result = error

    def answer(self) -> Any:
        self.join(TIMEOUT)
        assert not self.is_alive(), "the call never returned"
        return self.result


def queued(batcher: DynamicBatcher, count: int) -> None:
    """Wait until `count` calls wait in the batcher's queue."""
    for _ in range(TIMEOUT * 100):
        with batcher._lock:
            if len(batcher._queue) == count:
                return
        threading.Event().wait(0.01)
    raise AssertionError(f"{count} calls never queued")


def busy_with_first_call(batcher: DynamicBatcher, model: Model, recipe: Recipe) -> Caller:
    """A first call whose micro-batch is running, held at the model's gate."""
    model.gate.clear()
    first = Caller(batcher, rows_of(0), recipe)
    first.start()
    assert model.running.wait(TIMEOUT)
    return first


def test_calls_that_come_while_the_model_is_busy_share_its_next_forward_passes_and_get_their_own_outputs():
    batcher, model = DynamicBatcher(), Model()
    recipe = model.recipe(max_rows=4)
    first = busy_with_first_call(batcher, model, recipe)
    callers = [Caller(batcher, rows_of(*ids), recipe) for ids in ([1, 2], [3], [4, 5, 6])]
    for index, caller in enumerate(callers):
        caller.start()
        queued(batcher, index + 1)  # arrival order is the order they are started in
    model.gate.set()
    assert first.answer() == [0]
    assert [c.answer() for c in callers] == [[10, 20], [30], [40, 50, 60]]
    assert model.batches[0] == [0]
    assert sorted(i for batch in model.batches[1:] for i in batch) == [1, 2, 3, 4, 5, 6]
    assert all(len(batch) <= 4 for batch in model.batches)  # one micro-batch's budget still holds
    assert len(model.batches) == 3  # 6 rows gathered at once: two micro-batches, not one per call


def test_a_gather_takes_whole_calls_in_arrival_order_up_to_its_budget():
    batcher, model = DynamicBatcher(), Model()
    recipe = model.recipe(max_rows=2)
    first = busy_with_first_call(batcher, model, recipe)
    budget = GATHERED_MICRO_BATCHES * 2
    callers = [Caller(batcher, rows_of(10 + i, length=3 if i == budget else 1), recipe) for i in range(budget + 1)]
    for index, caller in enumerate(callers):
        caller.start()
        queued(batcher, index + 1)
    model.gate.set()
    assert [c.answer() for c in callers] == [[100 + 10 * i] for i in range(budget + 1)]
    first.answer()
    gathered = model.batches[1:1 + GATHERED_MICRO_BATCHES]
    assert sorted(i for batch in gathered for i in batch) == list(range(10, 10 + budget))  # the first `budget`
    assert model.batches[-1] == [10 + budget]  # the last to come runs in the next gather (though the longest)


def test_calls_with_different_keys_never_share_a_forward_pass():
    batcher, model = DynamicBatcher(), Model()
    first = busy_with_first_call(batcher, model, model.recipe(key="a"))
    callers = [Caller(batcher, rows_of(i), model.recipe(key="ab"[i % 2])) for i in range(1, 5)]
    for index, caller in enumerate(callers):
        caller.start()
        queued(batcher, index + 1)
    model.gate.set()
    assert [c.answer() for c in callers] == [[10], [20], [30], [40]]
    first.answer()
    by_key = {1: "b", 2: "a", 3: "b", 4: "a"}
    assert all(len({by_key[i] for i in batch if i}) <= 1 for batch in model.batches)
    assert sorted(map(sorted, model.batches[1:])) == [[1, 3], [2, 4]]  # each key's calls together


def test_a_lone_call_never_waits_for_others():
    """With a wait of ten minutes, a call alone runs at once (nothing is on its way to join it)."""
    batcher, model = DynamicBatcher(), Model()
    caller = Caller(batcher, rows_of(1), model.recipe(wait=600.0))
    caller.start()
    assert caller.answer() == [10]


def test_rows_wait_for_a_call_on_its_way_and_run_with_it():
    """A call inside `calling()` that has not queued its rows yet is on its way: the gather waits for it (here up
    to ten minutes) and runs both calls together."""
    batcher, model = DynamicBatcher(), Model()
    recipe = model.recipe(max_rows=4, wait=600.0)
    preparing, release = threading.Event(), threading.Event()

    class Preparing(Caller):
        def run(self) -> None:
            with batcher.calling():
                preparing.set()
                assert release.wait(TIMEOUT)
                super().run()

    slow = Preparing(batcher, rows_of(2), recipe)
    slow.start()
    assert preparing.wait(TIMEOUT)
    ready = Caller(batcher, rows_of(1), recipe)
    ready.start()
    queued(batcher, 1)
    assert model.batches == []  # waiting for the call on its way
    release.set()
    assert (ready.answer(), slow.answer()) == ([10], [20])
    assert [sorted(batch) for batch in model.batches] == [[1, 2]]


def test_rows_wait_for_calls_on_their_way_at_most_the_wait():
    batcher, model = DynamicBatcher(), Model()
    recipe = model.recipe(max_rows=4, wait=0.05)
    release = threading.Event()
    entered = threading.Event()

    def on_its_way() -> None:
        with batcher.calling():
            entered.set()
            release.wait(TIMEOUT)

    thread = threading.Thread(target=on_its_way, daemon=True)
    thread.start()
    assert entered.wait(TIMEOUT)
    caller = Caller(batcher, rows_of(1), recipe)
    caller.start()
    assert caller.answer() == [10]  # ran once the wait passed, without the call that never queued
    release.set()
    thread.join(TIMEOUT)


def test_a_full_micro_batch_does_not_wait_for_calls_on_their_way():
    batcher, model = DynamicBatcher(), Model()
    recipe = model.recipe(max_rows=2, wait=600.0)
    release, entered = threading.Event(), threading.Event()

    def on_its_way() -> None:
        with batcher.calling():
            entered.set()
            release.wait(TIMEOUT)

    thread = threading.Thread(target=on_its_way, daemon=True)
    thread.start()
    assert entered.wait(TIMEOUT)
    caller = Caller(batcher, rows_of(1, 2), recipe)
    caller.start()
    assert caller.answer() == [10, 20]
    release.set()
    thread.join(TIMEOUT)


def test_a_call_whose_client_left_before_its_turn_is_dropped_unrun():
    batcher, model = DynamicBatcher(), Model()
    recipe = model.recipe()
    first = busy_with_first_call(batcher, model, recipe)
    gone = threading.Event()
    quitter = Caller(batcher, rows_of(7), recipe, abandoned=gone.is_set)
    stayer = Caller(batcher, rows_of(8), recipe)
    quitter.start()
    queued(batcher, 1)
    stayer.start()
    queued(batcher, 2)
    gone.set()
    model.gate.set()
    assert isinstance(quitter.answer(), CallAbandoned)
    assert stayer.answer() == [80] and first.answer() == [0]
    assert 7 not in [i for batch in model.batches for i in batch]


def test_a_failing_micro_batch_shared_by_calls_fails_only_the_call_whose_rows_fail():
    """The shared micro-batch fails; each call's rows run again alone, and only the call with the row the model
    cannot run gets the error (its own message); the others are answered."""
    batcher, model = DynamicBatcher(), Model(fails=lambda ids: 13 in ids)
    recipe = model.recipe(max_rows=8)
    first = busy_with_first_call(batcher, model, recipe)
    callers = [Caller(batcher, rows_of(*ids), recipe) for ids in ([1, 2], [13, 3], [4])]
    for index, caller in enumerate(callers):
        caller.start()
        queued(batcher, index + 1)
    model.gate.set()
    good, bad, other = (c.answer() for c in callers)
    assert (good, other) == ([10, 20], [40])
    assert isinstance(bad, RuntimeError) and str(bad) == "cannot run [3, 13]"
    assert first.answer() == [0]
    assert sorted(model.batches[1]) == [1, 2, 3, 4, 13]  # they did share the failing pass


def test_a_micro_batch_that_fails_only_when_shared_answers_every_call():
    """A failure of the shared pass itself (e.g. out of memory for the combined batch) costs no call its answer."""
    batcher, model = DynamicBatcher(), Model(fails=lambda ids: len(ids) > 2)
    recipe = model.recipe(max_rows=8)
    first = busy_with_first_call(batcher, model, recipe)
    callers = [Caller(batcher, rows_of(*ids), recipe) for ids in ([1, 2], [3], [4])]
    for index, caller in enumerate(callers):
        caller.start()
        queued(batcher, index + 1)
    model.gate.set()
    assert [c.answer() for c in callers] == [[10, 20], [30], [40]]
    first.answer()


def test_a_call_alone_in_a_failing_micro_batch_gets_the_error_and_its_later_rows_do_not_run():
    batcher, model = DynamicBatcher(), Model(fails=lambda ids: 9 in ids)
    recipe = model.recipe(max_rows=1)
    caller = Caller(batcher, [{"input_ids": [9, 9, 9]}, *rows_of(1, 2)], recipe)
    caller.start()
    assert isinstance(caller.answer(), RuntimeError)
    assert model.batches == [[9]]  # longest first; once it failed, the call's other rows were not run


def test_many_threads_each_get_exactly_their_own_outputs():
    batcher, model = DynamicBatcher(), Model()
    recipe = model.recipe(max_rows=16, wait=0.002)
    callers = [Caller(batcher, rows_of(*range(100 * i, 100 * i + 1 + i % 5), length=1 + i % 7), recipe)
               for i in range(1, 80)]
    for caller in callers:
        caller.start()
    for i, caller in enumerate(callers, start=1):
        assert caller.answer() == [10 * j for j in range(100 * i, 100 * i + 1 + i % 5)]
    assert max(len(batch) for batch in model.batches) > 1  # some forward passes were shared


# ----- through the models -----

def sharp(tiny_models, sharp_classifiers, module: str, **configuration):
    """An adapter whose answers differ per text: sharpened classifiers, greedy generators."""
    import importlib

    from tests.conftest import FAST_SETTINGS, MODULE_MODELS
    path = sharp_classifiers.get(module) or tiny_models[MODULE_MODELS[module]]
    settings = {} if module in sharp_classifiers else {"do_sample": False}
    return importlib.import_module(module).HuggingAdapter({"model_path": str(path), **FAST_SETTINGS.get(module, {}),
                                                           **settings, **configuration})


def per_call(adapter, overrides: dict) -> dict | None:
    """A per-call configuration, validated as the server's `resolve` does (None: the model's own)."""
    if not overrides:
        return None
    return resolve_configuration(adapter.configuration["module_name"], type(adapter).settings,
                                 {**adapter.configuration, **overrides})


def predict(adapter, items, configuration):
    if configuration is None:
        return adapter.predict_with_report(items)
    with adapter.configured(configuration):
        return adapter.predict_with_report(items)


def outcome(collections, report) -> tuple:
    """What a call gave back: each answer (prompt, text, confidence, details) and its report."""
    given = [[(prompt, text, confidence) for prompt, text, confidence in answers(c)] for c in collections]
    details = [[a.metadata["user"]["model_output"] for a in c.annotations] for c in collections]
    reported = [(s.item, s.prompt_key, s.element_key, s.reason) for s in (*report.failed_items, *report.skipped)]
    return given, details, reported, dict(report.unanswered)


def assert_same_outcome(together: tuple, alone: tuple) -> None:
    (given, details, reported, unanswered), (given_alone, details_alone, reported_alone, unanswered_alone) = \
        together, alone
    assert (reported, unanswered) == (reported_alone, unanswered_alone)
    assert [[(p, t) for p, t, _ in item] for item in given] == [[(p, t) for p, t, _ in item] for item in given_alone]
    for item, item_alone in zip(given, given_alone):
        for (_, _, confidence), (_, _, confidence_alone) in zip(item, item_alone):
            assert confidence == pytest.approx(confidence_alone, abs=1e-4)  # padding changes float rounding only
    for item, item_alone in zip(details, details_alone):
        for output, output_alone in zip(item, item_alone):
            assert output.keys() == output_alone.keys()
            for texts in ("label", "labels", "generations"):
                if texts in output:
                    strip = (lambda g: [x["text"] for x in g]) if texts == "generations" else (lambda x: x)
                    assert strip(output[texts]) == strip(output_alone[texts])


class counting_passes:
    """Record the rows of every forward pass of `adapter` from now on (`forward` is the original)."""

    def __init__(self, adapter):
        self.rows: list[int] = []
        self.forward = adapter.forward
        adapter.forward = lambda inputs: (self.rows.append(inputs["input_ids"].shape[0]), self.forward(inputs))[1]


def run_concurrently(adapter, calls: list[tuple[list, dict | None]]) -> tuple[list, list[int]]:
    """Each call from its own thread, the later ones queued while the first one's first forward pass is held, so
    that they share forward passes. Returns each call's outcome and the rows of every forward pass."""
    real_forward, gate, rows = adapter.forward, threading.Event(), []

    def held(inputs):
        rows.append(inputs["input_ids"].shape[0])
        assert gate.wait(TIMEOUT)
        return real_forward(inputs)

    adapter.forward = held
    results: list[Any] = [None] * len(calls)

    def call(index: int) -> None:
        try:
            results[index] = outcome(*predict(adapter, *calls[index]))
        except Exception as error:  # noqa: BLE001 - the test reads it
            results[index] = error

    threads = [threading.Thread(target=call, args=(i,), daemon=True) for i in range(len(calls))]
    threads[0].start()
    for _ in range(TIMEOUT * 100):
        if rows:
            break
        threading.Event().wait(0.01)
    for index, thread in enumerate(threads[1:], start=1):
        thread.start()
        queued(adapter.batcher, index)
    gate.set()
    for thread in threads:
        thread.join(TIMEOUT)
        assert not thread.is_alive(), "a call never returned"
    adapter.forward = real_forward
    return results, rows


IMAGE = {"mimetype": "image/png", "value": "http://example.com/a.png"}


def mixed_calls(module: str, adapter) -> list[tuple[list, dict | None]]:
    """Calls of one module with different texts, skips and settings; the first two share the model's settings."""
    if module == "models.distilbert_sst2":
        return [([legacy_item({"p": ["terrible", IMAGE, "a fine and long enough review of the film"]})], None),
                ([current_item({"1": ["Great product, works exactly as described."], "2": ["ok"]})], None),
                ([{"name": "broken"}, current_item({"1": ["Who won the game last night?"]})], None),
                ([legacy_item({"p": ["hi there", "so boring"]})], per_call(adapter, {"batch_size": 1}))]
    if module == "models.bart_large_mnli":
        labels = {"1": {"candidate_labels": ["sports", "politics", "cooking"]}}
        return [([current_item({"1": ["The match went to extra time."]}, labels)], None),
                ([current_item({"1": ["Parliament passed the budget.", IMAGE]}, labels)], None),
                ([current_item({"1": ["Add the flour slowly."]}, {"1": {"candidate_labels": ["food", "travel"]}})],
                 None),
                ([current_item({"1": ["The match went to extra time."]}, labels)],
                 per_call(adapter, {"multi_label": True}))]
    if module == "models.t5_email":
        return [([legacy_item({"p": ["please backup your work", "meeting moved to friday"]})], None),
                ([current_item({"1": ["the invoice is attached"], "2": [IMAGE]})], None),
                ([legacy_item({"p": ["see you at the airport"]})], None),
                ([legacy_item({"p": ["we will have a system update"]})], per_call(adapter, {"token_count": 3})),
                ([legacy_item({"p": ["lunch is on me today"]})], per_call(adapter, {"n_gen": 2, "num_beams": 2}))]
    return [([current_item({"1": ["hello there"], "2": ["how are you?"], "3": ["bye now"]})], None),
            ([legacy_item({"a": ["what is the weather like?", "and tomorrow?"], "b": ["thanks"]})], None),
            ([current_item({"1": ["tell me a joke"]})], per_call(adapter, {"max_new_tokens": 3})),
            ([legacy_item({"a": ["good morning", IMAGE]})], None)]


@pytest.mark.parametrize("module", ["models.distilbert_sst2", "models.bart_large_mnli", "models.t5_email",
                                    "models.dialogpt_large"])
def test_concurrent_callers_get_what_they_get_alone(tiny_models, sharp_classifiers, module):
    """Answers (text, confidence, details), skips, failed items and unanswered items of each concurrent call equal
    that call's alone, with mixed per-call settings; and the calls did share forward passes."""
    adapter = sharp(tiny_models, sharp_classifiers, module)
    before = dict(adapter.configuration)
    calls = mixed_calls(module, adapter)
    alone, passes_alone = [], counting_passes(adapter)
    for c in calls:
        alone.append(outcome(*predict(adapter, *c)))
    adapter.forward = passes_alone.forward
    together, rows = run_concurrently(adapter, calls)
    for result, expected in zip(together, alone):
        assert not isinstance(result, Exception), result
        assert_same_outcome(result, expected)
    assert len(rows) < len(passes_alone.rows)  # some forward passes ran rows of several calls
    given = {(t, round(c, 4)) for result in alone for item in result[0] for _, t, c in item}
    assert len(given) > 3  # the answers differ between calls: a mix-up cannot pass
    assert adapter.configuration == before  # no call's settings leaked into the model's


def test_sampling_with_a_fixed_seed_runs_alone_and_answers_as_it_does_alone(make_adapter):
    adapter = make_adapter("models.t5_email", do_sample=True, temperature=1.5, seed=11)
    calls = [([legacy_item({"p": ["please backup your work", "see you"]})], None),
             ([legacy_item({"p": ["the invoice is attached"]})], None),
             ([legacy_item({"p": ["lunch on friday", "bring a friend"]})], None)]
    alone = [outcome(*predict(adapter, *c)) for c in calls]
    together, rows = run_concurrently(adapter, calls)
    for result, expected in zip(together, alone):
        assert_same_outcome(result, expected)
    assert sorted(rows) == [1, 2, 2]  # each call's rows in passes of their own


def test_rows_run_with_their_own_calls_settings_whichever_thread_runs_them(make_adapter):
    """The thread that runs a gather may belong to another call with settings of its own: here a call with a
    one-token budget whose client left runs the next call's rows, which still get their own budget."""
    adapter = make_adapter("models.dialogpt_large", do_sample=False)
    items = [current_item({"1": ["please backup your work"]})]
    expected = outcome(*adapter.predict_with_report(items))
    assert expected[1][0][0]["generated_tokens"] > 1  # a one-token budget would change the answer
    real_forward, gate, gone = adapter.forward, threading.Event(), threading.Event()
    adapter.forward = lambda inputs: (gate.wait(TIMEOUT), real_forward(inputs))[1]
    results: dict[str, Any] = {}

    def call(name: str, configuration: dict | None, abandoned=None) -> None:
        try:
            with abandoned_when(abandoned):
                results[name] = outcome(*predict(adapter, items, configuration))
        except Exception as error:  # noqa: BLE001 - the test reads it
            results[name] = error

    threads = [threading.Thread(target=call, args=("first", None), daemon=True),
               threading.Thread(target=call, args=("quitter", per_call(adapter, {"max_new_tokens": 1}), gone.is_set),
                                daemon=True),
               threading.Thread(target=call, args=("stayer", None), daemon=True)]
    threads[0].start()
    for _ in range(TIMEOUT * 100):  # until the first call's forward pass is held
        if adapter.batcher._leading and not adapter.batcher._queue:
            break
        threading.Event().wait(0.01)
    for index, thread in enumerate(threads[1:], start=1):
        thread.start()
        queued(adapter.batcher, index)
    gone.set()  # the quitter's thread is handed the model next, drops its own call and runs the stayer's
    gate.set()
    for thread in threads:
        thread.join(TIMEOUT)
    assert isinstance(results["quitter"], CallAbandoned)
    assert_same_outcome(results["stayer"], expected)
    assert_same_outcome(results["first"], expected)


def test_a_failing_batch_fails_only_its_callers_and_tells_each_why(make_adapter):
    """A call whose text the model cannot run fails with the model's error; the calls that shared the failing
    forward pass with it are answered (their rows run again without it), as are the calls of other passes."""
    adapter = make_adapter("models.distilbert_sst2")
    forward = adapter.forward

    def fragile(inputs):  # the model cannot run rows past 20 tokens (nor a batch padded to them)
        if inputs["input_ids"].shape[1] > 20:
            raise RuntimeError("device-side assert triggered")
        return forward(inputs)

    calls = [([legacy_item({"p": ["fine"]})], None),
             ([legacy_item({"p": ["a lovely day"]})], None),
             ([legacy_item({"p": ["word " * 30]})], None),
             ([legacy_item({"p": ["good", "great"]})], None),
             ([legacy_item({"p": ["later"]})], per_call(adapter, {"batch_size": 1}))]
    alone = {i: outcome(*predict(adapter, *c)) for i, c in enumerate(calls) if i != 2}
    adapter.forward = fragile
    together, rows = run_concurrently(adapter, calls)
    adapter.forward = forward
    failed = together[2]
    assert isinstance(failed, ModelFailure)
    assert str(failed) == ("distilbert-sst2 failed on a micro-batch of 1 rows: RuntimeError: device-side assert "
                           "triggered")
    for index, expected in alone.items():
        assert_same_outcome(together[index], expected)
    assert rows[1] == 4  # the long text shared its (failing) pass with two other calls' rows


def test_concurrent_calls_each_read_their_own_last_report(make_adapter):
    adapter = make_adapter("models.distilbert_sst2")
    barrier, seen = threading.Barrier(8), {}

    def call(index: int) -> None:
        barrier.wait(TIMEOUT)
        adapter.predict([legacy_item({f"p{index}": ["text", {"mimetype": "image/png", "value": str(index)}]})])
        seen[index] = [(s.prompt_key, s.element_key) for s in adapter.last_report.skipped]

    threads = [threading.Thread(target=call, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(TIMEOUT)
    assert seen == {i: [(f"p{i}", "question-2")] for i in range(8)}


# ----- on the platform: dtlpy's predict_items from several threads -----

def test_predict_items_from_several_threads_answers_each_execution_alone(tiny_models, sharp_classifiers, tmp_path,
                                                                         monkeypatch):
    """Executions running side by side on one replica (`runtime.concurrency` > 1) call dtlpy's `predict_items` from
    their own threads; each uploads exactly its own items' answers (as answered one at a time) and fails only for
    its own unanswerable item."""
    from adapters.dataloop.execution import ItemsNotAnswered
    from adapters.dataloop.model_adapter import ModelAdapter
    from tests.fake_platform import FakePlatform, file_item, linked_item
    from tests.test_base_adapter import offline_model

    platform = FakePlatform().install(monkeypatch)
    configuration = {"module_name": "models.distilbert_sst2",
                     "model_path": str(sharp_classifiers["models.distilbert_sst2"])}
    adapter = ModelAdapter(model_entity=offline_model("my-model", configuration))
    texts = ["terrible", "a lovely day at the beach", "ok", "Who won the game?", "so boring and long", "fine",
             "The staff were friendly.", "never again"]
    executions = []
    for e in range(6):
        items = [platform.add_item(linked_item(tmp_path, f"e{e}-{i}.json",
                                               current_item({"1": [texts[(e + i) % len(texts)]]}), f"item-{e}-{i}"))
                 for i in range(1 + e % 3)]
        if e == 4:
            items.append(platform.add_item(file_item(tmp_path, "/photo.jpg", b"\xff", "item-photo", "image/jpeg")))
        executions.append(items)
    sequential = {}
    for items in executions:
        for item in items:
            if item.id != "item-photo":
                _, annotations = adapter.predict_items([item])
                sequential[item.id] = [(a.coordinates, a.metadata["user"]["model"]["confidence"]) for a in annotations]
    platform.annotations = {item_id: [] for item_id in platform.annotations}

    barrier, raised = threading.Barrier(len(executions)), {}

    def execution(index: int) -> None:
        barrier.wait(TIMEOUT)
        try:
            adapter.predict_items(executions[index])
        except Exception as error:  # noqa: BLE001 - the test reads it
            raised[index] = error

    threads = [threading.Thread(target=execution, args=(i,)) for i in range(len(executions))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(TIMEOUT)
    assert list(raised) == [4] and isinstance(raised[4], ItemsNotAnswered)
    assert "1 of 3 items were not answered" in str(raised[4]) and "item-photo" in str(raised[4])
    for item_id, expected in sequential.items():
        stored = [(a["coordinates"], a["metadata"]["user"]["model"]["confidence"]) for a in platform.annotations[item_id]]
        assert [text for text, _ in stored] == [text for text, _ in expected], item_id
        assert [c for _, c in stored] == pytest.approx([c for _, c in expected], abs=1e-4)
