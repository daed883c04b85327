"""Counting requests per key without a store write per request.

A request adds one to a counter (``next()`` of an :func:`itertools.count`:
one C call, atomic under the GIL, no lock on the request path) in the window
of its UTC hour, under what the history keeps of it: key id, path, peer
address and forwarded headers for a valid request, outcome and key id for
any other.  Nothing else is kept per request, so neither memory nor the
flush grows with the number of requests, only with how many distinct
(key, path, client) there were.  A daemon thread, started on the first
request, folds the windows into one batch at an interval (sooner when a
window holds more than ``max_pending`` distinct entries) and on
:meth:`UsageBuffer.close`.  A batch is two writes:

* the per-key counters (``usage_count``, ``last_used_at``), as before;
* the usage history (issue #14): per key and UTC hour, counts by outcome,
  and for valid requests the distinct client addresses, the last client and
  user agent, and the most requested paths
  (:mod:`aqnt_auth._usage_history`).

Everything but the count (resolving the client past trusted proxies,
decoding, truncating, counting paths and clients) happens at flush time,
off the request path.  A flush swaps in fresh windows, waits for the
requests that took an old one before the swap to finish counting (see
``_Epoch``: two more counters, entered and left), and reads the old
windows' counters once.

A failed write puts its counts back, so nothing is lost while the store is
down; an ``atexit`` hook flushes what is left when the process ends.  A
process that dies without running it (``SIGKILL``, a crash, the OOM killer)
loses what it counted since its last flush: at most one interval.
"""

from __future__ import annotations

import atexit
import datetime as dt
import itertools
import logging
import math
import operator
import os
import re
import threading
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final

from ._errors import ConfigurationError
from ._outcomes import FORBIDDEN, NO_KEY, VALID
from ._records import UsageDelta
from ._usage_history import (
    HOUR,
    MAX_CLIENTS,
    MAX_PATHS,
    MAX_TEXT,
    UsageRow,
    hour_of,
    merge_rows,
)

__all__ = ["UsageBuffer"]

log = logging.getLogger("aqnt_auth.usage")

_UTC = dt.timezone.utc

#: Writes usage-history rows, pruning rows of hours before the second argument.
HistorySink = Callable[[Sequence[UsageRow], "int | None"], None]
#: The client address of (peer, Forwarded, X-Forwarded-For).
Resolve = Callable[["str | None", "str | None", "str | None"], "str | None"]

# Anything shaped like one of our keys in a path is never stored.
_KEY_LIKE: Final = re.compile(r"[A-Za-z0-9]+_(?:live|test)_[0-9A-Za-z_]{16,}")


def _text(value: str | bytes | None) -> str | None:
    """A user agent or client address as stored: text, no key, cut short."""
    if value is None:
        return None
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    return _path(value)


def _path(value: str) -> str:
    return _KEY_LIKE.sub("[redacted]", value)[:MAX_TEXT]


class _Hour:
    """One key's hour, as this flush saw it."""

    __slots__ = ("counts", "last", "paths", "raw_client", "user_agent")

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}
        self.last = -math.inf
        self.raw_client: tuple[str | None, str | None, str | None] | None = None
        self.user_agent: str | bytes | None = None
        self.paths: dict[str, int] = {}


#: A valid request's facts kept until the flush: (time, peer, Forwarded,
#: X-Forwarded-For, user agent).
_Facts = tuple[float, "str | None", "str | None", "str | None", "str | bytes | None"]


def _value(counter: itertools.count[int]) -> int:
    """How many requests *counter* counted: read off its repr (``count(12)``),
    which, unlike ``next()``, leaves it as it is."""
    return int(repr(counter)[6:-1])


def _read(table: Mapping[Any, itertools.count[int]]) -> dict[Any, int]:
    # list() copies the items in one C call: a request adding an entry
    # meanwhile cannot break the iteration.
    return {slot: _value(counter) for slot, counter in list(table.items())}


