"""Counting requests per key without a store write per request.

Requests are appended to a deque (one C call, atomic, no lock on the request
path) and folded into one batch at an interval, by a daemon thread started
on the first request, when the deque grows past a bound, and on
:meth:`UsageBuffer.close`.  A batch is two writes:

* the per-key counters (``usage_count``, ``last_used_at``), as before;
* the usage history (issue #14): per key and UTC hour, counts by outcome,
  and for valid requests the distinct client addresses, the last client and
  user agent, and the most requested paths
  (:mod:`aqnt_auth._usage_history`).

A request only appends its raw facts (key id, time, path, peer address,
forwarded headers, user agent); everything else (resolving the client past
trusted proxies, decoding, truncating, counting paths and clients) happens
here at flush time, off the request path.

A failed write puts its counts back, so nothing is lost while the store is
down; an ``atexit`` hook flushes what is left when the process ends.  A
process that dies without running it (``SIGKILL``, a crash, the OOM killer)
loses what it counted since its last flush: at most one interval.
"""

from __future__ import annotations

import atexit
import datetime as dt
import logging
import math
import os
import re
import threading
import time
import weakref
from bisect import bisect_left
from collections import Counter, deque
from collections.abc import Callable, Mapping, Sequence
from itertools import repeat
from operator import floordiv, itemgetter
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

# The fields of a counted request: (key id, time, path, peer, Forwarded,
# X-Forwarded-For, user agent); of a failure: (outcome, key id, time), as
# the flush rebuilds it for a key-less one.
_KEY: Final = itemgetter(0)
_TIME: Final = itemgetter(1)
_PATH: Final = itemgetter(2)
_PEER: Final = itemgetter(3)
_FORWARDED: Final = itemgetter(4)
_XFF: Final = itemgetter(5)
_AGENT: Final = itemgetter(6)
_KEY_OF_FAIL: Final = itemgetter(1)
_TIME_OF_FAIL: Final = itemgetter(2)

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


