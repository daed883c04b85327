"""Shared timing helpers: interleaved repetitions, medians, a printed table."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence


def per_call_us(func: Callable[[], object], number: int) -> float:
    """Microseconds per call of *func* over *number* calls."""
    start = time.perf_counter_ns()
    for _ in range(number):
        func()
    return (time.perf_counter_ns() - start) / number / 1000


def interleaved_medians(
    variants: Sequence[tuple[str, Callable[[], object], int]], repeats: int
) -> dict[str, float]:
    """Median µs per call of each variant, measured round-robin.

    Each repetition runs every variant once, in turn, so drift in machine
    load hits all of them alike instead of whichever ran last.
    """
    samples: dict[str, list[float]] = {name: [] for name, _, _ in variants}
    for name, func, number in variants:  # warm-up: caches, imports, branch predictors
        per_call_us(func, max(1, number // 10))
    for _ in range(repeats):
        for name, func, number in variants:
            samples[name].append(per_call_us(func, number))
    return {name: statistics.median(values) for name, values in samples.items()}


def print_table(title: str, rows: Sequence[tuple[str, ...]]) -> None:
    """Print a table whose first row is the header: what, median, notes."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    print(f"\n{title}")
    for i, row in enumerate(rows):
        print("  " + "  ".join(cell.ljust(widths[j]) for j, cell in enumerate(row)).rstrip())
        if i == 0:
            print("  " + "  ".join("-" * w for w in widths))
