"""The embedded default store: one SQLite file, stdlib :mod:`sqlite3`, WAL.

Safe across threads (one connection per thread) and processes (WAL, a busy
timeout, and usage written as ``count = count + ?`` so concurrent flushes add
up).  The schema is created on first use and versioned with
``PRAGMA user_version``; each version is a numbered migration step.

Records are cached in the process and kept exact across the processes of the
machine by a change log that triggers write in the changing transaction,
read by each process at most once per lease, inline, when a lookup needs it
(:mod:`aqnt_auth._stores._sqlite_watch`): a warm lookup reads no file and,
on an event loop, needs no thread.
"""

from __future__ import annotations

import builtins
import contextlib
import datetime as dt
import json
import logging
import os
import pathlib
import shutil
import sqlite3
import tempfile
import threading
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, Final, TypeVar

from .._audit import AuditEntry, AuditEvent, AuditLog, ensure, entry_of_row
from .._errors import ConfigurationError, KeyStateError, StoreNotFound, StoreUnavailable
from .._quota import PERIODS, QuotaOps, QuotaRow, QuotaUse, consume_with
from .._records import KeyRecord, UsageDelta
from .._usage_history import UsageRow
from ._async import ThreadedAsyncStore
from ._protocol import RotationPlan
from ._record_cache import ABSENT, IDS_SIZE, RecordCache, created_by
from ._rows import KEY_COLUMNS, update_columns
from ._sqlite_watch import ChangeWatcher, change_log_ddl, quota_set_ddl
from ._usage_sql import read_usage_rows, write_usage_rows

__all__ = ["SCHEMA", "SCHEMA_VERSION", "AsyncSQLiteKeyStore", "SQLiteKeyStore"]

log = logging.getLogger("aqnt_auth.store.sqlite")

SCHEMA_VERSION: Final = 7

_TABLE: Final = "aqnt_api_keys"
_CHANGE_LOG: Final = "aqnt_key_changes"
#: Usage history (issue #14): no trigger watches it, so a flush leaves
#: every process's record cache as it is.
USAGE_TABLE: Final = "aqnt_key_usage"