class UsageBuffer:
    """Buffered usage, flushed to *sink* (per-key counters) and, when given,
    *history* (per key and hour, by outcome).

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
        # (key id, time, path, peer, Forwarded, X-Forwarded-For, user agent)
        self._hits: deque[tuple[Any, ...]] = deque()
        # (outcome, key id, time) of failures of a key.
        self._fails: deque[tuple[str, str, float]] = deque()
        # The times of key-less failures (malformed, unknown_key, missing,
        # throttled), one deque per outcome: a float is not tracked by the
        # garbage collector, so a flood of refusals (kept until the next
        # flush) neither sets off collections nor makes them longer, as a
        # tuple per refusal did.
        self._keyless: dict[str, deque[float]] = {}
        # (key id, time) of valid requests refused afterwards by a scope check.
        self._moved: deque[tuple[str, float]] = deque()
        # Counts taken off the deques whose write failed: retried next flush.
        self._carry: dict[str, list[float]] = {}
        self._history_carry: dict[tuple[str, int], UsageRow] = {}
        # Distinct clients per (key id, hour) this process has seen, kept
        # across flushes for the current and the previous hour.
        self._clients: dict[tuple[str, int], set[str | None]] = {}
        self._pruned_at = -math.inf
        self._resolved: dict[tuple[str | None, str | None, str | None], str | None] = {}
        self._flush_lock = threading.Lock()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self._closed = False
        ref = weakref.ref(self)
        os.register_at_fork(after_in_child=lambda: _reset_after_fork(ref))

    def hit(self, key_id: str, now: float, path: str | None = None, client: str | None = None,
            forwarded: str | None = None, x_forwarded_for: str | None = None,
            user_agent: str | bytes | None = None) -> None:
        """Count one valid request for *key_id* at Unix time *now*, with its
        raw facts (resolved and trimmed at flush time)."""
        hits = self._hits
        hits.append((key_id, now, path, client, forwarded, x_forwarded_for, user_agent))
        if self._thread is None:
            self._start()
        elif len(hits) > self.max_pending:
            self._wake.set()

    def fail(self, outcome: str, key_id: str, now: float) -> None:
        """Count one request that ended in *outcome* (not valid), under
        *key_id* (``""``: no key)."""
        fails: deque[Any]
        if key_id:
            fails = self._fails
            fails.append((outcome, key_id, now))
        else:
            times = self._keyless.get(outcome)
            if times is None:
                times = self._keyless.setdefault(outcome, deque())
            times.append(now)
            fails = times
        if self._thread is None:
            self._start()
        elif len(fails) > self.max_pending:
            self._wake.set()

    def forbid(self, key_id: str, now: float) -> None:
        """Count the valid request of *key_id* at *now* as forbidden instead
        (a route-level scope check refused it after it authenticated)."""
        self._moved.append((key_id, now))

    def pending(self) -> dict[str, int]:
        """Valid requests not yet flushed, per key id."""
        with self._flush_lock:
            counts = {k: int(v[0]) for k, v in self._carry.items()}
            for hit in list(self._hits):
                counts[hit[0]] = counts.get(hit[0], 0) + 1
            return counts

    def _start(self) -> None:
        with self._start_lock:
            if self._thread is not None or self._closed:
                return
            self._thread = threading.Thread(
                target=self._run, name="aqnt-usage-flush", daemon=True
            )
            self._thread.start()
        atexit.register(_flush_at_exit, weakref.ref(self))

    def _run(self) -> None:
        while not self._closed:
            self._wake.wait(self.interval)
            self._wake.clear()
            if not self._closed:
                self.flush()

    def _take(self) -> tuple[dict[str, list[float]], dict[tuple[str, int], _Hour]]:
        """Fold what was counted since the last flush.

        The per-request work is done by C code (``sorted``, ``map``, ``zip``,
        ``Counter``, ``dict``) over the whole batch; Python loops run over the
        distinct keys, hours, paths and clients only.
        """
        batch, self._carry = self._carry, {}
        hours: dict[tuple[str, int], _Hour] = {}
        # Each distinct (peer, Forwarded, X-Forwarded-For) is resolved once a flush.
        self._resolved = {}
        # Pop exactly as many as were there: hits appended meanwhile stay
        # for the next flush, so none is lost or counted twice.
        popleft = self._hits.popleft
        taken = [popleft() for _ in range(len(self._hits))]
        if taken:
            # In time order (they nearly are: timsort is linear then), so
            # that "the last" of anything below is the latest.
            taken.sort(key=_TIME)
            keys = list(map(_KEY, taken))
            times = list(map(_TIME, taken))
            last = dict(zip(keys, times, strict=True))
            for key_id, n in Counter(keys).items():
                entry = batch.get(key_id)
                if entry is None:
                    batch[key_id] = [n, last[key_id]]
                else:
                    entry[0] += n
                    entry[1] = max(entry[1], last[key_id])
            if self._history is not None:
                self._fold_valid(hours, taken, keys, times)
        popleft = self._fails.popleft
        fails = [popleft() for _ in range(len(self._fails))]
        for outcome, stamps in list(self._keyless.items()):
            pop_time = stamps.popleft
            fails.extend(zip(repeat(outcome), repeat(NO_KEY),
                             [pop_time() for _ in range(len(stamps))]))
        popleft = self._moved.popleft
        moved = [popleft() for _ in range(len(self._moved))]
        if fails and self._history is not None:
            slots = zip(map(_KEY_OF_FAIL, fails),
                        map(floordiv, map(_TIME_OF_FAIL, fails), repeat(HOUR)),
                        map(_KEY, fails), strict=True)
            for (key_id, index, outcome), n in Counter(slots).items():
                slot = (key_id, int(index) * HOUR)
                hour = hours.get(slot)
                if hour is None:
                    hour = hours[slot] = _Hour()
                hour.counts[outcome] = hour.counts.get(outcome, 0) + n
        if moved and self._history is not None:
            # Counted valid (in this batch or an earlier one, of the same
            # hour): one valid fewer, one forbidden more.
            for (key_id, index), n in Counter(zip(map(_KEY, moved),
                                                  map(floordiv, map(_TIME, moved), repeat(HOUR)),
                                                  strict=True)).items():
                slot = (key_id, int(index) * HOUR)
                hour = hours.get(slot)
                if hour is None:
                    hour = hours[slot] = _Hour()
                hour.counts[VALID] = hour.counts.get(VALID, 0) - n
                hour.counts[FORBIDDEN] = hour.counts.get(FORBIDDEN, 0) + n
        return batch, hours

    def _fold_valid(self, hours: dict[tuple[str, int], _Hour], taken: list[tuple[Any, ...]],
                    keys: list[str], times: list[float]) -> None:
        # taken is in time order: an hour's requests are one stretch of it
        # (a batch of a few seconds is one stretch, or two across an hour).
        lo, end = 0, len(taken)
        while lo < end:
            start = int(times[lo] // HOUR) * HOUR
            hi = bisect_left(times, start + HOUR, lo)
            stretch = taken[lo:hi] if lo or hi != end else taken
            stretch_keys = keys[lo:hi] if lo or hi != end else keys
            # Where each key's latest request of the hour stands.
            latest = dict(zip(stretch_keys, range(lo, hi), strict=True))
            for key_id, i in latest.items():
                hit = taken[i]
                hour = hours[(key_id, start)] = _Hour()
                hour.last, hour.raw_client, hour.user_agent = (hit[1], (hit[3], hit[4], hit[5]),
                                                               hit[6])
                hour.counts[VALID] = 0
            # One count per distinct (key, path, client): every figure below.
            for (key_id, path, *raw), n in Counter(zip(
                    stretch_keys, map(_PATH, stretch), map(_PEER, stretch),
                    map(_FORWARDED, stretch), map(_XFF, stretch), strict=True)).items():
                slot = (key_id, start)
                hour = hours[slot]
                hour.counts[VALID] += n
                if path is not None:
                    hour.paths[path] = hour.paths.get(path, 0) + n
                clients = self._clients.get(slot)
                if clients is None:
                    clients = self._clients[slot] = set()
                if len(clients) < MAX_CLIENTS:
                    clients.add(self._client_of((raw[0], raw[1], raw[2])))
            lo = hi
        # Paths: the MAX_PATHS most requested of each (key, hour) in this batch.
        for hour in hours.values():
            if len(hour.paths) > MAX_PATHS:
                hour.paths = dict(sorted(hour.paths.items(),
                                         key=lambda c: (-c[1], c[0]))[:MAX_PATHS])

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
    buffer._hits = deque()
    buffer._fails = deque()
    buffer._keyless = {}
    buffer._moved = deque()
    buffer._carry = {}
    buffer._history_carry = {}
    buffer._clients = {}
    buffer._wake = threading.Event()
    buffer._thread = None
