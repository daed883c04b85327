"""The usage buffer: counted in memory, flushed in batches, nothing lost."""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping, Sequence

from aqnt_auth import UsageDelta, UsageRow
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
    """Past max_pending distinct entries (a key's path and client) the
    flusher is woken before its interval."""
    sink = Sink()
    buffer = UsageBuffer(sink, interval=3600, max_pending=10)
    for i in range(12):
        buffer.hit("a", float(i), path=f"/p{i}")
    assert sink.flushed.wait(5)
    buffer.close()
    assert sink.total("a") == 12


def test_repeated_requests_keep_one_counter() -> None:
    """Requests of the same key, path and client add to one counter: what
    is kept until the flush does not grow with the number of requests."""
    sink = Sink()
    buffer = UsageBuffer(sink, interval=3600, max_pending=10)
    for i in range(10_000):
        buffer.hit("a", 1000.0 + i / 100, path="/v1", client="192.0.2.1", user_agent="ua")
        buffer.fail("malformed", "", 1000.0)
    window = buffer._window
    assert (len(window.hits), len(window.keyless), len(window.latest)) == (1, 1, 1)
    assert not sink.flushed.is_set()  # one entry each: no early flush
    assert buffer.pending() == {"a": 10_000}
    assert buffer.flush()
    assert sink.total("a") == 10_000
    assert sink.batches[0]["a"].last_used_at.timestamp() == 1000.0 + 9_999 / 100
    buffer.close()


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


class HistorySink:
    def __init__(self) -> None:
        self.rows: list[UsageRow] = []

    def __call__(self, rows: Sequence[UsageRow], prune_before: int | None) -> None:
        self.rows.extend(rows)

    def counts(self) -> dict[tuple[str, int], dict[str, int]]:
        merged: dict[tuple[str, int], dict[str, int]] = {}
        for row in self.rows:
            slot = merged.setdefault((row.key_id, row.hour), {})
            for outcome, n in row.counts.items():
                slot[outcome] = slot.get(outcome, 0) + n
        return merged


def test_a_flush_waits_for_a_request_still_counting() -> None:
    """A request that took its window before a flush swapped it out counts
    into it afterwards: the flush waits until that request has left, so
    its count is in this flush, exactly once."""
    sink, history = Sink(), HistorySink()
    buffer = UsageBuffer(sink, interval=3600, history=history)
    buffer.hit("a", 7200.5, path="/v1")
    epoch, window = buffer._epoch, buffer._window
    next(epoch.entered)  # a request enters and takes the window...
    done = threading.Event()

    def flush() -> None:
        buffer.flush()
        done.set()

    flusher = threading.Thread(target=flush)
    flusher.start()
    assert not done.wait(0.2)  # the flush waits for it
    next(window.hits[("a", "/v1", None, None, None)])  # ...counts into it
    window.latest["a"] = (7201.0, "192.0.2.9", None, None, "late/1")
    next(epoch.left)  # ...and leaves
    assert done.wait(5)
    flusher.join()
    assert buffer.flush()  # nothing counted twice
    buffer.close()
    assert sink.total("a") == 2
    assert sink.batches[0]["a"].last_used_at.timestamp() == 7201.0
    assert history.counts() == {("a", 7200): {"valid": 2}}
    assert [row.last_client for row in history.rows] == ["192.0.2.9"]


def test_each_request_counts_in_its_own_hour() -> None:
    """Windows are per UTC hour: a request stamped before the hour turned,
    arriving after, still counts in its hour."""
    sink, history = Sink(), HistorySink()
    buffer = UsageBuffer(sink, interval=3600, history=history)
    buffer.hit("a", 3599.0)
    buffer.hit("a", 3600.0)
    buffer.hit("a", 3599.5)  # late, from the previous hour
    buffer.fail("revoked", "a", 3598.0)
    buffer.forbid("a", 3600.0)
    buffer.close()
    assert history.counts() == {("a", 0): {"valid": 2, "revoked": 1},
                                ("a", 3600): {"valid": 0, "forbidden": 1}}
    assert sink.total("a") == 3
    last = {row.hour: row.last_at for row in history.rows if row.last_at is not None}
    assert last == {0: 3_599_500_000, 3600: 3_600_000_000}


def test_a_forked_child_counts_from_zero() -> None:
    """A child process (a pre-forking server's worker) starts with fresh
    windows and no flusher; the parent keeps what it counted."""
    sink = Sink()
    buffer = UsageBuffer(sink, interval=3600)
    buffer.hit("a", 10.0)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report what its own flush writes, then leave
        try:
            child = Sink()
            buffer._sink = child
            fresh = (buffer._thread is None, buffer.pending())
            buffer.hit("a", 11.0)
            buffer.flush()
            os.write(write, repr((fresh, child.total("a"))).encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        reported = pipe.read()
    os.waitpid(pid, 0)
    assert reported == repr(((True, {}), 1))
    assert buffer.pending() == {"a": 1}
    buffer.close()
    assert sink.total("a") == 1
