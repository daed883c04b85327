"""The usage buffer: counted in memory, flushed in batches, nothing lost."""

from __future__ import annotations

import threading
from collections.abc import Mapping

from aqnt_auth import UsageDelta
from aqnt_auth._usage import UsageBuffer


class Sink:
    def __init__(self) -> None:
        self.batches: list[dict[str, UsageDelta]] = []
        self.fail = False
        self.flushed = threading.Event()

    def __call__(self, usage: Mapping[str, UsageDelta]) -> None:
        if self.fail:
            raise OSError("disk full")
        self.batches.append(dict(usage))
        self.flushed.set()

    def total(self, key_id: str) -> int:
        return sum(b[key_id].count for b in self.batches if key_id in b)


def test_flushes_at_the_interval() -> None:
    """A daemon thread flushes without anyone calling flush()."""
    sink = Sink()
    buffer = UsageBuffer(sink, interval=0.01)
    # The first hit starts the flusher, whose first flush is due 10 ms later:
    # on a busy machine that came before the second hit, and the first batch
    # held one hit.  Holding the flush lock (as a flush in progress does)
    # makes the thread's first flush wait until both hits are in.
    with buffer._flush_lock:
        buffer.hit("a", 1000.0)
        buffer.hit("a", 1001.0)
    assert sink.flushed.wait(5)
    assert sink.total("a") == 2
    assert sink.batches[0]["a"].last_used_at.timestamp() == 1001.0
    buffer.close()


def test_flushes_when_the_backlog_grows() -> None:
    sink = Sink()
    buffer = UsageBuffer(sink, interval=3600, max_pending=10)
    for i in range(12):
        buffer.hit("a", float(i))
    assert sink.flushed.wait(5)
    buffer.close()
    assert sink.total("a") == 12


def test_failed_flush_keeps_counts() -> None:
    sink = Sink()
    buffer = UsageBuffer(sink, interval=3600)
    buffer.hit("a", 1.0)
    sink.fail = True
    assert buffer.flush() is False
    assert buffer.pending() == {"a": 1}
    sink.fail = False
    buffer.hit("a", 2.0)
    buffer.close()
    assert sink.total("a") == 2


def test_exact_under_concurrent_hits_and_flushes() -> None:
    sink = Sink()
    buffer = UsageBuffer(sink, interval=0.001)

    def work() -> None:
        for i in range(5000):
            buffer.hit("k", float(i))

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    buffer.close()
    assert sink.total("k") == 20000
