"""Counting requests per key without a store write per request.

Hits are counted in memory and flushed in one batch at an interval (by a
daemon thread started on the first hit) and on :meth:`UsageBuffer.close`.
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
from collections.abc import Callable, Mapping

from ._errors import ConfigurationError
from ._records import UsageDelta

__all__ = ["UsageBuffer"]

log = logging.getLogger("aqnt_auth.usage")

_UTC = dt.timezone.utc


class UsageBuffer:
    """Buffered ``(count, last_used_at)`` per key id, flushed to *sink*."""

    def __init__(
        self, sink: Callable[[Mapping[str, UsageDelta]], None], *, interval: float = 10.0
    ) -> None:
        if interval <= 0:
            raise ConfigurationError("usage flush interval must be positive")
        self._sink = sink
        self.interval = interval
        self._pending: dict[str, list[float]] = {}
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._closed = False
        ref = weakref.ref(self)
        os.register_at_fork(after_in_child=lambda: _reset_after_fork(ref))

    def hit(self, key_id: str, now: float) -> None:
        """Count one request for *key_id* at Unix time *now*."""
        with self._lock:
            entry = self._pending.get(key_id)
            if entry is None:
                self._pending[key_id] = [1, now]
            else:
                entry[0] += 1
                if now > entry[1]:
                    entry[1] = now
        if self._thread is None and not self._closed:
            self._start()

    def pending(self) -> dict[str, int]:
        """Counts not yet flushed, per key id."""
        with self._lock:
            return {k: int(v[0]) for k, v in self._pending.items()}

    def _start(self) -> None:
        with self._lock:
            if self._thread is not None:
                return
            self._thread = threading.Thread(
                target=self._run, name="aqnt-usage-flush", daemon=True
            )
        self._thread.start()
        ref = weakref.ref(self)
        atexit.register(_flush_at_exit, ref)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.flush()

    def flush(self) -> bool:
        """Write pending counts to the sink now; whether that succeeded."""
        with self._flush_lock:
            with self._lock:
                batch, self._pending = self._pending, {}
            if not batch:
                return True
            usage = {
                key_id: UsageDelta(int(count), dt.datetime.fromtimestamp(last, _UTC))
                for key_id, (count, last) in batch.items()
            }
            try:
                self._sink(usage)
            except Exception as exc:
                self._put_back(batch)
                log.warning("usage flush failed, %d keys kept for the next try: %s",
                            len(batch), exc)
                return False
            return True

    def _put_back(self, batch: dict[str, list[float]]) -> None:
        with self._lock:
            for key_id, (count, last) in batch.items():
                entry = self._pending.get(key_id)
                if entry is None:
                    self._pending[key_id] = [count, last]
                else:
                    entry[0] += count
                    entry[1] = max(entry[1], last)

    def close(self) -> None:
        """Stop the flusher and flush what is left.  Idempotent."""
        self._closed = True
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5)
        if not self.flush():
            lost = sum(int(v[0]) for v in self._pending.values())
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
    buffer._lock = threading.Lock()
    buffer._flush_lock = threading.Lock()
    buffer._pending = {}
    buffer._stop = threading.Event()
    buffer._thread = None