# The migration steps: step N takes a database from version N - 1 to N.
# Each is self-contained (its own literal DDL, never derived from today's
# columns), so later steps can be added without touching it.
_STEPS: Final[dict[int, tuple[str, ...]]] = {
    # 1: the key table.
    1: (
        """CREATE TABLE IF NOT EXISTS aqnt_api_keys (
    id            TEXT PRIMARY KEY,
    name          TEXT NOT NULL,
    mode          TEXT NOT NULL CHECK (mode IN ('live', 'test')),
    prefix        TEXT NOT NULL,
    hash          TEXT NOT NULL,
    hint          TEXT NOT NULL,
    created_at    INTEGER NOT NULL,
    expires_at    INTEGER,
    revoked_at    INTEGER,
    last_used_at  INTEGER,
    usage_count   INTEGER NOT NULL DEFAULT 0,
    scopes        TEXT NOT NULL DEFAULT '[]',
    read_only     INTEGER NOT NULL DEFAULT 0,
    allowed_paths TEXT NOT NULL DEFAULT '[]',
    owner         TEXT,
    metadata      TEXT NOT NULL DEFAULT '{}',
    rotated_from  TEXT
)""",
        "CREATE INDEX IF NOT EXISTS aqnt_api_keys_owner ON aqnt_api_keys (owner)",
    ),
    # 2: the change log that keeps every process's record cache exact.  A
    # later step adding a key column must recreate aqnt_api_keys_changed
    # with that column in its UPDATE OF list (unless it is usage only).
    2: change_log_ddl(_TABLE, _CHANGE_LOG, (
        "id", "name", "mode", "prefix", "hash", "hint", "created_at", "expires_at",
        "revoked_at", "scopes", "read_only", "allowed_paths", "owner", "metadata",
        "rotated_from",
    )),
    # 3: the per-key policies (disable, rate limits, quota, IP allowlist);
    # the change-log trigger is recreated to watch them.
    3: (
        "ALTER TABLE aqnt_api_keys ADD COLUMN disabled_at INTEGER",
        "ALTER TABLE aqnt_api_keys ADD COLUMN rate_limits TEXT NOT NULL DEFAULT '[]'",
        "ALTER TABLE aqnt_api_keys ADD COLUMN rate_limit_shared INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE aqnt_api_keys ADD COLUMN quota_remaining INTEGER",
        "ALTER TABLE aqnt_api_keys ADD COLUMN quota_refill TEXT",
        "ALTER TABLE aqnt_api_keys ADD COLUMN quota_refilled_at INTEGER",
        "ALTER TABLE aqnt_api_keys ADD COLUMN allowed_ips TEXT NOT NULL DEFAULT '[]'",
        "DROP TRIGGER IF EXISTS aqnt_api_keys_changed",
        *change_log_ddl(_TABLE, _CHANGE_LOG, (
            "id", "name", "mode", "prefix", "hash", "hint", "created_at", "expires_at",
            "revoked_at", "scopes", "read_only", "allowed_paths", "owner", "metadata",
            "rotated_from", "disabled_at", "rate_limits", "rate_limit_shared",
            "quota_remaining", "quota_refill", "quota_refilled_at", "allowed_ips",
        )),
    ),
    # 4: the first key of each key's rotation chain, which the rate limits
    # and the quota count under (written when a key is inserted; the trigger
    # watches it all the same, as it does every key column).
    4: (
        "ALTER TABLE aqnt_api_keys ADD COLUMN lineage_id TEXT",
        "DROP TRIGGER IF EXISTS aqnt_api_keys_changed",
        *change_log_ddl(_TABLE, _CHANGE_LOG, (
            "id", "name", "mode", "prefix", "hash", "hint", "created_at", "expires_at",
            "revoked_at", "scopes", "read_only", "allowed_paths", "owner", "metadata",
            "rotated_from", "disabled_at", "rate_limits", "rate_limit_shared",
            "quota_remaining", "quota_refill", "quota_refilled_at", "allowed_ips",
            "lineage_id",
        )),
    ),
    # 5: the audit log (#14): one row per change to a key, written in the
    # changing transaction; kept when the key is deleted.
    5: (
        """CREATE TABLE IF NOT EXISTS aqnt_key_audit (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    at             INTEGER NOT NULL,
    key_id         TEXT NOT NULL,
    event          TEXT NOT NULL,
    actor          TEXT,
    old            TEXT NOT NULL DEFAULT '{}',
    new            TEXT NOT NULL DEFAULT '{}',
    related_key_id TEXT
)""",
        "CREATE INDEX IF NOT EXISTS aqnt_key_audit_key ON aqnt_key_audit (key_id, at)",
        "CREATE INDEX IF NOT EXISTS aqnt_key_audit_at ON aqnt_key_audit (at)",
    ),
    # 6: a quota's counter (quota_remaining, quota_refilled_at), which every
    # request of a key with a quota writes, invalidates nothing (a cached
    # count is stale by design: the store's conditional UPDATE decides);
    # setting a quota on a key or removing it still does (quota_set).
    6: (
        "DROP TRIGGER IF EXISTS aqnt_api_keys_changed",
        *change_log_ddl(_TABLE, _CHANGE_LOG, (
            "id", "name", "mode", "prefix", "hash", "hint", "created_at", "expires_at",
            "revoked_at", "scopes", "read_only", "allowed_paths", "owner", "metadata",
            "rotated_from", "disabled_at", "rate_limits", "rate_limit_shared",
            "quota_refill", "allowed_ips", "lineage_id",
        )),
        *quota_set_ddl(_TABLE, _CHANGE_LOG),
    ),
    # 7: usage history (issue #14), per key id ('' for requests that named
    # no key) and UTC hour (Unix seconds).  Not watched by the change log.
    7: (
        """CREATE TABLE IF NOT EXISTS aqnt_key_usage (
    key_id          TEXT    NOT NULL,
    hour            INTEGER NOT NULL,
    valid           INTEGER NOT NULL DEFAULT 0,
    invalid_secret  INTEGER NOT NULL DEFAULT 0,
    revoked         INTEGER NOT NULL DEFAULT 0,
    expired         INTEGER NOT NULL DEFAULT 0,
    disabled        INTEGER NOT NULL DEFAULT 0,
    rate_limited    INTEGER NOT NULL DEFAULT 0,
    quota_exceeded  INTEGER NOT NULL DEFAULT 0,
    ip_not_allowed  INTEGER NOT NULL DEFAULT 0,
    forbidden       INTEGER NOT NULL DEFAULT 0,
    unknown_key     INTEGER NOT NULL DEFAULT 0,
    malformed       INTEGER NOT NULL DEFAULT 0,
    missing         INTEGER NOT NULL DEFAULT 0,
    throttled       INTEGER NOT NULL DEFAULT 0,
    clients         INTEGER NOT NULL DEFAULT 0,
    last_at         INTEGER,
    last_client     TEXT,
    last_user_agent TEXT,
    paths           TEXT    NOT NULL DEFAULT '{}',
    PRIMARY KEY (key_id, hour)
) WITHOUT ROWID""",
        "CREATE INDEX IF NOT EXISTS aqnt_key_usage_hour ON aqnt_key_usage (hour)",
    ),
}

