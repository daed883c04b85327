"""Remembering successful argon2 verifications, and doing each one once.

An argon2 verify costs milliseconds; the rest of a request costs
microseconds.  So a *successful* verification is remembered, keyed by a
keyed BLAKE2b digest of the presented key together with the stored hash:

* the digest key is random per process, so the cache holds nothing an
  attacker who dumps memory could test guesses against offline;
* the stored hash is part of the digest, so a rehash, a rotation or any
  change of the stored hash misses the cache;
* only successes enter, so a flood of bogus keys never grows it;
* it is a bounded LRU with a TTL.

It saves argon2 work only: the key's record (revocation, expiry) is still
read on every request.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Future
from typing import Generic, TypeVar

from ._errors import ConfigurationError

__all__ = ["SingleFlight", "VerificationCache"]

T = TypeVar("T")


class VerificationCache:
    """A thread-safe, bounded, expiring set of verified (key, hash) digests."""

    __slots__ = ("_entries", "_key", "_lock", "clock", "maxsize", "ttl")

    def __init__(
        self,
        maxsize: int = 10_000,
        ttl: float = 300.0,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if maxsize < 0:
            raise ConfigurationError("cache maxsize must be >= 0")
        if ttl < 0:
            raise ConfigurationError("cache ttl must be >= 0")
        self.maxsize = maxsize
        self.ttl = ttl
        self.clock = clock
        self._key = os.urandom(32)
        self._entries: OrderedDict[bytes, float] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"VerificationCache(size={len(self)}, maxsize={self.maxsize}, ttl={self.ttl})"

    def digest(self, presented: str, stored_hash: str) -> bytes:
        """The cache key for *presented* checked against *stored_hash*."""
        # NUL cannot occur in a key or a hash, so the join is unambiguous.
        return hashlib.blake2b(
            f"{presented}\0{stored_hash}".encode(), key=self._key, digest_size=16
        ).digest()

    def __contains__(self, digest: bytes) -> bool:
        expires = self._entries.get(digest)
        if expires is None:
            return False
        if expires <= self.clock():
            with self._lock:
                self._entries.pop(digest, None)
            return False
        with self._lock:
            try:
                self._entries.move_to_end(digest)
            except KeyError:
                pass  # evicted by another thread meanwhile: still verified.
        return True

    def add(self, digest: bytes) -> None:
        """Remember a successful verification."""
        if self.maxsize == 0 or self.ttl == 0:
            return
        with self._lock:
            self._entries[digest] = self.clock() + self.ttl
            self._entries.move_to_end(digest)
            while len(self._entries) > self.maxsize:
                self._entries.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


class SingleFlight(Generic[T]):
    """Runs one computation per key at a time; concurrent callers share it.

    Works for threads and event loops alike: the shared result is a
    :class:`concurrent.futures.Future`, which a thread waits on with
    ``result()`` and a coroutine with :func:`asyncio.wrap_future`.
    """

    __slots__ = ("_flights", "_lock")

    def __init__(self) -> None:
        self._flights: dict[bytes, Future[T]] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._flights)

    def join(self, key: bytes) -> tuple[Future[T], bool]:
        """Return the flight for *key* and whether the caller leads it.

        The leader must call :meth:`land` when done, success or failure.
        """
        with self._lock:
            flight = self._flights.get(key)
            if flight is not None:
                return flight, False
            flight = self._flights[key] = Future()
            return flight, True

    def land(self, key: bytes, flight: Future[T], result: T | None = None,
             error: BaseException | None = None) -> None:
        """Finish *flight* and forget it, so the next caller starts afresh."""
        with self._lock:
            self._flights.pop(key, None)
        if error is not None:
            flight.set_exception(error)
        else:
            flight.set_result(result)  # type: ignore[arg-type]
