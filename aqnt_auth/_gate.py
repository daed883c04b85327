"""Admission to argon2: bounded by count, by memory and by waiting time.

argon2 is the one expensive step of a request, and the only one an attacker
can make the server repeat at will (any key id, a new wrong secret each
time).  Bounding how many run at once keeps cores free, but the requests
that wait for a turn would still pile up without bound, each costing a
verification for a client that may have left long ago: 300 wrong secrets
sent in 0.1 s kept a 2-core server busy for 24 s.  So a verification enters
the gate only while the queue in front of it is short, waits for a turn at
most a given time, and is counted in memory (argon2's ``m``) as well as in
number, so that large profiles cannot add up past a per-process budget.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import NamedTuple

__all__ = ["HashGate", "Ticket"]


class Ticket(NamedTuple):
    """A place in the queue: when to give up, and whether others were ahead."""

    deadline: float
    queued: bool


class HashGate:
    """At most *slots* verifications at once, using at most *memory_kib*
    together; at most *max_queued* waiting, none longer than *max_wait* s.

    A caller first :meth:`enter` s (``None``: the queue is full, refuse at
    once), then either :meth:`acquire` s a turn (which may time out) and
    :meth:`release` s it after the work, or :meth:`leave` s without working
    (its client went away).  Thread-safe; used from request threads and from
    the argon2 worker pool alike.
    """

    __slots__ = ("_cond", "_free_kib", "_free_slots", "_pending", "clock", "max_queued",
                 "max_wait", "memory_kib", "slots")

    def __init__(self, slots: int, memory_kib: int, max_queued: int, max_wait: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.slots = slots
        self.memory_kib = memory_kib
        self.max_queued = max_queued
        self.max_wait = max_wait
        self.clock = clock
        self._free_slots = slots
        self._free_kib = memory_kib
        self._pending = 0
        self._cond = threading.Condition(threading.Lock())

    def __repr__(self) -> str:
        return (f"HashGate(slots={self.slots}, memory_kib={self.memory_kib}, "
                f"max_queued={self.max_queued}, max_wait={self.max_wait})")

    @property
    def pending(self) -> int:
        """Verifications admitted that do not hold a turn yet."""
        return self._pending

    @property
    def running(self) -> int:
        """Verifications holding a turn."""
        return self.slots - self._free_slots

    def enter(self) -> Ticket | None:
        """Join the queue, or ``None`` if *max_queued* are already waiting."""
        with self._cond:
            waiting_for_a_turn = self._pending + self.slots - self._free_slots
            if waiting_for_a_turn >= self.slots + self.max_queued:
                return None
            self._pending += 1
            return Ticket(self.clock() + self.max_wait, waiting_for_a_turn >= self.slots)

    def acquire(self, kib: int, deadline: float) -> bool:
        """Wait for a turn with *kib* of memory until *deadline*; whether one came.

        Either way the caller no longer counts as pending.  *kib* must not
        exceed the whole budget (see :meth:`fits`).
        """
        with self._cond:
            try:
                while self._free_slots == 0 or self._free_kib < kib:
                    left = deadline - self.clock()
                    if left <= 0:
                        return False
                    self._cond.wait(left)
                self._free_slots -= 1
                self._free_kib -= kib
                return True
            finally:
                self._pending -= 1

    def release(self, kib: int) -> None:
        """Give back a turn taken with :meth:`acquire`."""
        with self._cond:
            self._free_slots += 1
            self._free_kib += kib
            self._cond.notify_all()

    def leave(self) -> None:
        """Leave the queue without taking a turn."""
        with self._cond:
            self._pending -= 1

    def fits(self, kib: int) -> bool:
        """Whether one verification needing *kib* can ever run here."""
        return kib <= self.memory_kib
