"""Keeping a process's record cache exact across the processes of a machine, on SQLite.

Triggers on the key table append the id of every created, changed or
deleted key to a change log (:func:`change_log_ddl`), in the transaction
that makes the change, so the log is exactly as current as the table, and
hand-written SQL is covered too.  Usage flushes touch only ``usage_count``
and ``last_used_at``, which the update trigger does not watch: they
invalidate nothing; nor does a quota's counter (:data:`QUOTA_COUNTER_COLUMNS`),
written by each request of a key with a quota, but for a quota set or removed.

Each process has one :class:`ChangeWatcher`.  A lookup that finds the
cache's lease run out reads the log itself, inline, past the last sequence
number seen (one primary-key range read on a connection of its own that
never waits for a lock: in WAL mode readers are not blocked by writers),
drops the ids it finds from the :class:`~._record_cache.RecordCache`, and
renews the lease to the moment that read started plus *lease*.  The first
read (and the first after the cache was cleared) also loads the set of key
ids (:meth:`~._record_cache.RecordCache.load_ids`), which the log's rows
keep exact from then on: an unknown id is absent without a read.  So a record
is served from memory only while a read that started at most *lease*
seconds ago found no change to it: a change committed by another process is
honoured within *lease*, whatever the load, and a busy process reads the
log at most once per *lease* (an idle one not at all).  No thread is
involved: a polling thread would have to take the GIL from a busy event
loop every few milliseconds, and on a loaded machine every such hand-over
can leave the loop waiting for the thread to be scheduled.  The changing
process drops its own entry at once.

A gap in the sequence numbers (the log is pruned to its last
:data:`LOG_SIZE` rows, so a watcher that slept through more than that many
changes sees one) clears the whole cache.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable
from typing import Final

from ._record_cache import RecordCache

__all__ = ["LOG_SIZE", "QUOTA_COUNTER_COLUMNS", "UNWATCHED_COLUMNS", "ChangeWatcher",
           "change_log_ddl", "quota_set_ddl"]

log = logging.getLogger("aqnt_auth.store.sqlite")

#: Change-log rows kept; older ones are pruned by the triggers.
LOG_SIZE: Final = 1024

#: The key columns whose updates invalidate nothing (usage flushes).
UNWATCHED_COLUMNS: Final = frozenset({"usage_count", "last_used_at"})

#: The quota's counter columns, written by every request of a key with a
#: quota (:meth:`~aqnt_auth.KeyStore.consume_quota`): since SQLite step 6 and
#: Django migration 0007 they invalidate nothing either (a cached count is
#: stale by design), except when a quota is set on a key or removed from
#: it (:func:`quota_set_ddl`), which changes how its requests are checked.
QUOTA_COUNTER_COLUMNS: Final = frozenset({"quota_remaining", "quota_refilled_at"})

_MAX_RETRY: Final = 2.0
# SQLITE_BUSY and SQLITE_LOCKED (sqlite3 names them from Python 3.11 on).
_BUSY_CODES: Final = frozenset({5, 6})


def change_log_ddl(table: str, log_table: str, watched: tuple[str, ...]) -> tuple[str, ...]:
    """The change log of *table* and its triggers, one statement each.

    *watched*: the columns whose updates are changes (every column but
    :data:`UNWATCHED_COLUMNS`).  The names are the caller's constants, never
    user input.
    """
    prune = (f"DELETE FROM {log_table} WHERE seq <= "  # noqa: S608 - constant names
             f"(SELECT MAX(seq) FROM {log_table}) - {LOG_SIZE};")
    return (
        f"CREATE TABLE IF NOT EXISTS {log_table} (\n"
        "    seq    INTEGER PRIMARY KEY AUTOINCREMENT,\n"
        "    key_id TEXT NOT NULL\n"
        ")",
        f"CREATE TRIGGER IF NOT EXISTS {table}_created AFTER INSERT ON {table}\n"  # noqa: S608
        f"BEGIN\n    INSERT INTO {log_table} (key_id) VALUES (NEW.id);\n    {prune}\nEND",
        f"CREATE TRIGGER IF NOT EXISTS {table}_changed\n"  # noqa: S608
        f"AFTER UPDATE OF {', '.join(watched)} ON {table}\n"
        f"BEGIN\n    INSERT INTO {log_table} (key_id) VALUES (OLD.id);\n"
        f"    INSERT INTO {log_table} (key_id) SELECT NEW.id WHERE NEW.id <> OLD.id;\n"
        f"    {prune}\nEND",
        f"CREATE TRIGGER IF NOT EXISTS {table}_deleted AFTER DELETE ON {table}\n"  # noqa: S608
        f"BEGIN\n    INSERT INTO {log_table} (key_id) VALUES (OLD.id);\n    {prune}\nEND",
    )


def quota_set_ddl(table: str, log_table: str) -> tuple[str, ...]:
    """The trigger that logs a quota set on a key, or removed from it: the
    one change of the unwatched :data:`QUOTA_COUNTER_COLUMNS` that matters."""
    prune = (f"DELETE FROM {log_table} WHERE seq <= "  # noqa: S608 - constant names
             f"(SELECT MAX(seq) FROM {log_table}) - {LOG_SIZE};")
    return (
        f"CREATE TRIGGER IF NOT EXISTS {table}_quota_set\n"  # noqa: S608
        f"AFTER UPDATE OF quota_remaining ON {table}\n"
        "WHEN (OLD.quota_remaining IS NULL) <> (NEW.quota_remaining IS NULL)\n"
        f"BEGIN\n    INSERT INTO {log_table} (key_id) VALUES (OLD.id);\n    {prune}\nEND",
    )


class ChangeWatcher:
    """Reads a change log, at most once per *lease*, when a lookup needs it.

    :param connect: opens a new connection to the database (autocommit, no
        busy timeout: a poll that would wait gives up, and that lookup reads
        the database instead).
    :param log_table: the change log's name, *table* the key table's
        (constants, never user input).
    :param lease: seconds the cache is trusted after a read of the log started.
    :param retry: first delay before trying again after a failure (doubling
        up to 2 s); meanwhile every lookup reads the database.
    """

    def __init__(
        self,
        connect: Callable[[], sqlite3.Connection],
        cache: RecordCache,
        *,
        log_table: str,
        table: str,
        lease: float = 0.02,
        retry: float = 0.1,
    ) -> None:
        self._connect = connect
        self.cache = cache
        self.lease = lease
        self.retry = retry
        self._since = f"SELECT seq, key_id FROM {log_table} WHERE seq > ? ORDER BY seq"  # noqa: S608
        self._newest = f"SELECT COALESCE(MAX(seq), 0) FROM {log_table}"  # noqa: S608
        self._ids = f"SELECT id FROM {table} LIMIT ?"  # noqa: S608
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._last = 0
        self._stopped = False
        self._delay = retry
        self._retry_at = 0.0
        #: Polls that found changes, and polls in all (for tests and curiosity).
        self.changes_seen = 0
        self.polls = 0
        cache.on_deaf = self.refresh
        ref = weakref.ref(self)
        os.register_at_fork(after_in_child=lambda: _reset_after_fork(ref))

    def __repr__(self) -> str:
        return f"ChangeWatcher(lease={self.lease})"

    def refresh(self) -> None:
        """Read the log now and renew the lease (called by a lookup that
        found it run out).  Never waits: if another thread is reading it,
        or a failure is being waited out, the cache stays deaf for this
        lookup."""
        if self._stopped or not self._lock.acquire(blocking=False):
            return
        try:
            started = time.monotonic()
            if started < self._retry_at:
                return
            try:
                if self._conn is None:
                    conn = self._connect()
                    (self._last,) = conn.execute(self._newest).fetchone()
                    self._conn = conn
                    # Whatever happened while nobody read the log is read
                    # afresh from here on.
                    self.cache.clear()
                else:
                    self._last = self.poll(self._conn, self._last)
                if self.cache.ids_wanted():
                    # Read after the log up to _last: a key created since is
                    # in this read or in the log's next rows.
                    self.cache.load_ids(self._read_ids)
            except sqlite3.Error as exc:
                if _busy(exc):
                    # A writer is committing (a rollback-journal database,
                    # or WAL recovery): this lookup reads the database, a
                    # later one tries the log again.
                    self._retry_at = started + self.lease
                else:
                    self._failed(started, exc)
                return
            if self._delay != self.retry:
                log.warning("record cache: the change log is readable again; cache re-synchronised")
                self._delay = self.retry
            self.cache.renew(started + self.lease)
        finally:
            self._lock.release()

    def _read_ids(self, limit: int) -> list[str]:
        assert self._conn is not None
        return [key_id for (key_id,) in self._conn.execute(self._ids, (limit,))]

    def _failed(self, now: float, exc: sqlite3.Error) -> None:
        if self._delay == self.retry:
            log.warning("record cache bypassed (every lookup reads the database) until the "
                        "change log can be read: %s: %s", type(exc).__name__, exc)
        self._retry_at = now + self._delay
        self._delay = min(self._delay * 2, _MAX_RETRY)
        self._close()

    def _close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(sqlite3.Error):  # closing is best effort
                conn.close()

    def poll(self, conn: sqlite3.Connection, last: int) -> int:
        """Drop what changed after log entry *last*; the last entry read."""
        rows = conn.execute(self._since, (last,)).fetchall()
        self.polls += 1
        if not rows:
            return last
        self.changes_seen += 1
        if rows[0][0] != last + 1:
            self.cache.clear()  # pruned past what this process has seen
        else:
            for _, key_id in rows:
                self.cache.drop(key_id)
        newest: int = rows[-1][0]
        return newest

    def stop(self) -> None:
        """Stop reading the log (the cache answers nothing from now on).  Idempotent."""
        with self._lock:
            self._stopped = True
            self._close()
        self.cache.deafen()


def _busy(exc: sqlite3.Error) -> bool:
    return getattr(exc, "sqlite_errorcode", None) in _BUSY_CODES


def _reset_after_fork(ref: weakref.ref[ChangeWatcher]) -> None:
    watcher = ref()
    if watcher is None:
        return
    # The parent's connection belongs to the parent: the child opens its own
    # on its first lookup, and trusts nothing until then.
    watcher._lock = threading.Lock()
    watcher._conn = None
    watcher.cache.after_fork()
