"""Group rows into micro-batches by length so padding wastes little and memory stays bounded."""
from __future__ import annotations

from typing import Callable, Sequence


def plan_micro_batches(lengths: Sequence[int], max_rows: int, max_tokens: int,
                       cost: Callable[[int, int], int] | None = None) -> list[list[int]]:
    """Return row indices grouped into micro-batches, longest rows first.

    A batch holds at most `max_rows` rows and its padded cost, `cost(rows, longest_length)` (by default
    rows * longest_length), stays within `max_tokens`; a single row over the budget still gets a batch of its own.
    """
    cost = cost or (lambda rows, longest: rows * longest)
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
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
