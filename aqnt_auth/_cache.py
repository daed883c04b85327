"""Remembering successful verifications, and doing each argon2 once.

An argon2 verify costs milliseconds; the rest of a request costs
microseconds.  So a *successful* verification is remembered under a keyed
BLAKE2s digest of the presented key (keyed by a random salt and
personalization), together with the stored hash it was checked against:

* the BLAKE2s secret is random per process and the entry holds no secret, so
  the cache gives an attacker who reads process memory nothing to test
  guesses against offline;
* an entry counts only while the record's stored hash is still the one it
  remembers, so a rehash, a rotation or any change of the stored hash misses;
* only successes enter, so a flood of bogus keys never grows it;
* it is a bounded LRU with a TTL.

It saves argon2 work and, because the presented key is looked up by its
digest before anything else, the format and checksum work of a key already
proven good.  It never saves the store read: revocation and expiry are
checked on every request.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Future
from typing import TYPE_CHECKING, Generic, TypeVar

from ._errors import ConfigurationError

if TYPE_CHECKING:
    from ._records import KeyRecord

__all__ = ["Flight", "SingleFlight", "VerificationCache", "Verified"]

T = TypeVar("T")


class Verified:
    """What the cache remembers of a key that verified: nothing secret.

    :attr:`accepted` is the last record the key was accepted with, where
    that record is :attr:`~aqnt_auth.KeyRecord.plain`: as records are
    immutable (a change is a new record), a store that returns that very
    object again returns it unchanged, and its checks need not run again
    but for its expiry.  One attribute, so that threads replace it
    atomically.
    """

    __slots__ = ("accepted", "expires", "key_id", "mode", "prefix", "stored_hash")

    def __init__(self, expires: float, key_id: str, mode: str, prefix: str, stored_hash: str
                 ) -> None:
        self.expires = expires
        self.key_id = key_id
        self.mode = mode
        self.prefix = prefix
        self.stored_hash = stored_hash
        self.accepted: KeyRecord | None = None

    def __repr__(self) -> str:
        return f"Verified(key_id={self.key_id!r}, mode={self.mode!r}, prefix={self.prefix!r})"


class VerificationCache:
    """A thread-safe, bounded, expiring map of verified key digests."""

    __slots__ = ("_entries", "_find", "_keyed", "_lock", "_refresh", "clock", "maxsize", "ttl")

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
        # The secret is a random salt and personalization (128 bits, in the
        # parameter block that BLAKE2 folds into its initial state), not
        # BLAKE2's key: a key is hashed as a block of its own, so every
        # digest would cost a second compression (a third of a warm
        # request's hashing).  Here a key of up to 64 bytes takes one
        # compression: a PRF keyed through the chaining value, as HMAC's
        # inner hash is.  Copying the prepared state is cheaper than
        # preparing a new one.
        self._keyed = hashlib.blake2s(digest_size=16, salt=os.urandom(8),
                                      person=os.urandom(8))
        self._entries: OrderedDict[bytes, Verified] = OrderedDict()
        # The two methods a hit calls, bound once: CPython 3.11 looks an
        # OrderedDict's methods up on every call (its instances have a
        # __dict__), through the interpreter-wide method cache, where they
        # can evict the app's own entries.
        self._find = self._entries.get
        self._refresh = self._entries.move_to_end
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"VerificationCache(size={len(self)}, maxsize={self.maxsize}, ttl={self.ttl})"

    def digest(self, presented: str | bytes) -> bytes:
        """The cache key of a presented key: BLAKE2s with a secret salt and
        personalization, 128 bits.

        A key as bytes is taken as its ASCII encoding, so ``digest(b"sk_...")``
        is ``digest("sk_...")``: a header that arrived as bytes is looked up
        without decoding it.
        """
        h = self._keyed.copy()
        h.update(presented if isinstance(presented, bytes)
                 else presented.encode("ascii", "replace"))
        return h.digest()

    def lookup(self, presented: bytes) -> Verified | None:
        """``get(digest(presented))`` in one call, for a key as it arrived
        in a header (bytes): the warm path's lookup."""
        h = self._keyed.copy()
        h.update(presented)
        digest = h.digest()
        # The rest is get(), written out: a call is a measurable share of a
        # warm request.
        find = self._find
        entry = find(digest)
        if entry is None:
            return None
        clock = self.clock
        if entry.expires <= clock():
            with self._lock:
                self._entries.pop(digest, None)
            return None
        refresh = self._refresh
        try:  # noqa: SIM105
            refresh(digest)
        except KeyError:
            pass
        return entry

    def get(self, digest: bytes) -> Verified | None:
        """The remembered verification under *digest*, if still fresh."""
        # Lock-free on the hit path: each OrderedDict call below is a single
        # C call, atomic under the GIL; a concurrent eviction only turns
        # move_to_end into a KeyError, and the entry was valid when read.
        find = self._find
        entry = find(digest)
        if entry is None:
            return None
        clock = self.clock  # read first: CPython specializes a read, not a call on it
        if entry.expires <= clock():
            with self._lock:
                self._entries.pop(digest, None)
            return None
        # try/except, not contextlib.suppress: this is the hot path, and a
        # context manager costs more than the whole lookup.
        refresh = self._refresh
        try:  # noqa: SIM105
            refresh(digest)
        except KeyError:
            pass
        return entry

    def add(self, digest: bytes, key_id: str, mode: str, prefix: str, stored_hash: str) -> None:
        """Remember that the key under *digest* verified against *stored_hash*."""
        if self.maxsize == 0 or self.ttl == 0:
            return
        entry = Verified(self.clock() + self.ttl, key_id, mode, prefix, stored_hash)
        with self._lock:
            self._entries[digest] = entry
            self._entries.move_to_end(digest)
            while len(self._entries) > self.maxsize:
                self._entries.popitem(last=False)

    def discard(self, digest: bytes) -> None:
        with self._lock:
            self._entries.pop(digest, None)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