class _Window:
    """What was counted in one UTC hour since the last flush."""

    __slots__ = ("end", "fails", "hits", "keyless", "latest", "moved", "start")

    def __init__(self, start: float) -> None:
        # Floats: a request's time is one, and float-to-float is the cheap compare.
        self.start = float(start)
        self.end = self.start + HOUR
        #: Valid requests by (key id, path, peer, Forwarded, X-Forwarded-For).
        self.hits: dict[tuple[str, str | None, str | None, str | None, str | None],
                        itertools.count[int]] = {}
        #: Requests of a key that did not end valid, by (outcome, key id).
        self.fails: dict[tuple[str, str], itertools.count[int]] = {}
        #: Key-less refusals (malformed, unknown_key, missing, throttled), by outcome.
        self.keyless: dict[str, itertools.count[int]] = {}
        #: Valid requests refused afterwards by a scope check, by key id.
        self.moved: dict[str, itertools.count[int]] = {}
        #: Each key's latest valid request: (time, peer, Forwarded,
        #: X-Forwarded-For, user agent), replaced by the next one.
        self.latest: dict[str, _Facts] = {}


#: The tables fail() with a key and forbid() count in (see UsageBuffer._count).
_fails_of: Final = operator.attrgetter("fails")
_moved_of: Final = operator.attrgetter("moved")


class _Epoch:
    """Requests that entered and left the request path since the last
    window swap.  A flush that swapped the windows out waits until every
    request that entered before the swap has left: then nothing more can
    be counted in the windows it took, and one read of them is exact."""

    __slots__ = ("entered", "left")

    def __init__(self) -> None:
        self.entered = itertools.count()
        self.left = itertools.count()

    def settled(self) -> bool:
        return _value(self.left) >= _value(self.entered)


class _Seen:
    """A window's counts as a flush read them."""

    __slots__ = ("fails", "hits", "keyless", "latest", "moved", "window")

    def __init__(self, window: _Window) -> None:
        self.window = window
        self.hits = _read(window.hits)
        self.fails = _read(window.fails)
        self.keyless = _read(window.keyless)
        self.moved = _read(window.moved)
        self.latest = dict(window.latest)


#: Seconds a flush waits at most for the requests still counting into the
#: windows it swapped out (a request takes nanoseconds; only a thread kept
#: from the GIL that long could count after the read, and be lost).
_SETTLE_WAIT: Final = 5.0

#: Before the first request: no hour, so the first one finds its window.
_NO_WINDOW: Final = _Window(-math.inf)


