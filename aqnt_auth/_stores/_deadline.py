"""Client-side deadlines for database calls.

A server-side ``statement_timeout`` cannot help when the network swallows
packets: the query never reaches the server, or the answer never comes
back, and a driver waiting on its socket waits for ever.  :class:`Watchdog`
bounds such waits from outside: when an operation outlives its deadline it
shuts the connection's socket down, so the waiting driver (sync or async)
sees the connection drop at once and raises, and the pool discards the
connection.

The watchdog holds a duplicate of the socket's descriptor while an operation
runs, so a descriptor closed and reused meanwhile can never be hit by
mistake.  One daemon thread serves a whole process; arming a deadline
never wakes it (it checks in at least as often as the shortest timeout).

:func:`connect_within` bounds connection attempts the same way (libpq
rounds every connect timeout up to 2 seconds).
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import os
import socket
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

__all__ = ["WATCHDOG", "ConnectTimeout", "Deadline", "Watchdog", "connect_within",
           "shutdown_socket"]

T = TypeVar("T")


def shutdown_socket(fileno: int) -> None:
    """Shut a socket down in both directions, waking every thread that waits on it.

    Unlike ``close()``, this leaves the descriptor valid, so the owner still
    closes it normally.
    """
    try:
        sock = socket.socket(fileno=os.dup(fileno))
    except OSError:
        return
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass  # already shut down, or not connected: nothing left to wake
    finally:
        sock.close()


class Deadline:
    """One guarded operation; :attr:`fired` tells whether its time ran out."""

    __slots__ = ("at", "done", "fd", "fired", "seq")

    def __init__(self, at: float, seq: int, fd: int) -> None:
        self.at = at
        self.seq = seq
        self.fd = fd
        self.done = False
        self.fired = False

    def __lt__(self, other: Deadline) -> bool:
        return (self.at, self.seq) < (other.at, other.seq)


class Watchdog:
    """Shuts down the sockets of operations that run past their deadline."""

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._init_state()
        ref = weakref.ref(self)
        os.register_at_fork(after_in_child=lambda: _reset_after_fork(ref))

    def _init_state(self) -> None:
        self._heap: list[Deadline] = []
        self._cond = threading.Condition(threading.Lock())
        self._seq = itertools.count()
        self._thread: threading.Thread | None = None
        # The shortest timeout armed so far: the longest the thread sleeps.
        self._tick = 1.0

    def __len__(self) -> int:
        """Operations being watched."""
        with self._cond:
            return sum(not d.done for d in self._heap)

    @contextmanager
    def guard(self, fileno: int | None, timeout: float) -> Iterator[Deadline | None]:
        """Watch the operation in the ``with`` block; ``None`` when there is no socket."""
        if fileno is None:
            yield None
            return
        deadline = self.arm(fileno, timeout)
        try:
            yield deadline
        finally:
            self.disarm(deadline)

    def arm(self, fileno: int, timeout: float) -> Deadline:
        """Start watching; the caller must :meth:`disarm` when the operation ends."""
        deadline = Deadline(self._clock() + timeout, 0, os.dup(fileno))
        with self._cond:
            deadline.seq = next(self._seq)
            heapq.heappush(self._heap, deadline)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="aqnt-sql-watchdog", daemon=True
                )
                self._thread.start()
            if timeout < self._tick:
                self._tick = timeout
                self._cond.notify()
            # Otherwise no wake-up (a thread switch per database call): the
            # thread never sleeps longer than the shortest timeout, so it is
            # up again before this deadline can pass.
        return deadline

    def disarm(self, deadline: Deadline) -> None:
        with self._cond:
            if not deadline.done:
                deadline.done = True
                os.close(deadline.fd)

    def _run(self) -> None:
        cond = self._cond
        with cond:
            while True:
                heap = self._heap
                while heap and heap[0].done:
                    heapq.heappop(heap)
                if not heap:
                    cond.wait(self._tick)
                    continue
                head = heap[0]
                wait = head.at - self._clock()
                if wait > 0:
                    cond.wait(min(wait, self._tick))
                    continue
                heapq.heappop(heap)
                head.done = head.fired = True
                shutdown_socket(head.fd)
                os.close(head.fd)


def _reset_after_fork(ref: weakref.ref[Watchdog]) -> None:
    watchdog = ref()
    if watchdog is None:
        return
    # The watcher thread stayed in the parent with the operations it watched.
    for deadline in watchdog._heap:
        if not deadline.done:
            os.close(deadline.fd)
    watchdog._init_state()


#: The process-wide watchdog.
WATCHDOG = Watchdog()


class ConnectTimeout(TimeoutError):
    """A connection attempt did not finish within its deadline."""


def connect_within(connect: Callable[[], T], timeout: float, close: Callable[[T], None]) -> T:
    """Return ``connect()``, or raise :class:`ConnectTimeout` after *timeout* seconds.

    The attempt runs in a helper thread; one that is given up on finishes in
    the background (the driver's own, coarser timeout ends it) and its
    connection, if any, is closed with *close*.
    """
    done = threading.Event()
    lock = threading.Lock()
    box: dict[str, object] = {}

    def attempt() -> None:
        try:
            result = connect()
        except BaseException as exc:  # handed to the caller below
            with lock:
                box["error"] = exc
                done.set()
            return
        with lock:
            abandoned = "abandoned" in box
            box["result"] = result
            done.set()
        if abandoned:
            with contextlib.suppress(Exception):  # nobody is left to tell
                close(result)

    threading.Thread(target=attempt, name="aqnt-sql-connect", daemon=True).start()
    done.wait(timeout)
    with lock:
        if not done.is_set():
            box["abandoned"] = True
            raise ConnectTimeout(f"connection attempt timed out after {timeout:g} s")
    if "error" in box:
        raise box["error"]  # type: ignore[misc]
    return box["result"]  # type: ignore[return-value]