class Flight(Future[T]):
    """A shared computation, and how many callers still wait for it."""

    key = b""
    waiters = 0
    #: ``"queued"``, then ``"started"`` by its leader, or ``"withdrawn"`` when
    #: every caller left before it started.
    state = "queued"


class SingleFlight(Generic[T]):
    """Runs one computation per key at a time; concurrent callers share it.

    Works for threads and event loops alike: the shared result is a
    :class:`concurrent.futures.Future`, which a thread waits on with
    ``result()`` and a coroutine through a callback.  A caller that stops
    waiting (a cancelled request) calls :meth:`leave`, so the computation
    can be skipped when nobody is left.
    """

    __slots__ = ("_flights", "_lock")

    def __init__(self) -> None:
        self._flights: dict[bytes, Flight[T]] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._flights)

    def join(self, key: bytes) -> tuple[Flight[T], bool]:
        """Return the flight for *key* and whether the caller leads it.

        The leader must call :meth:`land` when done, success or failure.
        """
        with self._lock:
            flight = self._flights.get(key)
            if flight is None:
                flight = self._flights[key] = Flight()
                flight.key = key
                flight.waiters = 1
                return flight, True
            flight.waiters += 1
            return flight, False

    def leave(self, flight: Flight[T]) -> bool:
        """One caller no longer waits for *flight*.  True if that withdrew it:
        nobody waits and it has not started, so it never will, and the next
        caller with its key starts a new one."""
        with self._lock:
            flight.waiters -= 1
            if flight.waiters > 0 or flight.state != "queued":
                return False
            flight.state = "withdrawn"
            if self._flights.get(flight.key) is flight:
                del self._flights[flight.key]
            return True

    def start(self, flight: Flight[T]) -> bool:
        """Mark *flight* started, unless it was withdrawn (then False)."""
        with self._lock:
            if flight.state == "withdrawn":
                return False
            flight.state = "started"
            return True

    def land(self, key: bytes, flight: Future[T], result: T | None = None,
             error: BaseException | None = None) -> None:
        """Finish *flight* and forget it, so the next caller starts afresh."""
        with self._lock:
            if self._flights.get(key) is flight:
                del self._flights[key]
        if error is not None:
            flight.set_exception(error)
        else:
            flight.set_result(result)  # type: ignore[arg-type]
