"""Micro-batch planning: every row once, budgets respected, little padding."""
import random

from adapters.batching import plan_micro_batches


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
