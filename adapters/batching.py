"""Group rows into micro-batches by length so padding wastes little and memory stays bounded."""
from __future__ import annotations

import math
from typing import Callable, Sequence


def plan_micro_batches(lengths: Sequence[int], max_rows: int, max_tokens: int,
                       cost: Callable[[int, int], int] | None = None,
                       min_batch_cost: int | None = None) -> list[list[int]]:
    """Return row indices grouped into micro-batches, longest rows first.

    A batch holds at most `max_rows` rows and its padded cost, `cost(rows, longest_length)` (by default
    rows * longest_length), stays within `max_tokens`; a single row over the budget still gets a batch of its own.
    Without `min_batch_cost` batches are filled in order; with it, the cuts minimise the total padded cost, each
    batch counted at least `min_batch_cost` (small matrix products run far below peak), so one long row no longer
    pads a full batch of short ones (docs/performance.md: 94% instead of 59% real tokens on mixed lengths).
    """
    cost = cost or (lambda rows, longest: rows * longest)
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    if min_batch_cost is not None:
        return _cheapest_cuts(order, lengths, max_rows, max_tokens, cost, min_batch_cost)
    batches: list[list[int]] = []
    current: list[int] = []
    for index in order:
        longest = lengths[current[0]] if current else lengths[index]
        if current and (len(current) >= max_rows or cost(len(current) + 1, longest) > max_tokens):
            batches.append(current)
            current = []
        current.append(index)
    if current:
        batches.append(current)
    return batches


def _cheapest_cuts(order: list[int], lengths: Sequence[int], max_rows: int, max_tokens: int,
                   cost: Callable[[int, int], int], min_batch_cost: int) -> list[list[int]]:
    """Split the length-sorted `order` into consecutive batches of least total cost (dynamic programming)."""
    best = [0] + [math.inf] * len(order)  # best[j]: cheapest plan of the first j sorted rows
    start_of_last = [0] * (len(order) + 1)
    for end in range(1, len(order) + 1):
        for start in range(end - 1, max(end - max_rows, 0) - 1, -1):  # longest row of order[start:end] is first
            batch_cost = cost(end - start, lengths[order[start]])
            if batch_cost > max_tokens and end - start > 1:
                break
            total = best[start] + max(batch_cost, min_batch_cost)
            if total < best[end]:
                best[end], start_of_last[end] = total, start
    batches = []
    end = len(order)
    while end:
        batches.append(order[start_of_last[end]:end])
        end = start_of_last[end]
    return batches[::-1]