#: The DDL of the current version, for teams that manage their own migrations
#: (then also run ``PRAGMA user_version = SCHEMA_VERSION``).
SCHEMA: Final = "".join(
    f"{statement};\n" for step in sorted(_STEPS) for statement in _STEPS[step]
)

_COLUMNS: Final = ", ".join(KEY_COLUMNS)
_SELECT: Final = f"SELECT {_COLUMNS} FROM aqnt_api_keys"  # noqa: S608 - constant text

# One unit of a quota, if one is left and no refill is due (the row was
# refilled after the cutoff of its own period): one statement, atomic.
_DUE: Final = " ".join(f"WHEN quota_refill LIKE '%/{name}' THEN :{name}" for name in PERIODS)
_TAKE: Final = (
    "UPDATE aqnt_api_keys SET quota_remaining = quota_remaining - 1 "  # noqa: S608 - constants
    "WHERE id = :key_id AND quota_remaining > 0 AND (quota_refill IS NULL OR "
    f"quota_refilled_at > CASE {_DUE} END) "
    "RETURNING quota_remaining, quota_refill, quota_refilled_at"
)
_SWAP: Final = (
    "UPDATE aqnt_api_keys SET quota_remaining = ?, quota_refilled_at = ? "
    "WHERE id = ? AND quota_remaining IS ? AND quota_refill IS ? AND quota_refilled_at IS ?"
)

_EPOCH: Final = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
_ONE_US: Final = dt.timedelta(microseconds=1)

T = TypeVar("T")


def _to_us(value: dt.datetime | None) -> int | None:
    # Integer microseconds round-trip exactly, unlike float seconds.
    if value is None:
        return None
    if value.tzinfo is None:
        raise ValueError("datetimes must be timezone-aware")
    return (value - _EPOCH) // _ONE_US


def _from_us(value: int | None) -> dt.datetime | None:
    return None if value is None else _EPOCH + dt.timedelta(microseconds=value)


def _record(row: tuple[Any, ...]) -> KeyRecord:
    scopes, paths, metadata = row[11], row[13], row[15]
    return KeyRecord(
        id=row[0],
        name=row[1],
        mode=row[2],
        prefix=row[3],
        hash=row[4],
        hint=row[5],
        created_at=_EPOCH + dt.timedelta(microseconds=row[6]),
        expires_at=_from_us(row[7]),
        revoked_at=_from_us(row[8]),
        last_used_at=_from_us(row[9]),
        usage_count=row[10],
        # Most keys have no scopes, paths or metadata: skip the JSON parser.
        scopes=tuple(json.loads(scopes)) if scopes != "[]" else (),
        read_only=bool(row[12]),
        allowed_paths=tuple(json.loads(paths)) if paths != "[]" else (),
        owner=row[14],
        metadata=json.loads(metadata) if metadata != "{}" else {},
        rotated_from=row[16],
        disabled_at=_from_us(row[17]),
        rate_limits=tuple(json.loads(row[18])) if row[18] != "[]" else (),
        rate_limit_shared=bool(row[19]),
        quota_remaining=row[20],
        quota_refill=row[21],
        quota_refilled_at=_from_us(row[22]),
        allowed_ips=tuple(json.loads(row[23])) if row[23] != "[]" else (),
        lineage_id=row[24],
    )



