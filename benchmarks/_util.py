"""Shared benchmark helpers: interleaved repetitions, medians, a printed table, a
counting hasher."""

from __future__ import annotations

import asyncio
import gc
import os
import re
import statistics
import subprocess
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from typing import Any

from aqnt_auth import Argon2Hasher


def per_call_us(func: Callable[[], object], number: int) -> float:
    """Microseconds per call of *func* over *number* calls."""
    start = time.perf_counter_ns()
    for _ in range(number):
        func()
    return (time.perf_counter_ns() - start) / number / 1000


def callgrind_instructions(argv: Sequence[str], seed: int) -> int:
    """The instructions ``valgrind --tool=callgrind`` counts in the command
    *argv* (a child process), run with ``PYTHONHASHSEED`` *seed*."""
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "callgrind.out")
        subprocess.run(
            ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", *argv],
            check=True, capture_output=True, env={**os.environ, "PYTHONHASHSEED": str(seed)})
        with open(out, encoding="utf-8") as f:
            text = f.read()
    found = re.search(r"^summary:\s+(\d+)", text, re.MULTILINE) or re.search(
        r"^totals:\s+(\d+)", text, re.MULTILINE)
    if found is None:
        raise RuntimeError("no instruction total in the callgrind output")
    return int(found.group(1))


def interleaved_medians(
    variants: Sequence[tuple[str, Callable[[], object], int]], repeats: int
) -> dict[str, float]:
    """Median µs per call of each variant, measured round-robin.

    Each repetition runs every variant once, in turn, so drift in machine
    load hits all of them alike instead of whichever ran last.
    """
    samples: dict[str, list[float]] = {name: [] for name, _, _ in variants}
    for _name, func, number in variants:  # warm-up: caches, imports, branch predictors
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


def paired_samples(calls: dict[str, Callable[[], object]], rounds: int, number: int,
                   passes: int = 3) -> dict[str, list[float]]:
    """µs per request of every variant, one sample per round.

    A round runs every variant *passes* times, interleaved, in an order
    rotated from round to round, and keeps each variant's fastest pass: load
    from elsewhere on the machine only ever adds time, so the fastest of a
    few adjacent passes is the least disturbed.  The garbage collector is
    paused while a variant runs, as :mod:`timeit` does.
    """
    names = list(calls)
    samples: dict[str, list[float]] = {name: [] for name in names}
    for name in names:  # warm-up
        per_call_us(calls[name], number)
    for i in range(rounds):
        best = dict.fromkeys(names, float("inf"))
        for p in range(passes):
            shift = (i + p) % len(names)
            for name in names[shift:] + names[:shift]:
                gc.collect()
                gc.disable()
                try:
                    best[name] = min(best[name], per_call_us(calls[name], number))
                finally:
                    gc.enable()
        for name in names:
            samples[name].append(best[name])
    return samples


def asgi_batch(loop: asyncio.AbstractEventLoop, app: Callable[..., Awaitable[None]],
               make_scope: Callable[[], MutableMapping[str, Any]], batch: int
               ) -> Callable[[], object]:
    """A callable serving *batch* requests through the ASGI *app* on *loop*,
    each with a fresh scope from *make_scope*, as a server makes one; it
    raises unless every answer was a 200."""
    statuses: list[int] = []
    pending: list[bool] = []  # the request's body not yet received

    async def receive() -> dict[str, Any]:
        # As a server does: the body once, then nothing until the client
        # leaves (an app watching for http.disconnect waits, as it would).
        if pending:
            pending.clear()
            return {"type": "http.request", "body": b"", "more_body": False}
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    async def send(message: MutableMapping[str, Any]) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    async def run() -> None:
        for _ in range(batch):
            pending.append(True)
            await app(make_scope(), receive, send)
        if set(statuses) != {200}:
            raise RuntimeError(f"unexpected statuses {set(statuses)}")
        statuses.clear()

    return lambda: loop.run_until_complete(run())


class CountingHasher(Argon2Hasher):
    """argon2id that counts verifications and the most that ran at once."""

    def __init__(self, profile: str = "owasp") -> None:
        super().__init__(profile)
        self.calls = 0
        self.running = 0
        self.peak = 0
        self._lock = threading.Lock()

    def verify(self, stored: str, secret: str) -> bool:
        with self._lock:
            self.calls += 1
            self.running += 1
            self.peak = max(self.peak, self.running)
        try:
            return super().verify(stored, secret)
        finally:
            with self._lock:
                self.running -= 1
