"""Micro-batch planning: every row once, budgets respected, little padding, and cheap to plan."""
import math
import random

from hypothesis import example, given, settings
from hypothesis import strategies as st

from adapters.core.batching import plan_micro_batches
from tests.conftest import examples


def test_every_row_exactly_once_and_budgets_hold():
    rng = random.Random(0)
    lengths = [rng.randint(1, 300) for _ in range(500)]
    plan = plan_micro_batches(lengths, max_rows=16, max_tokens=2000)
    assert sorted(i for batch in plan for i in batch) == list(range(500))
    for batch in plan:
        assert len(batch) <= 16
        assert len(batch) == 1 or len(batch) * max(lengths[i] for i in batch) <= 2000


def test_sorted_batches_waste_little_padding():
    rng = random.Random(1)
    lengths = [rng.randint(4, 120) for _ in range(256)]
    plan = plan_micro_batches(lengths, max_rows=32, max_tokens=10**9)
    padded = sum(len(b) * max(lengths[i] for i in b) for b in plan)
    unsorted = sum(32 * max(lengths[i:i + 32]) for i in range(0, 256, 32))
    assert padded < 1.15 * sum(lengths) < 0.75 * unsorted


def test_oversized_row_gets_its_own_batch_and_custom_cost():
    assert plan_micro_batches([5000, 3, 3], max_rows=8, max_tokens=100) == [[0], [1, 2]]
    plan = plan_micro_batches([10, 10, 10, 10], max_rows=8, max_tokens=100, cost=lambda rows, longest: rows * (longest + 40))
    assert [len(b) for b in plan] == [2, 2]


def test_cheapest_cuts_keep_long_rows_from_padding_short_ones():
    rng = random.Random(2)
    lengths = [round(4 * 30 ** rng.random()) for _ in range(96)]  # 4 to 120, mostly short
    filled = plan_micro_batches(lengths, max_rows=32, max_tokens=16384)
    cut = plan_micro_batches(lengths, max_rows=32, max_tokens=16384, min_batch_cost=512)
    assert sorted(i for batch in cut for i in batch) == list(range(96))
    padded = {name: sum(len(b) * max(lengths[i] for i in b) for b in plan) for name, plan in (("filled", filled),
                                                                                           ("cut", cut))}
    assert padded["cut"] < 0.8 * padded["filled"] and all(len(b) <= 32 for b in cut)
    assert plan_micro_batches([10] * 8, max_rows=8, max_tokens=100, min_batch_cost=512) == [list(range(8))]


def reference_cuts(lengths, max_rows, max_tokens, cost, min_batch_cost):
    """The planner's specification, by exhaustive dynamic programming over every batch (O(n x max_rows))."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    best = [0] + [math.inf] * len(order)
    for end in range(1, len(order) + 1):
        for start in range(max(end - max_rows, 0), end):
            batch = cost(end - start, lengths[order[start]])
            if batch <= max_tokens or end - start == 1:
                best[end] = min(best[end], best[start] + max(batch, min_batch_cost))
    return best[-1]


def plan_cost(plan, lengths, cost, min_batch_cost):
    return sum(max(cost(len(b), max(lengths[i] for i in b)), min_batch_cost) for b in plan)


@settings(max_examples=examples(500), deadline=None)
@given(st.lists(st.integers(1, 300) | st.integers(1, 8), max_size=60), st.integers(1, 40), st.integers(16, 4000),
       st.sampled_from([0, 1, 64, 512, 5000]), st.integers(1, 3), st.integers(0, 50))
# Always run, whatever the example count (mutation testing runs a tenth): cases a planner with an off-by-one fails.
@example([1, 8], 3, 16, 64, 1, 0)  # a batch whose padded cost is exactly max_tokens is within the cap
@example([1, 1, 18], 3, 16, 512, 1, 0)  # one row over max_tokens gets a batch of its own; the others still share one
@example([277, 5, 270, 188, 8], 6, 554, 512, 1, 0)  # starts tied in cost until a later end
@example([4, 33, 4], 2, 1748, 64, 1, 0)  # the binary search for where a newer start takes over
def test_cheapest_cuts_are_as_cheap_as_the_exhaustive_plan_within_the_caps(lengths, max_rows, max_tokens, floor,
                                                                           generations, budget):
    for cost in (lambda rows, longest: rows * longest, lambda rows, longest: rows * generations * (longest + budget)):
        plan = plan_micro_batches(lengths, max_rows, max_tokens, cost, floor)
        assert sorted(i for batch in plan for i in batch) == list(range(len(lengths)))
        for batch in plan:
            assert len(batch) == 1 or (len(batch) <= max_rows
                                       and cost(len(batch), max(lengths[i] for i in batch)) <= max_tokens)
        assert plan_cost(plan, lengths, cost, floor) == reference_cuts(lengths, max_rows, max_tokens, cost, floor)
        firsts = [lengths[batch[0]] for batch in plan]  # longest first: out of memory shows before the rest is spent
        assert firsts == sorted(firsts, reverse=True)


def test_planning_takes_n_log_n_cost_evaluations_not_n_times_the_row_cap():
    """20k rows at batch_size 1024 took 7.5 s: the exhaustive plan evaluates a cost for every (row, batch size)."""
    rng = random.Random(3)
    for lengths, max_tokens in (([round(4 * 30 ** rng.random()) for _ in range(20_000)], 16384),
                                ([rng.randint(1, 500) for _ in range(20_000)], 10**6)):
        calls = []

        def cost(rows, longest):
            calls.append(rows)
            return rows * longest
        plan_micro_batches(lengths, 1024, max_tokens, cost, 512)
        assert len(calls) <= 3 * len(lengths) * math.log2(1024)


def test_a_classifier_runs_one_long_question_apart_from_many_short_ones(make_adapter):
    """Classifiers plan with the padded-cost planner: one long question (cut to the tiny model's 128 tokens) does
    not pad 40 short ones to its length in one micro-batch (41 x 128 tokens): it runs with only as many as its
    batch's cost floor (`min_batch_tokens`, 512) holds anyway, the rest together."""
    from tests.prompt_factory import legacy_item
    adapter = make_adapter("models.distilbert_sst2", batch_size=64)
    forward, shapes = adapter.forward, []

    def recording(inputs):
        shapes.append(tuple(inputs["input_ids"].shape))
        return forward(inputs)
    adapter.forward = recording
    (collection,) = adapter.predict([legacy_item({"p": ["word " * 200] + ["hi"] * 40})])
    assert len(collection.annotations) == 41
    assert len(shapes) == 2 and sum(rows * length for rows, length in shapes) <= 2 * adapter.min_batch_tokens
