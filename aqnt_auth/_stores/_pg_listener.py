"""The SQL store's record cache, and the PostgreSQL listener that keeps it honest.

Every change to a key (its creation too) sends ``NOTIFY <channel>, '<key id>'`` in the
changing transaction, so PostgreSQL delivers it exactly when the change
commits.  Each process runs one :class:`Listener` thread with its own
connection that ``LISTEN``\\s and drops the named entry from the
:class:`RecordCache`.

The cache answers only while the listener *provably* hears everything: the
listener holds a lease, renewed after every heartbeat round trip (which
PostgreSQL answers only after delivering every notification committed
before it), and the cache stops answering the moment the lease runs out.
So a listener that dies, hangs on a black-holed network or loses its
backend to ``pg_terminate_backend`` never lets a revoked key through for
longer than the lease; until it is back, every lookup reads the database.
When it reconnects it clears the cache (a re-synchronisation: whatever
changed while it was deaf is read afresh) before the lease is renewed.

A notification whose payload is ``*`` clears the whole cache: run
``NOTIFY aqnt_auth_keys, '*'`` after changing keys with hand-written SQL.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
import weakref
from collections.abc import Callable, Iterable
from typing import Any, Final

import psycopg
from psycopg import sql

from ._deadline import WATCHDOG, shutdown_socket
from ._record_cache import RecordCache

__all__ = ["CLEAR_ALL", "Listener", "RecordCache"]

log = logging.getLogger("aqnt_auth.store.sql")

#: The notification payload that clears every cached record.
CLEAR_ALL: Final = "*"

_MAX_RETRY: Final = 2.0
# Connections a forked child inherited: never closed there (that would end
# the parent's session) and never garbage-collected (psycopg would warn).
_INHERITED: list[object] = []


class Listener:
    """One thread that ``LISTEN``\\s on *channel* and invalidates *cache*.

    :param connect: returns a new psycopg connection (the listener switches
        it to autocommit and names it *name* in ``pg_stat_activity``).
    :param heartbeat: seconds between liveness round trips.
    :param lease: seconds the cache is trusted after a round trip.
    :param timeout: seconds one round trip may take before the connection
        is declared dead.
    :param retry: first delay before reconnecting (doubling up to 2 s).
    :param read_ids: reads at most *limit* key ids on the listener's
        connection (``SELECT id FROM <table> LIMIT <limit>``), for the
        cache's set of existing ids (see
        :meth:`~._record_cache.RecordCache.load_ids`); loaded after every
        (re)connection, a ``*`` notification, and every ``cache.ids_ttl``.
    """

    def __init__(
        self,
        connect: Callable[[], psycopg.Connection[Any]],
        cache: RecordCache,
        *,
        channel: str,
        name: str,
        heartbeat: float = 0.25,
        lease: float = 1.0,
        timeout: float = 1.0,
        retry: float = 0.1,
        read_ids: Callable[[psycopg.Connection[Any], int], Iterable[str]] | None = None,
    ) -> None:
        self._connect = connect
        self._read_ids = read_ids
        self.cache = cache
        self.channel = channel
        self.name = name
        self.heartbeat = heartbeat
        self.lease = lease
        self.timeout = timeout
        self.retry = retry
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._conn: psycopg.Connection[Any] | None = None
        self._failing = False
        #: Backend pid of the current listening connection (``None`` while down).
        self.backend_pid: int | None = None
        #: Successful (re)connections so far.
        self.connections = 0
        cache.on_deaf = self.ensure_running
        ref = weakref.ref(self)
        os.register_at_fork(after_in_child=lambda: _reset_after_fork(ref))

    def __repr__(self) -> str:
        return f"Listener(channel={self.channel!r}, pid={self.backend_pid})"

    def ensure_running(self) -> None:
        """Start the thread if it is not running (called on a deaf lookup)."""
        if self._thread is not None or self._stop.is_set():
            return
        with self._lock:
            if self._thread is not None or self._stop.is_set():
                return
            self._thread = threading.Thread(
                target=self._run, name="aqnt-sql-listener", daemon=True
            )
            self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop listening and close the connection.  Idempotent."""
        self._stop.set()
        with self._lock:
            thread = self._thread
            if self._conn is not None:
                # Wakes the thread from its wait instead of letting it sleep
                # out its heartbeat.
                with contextlib.suppress(psycopg.Error):  # else already lost
                    shutdown_socket(self._conn.fileno())
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
        self.cache.deafen()

    def _run(self) -> None:
        delay = self.retry
        while not self._stop.is_set():
            try:
                conn = self._connect()
            except Exception as exc:
                if not self._failing:
                    log.warning("record cache listener cannot connect (cache bypassed, every "
                                "lookup reads the database): %s", _describe(exc))
                self._failing = True
                self._stop.wait(delay)
                delay = min(delay * 2, _MAX_RETRY)
                continue
            with self._lock:
                if self._stop.is_set():
                    conn.close()
                    return
                self._conn = conn
            delay = self.retry
            try:
                self._listen(conn)
            except Exception as exc:
                if not self._stop.is_set():
                    log.warning("record cache listener lost its connection (cache bypassed "
                                "until it is back): %s", _describe(exc))
                self._failing = True
            finally:
                self.cache.deafen()
                self.backend_pid = None
                with self._lock:
                    self._conn = None
                    with contextlib.suppress(Exception):  # it is gone anyway
                        conn.close()
            self._stop.wait(delay)

    def _listen(self, conn: psycopg.Connection[Any]) -> None:
        cache = self.cache
        with WATCHDOG.guard(conn.fileno(), self.timeout):
            if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
                conn.rollback()
            conn.autocommit = True
            conn.execute("SELECT set_config('application_name', %s, false)", (self.name,))
            conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self.channel)))
        # Whatever changed while nobody listened is read afresh from here on.
        cache.clear()
        self.backend_pid = conn.info.backend_pid
        self.connections += 1
        if self._failing:
            self._failing = False
            log.warning("record cache listener reconnected; cache re-synchronised")
        handle = self._handle
        while not self._stop.is_set():
            started = time.monotonic()
            with WATCHDOG.guard(conn.fileno(), self.timeout) as deadline:
                try:
                    conn.execute("SELECT 1")
                except psycopg.Error:
                    if deadline is not None and deadline.fired:
                        raise TimeoutError(
                            f"heartbeat unanswered after {self.timeout:g} s") from None
                    raise
            # The answer came after every notification committed before the
            # round trip started: handle those, then trust the cache.
            for notify in conn.notifies(timeout=0):
                handle(notify.payload)
            if self._read_ids is not None and cache.ids_wanted():
                # Every change committed before this read has been handled;
                # one committed after it is notified.
                self._load_ids(conn)
            cache.renew(started + self.lease)
            for notify in conn.notifies(timeout=self.heartbeat):
                handle(notify.payload)

    def _load_ids(self, conn: psycopg.Connection[Any]) -> None:
        read = self._read_ids
        assert read is not None
        # A whole table may take longer than a heartbeat's round trip.
        with WATCHDOG.guard(conn.fileno(), self.timeout * 10):
            self.cache.load_ids(lambda limit: read(conn, limit))

    def _handle(self, payload: str) -> None:
        if payload == CLEAR_ALL:
            self.cache.clear()
        else:
            self.cache.drop(payload)


def _describe(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None)
    if orig is not None:
        exc = orig
    return f"{type(exc).__name__}: {str(exc).strip()}"


def _reset_after_fork(ref: weakref.ref[Listener]) -> None:
    listener = ref()
    if listener is None:
        return
    # Threads do not survive fork(): the child starts its own listener on its
    # first lookup, with its own connection.
    if listener._conn is not None:
        _INHERITED.append(listener._conn)
    listener._lock = threading.Lock()
    listener._conn = None
    listener._thread = None
    listener.backend_pid = None
    listener.cache.after_fork()