class UsageBuffer:
    """Buffered usage, flushed to *sink* (per-key counters) and, when given,
    *history* (per key and hour, by outcome).

    :param max_pending: distinct entries (a key's path and client, or an
        outcome) a window holds before the flusher is woken early.
    :param resolve: the client address of a request's raw facts (peer,
        ``Forwarded``, ``X-Forwarded-For``), called at flush time.
    :param retention: seconds of history kept; older hours are pruned by a
        flush, at most once an hour per process (``None``: kept forever).
    :param clock: Unix time, for the retention (tests pass a fake).
    """

    def __init__(
        self,
        sink: Callable[[Mapping[str, UsageDelta]], None],
        *,
        interval: float = 10.0,
        max_pending: int = 100_000,
        history: HistorySink | None = None,
        resolve: Resolve | None = None,
        retention: float | None = 90 * 86_400,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if interval <= 0:
            raise ConfigurationError("usage flush interval must be positive")
        if retention is not None and not retention > 0:
            raise ConfigurationError("usage retention must be positive (or None: keep all)")
        self._sink = sink
        self._history = history
        self._resolve = resolve
        self.retention = retention
        self._clock = clock
        self.interval = interval
        self.max_pending = max_pending
        # The window requests of the current hour count in, and every window
        # counted in since the last flush (an earlier hour's, for a request
        # stamped before the hour turned), by the start of its hour.
        self._window = _NO_WINDOW
        self._windows: dict[float, _Window] = {}
        self._window_lock = threading.Lock()
        # Requests on the request path since the last swap (see _Epoch).
        self._epoch = _Epoch()
        # Counts taken off the windows whose write failed: retried next flush.
        self._carry: dict[str, list[float]] = {}
        self._history_carry: dict[tuple[str, int], UsageRow] = {}
        # Distinct clients per (key id, hour) this process has seen, kept
        # across flushes for the current and the previous hour.
        self._clients: dict[tuple[str, int], set[str | None]] = {}
        self._pruned_at = -math.inf
        self._resolved: dict[tuple[str | None, str | None, str | None], str | None] = {}
        self._flush_lock = threading.Lock()
        self._wake = threading.Event()
        self._waking = False
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self._closed = False
        ref = weakref.ref(self)
        os.register_at_fork(after_in_child=lambda: _reset_after_fork(ref))

    # -- the request path: one counter advanced, nothing else kept -------------

    def hit(self, key_id: str, now: float, path: str | None = None, client: str | None = None,
            forwarded: str | None = None, x_forwarded_for: str | None = None,
            user_agent: str | bytes | None = None) -> None:
        """Count one valid request for *key_id* at Unix time *now*, with its
        raw facts (resolved and trimmed at flush time)."""
        # Enter the epoch, then take the window (see _Epoch and _take).
        epoch = self._epoch
        try:
            next(epoch.entered)
            window = self._window
            if not window.start <= now < window.end:
                window = self._window_at(now)
            slot = (key_id, path, client, forwarded, x_forwarded_for)
            counter = window.hits.get(slot)
            if counter is None:
                counter = self._counter(window.hits, slot)
            next(counter)
            window.latest[key_id] = (now, client, forwarded, x_forwarded_for, user_agent)
        finally:
            next(epoch.left)

    def fail(self, outcome: str, key_id: str, now: float) -> None:
        """Count one request that ended in *outcome* (not valid), under
        *key_id* (``""``: no key)."""
        if key_id:
            self._count(_fails_of, (outcome, key_id), now)
            return
        # A key-less refusal (malformed, unknown, missing): the flood case,
        # counted inline as hit() is.
        epoch = self._epoch
        try:
            next(epoch.entered)
            window = self._window
            if not window.start <= now < window.end:
                window = self._window_at(now)
            counter = window.keyless.get(outcome)
            if counter is None:
                counter = self._counter(window.keyless, outcome)
            next(counter)
        finally:
            next(epoch.left)

    def forbid(self, key_id: str, now: float) -> None:
        """Count the valid request of *key_id* at *now* as forbidden instead
        (a route-level scope check refused it after it authenticated)."""
        self._count(_moved_of, key_id, now)

    def _count(self, table_of: Callable[[_Window], dict[Any, itertools.count[int]]],
               slot: Any, now: float) -> None:
        """Advance *slot*'s counter in the table *table_of* picks from *now*'s
        window (the rarer outcomes; see _Epoch for the entering and leaving)."""
        epoch = self._epoch
        try:
            next(epoch.entered)
            window = self._window
            if not window.start <= now < window.end:
                window = self._window_at(now)
            table = table_of(window)
            counter = table.get(slot)
            if counter is None:
                counter = self._counter(table, slot)
            next(counter)
        finally:
            next(epoch.left)

    def _counter(self, table: dict[Any, itertools.count[int]], slot: Any
                 ) -> itertools.count[int]:
        """A new entry's counter (the same one for every thread that asks)."""
        if self._thread is None:
            self._start()
        elif len(table) >= self.max_pending and not self._waking:
            self._wake_flusher()
        return table.setdefault(slot, itertools.count())

    def _window_at(self, now: float) -> _Window:
        """The window of *now*'s hour; the current one if that hour is the latest."""
        start = float(hour_of(now))
        with self._window_lock:
            window = self._windows.get(start)
            if window is None:
                window = self._windows[start] = _Window(start)
            if start > self._window.start:
                self._window = window
            return window

    def pending(self) -> dict[str, int]:
        """Valid requests not yet flushed, per key id."""
        with self._flush_lock:
            counts = {k: int(v[0]) for k, v in self._carry.items()}
            with self._window_lock:
                windows = list(self._windows.values())
            for window in windows:
                for slot, value in _read(window.hits).items():
                    counts[slot[0]] = counts.get(slot[0], 0) + value
            return counts

    # -- the flusher ----------------------------------------------------------

    def _start(self) -> None:
        with self._start_lock:
            if self._thread is not None or self._closed:
                return
            self._thread = threading.Thread(
                target=self._run, name="aqnt-usage-flush", daemon=True
            )
            self._thread.start()
        atexit.register(_flush_at_exit, weakref.ref(self))

    def _wake_flusher(self) -> None:
        # Once per flush: Event.set() takes a lock, which every new entry
        # past the bound would otherwise pay until the flusher gets the GIL.
        self._waking = True
        self._wake.set()

    def _run(self) -> None:
        while not self._closed:
            self._wake.wait(self.interval)
            self._wake.clear()
            try:
                if not self._closed:
                    self.flush()
            finally:
                self._waking = False

    def _take(self) -> tuple[dict[str, list[float]], dict[tuple[str, int], _Hour]]:
        """Fold what was counted since the last flush: every window, swapped
        for a fresh one.  Python loops run over the distinct entries only."""
        batch, self._carry = self._carry, {}
        hours: dict[tuple[str, int], _Hour] = {}
        # Each distinct (peer, Forwarded, X-Forwarded-For) is resolved once a flush.
        self._resolved = {}
        with self._window_lock:
            taken = list(self._windows.values())
            current = self._window
            self._windows = {}
            if current is not _NO_WINDOW:
                self._window = self._windows[current.start] = _Window(current.start)
            # After the window: a request that finds the new epoch finds the
            # new window too.
            epoch, self._epoch = self._epoch, _Epoch()
        # A request that entered before the swap may still count into a
        # window taken here: wait until every one has left (nanoseconds,
        # unless the thread lost the GIL in between).
        deadline = time.monotonic() + _SETTLE_WAIT
        while not epoch.settled() and time.monotonic() < deadline:
            time.sleep(0.0005)
        for window in taken:
            self._fold(_Seen(window), batch, hours)
        # Paths: the MAX_PATHS most requested of each (key, hour) in this batch.
        for hour in hours.values():
            if len(hour.paths) > MAX_PATHS:
                hour.paths = dict(sorted(hour.paths.items(),
                                         key=lambda c: (-c[1], c[0]))[:MAX_PATHS])
        return batch, hours

    def _fold(self, seen: _Seen, batch: dict[str, list[float]],
              hours: dict[tuple[str, int], _Hour]) -> None:
        """Add what *seen* counted to *batch* and *hours*."""
        start = int(seen.window.start)
        history = self._history is not None
        for slot, n in seen.hits.items():
            key_id, path, *raw = slot
            entry = batch.get(key_id)
            if entry is None:
                batch[key_id] = [n, -math.inf]  # its time: the latest facts, below
            else:
                entry[0] += n
            if not history:
                continue
            hour = _hour(hours, key_id, start)
            hour.counts[VALID] = hour.counts.get(VALID, 0) + n
            if path is not None:
                hour.paths[path] = hour.paths.get(path, 0) + n
            clients = self._clients.get((key_id, start))
            if clients is None:
                clients = self._clients[(key_id, start)] = set()
            if len(clients) < MAX_CLIENTS:
                clients.add(self._client_of((raw[0], raw[1], raw[2])))
        for key_id, facts in seen.latest.items():
            entry = batch.get(key_id)
            if entry is None:
                batch[key_id] = [0, facts[0]]
            elif facts[0] > entry[1]:
                entry[1] = facts[0]
            if history:
                hour = _hour(hours, key_id, start)
                hour.counts.setdefault(VALID, 0)
                if facts[0] >= hour.last:
                    hour.last, hour.raw_client = facts[0], (facts[1], facts[2], facts[3])
                    hour.user_agent = facts[4]
        if not history:
            return
        for (outcome, key_id), n in seen.fails.items():
            counts = _hour(hours, key_id, start).counts
            counts[outcome] = counts.get(outcome, 0) + n
        for outcome, n in seen.keyless.items():
            counts = _hour(hours, NO_KEY, start).counts
            counts[outcome] = counts.get(outcome, 0) + n
        for key_id, n in seen.moved.items():
            # Counted valid (in this batch or an earlier one, of the same
            # hour): one valid fewer, one forbidden more.
            counts = _hour(hours, key_id, start).counts
            counts[VALID] = counts.get(VALID, 0) - n
            counts[FORBIDDEN] = counts.get(FORBIDDEN, 0) + n

    def _client_of(self, raw: tuple[str | None, str | None, str | None]) -> str | None:
        resolved = self._resolved
        if raw in resolved:
            return resolved[raw]
        client = _text(self._resolve(*raw) if self._resolve is not None else raw[0])
        if len(resolved) < MAX_CLIENTS:
            resolved[raw] = client
        return client

    def _rows(self, hours: Mapping[tuple[str, int], _Hour]) -> list[UsageRow]:
        rows = []
        for (key_id, hour_start), hour in hours.items():
            last_at = None if hour.raw_client is None else int(hour.last * 1_000_000)
            paths: dict[str, int] = {}
            for path, n in hour.paths.items():
                cleaned = _path(path)
                paths[cleaned] = paths.get(cleaned, 0) + n
            rows.append(UsageRow(
                key_id, hour_start, hour.counts,
                len(self._clients.get((key_id, hour_start), ())),
                last_at,
                None if hour.raw_client is None else self._client_of(hour.raw_client),
                _text(hour.user_agent), paths,
            ))
        return rows

    def flush(self) -> bool:
        """Write pending usage to the store now; whether that succeeded."""
        with self._flush_lock:
            batch, hours = self._take()
            ok = True
            if batch:
                usage = {
                    key_id: UsageDelta(int(count), dt.datetime.fromtimestamp(last, _UTC))
                    for key_id, (count, last) in batch.items()
                }
                try:
                    self._sink(usage)
                except Exception as exc:
                    self._carry = batch
                    log.warning("usage flush failed, %d keys kept for the next try: %s",
                                len(batch), exc)
                    ok = False
            if self._history is not None:
                ok = self._flush_history(hours) and ok
            return ok

    def _flush_history(self, hours: Mapping[tuple[str, int], _Hour]) -> bool:
        assert self._history is not None
        rows = self._history_carry
        self._history_carry = {}
        for row in self._rows(hours):
            slot = (row.key_id, row.hour)
            old = rows.get(slot)
            rows[slot] = row if old is None else merge_rows(old, row)
        now = self._clock()
        prune = None
        if self.retention is not None and now - self._pruned_at >= HOUR:
            prune = hour_of(now - self.retention)
        # Forget client sets of hours that are over (a late request still
        # finds the previous hour's).
        current = hour_of(now)
        for slot in [s for s in self._clients if s[1] < current - HOUR]:
            del self._clients[slot]
        if not rows and prune is None:
            return True
        try:
            self._history(list(rows.values()), prune)
        except Exception as exc:
            self._history_carry = rows
            log.warning("usage history flush failed, %d rows kept for the next try: %s",
                        len(rows), exc)
            return False
        if prune is not None:
            self._pruned_at = now
        return True

    def close(self) -> None:
        """Stop the flusher and flush what is left.  Idempotent."""
        self._closed = True
        self._wake.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5)
        if not self.flush():
            lost = sum(int(v[0]) for v in self._carry.values())
            rows = len(self._history_carry)
            log.error("usage counts of %d requests (and %d usage-history rows) could not be "
                      "written at close", lost, rows)

def _hour(hours: dict[tuple[str, int], _Hour], key_id: str, start: int) -> _Hour:
    hour = hours.get((key_id, start))
    if hour is None:
        hour = hours[(key_id, start)] = _Hour()
    return hour


def _flush_at_exit(ref: weakref.ref[UsageBuffer]) -> None:
    buffer = ref()
    if buffer is not None and not buffer._closed:
        buffer.close()


def _reset_after_fork(ref: weakref.ref[UsageBuffer]) -> None:
    buffer = ref()
    if buffer is None:
        return
    # The parent flushes its own counts; the child starts from zero, with no
    # flusher thread (threads do not survive fork) until its first hit.
    buffer._flush_lock = threading.Lock()
    buffer._start_lock = threading.Lock()
    buffer._window_lock = threading.Lock()
    buffer._window = _NO_WINDOW
    buffer._windows = {}
    buffer._epoch = _Epoch()
    buffer._carry = {}
    buffer._history_carry = {}
    buffer._clients = {}
    buffer._wake = threading.Event()
    buffer._waking = False
    buffer._thread = None