def _insert(conn: sqlite3.Connection, record: KeyRecord) -> None:
    params = (
        record.id,
        record.name,
        record.mode,
        record.prefix,
        record.hash,
        record.hint,
        _to_us(record.created_at),
        _to_us(record.expires_at),
        _to_us(record.revoked_at),
        _to_us(record.last_used_at),
        record.usage_count,
        json.dumps(list(record.scopes)),
        int(record.read_only),
        json.dumps(list(record.allowed_paths)),
        record.owner,
        json.dumps(dict(record.metadata), sort_keys=True),
        record.rotated_from,
        _to_us(record.disabled_at),
        json.dumps(list(record.rate_limits)),
        int(record.rate_limit_shared),
        record.quota_remaining,
        record.quota_refill,
        _to_us(record.quota_refilled_at),
        json.dumps(list(record.allowed_ips)),
        record.lineage_id,
    )
    placeholders = ", ".join("?" * len(params))
    conn.execute(
        f"INSERT INTO aqnt_api_keys ({_COLUMNS}) VALUES ({placeholders})",  # noqa: S608
        params,
    )


_AUDIT_COLUMNS: Final = "id, at, key_id, event, actor, old, new, related_key_id"


def _write_audit(conn: sqlite3.Connection, entries: list[AuditEntry]) -> None:
    if entries:
        conn.executemany(
            "INSERT INTO aqnt_key_audit (at, key_id, event, actor, old, new, related_key_id) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            [(_to_us(e.at), e.key_id, e.event, e.actor, e.old_json(), e.new_json(),
              e.related_key_id) for e in entries])


def _select_one(conn: sqlite3.Connection, key_id: str) -> KeyRecord | None:
    row = conn.execute(f"{_SELECT} WHERE id = ?", (key_id,)).fetchone()
    return None if row is None else _record(row)


def _require_store(path: str) -> None:
    """Raise :class:`StoreNotFound` unless *path* is a SQLite file holding a store.

    Looked at read-only, so neither a missing file nor someone else's
    database is created or changed (not even switched to WAL).
    """
    if not os.path.isfile(path):
        raise StoreNotFound(f"no store at {path}")
    uri = pathlib.Path(path).absolute().as_uri() + "?mode=ro"
    try:
        conn = sqlite3.connect(uri, uri=True)
        try:
            (version,) = conn.execute("PRAGMA user_version").fetchone()
        finally:
            conn.close()
    except sqlite3.Error as exc:
        raise StoreUnavailable(f"SQLite store unavailable: {exc}") from None
    if version == 0:
        raise StoreNotFound(f"no store at {path} (the file holds no aqnt-auth keys)")


class _Local(threading.local):
    conn: sqlite3.Connection | None = None
    generation: int = -1


