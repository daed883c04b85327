"""Counting requests per key without a store write per request.

Hits are appended to a deque (one C call, atomic, no lock on the request
path) and folded into one batch per key at an interval, by a daemon thread
started on the first hit, when the deque grows past a bound, and on
:meth:`UsageBuffer.close`.
A failed flush puts its counts back, so nothing is lost while the store is
down; an ``atexit`` hook flushes what is left when the process ends.
"""

from __future__ import annotations

import atexit
import datetime as dt
import logging
import os
import threading
import weakref
from collections import deque
from collections.abc import Callable, Mapping

from ._errors import ConfigurationError
from ._records import UsageDelta

__all__ = ["UsageBuffer"]

log = logging.getLogger("aqnt_auth.usage")

_UTC = dt.timezone.utc


class UsageBuffer:
    """Buffered ``(count, last_used_at)`` per key id, flushed to *sink*."""

    def __init__(
        self,
        sink: Callable[[Mapping[str, UsageDelta]], None],
        *,
        interval: float = 10.0,
        max_pending: int = 100_000,
    ) -> None:
        if interval <= 0:
            raise ConfigurationError("usage flush interval must be positive")
        self._sink = sink
        self.interval = interval
        self.max_pending = max_pending
        self._hits: deque[tuple[str, float]] = deque()
        # Counts taken off the deque whose write failed: retried next flush.
        self._carry: dict[str, list[float]] = {}
        self._flush_lock = threading.Lock()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self._closed = False
        ref = weakref.ref(self)
        os.register_at_fork(after_in_child=lambda: _reset_after_fork(ref))

    def hit(self, key_id: str, now: float) -> None:
        """Count one request for *key_id* at Unix time *now*."""
        hits = self._hits
        hits.append((key_id, now))
        if self._thread is None:
            self._start()
        elif len(hits) > self.max_pending:
            self._wake.set()

    def pending(self) -> dict[str, int]:
        """Counts not yet flushed, per key id."""
        with self._flush_lock:
            counts = {k: int(v[0]) for k, v in self._carry.items()}
            for key_id, _ in list(self._hits):
                counts[key_id] = counts.get(key_id, 0) + 1
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

    def _take(self) -> dict[str, list[float]]:
        batch, self._carry = self._carry, {}
        hits = self._hits
        # Pop exactly as many as were there: hits appended meanwhile stay
        # for the next flush, so none is lost or counted twice.
        for _ in range(len(hits)):
            key_id, now = hits.popleft()
            entry = batch.get(key_id)
            if entry is None:
                batch[key_id] = [1, now]
            else:
                entry[0] += 1
                if now > entry[1]:
                    entry[1] = now
        return batch

    def flush(self) -> bool:
        """Write pending counts to the sink now; whether that succeeded."""
        with self._flush_lock:
            batch = self._take()
            if not batch:
                return True
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
                return False
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
            log.error("usage counts of %d requests could not be written at close", lost)


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
    buffer._carry = {}
    buffer._wake = threading.Event()
    buffer._thread = None
