"""Test doubles for the core tests."""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Mapping

import argon2

from aqnt_auth import (
    Argon2Hasher,
    FailureLimiter,
    KeyRecord,
    MemoryKeyStore,
    RateLimited,
    StoreUnavailable,
    UsageDelta,
)


class CountingHasher(Argon2Hasher):
    """The cheapest argon2id, counting verifications and the peak running at once.

    With ``gate`` set, every verify waits for the gate to open: a test can
    hold verifications in flight for as long as it needs.
    """

    def __init__(self, gate: threading.Event | None = None,
                 profile: str | argon2.Parameters = "cheapest") -> None:
        super().__init__(profile)
        self.calls = 0
        self.running = 0
        self.peak = 0
        self.gate = gate
        self.threads: set[int] = set()
        self._lock = threading.Lock()

    def verify(self, stored: str, secret: str) -> bool:
        with self._lock:
            self.calls += 1
            self.running += 1
            self.peak = max(self.peak, self.running)
            self.threads.add(threading.get_ident())
        try:
            if self.gate is not None:
                self.gate.wait(10)
            return super().verify(stored, secret)
        finally:
            with self._lock:
                self.running -= 1


class InstrumentedStore(MemoryKeyStore):
    """A memory store that counts reads, records their threads, and can be broken."""

    def __init__(self) -> None:
        super().__init__()
        self.gets = 0
        self.get_threads: set[int] = set()
        self.failure: Exception | None = None

    def get(self, key_id: str) -> KeyRecord | None:
        self.gets += 1
        self.get_threads.add(threading.get_ident())
        if self.failure is not None:
            raise self.failure
        return super().get(key_id)

    def record_usage(self, usage: Mapping[str, UsageDelta]) -> None:
        if self.failure is not None:
            raise StoreUnavailable("down")
        super().record_usage(usage)


class BlockingInstrumentedStore(InstrumentedStore):
    """The same, claiming to do I/O: async callers must use worker threads."""

    blocking = True


class SpyLimiter(FailureLimiter):
    """A memory :class:`FailureLimiter` that counts how often it is asked."""

    def __init__(self, per_key: str = "10/minute", per_client: str = "60/minute") -> None:
        super().__init__(per_key, per_client)
        self.admits = 0
        self.failures = 0

    def admit(self, client: str | None, key_id: str | None) -> None:
        self.admits += 1
        super().admit(client, key_id)

    def failed(self, client: str | None, key_id: str | None) -> RateLimited | None:
        self.failures += 1
        return super().failed(client, key_id)


def ts(record: KeyRecord) -> dt.datetime:
    return record.created_at
