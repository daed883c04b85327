"""A process's cache of key records, trusted only while its invalidator is alive.

Shared by the stores whose changes every process can learn about: the SQL
store on PostgreSQL (``LISTEN``/``NOTIFY``, :mod:`._pg_listener`) and the
SQLite store (a change log read by :mod:`._sqlite_watch`).  Whatever
invalidates the cache holds a *lease*, renewed each time it has provably
seen every change committed before a given moment; the cache answers only
while the lease runs, so an invalidator that dies or stalls never lets a
stale record through for longer than the lease.

Besides records the cache knows which key ids *exist*: the invalidator loads
every id once (``SELECT id``) and every change it hears of (a creation
included) adds the changed id, so while the lease runs an id outside that
set is absent, and a forged id, fresh or replayed, costs no database read.
The set only ever says "absent" for certain: an id in it that does not exist
(a deleted key) is read, and then remembered as absent (bounded, like the
records).  It holds at most *ids_size* ids (about 100 bytes each); a store
with more keys goes without it, on the absent entries alone.  A creation
adds its id in the creating process at once, and in the others within the
lease, as every other change.
"""

from __future__ import annotations

import datetime as dt
import enum
import logging
import math
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Final, Literal, TypeVar

from .._records import KeyRecord
from ._protocol import RotationPlan

__all__ = ["ABSENT", "IDS_SIZE", "RecordCache", "created_by"]

log = logging.getLogger("aqnt_auth.store")

#: Key ids a record cache knows at most by default (about 100 MB at most:
#: about 100 bytes an id).
IDS_SIZE: Final = 1_000_000

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

    __slots__ = ("_absent", "_clock", "_entries", "_ids", "_ids_until", "_loading", "_lock",
                 "_valid_until", "absent_size", "epoch", "ids_size", "ids_ttl", "maxsize",
                 "on_deaf", "ttl")

    def __init__(self, maxsize: int = 100_000, ttl: float = 30.0, *,
                 absent_size: int = 10_000, ids_size: int = 0,
                 ids_ttl: float = math.inf,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.maxsize = maxsize
        self.absent_size = absent_size
        self.ttl = ttl
        #: Key ids known at most (0: no id set); *ids_ttl*: seconds before
        #: the invalidator loads them again (infinite where every change,
        #: hand-written SQL's too, is heard).
        self.ids_size = ids_size
        self.ids_ttl = ids_ttl
        self._clock = clock
        self._entries: dict[str, tuple[KeyRecord, float]] = {}
        self._absent: dict[str, float] = {}
        # Every id that may exist, or None (not loaded); the ids changed
        # while a load runs, or None (no load running).
        self._ids: set[str] | None = None
        self._ids_until = 0.0
        self._loading: set[str] | None = None
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
        ids = "off" if self._ids is None else len(self._ids)
        return (f"RecordCache(size={len(self)}, absent={len(self._absent)}, ids={ids}, "
                f"maxsize={self.maxsize}, ttl={self.ttl}, listening={self.listening})")

    @property
    def listening(self) -> bool:
        """Whether the cache answers now (the invalidator's lease is valid)."""
        return self._clock() < self._valid_until

    def get(self, key_id: str) -> KeyRecord | None:
        """The cached record, or ``None`` (not cached, expired, or the cache is deaf)."""
        # The clock read into a local first: CPython 3.11 specializes an
        # attribute read, not a method call on an attribute that holds a
        # callable (that looks "_clock" up in the type on every call).
        clock = self._clock
        now = clock()
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
        clock = self._clock  # read first: see get()
        now = clock()
        if now >= self._valid_until:
            self.on_deaf()
            if now >= self._valid_until:
                return None
        entry = self._entries.get(key_id)
        if entry is not None:
            return entry[0] if entry[1] > now else None
        ids = self._ids
        if ids is not None and key_id not in ids:
            return ABSENT
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
                if self._ids is not None:
                    # A deleted key's id: no longer worth a read.
                    self._ids.discard(key_id)

    def drop(self, key_id: str) -> None:
        """Forget one key (it changed, was created or deleted): the next
        lookup of *key_id* reads the database."""
        with self._lock:
            self.epoch += 1
            self._entries.pop(key_id, None)
            self._absent.pop(key_id, None)
            ids = self._ids
            if ids is not None:
                ids.add(key_id)
                if len(ids) > self.ids_size:
                    self._ids = None  # the next load decides whether it fits
            if self._loading is not None:
                self._loading.add(key_id)

    def clear(self) -> None:
        """Forget every key (the id set too, until it is loaded again)."""
        with self._lock:
            self.epoch += 1
            self._entries.clear()
            self._absent.clear()
            self._ids = self._loading = None

    # -- the id set, loaded by the invalidator ------------------------------

    def ids_wanted(self) -> bool:
        """Whether the invalidator should load the key ids now (call
        :meth:`load_ids` after it has seen every change up to now)."""
        return self.ids_size > 0 and (self._ids is None or self._clock() >= self._ids_until)

    def load_ids(self, read: Callable[[int], Iterable[str]]) -> None:
        """Load the set of existing key ids with *read(limit)* (at most
        *limit* ids from the database), which must start after every change
        committed before it was called has been dropped.  An id dropped while
        it runs is added; a :meth:`clear` meanwhile discards the load.  A
        store with more than :attr:`ids_size` keys goes without an id set."""
        with self._lock:
            loading = self._loading = set()
        try:
            found = set(read(self.ids_size + 1))
        except BaseException:
            with self._lock:
                if self._loading is loading:
                    self._loading = None
            raise
        with self._lock:
            if self._loading is not loading:
                return
            self._loading = None
            if len(found) > self.ids_size:
                log.info("record cache: over %d keys, so no set of key ids is kept "
                         "(unknown ids are remembered as absent after one read)", self.ids_size)
                self.ids_size = 0
                self._ids = None
                return
            found |= loading
            self._ids = found
            self._ids_until = self._clock() + self.ids_ttl

    @property
    def ids(self) -> frozenset[str] | None:
        """The key ids that may exist, when loaded (for tests and curiosity)."""
        ids = self._ids
        return None if ids is None else frozenset(ids)

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
            self._ids = self._loading = None

    def after_fork(self) -> None:
        """In a forked child: a fresh lock, and nothing trusted until renewed."""
        self._lock = threading.Lock()
        self.deafen()


def created_by(plan: RotationPlan) -> tuple[RotationPlan, list[str]]:
    """*plan*, wrapped to note the id of the successor it makes in the list
    returned with it: a rotating store drops that id once it has committed."""
    created: list[str] = []

    def noting(old: KeyRecord, successors: Sequence[KeyRecord]
               ) -> tuple[KeyRecord, dt.datetime | None]:
        successor, expires_at = plan(old, successors)
        created.append(successor.id)
        return successor, expires_at

    return noting, created


def _insert(entries: dict[str, _V], maxsize: int, key_id: str, value: _V) -> None:
    # Oldest out; a refreshed entry becomes the youngest.
    if entries.pop(key_id, None) is None and len(entries) >= maxsize:
        del entries[next(iter(entries))]
    entries[key_id] = value
