"""Keeping a process's record cache exact across the processes of a machine, on SQLite.

Triggers on the key table append the id of every created, changed or
deleted key to a change log (:func:`change_log_ddl`), in the transaction
that makes the change, so the log is exactly as current as the table, and
hand-written SQL is covered too.  Usage flushes touch only ``usage_count``
and ``last_used_at``, which the update trigger does not watch: they
invalidate nothing.

Each process runs one :class:`ChangeWatcher` thread with its own connection:
every *interval* it reads the log past the last sequence number it has seen
(one primary-key range read, in WAL mode never blocked by writers), drops
the ids it finds from the :class:`~._record_cache.RecordCache`, and renews
the cache's lease to the moment that read started plus *lease*.  So a
record is served from memory only while a read that started at most *lease*
seconds ago found no change to it: a change committed by another process is
honoured within *lease*, whatever the load (past it, lookups read the file
until the watcher catches up).  The changing process drops its own entry at
once.

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

__all__ = ["LOG_SIZE", "UNWATCHED_COLUMNS", "ChangeWatcher", "change_log_ddl"]

log = logging.getLogger("aqnt_auth.store.sqlite")

#: Change-log rows kept; older ones are pruned by the triggers.
LOG_SIZE: Final = 1024

#: The key columns whose updates invalidate nothing (usage flushes).
UNWATCHED_COLUMNS: Final = frozenset({"usage_count", "last_used_at"})

_MAX_RETRY: Final = 2.0


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


class ChangeWatcher:
    """One thread that polls a change log and invalidates *cache*.

    :param connect: opens a new connection to the database (autocommit).
    :param log_table: the change log's name (a constant, never user input).
    :param interval: seconds between polls.
    :param lease: seconds the cache is trusted after a poll started.
    :param retry: first delay before reopening a connection that failed.
    """

    def __init__(
        self,
        connect: Callable[[], sqlite3.Connection],
        cache: RecordCache,
        *,
        log_table: str,
        interval: float = 0.01,
        lease: float = 0.05,
        retry: float = 0.1,
    ) -> None:
        self._connect = connect
        self.cache = cache
        self.interval = interval
        self.lease = lease
        self.retry = retry
        self._since = f"SELECT seq, key_id FROM {log_table} WHERE seq > ? ORDER BY seq"  # noqa: S608
        self._last = f"SELECT COALESCE(MAX(seq), 0) FROM {log_table}"  # noqa: S608
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._failing = False
        #: Polls that found changes, and polls in all (for tests and curiosity).
        self.changes_seen = 0
        self.polls = 0
        cache.on_deaf = self.ensure_running
        ref = weakref.ref(self)
        os.register_at_fork(after_in_child=lambda: _reset_after_fork(ref))

    def __repr__(self) -> str:
        return f"ChangeWatcher(interval={self.interval}, lease={self.lease})"

    def ensure_running(self) -> None:
        """Start the thread if it is not running (called on a deaf lookup)."""
        if self._thread is not None or self._stop.is_set():
            return
        with self._lock:
            if self._thread is not None or self._stop.is_set():
                return
            self._thread = threading.Thread(
                target=self._run, name="aqnt-sqlite-watcher", daemon=True
            )
            self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop watching.  Idempotent."""
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
        self.cache.deafen()

    def _run(self) -> None:
        delay = self.retry
        while not self._stop.is_set():
            conn: sqlite3.Connection | None = None
            polls = self.polls
            try:
                conn = self._connect()
                self._watch(conn)
            except Exception as exc:
                if not self._failing:
                    log.warning("record cache watcher failed (cache bypassed, every lookup "
                                "reads the database until it is back): %s: %s",
                                type(exc).__name__, exc)
                self._failing = True
            finally:
                self.cache.deafen()
                if conn is not None:
                    with contextlib.suppress(sqlite3.Error):  # closing is best effort
                        conn.close()
            if self.polls != polls:
                delay = self.retry  # it had been working: retry soon
            self._stop.wait(delay)
            delay = min(delay * 2, _MAX_RETRY)

    def _watch(self, conn: sqlite3.Connection) -> None:
        cache, stop = self.cache, self._stop
        started = time.monotonic()
        (last,) = conn.execute(self._last).fetchone()
        # Whatever happened while nobody watched is read afresh from here on.
        cache.clear()
        cache.renew(started + self.lease)
        if self._failing:
            self._failing = False
            log.warning("record cache watcher is back; cache re-synchronised")
        while not stop.wait(self.interval):
            started = time.monotonic()
            last = self.poll(conn, last)
            cache.renew(started + self.lease)

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


def _reset_after_fork(ref: weakref.ref[ChangeWatcher]) -> None:
    watcher = ref()
    if watcher is None:
        return
    # Threads do not survive fork(): the child starts its own watcher, with
    # its own connection, on its first lookup.
    watcher._lock = threading.Lock()
    watcher._thread = None
    watcher.cache.after_fork()