class SQLiteKeyStore:
    """Keys in a SQLite database file (``":memory:"`` for a private one).

    :param busy_timeout: how long a call waits for another writer; past it
        the call raises :class:`~aqnt_auth.StoreUnavailable`.
    :param cache: keep records (and ids found absent) in the process,
        invalidated by the change log: a warm lookup reads no file.
    :param cache_ttl: seconds a cached record lives at most, whatever
        happens (a second line of defence).  Usage fields of a cached record
        (``usage_count``, ``last_used_at``) may lag by up to this.
    :param cache_size: records cached at most (and as many absent ids).
    :param id_set_size: key ids the cache knows at most (about 100 bytes
        each): every id in the file, loaded once and kept exact by the change
        log, so an unknown id (a forged key) is refused without reading the
        file.  A file with more keys goes without (then an unknown id costs
        one read, and none when it comes again); ``0`` turns it off.
    :param lease: seconds a cached record is trusted after a read of the
        change log started: the bound on how late a change made by another
        process is seen (the changing process sees it at once).  A busy
        process reads the log at most once per lease.
    :param create: with ``False`` the file must already hold a store: a
        missing file, or one without the keys table, raises
        :class:`~aqnt_auth.StoreNotFound` and is left as it was.

    Thread-safe; processes sharing the file see each other's changes.  Call
    :meth:`close` to close the connections.
    """

    blocking = True
    #: ``peek(key_id)``: the cached record if the cache may answer now, else
    #: ``None`` (then call :meth:`get`): a warm read without I/O, for the
    #: event loop.  The cache's own method, so a warm request pays one call.
    peek: Callable[[str], KeyRecord | None]

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        busy_timeout: float = 5.0,
        cache: bool = True,
        cache_ttl: float = 30.0,
        cache_size: int = 10_000,
        id_set_size: int = IDS_SIZE,
        lease: float = 0.02,
        create: bool = True,
    ) -> None:
        if busy_timeout <= 0:
            raise ConfigurationError("busy_timeout must be positive")
        if not cache_ttl > 0:
            raise ConfigurationError("cache_ttl must be positive")
        if cache_size < 0:
            raise ConfigurationError("cache_size must be >= 0")
        if id_set_size < 0:
            raise ConfigurationError("id_set_size must be >= 0")
        if not lease > 0:
            raise ConfigurationError("lease must be positive")
        self.path = os.fspath(path)
        self._tempdir: str | None = None
        if self.path in ("", ":memory:"):
            # SQLite's shared-cache memory databases lock whole tables and
            # ignore the busy timeout; a private temporary file behaves like
            # the real thing, across threads, and is removed at close().
            self._tempdir = tempfile.mkdtemp(prefix="aqnt-auth-")
            self.path = os.path.join(self._tempdir, "keys.db")
        elif not create:
            _require_store(self.path)
        self._timeout = busy_timeout
        self._local = _Local()
        self._lock = threading.Lock()
        self._connections: list[sqlite3.Connection] = []
        self._generation = 0
        self._wrap(self._ensure_schema)
        size = cache_size if cache else 0
        #: The record cache (it never answers when *cache* is off).
        self.cache = RecordCache(size, cache_ttl, absent_size=size,
                                 ids_size=id_set_size if cache else 0)
        self.peek = self.cache.get
        #: The change-log watcher, when the cache is on.
        self.watcher: ChangeWatcher | None = None
        if cache:
            self.watcher = ChangeWatcher(self._watch_connection, self.cache,
                                         log_table=_CHANGE_LOG, table=_TABLE, lease=lease)
        #: The async twin: a cached answer without a thread, a read in one.
        self.aio = AsyncSQLiteKeyStore(self)
        # A connection must not cross fork(): the child starts afresh.
        ref = weakref.ref(self)
        os.register_at_fork(after_in_child=lambda: _forget_connections(ref))

    def __repr__(self) -> str:
        return f"SQLiteKeyStore({self.path!r})"

    # -- connections -------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self.path,
            timeout=self._timeout,
            isolation_level=None,  # explicit BEGIN/COMMIT only
            check_same_thread=False,  # close() may run on another thread
            cached_statements=64,
        )
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        with self._lock:
            self._connections.append(conn)
        return conn

    def _watch_connection(self) -> sqlite3.Connection:
        # The watcher's own, read-only by use, shared by the threads under its
        # lock; not in _connections: the watcher closes it.  No busy timeout:
        # it may run on an event loop, which must never wait for a lock.
        return sqlite3.connect(self.path, timeout=0, isolation_level=None,
                               check_same_thread=False)

    def _conn(self) -> sqlite3.Connection:
        local = self._local
        if local.generation != self._generation or local.conn is None:
            local.conn = self._connect()
            local.generation = self._generation
        return local.conn

    def _wrap(self, call: Callable[[], T]) -> T:
        try:
            return call()
        except sqlite3.Error as exc:
            raise self._failure(exc) from None

    def _failure(self, exc: sqlite3.Error) -> KeyStateError | StoreUnavailable:
        if isinstance(exc, sqlite3.IntegrityError):
            return KeyStateError(f"constraint failed: {exc}")
        # Locked too long, disk error, unreadable file: the store is down,
        # which is never the same as "this key is invalid".
        log.error("SQLite store %s unavailable: %s", self.path, exc)
        return StoreUnavailable(f"SQLite store unavailable: {exc}")

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        conn = self._conn()
        # IMMEDIATE takes the write lock up front, so a read-then-write
        # cannot be overtaken by another process.
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def _ensure_schema(self) -> None:
        conn = self._conn()
        (version,) = conn.execute("PRAGMA user_version").fetchone()
        if version == SCHEMA_VERSION:
            return
        if version > SCHEMA_VERSION:
            raise ConfigurationError(
                f"{self.path}: schema version {version} is newer than this aqnt-auth "
                f"understands ({SCHEMA_VERSION}); upgrade aqnt-auth"
            )
        with self._transaction() as conn:
            # Read again under the write lock: another process may have
            # migrated meanwhile.  All steps commit together, or none does.
            (version,) = conn.execute("PRAGMA user_version").fetchone()
            for step in range(version + 1, SCHEMA_VERSION + 1):
                # executescript() would commit the open transaction first.
                for statement in _STEPS[step]:
                    conn.execute(statement)
            if version < SCHEMA_VERSION:
                conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    # -- the KeyStore protocol --------------------------------------------

    def get(self, key_id: str) -> KeyRecord | None:
        return self.cache.read_through(key_id, self._read)

    def _read(self, key_id: str) -> KeyRecord | None:
        try:
            row = self._conn().execute(f"{_SELECT} WHERE id = ?", (key_id,)).fetchone()
        except sqlite3.Error as exc:
            raise self._failure(exc) from None
        return None if row is None else _record(row)

    def add(self, record: KeyRecord, *, audit: AuditEvent | None = None) -> None:
        def insert() -> None:
            with self._transaction() as conn:
                _insert(conn, record)
                _write_audit(conn, ensure(audit).entries(None, record))

        self._changing(record.id, insert)

    def list(self, *, owner: str | None = None) -> list[KeyRecord]:
        def select() -> list[KeyRecord]:
            if owner is None:
                rows = self._conn().execute(f"{_SELECT} ORDER BY created_at, id")
            else:
                rows = self._conn().execute(
                    f"{_SELECT} WHERE owner = ? ORDER BY created_at, id", (owner,)
                )
            return [_record(row) for row in rows]

        return self._wrap(select)

    def _changing(self, key_id: str, call: Callable[[], T]) -> T:
        # This process forgets the key at once, even after a failure (the
        # commit may have happened); the others learn it from the change log.
        try:
            return self._wrap(call)
        finally:
            self.cache.drop(key_id)

    def _update(self, sql: str, params: tuple[Any, ...], key_id: str,
                audit: AuditEvent | None) -> KeyRecord | None:
        def run() -> KeyRecord | None:
            # BEGIN IMMEDIATE: the record read first is the one the UPDATE changes.
            with self._transaction() as conn:
                before = _select_one(conn, key_id)
                if before is None:
                    return None
                conn.execute(sql, params)
                after = _select_one(conn, key_id)
                _write_audit(conn, ensure(audit).entries(before, after))
            return after

        return self._changing(key_id, run)

    def revoke(self, key_id: str, at: dt.datetime, *, audit: AuditEvent | None = None
               ) -> KeyRecord | None:
        return self._update(
            "UPDATE aqnt_api_keys SET revoked_at = COALESCE(revoked_at, ?) WHERE id = ?",
            (_to_us(at), key_id),
            key_id,
            audit,
        )

    def set_expiry(self, key_id: str, at: dt.datetime | None, *,
                   audit: AuditEvent | None = None) -> KeyRecord | None:
        def run() -> KeyRecord | None:
            with self._transaction() as conn:
                before = _select_one(conn, key_id)
                if before is None:
                    return None
                # KeyRecord.allows_expiry, in the UPDATE: nothing committed
                # by another process meanwhile can be undone.
                cur = conn.execute(
                    "UPDATE aqnt_api_keys SET expires_at = ?1 WHERE id = ?2 AND revoked_at IS NULL"
                    " AND (expires_at IS NULL OR expires_at >= ?1)", (_to_us(at), key_id))
                if cur.rowcount != 1:
                    raise KeyStateError(before.expiry_refusal(at))
                after = _select_one(conn, key_id)
                _write_audit(conn, ensure(audit).entries(before, after))
            return after

        return self._changing(key_id, run)

    def update(self, key_id: str, changes: Mapping[str, Any], *,
               audit: AuditEvent | None = None) -> KeyRecord | None:
        values = update_columns(changes)
        if not values:
            return self._read(key_id)
        for name, value in values.items():
            if isinstance(value, dt.datetime):
                values[name] = _to_us(value)
            elif isinstance(value, list):
                values[name] = json.dumps(value)
            elif isinstance(value, bool):
                values[name] = int(value)
        # Column names from UPDATABLE_COLUMNS only (update_columns checked).
        assignments = ", ".join(f"{name} = ?" for name in values)
        return self._update(
            f"UPDATE aqnt_api_keys SET {assignments} "  # noqa: S608
            "WHERE id = ? AND revoked_at IS NULL",
            (*values.values(), key_id),
            key_id,
            audit,
        )

    def rotate(self, key_id: str, plan: RotationPlan, *, audit: AuditEvent | None = None
               ) -> KeyRecord | None:
        plan, created = created_by(plan)

        def run() -> KeyRecord | None:
            # BEGIN IMMEDIATE: a revocation from any process waits for this
            # transaction, or has committed before it reads.
            with self._transaction() as conn:
                row = conn.execute(f"{_SELECT} WHERE id = ?", (key_id,)).fetchone()
                if row is None:
                    return None
                before = _record(row)
                successors = conn.execute(
                    f"{_SELECT} WHERE rotated_from = ? ORDER BY created_at, id", (key_id,))
                successor, expires_at = plan(before, [_record(r) for r in successors])
                _insert(conn, successor)
                conn.execute("UPDATE aqnt_api_keys SET expires_at = ? WHERE id = ?",
                             (_to_us(expires_at), key_id))
                if successor.metered:  # the successor took the quota: mark it moved
                    conn.execute("UPDATE aqnt_api_keys SET quota_remaining = 0, "
                                 "quota_refilled_at = NULL WHERE id = ?", (key_id,))
                after = _select_one(conn, key_id)
                assert after is not None
                _write_audit(conn, ensure(audit).rotation(before, after, successor))
            return after

        try:
            return self._changing(key_id, run)
        finally:
            for new_id in created:  # known here at once, as a created key is
                self.cache.drop(new_id)

    def consume_quota(self, key_id: str, now: dt.datetime) -> QuotaUse | None:
        # Each statement is its own transaction (autocommit): the usual
        # request is the one conditional UPDATE of _TAKE.
        return self._wrap(lambda: consume_with(self._quota_ops, key_id, now))

    @property
    def _quota_ops(self) -> QuotaOps:
        return QuotaOps(self._quota_take, self._quota_read, self._quota_swap,
                        self._quota_successor)

    def _quota_take(self, key_id: str, cutoffs: dict[str, dt.datetime]) -> QuotaRow | None:
        params: dict[str, Any] = {name: _to_us(at) for name, at in cutoffs.items()}
        params["key_id"] = key_id
        rows = self._conn().execute(_TAKE, params).fetchall()
        if not rows:
            return None
        remaining, refill, at = rows[0]
        return QuotaRow(remaining, refill, _from_us(at))

    def _quota_read(self, key_id: str) -> QuotaRow | None:
        row = self._conn().execute(
            "SELECT quota_remaining, quota_refill, quota_refilled_at FROM aqnt_api_keys "
            "WHERE id = ?", (key_id,)).fetchone()
        return None if row is None else QuotaRow(row[0], row[1], _from_us(row[2]))

    def _quota_swap(self, key_id: str, old: QuotaRow, new: QuotaRow) -> bool:
        cur = self._conn().execute(_SWAP, (
            new.remaining, _to_us(new.refilled_at), key_id, old.remaining, old.refill,
            _to_us(old.refilled_at)))
        return cur.rowcount == 1

    def _quota_successor(self, key_id: str) -> str | None:
        row = self._conn().execute(
            "SELECT id FROM aqnt_api_keys WHERE rotated_from = ? "
            "ORDER BY created_at DESC, id DESC LIMIT 1", (key_id,)).fetchone()
        return None if row is None else str(row[0])

    def replace_hash(self, key_id: str, old_hash: str, new_hash: str) -> bool:
        def run() -> bool:
            with self._transaction() as conn:
                cur = conn.execute(
                    "UPDATE aqnt_api_keys SET hash = ? WHERE id = ? AND hash = ?",
                    (new_hash, key_id, old_hash),
                )
            return cur.rowcount == 1

        return self._changing(key_id, run)

    def delete(self, key_id: str, *, audit: AuditEvent | None = None) -> bool:
        def run() -> bool:
            with self._transaction() as conn:
                before = _select_one(conn, key_id)
                if before is None:
                    return False
                conn.execute("DELETE FROM aqnt_api_keys WHERE id = ?", (key_id,))
                _write_audit(conn, ensure(audit).entries(before, None))
            return True

        return self._changing(key_id, run)

    def audit_entries(self, *, key_id: str | None = None, since: dt.datetime | None = None,
                      until: dt.datetime | None = None, limit: int | None = None
                      ) -> AuditLog:
        where: list[str] = []
        params: list[str | int | None] = []
        if key_id is not None:
            where.append("key_id = ?")
            params.append(key_id)
        if since is not None:
            where.append("at >= ?")
            params.append(_to_us(since))
        if until is not None:
            where.append("at < ?")
            params.append(_to_us(until))
        sql = f"SELECT {_AUDIT_COLUMNS} FROM aqnt_key_audit"  # noqa: S608 - constant text
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY at DESC, id DESC"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"

        def select() -> AuditLog:
            rows = self._conn().execute(sql, params).fetchall()
            return [entry_of_row(r[0], _EPOCH + dt.timedelta(microseconds=r[1]), *r[2:])
                    for r in rows]

        return self._wrap(select)

    def record_usage(self, usage: Mapping[str, UsageDelta]) -> None:
        if not usage:
            return
        rows = [(d.count, _to_us(d.last_used_at), key_id) for key_id, d in usage.items()]

        def run() -> None:
            with self._transaction() as conn:
                conn.executemany(
                    "UPDATE aqnt_api_keys SET usage_count = usage_count + ?, "
                    "last_used_at = MAX(COALESCE(last_used_at, 0), ?) WHERE id = ?",
                    rows,
                )

        self._wrap(run)

    def record_usage_history(self, rows: Sequence[UsageRow], *,
                             prune_before: int | None = None) -> None:
        if not rows and prune_before is None:
            return

        def run() -> None:
            # BEGIN IMMEDIATE: the paths' read-merge-write is one writer's.
            with self._transaction() as conn:
                def run_many(sql: str, params: list[dict[str, Any]]) -> None:
                    conn.executemany(sql, params)

                write_usage_rows(lambda sql, params: conn.execute(sql, params).fetchall(),
                                 run_many, USAGE_TABLE, rows, prune_before, postgres=False)

        self._wrap(run)

    def usage_rows(self, *, key_id: str | None = None, since: int, until: int
                   ) -> builtins.list[UsageRow]:
        return self._wrap(lambda: read_usage_rows(
            lambda sql, params: self._conn().execute(sql, params).fetchall(),
            USAGE_TABLE, key_id, since, until))

    def close(self) -> None:
        if self.watcher is not None:
            self.watcher.stop()
        with self._lock:
            connections, self._connections = self._connections, []
            self._generation += 1
        for conn in connections:
            with contextlib.suppress(sqlite3.Error):  # closing is best effort
                conn.close()
        if self._tempdir is not None:
            shutil.rmtree(self._tempdir, ignore_errors=True)


def _forget_connections(ref: weakref.ref[SQLiteKeyStore]) -> None:
    store = ref()
    if store is None:
        return
    # The parent's connections belong to the parent: drop them unclosed.
    store._lock = threading.Lock()
    store._connections = []
    store._generation += 1
    store._local = _Local()


class AsyncSQLiteKeyStore(ThreadedAsyncStore):
    """:attr:`SQLiteKeyStore.aio`: a lookup the cache can answer (a record,
    or an id known absent) is answered on the event loop; every other call
    runs in a worker thread."""

    def __init__(self, store: SQLiteKeyStore) -> None:
        super().__init__(store)
        self._lookup = store.cache.lookup

    async def get(self, key_id: str) -> KeyRecord | None:
        found = self._lookup(key_id)
        if found is not None:
            return None if found is ABSENT else found
        return await self._run(self.sync.get, key_id)
