"""A process's cache of key records, trusted only while its invalidator is alive.

Shared by the stores whose changes every process can learn about: the SQL
store on PostgreSQL (``LISTEN``/``NOTIFY``, :mod:`._pg_listener`) and the
SQLite store (a change log read by :mod:`._sqlite_watch`).  Whatever
invalidates the cache holds a *lease*, renewed each time it has provably
seen every change committed before a given moment; the cache answers only
while the lease runs, so an invalidator that dies or stalls never lets a
stale record through for longer than the lease.

Besides records the cache remembers ids that are *absent* (bounded, like the
records): a forged id sent again costs no database read.  Creating a key
invalidates its id like any other change, so an absent entry never outlives
the key's creation (by more than the lease, in another process).
"""

from __future__ import annotations

import enum
import threading
import time
from collections.abc import Callable
from typing import Final, Literal, TypeVar

from .._records import KeyRecord

__all__ = ["ABSENT", "RecordCache"]

_V = TypeVar("_V")


class _Absent(enum.Enum):
    ABSENT = "ABSENT"


#: What :meth:`RecordCache.lookup` returns for an id known not to exist.
ABSENT: Final = _Absent.ABSENT


def _noop() -> None:
    return None


class RecordCache:
    """Key records by id, served only while the invalidator holds a valid lease.

    Bounded (oldest entries go first) and every entry expires after *ttl*
    seconds whatever happens, as a second line of defence.  Usage fields
    (``usage_count``, ``last_used_at``) of a cached record may lag by up to
    *ttl*: usage updates do not invalidate.  Up to *absent_size* ids known
    not to exist are remembered the same way.

    :meth:`put` and :meth:`put_absent` take the :attr:`epoch` read *before*
    the database read that produced the answer: any invalidation in between
    moves the epoch on and the (possibly stale) answer is not cached.
    """

    __slots__ = ("_absent", "_clock", "_entries", "_lock", "_valid_until", "absent_size",
                 "epoch", "maxsize", "on_deaf", "ttl")

    def __init__(self, maxsize: int = 100_000, ttl: float = 30.0, *,
                 absent_size: int = 10_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.maxsize = maxsize
        self.absent_size = absent_size
        self.ttl = ttl
        self._clock = clock
        self._entries: dict[str, tuple[KeyRecord, float]] = {}
        self._absent: dict[str, float] = {}
        self._lock = threading.Lock()
        self._valid_until = 0.0
        #: Moves on at every invalidation, clear and loss of the invalidator.
        self.epoch = 0
        #: Called by a lookup that finds the cache deaf: starts the invalidator,
        #: or (SQLite) reads the change log and renews the lease at once.
        self.on_deaf: Callable[[], None] = _noop

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return (f"RecordCache(size={len(self)}, absent={len(self._absent)}, "
                f"maxsize={self.maxsize}, ttl={self.ttl}, listening={self.listening})")

    @property
    def listening(self) -> bool:
        """Whether the cache answers now (the invalidator's lease is valid)."""
        return self._clock() < self._valid_until

    def get(self, key_id: str) -> KeyRecord | None:
        """The cached record, or ``None`` (not cached, expired, or the cache is deaf)."""
        now = self._clock()
        if now >= self._valid_until:
            self.on_deaf()  # which may renew the lease at once
            if now >= self._valid_until:
                return None
        entry = self._entries.get(key_id)
        if entry is None or entry[1] <= now:
            return None
        return entry[0]

    def lookup(self, key_id: str) -> KeyRecord | Literal[_Absent.ABSENT] | None:
        """:meth:`get`, or :data:`ABSENT` for an id known not to exist."""
        now = self._clock()
        if now >= self._valid_until:
            self.on_deaf()
            if now >= self._valid_until:
                return None
        entry = self._entries.get(key_id)
        if entry is not None:
            return entry[0] if entry[1] > now else None
        until = self._absent.get(key_id)
        if until is not None and until > now:
            return ABSENT
        return None

    def read_through(self, key_id: str, fetch: Callable[[str], KeyRecord | None]
                     ) -> KeyRecord | None:
        """The record of *key_id*: from the cache, or from *fetch* (the
        store's database read), which is then remembered, found or absent,
        unless a change was signalled while it ran."""
        found = self.lookup(key_id)
        if found is not None:
            return None if found is ABSENT else found
        epoch = self.epoch
        record = fetch(key_id)
        self.remember(key_id, record, epoch)
        return record

    def remember(self, key_id: str, record: KeyRecord | None, epoch: int) -> None:
        """:meth:`put` *record*, or :meth:`put_absent` *key_id* when it is ``None``."""
        if record is None:
            self.put_absent(key_id, epoch)
        else:
            self.put(record, epoch)

    def put(self, record: KeyRecord, epoch: int) -> None:
        """Cache *record*, read from the database after :attr:`epoch` was *epoch*."""
        if self.maxsize <= 0:
            return
        with self._lock:
            now = self._clock()
            if epoch == self.epoch and now < self._valid_until:
                _insert(self._entries, self.maxsize, record.id, (record, now + self.ttl))

    def put_absent(self, key_id: str, epoch: int) -> None:
        """Remember that *key_id* did not exist, as read after :attr:`epoch` was *epoch*."""
        if self.absent_size <= 0:
            return
        with self._lock:
            now = self._clock()
            if epoch == self.epoch and now < self._valid_until:
                _insert(self._absent, self.absent_size, key_id, now + self.ttl)

    def drop(self, key_id: str) -> None:
        """Forget one key (it changed, was created or deleted)."""
        with self._lock:
            self.epoch += 1
            self._entries.pop(key_id, None)
            self._absent.pop(key_id, None)

    def clear(self) -> None:
        """Forget every key."""
        with self._lock:
            self.epoch += 1
            self._entries.clear()
            self._absent.clear()

    def renew(self, until: float) -> None:
        """Trust the cache until monotonic time *until* (the invalidator is alive)."""
        self._valid_until = until

    def deafen(self) -> None:
        """Stop answering at once: the invalidator lost track of changes."""
        with self._lock:
            self._valid_until = 0.0
            self.epoch += 1
            self._entries.clear()
            self._absent.clear()

    def after_fork(self) -> None:
        """In a forked child: a fresh lock, and nothing trusted until renewed."""
        self._lock = threading.Lock()
        self.deafen()


def _insert(entries: dict[str, _V], maxsize: int, key_id: str, value: _V) -> None:
    # Oldest out; a refreshed entry becomes the youngest.
    if entries.pop(key_id, None) is None and len(entries) >= maxsize:
        del entries[next(iter(entries))]
    entries[key_id] = value
