"""The SQL store: SQLAlchemy 2, with a native async twin; built for PostgreSQL.

``open_store("postgresql+psycopg://user@host/db")`` opens it (psycopg 3
serves the sync store and its async twin, :attr:`SQLAlchemyKeyStore.aio`);
so can an existing :class:`~sqlalchemy.engine.Engine` (and
:class:`~sqlalchemy.ext.asyncio.AsyncEngine`), so the application's pool is
reused.  Other SQLAlchemy databases work too (``sqlite+pysqlite:///keys.db``),
without the record cache.

On PostgreSQL a warm lookup makes no database round trip: records are
cached in the process and every change to a key sends ``NOTIFY`` in its own
transaction, which every process's listener turns into an invalidation (see
:mod:`aqnt_auth._stores._pg_listener` for why that is safe when the listener
is down).  Usage updates do not notify: a cached record's ``usage_count`` and
``last_used_at`` may lag by up to ``cache_ttl``.

Every call is bounded in time: a connection attempt by *connect_timeout*,
a statement by *statement_timeout* (on the server, and on the client by
:mod:`aqnt_auth._stores._deadline`, which also covers a silent network).
Past either, or with the database down, a call raises
:class:`~aqnt_auth.StoreUnavailable`, which the authenticator answers with
503, never 401 and never 200.  Nothing is cached about an outage: the first
call after the database returns succeeds.
"""

from __future__ import annotations

import asyncio
import builtins
import functools
import logging
import math
import os
import threading
import weakref
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final, TypeVar

import psycopg
from psycopg import sql as pgsql
from sqlalchemy import (
    URL,
    BigInteger,
    Connection,
    Engine,
    bindparam,
    case,
    create_engine,
    delete,
    event,
    func,
    insert,
    inspect,
    make_url,
    or_,
    select,
    text,
    update,
)
from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from .._audit import AuditEntry, AuditEvent, AuditLog, ensure, entry_of_row
from .._errors import (
    AQNTError,
    ConfigurationError,
    KeyStateError,
    StoreNotFound,
    StoreUnavailable,
)
from .._quota import PERIODS, QuotaOps, QuotaRow, QuotaUse, consume_with
from .._records import KeyRecord, UsageDelta
from .._usage_history import UsageRow
from ._deadline import WATCHDOG, connect_within
from ._pg_listener import Listener
from ._protocol import RotationPlan
from ._record_cache import ABSENT, IDS_SIZE, RecordCache, created_by
from ._rows import record_from_row, row_from_record, update_columns
from ._sql_ddl import DEFAULT_TABLE, SCHEMA, SCHEMA_VERSION, check_identifier, postgres_ddl
from ._sql_schema import Tables, UTCDateTime, upgrade_ddl
from ._usage_sql import read_usage_rows, write_usage_rows

if TYPE_CHECKING:
    import datetime as dt

__all__ = [
    "DEFAULT_CHANNEL",
    "SCHEMA",
    "SCHEMA_VERSION",
    "AsyncSQLAlchemyKeyStore",
    "SQLAlchemyKeyStore",
]

log = logging.getLogger("aqnt_auth.store.sql")

T = TypeVar("T")

DEFAULT_CHANNEL: Final = "aqnt_auth_keys"
# pg_advisory_xact_lock key serialising schema creation across processes.
_SCHEMA_LOCK: Final = 0x61716E74  # "aqnt"


class _TimedOut(Exception):
    """A statement outlived its client-side deadline."""


def _normalise_url(url: URL) -> URL:
    if url.drivername in ("postgresql", "postgres"):
        # psycopg 3 is what the ``sql`` extra installs; SQLAlchemy's default
        # PostgreSQL driver is psycopg2.
        return url.set(drivername="postgresql+psycopg")
    return url


def _redacted(url: URL) -> str:
    return url.render_as_string(hide_password=True)


def _redact_text(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    creds, at, host = rest.rpartition("@")
    if at and ":" in creds:
        return f"{scheme}{sep}{creds.split(':', 1)[0]}:***@{host}"
    return url


def _close_quietly(conn: Any) -> None:
    conn.close()


class SQLAlchemyKeyStore:
    """Keys in a SQL database, through SQLAlchemy 2.

    :param url_or_engine: a database URL (``postgresql+psycopg://...``;
        plain ``postgresql://`` means psycopg 3) or an existing
        :class:`~sqlalchemy.engine.Engine`, whose pool is then shared.
    :param async_engine: an :class:`~sqlalchemy.ext.asyncio.AsyncEngine` for
        :attr:`aio` to share; by default one is made from the URL.
    :param table: the key table's name; *schema*: its PostgreSQL schema
        (default: the connection's ``search_path``).
    :param create_schema: create missing tables on first use.  With
        ``False`` the store expects ``aqnt-auth store init`` or :data:`SCHEMA`
        to have run.
    :param cache: cache records in the process, invalidated by
        ``LISTEN``/``NOTIFY``.  Default: on for PostgreSQL through psycopg 3,
        which it requires.
    :param cache_ttl: seconds a cached record lives at most, whatever
        happens (a second line of defence).
    :param cache_size: records cached at most.
    :param id_set_size: key ids the cache knows at most (about 100 bytes
        each): every id in the table, loaded by the listener and kept exact
        by the notifications (and loaded again every *cache_ttl*), so an
        unknown id (a forged key) is refused without a query.  A table with
        more keys goes without; ``0`` turns it off.
    :param channel: the ``NOTIFY`` channel.
    :param connect_timeout: seconds a connection attempt (or a wait for a
        pooled connection) may take; *statement_timeout*: seconds a
        statement may take.  Past either a call raises
        :class:`~aqnt_auth.StoreUnavailable`.
    :param heartbeat: seconds between the listener's liveness round trips;
        *lease*: seconds the cache is trusted after one.  The lease bounds
        how long a silently dead listener could miss a revocation.
    :param listener_name: the listener's ``application_name``.
    :param listener_retry: first delay before the listener reconnects.
    :param engine_options: more :func:`~sqlalchemy.create_engine` options
        (``pool_size``...), for engines the store creates.

    With the application's engine, its own connect settings apply (give it
    a ``connect_timeout``); statements are still bounded by
    *statement_timeout*.  The listener holds one session-level connection
    (taken from *engine*'s pool for good): it cannot go through a pooler in
    transaction mode.

    Thread-safe.  Call :meth:`close` (or close the authenticator) to stop
    the listener and release connections.
    """

    blocking = True

    def __init__(
        self,
        url_or_engine: str | URL | Engine,
        *,
        async_engine: AsyncEngine | None = None,
        table: str = DEFAULT_TABLE,
        schema: str | None = None,
        create_schema: bool = True,
        cache: bool | None = None,
        cache_ttl: float = 30.0,
        cache_size: int = 100_000,
        id_set_size: int = IDS_SIZE,
        channel: str = DEFAULT_CHANNEL,
        connect_timeout: float = 1.0,
        statement_timeout: float = 1.0,
        heartbeat: float = 0.25,
        lease: float = 1.0,
        listener_name: str = "aqnt-auth-listener",
        listener_retry: float = 0.1,
        engine_options: Mapping[str, Any] | None = None,
    ) -> None:
        for value, what in ((connect_timeout, "connect_timeout"),
                            (statement_timeout, "statement_timeout"),
                            (cache_ttl, "cache_ttl"), (heartbeat, "heartbeat"),
                            (listener_retry, "listener_retry")):
            if not value > 0:
                raise ConfigurationError(f"{what} must be positive")
        if not lease > heartbeat:
            raise ConfigurationError("lease must be longer than heartbeat")
        if cache_size < 0:
            raise ConfigurationError("cache_size must be >= 0")
        if id_set_size < 0:
            raise ConfigurationError("id_set_size must be >= 0")
        self.channel = check_identifier(channel, "channel")
        self.connect_timeout = float(connect_timeout)
        self.statement_timeout = float(statement_timeout)
        self.tables = Tables(table, schema)
        self._create_schema = create_schema
        options = dict(engine_options or {})

        if isinstance(url_or_engine, Engine):
            self.engine = url_or_engine
            self._owns_engine = False
            url = url_or_engine.url
        else:
            try:
                url = _normalise_url(make_url(url_or_engine))
                self.engine = self._make_engine(url, dict(options))
            except ConfigurationError:
                raise
            except (sa_exc.ArgumentError, ImportError, ValueError) as exc:
                # A malformed URL, an unknown dialect or a driver that is not
                # installed: say so, without echoing a password.
                shown = (_redacted(url_or_engine) if isinstance(url_or_engine, URL)
                         else _redact_text(str(url_or_engine)))
                raise ConfigurationError(f"cannot open SQL store {shown!r}: {exc}") from None
            self._owns_engine = True
        dialect = self.engine.dialect
        self._postgres = dialect.name == "postgresql"
        psycopg3 = self._postgres and dialect.driver == "psycopg"
        # Client-side deadlines need the driver's socket: psycopg has one.
        self._guarded = psycopg3

        self._owns_async = False
        if async_engine is None and psycopg3:
            async_engine = self._make_async_engine(url, options)
            self._owns_async = True
        self.async_engine = async_engine

        # A user's engine keeps its own session settings: bound writes per
        # transaction instead (reads are bounded on the client).
        ms = max(1, round(self.statement_timeout * 1000))
        set_local = f"SET LOCAL statement_timeout = {ms}" if self._postgres else None
        self._set_local_sync = None if self._owns_engine else set_local
        self._set_local_async = None if self._owns_async else set_local

        want_cache = psycopg3 if cache is None else cache
        if want_cache and not psycopg3:
            raise ConfigurationError(
                "the record cache needs PostgreSQL through psycopg 3 (LISTEN/NOTIFY); "
                "pass cache=False"
            )
        #: The record cache (never answers when the cache is off).  Its id
        #: set is loaded again every *cache_ttl*: a key inserted with
        #: hand-written SQL and no ``NOTIFY`` is found within that.
        self.cache = RecordCache(cache_size, cache_ttl, ids_size=id_set_size,
                                 ids_ttl=cache_ttl)
        #: The listener thread's controller, when the cache is on.
        self.listener: Listener | None = None
        if want_cache:
            self.listener = Listener(
                self._listener_connection, self.cache, channel=self.channel,
                name=listener_name, heartbeat=heartbeat, lease=lease,
                timeout=self.statement_timeout, retry=listener_retry,
                read_ids=self._read_ids,
            )

        self._prepare_statements()
        self._schema_lock = threading.Lock()
        self._schema_ready = False
        self._closed = False
        self._async_disposed = False
        #: The native async twin (``None`` without an async engine; callers
        #: then use :func:`aqnt_auth.to_async`'s threads).
        self.aio: AsyncSQLAlchemyKeyStore | None = (
            AsyncSQLAlchemyKeyStore(self) if async_engine is not None else None
        )
        ref = weakref.ref(self)
        os.register_at_fork(after_in_child=lambda: _forget_pools(ref))
        try:
            self.init_schema()
        except StoreUnavailable as exc:
            # The database may come up after the application: try again on
            # first use rather than refuse to start.
            log.warning("SQL store %s: schema check deferred: %s", self, exc)
        except BaseException:
            self.close()
            raise

    def __repr__(self) -> str:
        return f"SQLAlchemyKeyStore({_redacted(self.engine.url)!r}, table={self.tables.name!r})"

    # -- engines -----------------------------------------------------------

    def _connect_args(self, url: URL) -> tuple[URL, dict[str, Any]]:
        if url.get_backend_name() != "postgresql":
            return url, {}
        ms = max(1, round(self.statement_timeout * 1000))
        options = url.query.get("options", "")
        if not isinstance(options, str):
            options = " ".join(options)
        return url.difference_update_query(["options"]), {
            # libpq rounds this up to 2 s; connect_within() enforces ours.
            "connect_timeout": max(2, math.ceil(self.connect_timeout)),
            "options": f"{options} -c statement_timeout={ms}".strip(),
        }

    def _make_engine(self, url: URL, options: dict[str, Any]) -> Engine:
        backend = url.get_backend_name()
        if backend == "sqlite":
            if url.database in (None, "", ":memory:"):
                raise ConfigurationError(
                    "an in-memory SQLite database lives in one connection; give the SQL store "
                    "a file (sqlite+pysqlite:///keys.db) or use memory://"
                )
            options.setdefault("connect_args", {"timeout": max(self.statement_timeout, 5.0)})
            return create_engine(url, hide_parameters=True, **options)
        url, connect_args = self._connect_args(url)
        connect_args.update(options.pop("connect_args", {}))
        options.setdefault("pool_timeout", self.connect_timeout)
        engine = create_engine(url, connect_args=connect_args, hide_parameters=True, **options)
        if engine.dialect.driver == "psycopg":
            event.listen(engine, "do_connect", self._bounded_connect)
        return engine

    def _make_async_engine(self, url: URL, options: dict[str, Any]) -> AsyncEngine:
        url, connect_args = self._connect_args(url)
        options = dict(options)
        connect_args.update(options.pop("connect_args", {}))
        options.setdefault("pool_timeout", self.connect_timeout)
        engine = create_async_engine(url, connect_args=connect_args, hide_parameters=True,
                                     **options)
        event.listen(engine.sync_engine, "do_connect", self._bounded_async_connect)
        return engine

    def _bounded_connect(self, dialect: Any, conn_rec: Any, cargs: Any, cparams: Any) -> Any:
        try:
            return connect_within(lambda: dialect.connect(*cargs, **cparams),
                                  self.connect_timeout, _close_quietly)
        except TimeoutError as exc:
            raise psycopg.errors.ConnectionTimeout(str(exc)) from None

    def _bounded_async_connect(self, dialect: Any, conn_rec: Any, cargs: Any, cparams: Any
                               ) -> None:
        # SQLAlchemy's psycopg dialect awaits this instead of
        # AsyncConnection.connect (what its ``async_creator`` option uses).
        cparams["async_creator_fn"] = self._connect_async

    async def _connect_async(self, *args: Any, **kwargs: Any) -> psycopg.AsyncConnection[Any]:
        try:
            return await asyncio.wait_for(psycopg.AsyncConnection.connect(*args, **kwargs),
                                          self.connect_timeout)
        except asyncio.TimeoutError:
            raise psycopg.errors.ConnectionTimeout(
                f"connection attempt timed out after {self.connect_timeout:g} s") from None

    def _read_ids(self, conn: psycopg.Connection[Any], limit: int) -> list[str]:
        # On the listener's own connection (autocommit), in its thread.
        tables = self.tables
        name = (pgsql.Identifier(tables.schema, tables.name) if tables.schema
                else pgsql.Identifier(tables.name))
        query = pgsql.SQL("SELECT id FROM {} LIMIT %s").format(name)
        return [key_id for (key_id,) in conn.execute(query, (limit,))]

    def _listener_connection(self) -> psycopg.Connection[Any]:
        # A connection made the way the application's are (URL, connect
        # arguments, events), then taken out of the pool for good.
        proxy = self.engine.raw_connection()
        conn = proxy.driver_connection
        proxy.detach()
        if not isinstance(conn, psycopg.Connection):  # pragma: no cover - checked at init
            raise ConfigurationError("the record cache needs psycopg 3")
        return conn

    # -- statements --------------------------------------------------------

    def _prepare_statements(self) -> None:
        t = self.tables.keys
        columns = list(t.c)
        key = t.c.id == bindparam("key_id")
        at = bindparam("at", type_=UTCDateTime())
        self._q_get = select(*columns).where(key)
        self._q_list = select(*columns).order_by(t.c.created_at, t.c.id)
        self._q_list_owner = self._q_list.where(t.c.owner == bindparam("owner"))
        self._q_insert = insert(t)
        self._q_revoke = update(t).where(key).values(revoked_at=func.coalesce(t.c.revoked_at, at))
        self._q_expiry = update(t).where(key).values(expires_at=at)
        # KeyRecord.allows_expiry, in the UPDATE (set_expiry; a rotation's
        # plan has decided under the row lock already).
        self._q_set_expiry = self._q_expiry.where(
            t.c.revoked_at.is_(None), or_(t.c.expires_at.is_(None), t.c.expires_at >= at))
        self._returning = bool(self.engine.dialect.update_returning)
        if self._returning:
            self._q_revoke = self._q_revoke.returning(*columns)
            self._q_expiry = self._q_expiry.returning(*columns)
            self._q_set_expiry = self._q_set_expiry.returning(*columns)
        self._q_rehash = (
            update(t).where(key, t.c.hash == bindparam("old")).values(hash=bindparam("new"))
        )
        self._q_delete = delete(t).where(key)
        # A rotation's first statement: the old key's row lock (PostgreSQL),
        # or the database's write lock (SQLite, where pysqlite would run a
        # SELECT outside the transaction), so a revocation waits for it.
        self._q_lock = update(t).where(key).values(expires_at=t.c.expires_at)
        self._q_successors = self._q_list.where(t.c.rotated_from == bindparam("key_id"))
        used = bindparam("used", type_=UTCDateTime())
        self._q_usage = update(t).where(key).values(
            usage_count=t.c.usage_count + bindparam("count", type_=BigInteger()),
            last_used_at=case(
                (or_(t.c.last_used_at.is_(None), t.c.last_used_at < used), used),
                else_=t.c.last_used_at,
            ),
        )
        self._q_notify = text("SELECT pg_notify(:channel, :key_id)") if self._postgres else None
        # One unit of a quota, if one is left and no refill is due (the row
        # was refilled after the cutoff of its own period): one statement.
        quota = (t.c.quota_remaining, t.c.quota_refill, t.c.quota_refilled_at)
        self._q_take = update(t).where(
            key, t.c.quota_remaining > 0,
            or_(t.c.quota_refill.is_(None), t.c.quota_refilled_at > case(
                *((t.c.quota_refill.like(f"%/{name}"), bindparam(name, type_=UTCDateTime()))
                  for name in PERIODS)))
        ).values(quota_remaining=t.c.quota_remaining - 1)
        if self._returning:
            self._q_take = self._q_take.returning(*quota)
        self._q_quota = select(*quota).where(key)
        self._q_swap = update(t).where(
            key, t.c.quota_remaining == bindparam("old_remaining"),
            t.c.quota_refill == bindparam("old_refill"),
            t.c.quota_refilled_at == bindparam("old_at", type_=UTCDateTime()),
        ).values(quota_remaining=bindparam("new_remaining"),
                 quota_refilled_at=bindparam("new_at", type_=UTCDateTime()))
        self._q_successor = (select(t.c.id).where(t.c.rotated_from == bindparam("key_id"))
                             .order_by(t.c.created_at.desc(), t.c.id.desc()).limit(1))
        self._q_moved = update(t).where(key).values(quota_remaining=0, quota_refilled_at=None)
        self._q_audit_insert = insert(self.tables.audit)

    # -- running operations ------------------------------------------------

    def _fileno(self, conn: Connection) -> int | None:
        if not self._guarded:
            return None
        try:
            fileno: int = conn.connection.driver_connection.fileno()  # type: ignore[union-attr]
            return fileno
        except Exception:
            return None

    def _call(self, conn: Connection, op: Callable[..., T], args: tuple[Any, ...],
              write: bool, set_local: str | None) -> T:
        """Run *op(conn, *args)*, in a transaction if *write*, within the deadline.

        Runs in the caller's thread, or in a greenlet under ``run_sync`` for
        the async twin: the same code serves both.
        """
        with WATCHDOG.guard(self._fileno(conn), self.statement_timeout) as deadline:
            try:
                if not write:
                    result = op(conn, *args)
                else:
                    with conn.begin():
                        if set_local is not None:
                            conn.exec_driver_sql(set_local)
                        result = op(conn, *args)
            except sa_exc.SQLAlchemyError:
                if deadline is not None and deadline.fired:
                    raise _TimedOut(
                        f"no answer within {self.statement_timeout:g} s") from None
                raise
        if deadline is not None and deadline.fired:
            # The answer came (a write, its commit), but the deadline passed
            # before the watchdog let go of it (a thread kept from the CPU
            # that long), and it shut the socket down: the answer stands,
            # the connection must not serve another operation.
            conn.invalidate()
        return result

    def _run(self, op: Callable[..., T], *args: Any, write: bool = False,
             once: bool = False) -> T:
        if not self._schema_ready:
            self.init_schema()
        engine = self.engine if write else self._reader
        retried = False
        while True:
            try:
                with engine.connect() as conn:
                    return self._call(conn, op, args, write, self._set_local_sync)
            except sa_exc.DBAPIError as exc:
                if _retryable(exc, write or once, retried):
                    retried = True
                    continue
                raise self._failure(exc) from None
            except (sa_exc.SQLAlchemyError, _TimedOut) as exc:
                raise self._failure(exc) from None

    async def _arun(self, op: Callable[..., T], *args: Any, write: bool = False,
                    once: bool = False) -> T:
        if not self._schema_ready:
            await self._ainit_schema()
        engine = self._async_engine_for(write)
        retried = False
        while True:
            try:
                async with engine.connect() as conn:
                    return await conn.run_sync(self._call, op, args, write,
                                               self._set_local_async)
            except sa_exc.DBAPIError as exc:
                if _retryable(exc, write or once, retried):
                    retried = True
                    continue
                raise self._failure(exc) from None
            except (sa_exc.SQLAlchemyError, _TimedOut) as exc:
                raise self._failure(exc) from None

    def _async_engine_for(self, write: bool) -> AsyncEngine:
        if write:
            assert self.async_engine is not None
            return self.async_engine
        return self._areader

    @functools.cached_property
    def _reader(self) -> Engine:
        # Reads run in autocommit: one round trip, no BEGIN/ROLLBACK.
        return self.engine.execution_options(isolation_level="AUTOCOMMIT")

    @functools.cached_property
    def _areader(self) -> AsyncEngine:
        assert self.async_engine is not None
        return self.async_engine.execution_options(isolation_level="AUTOCOMMIT")

    def _failure(self, exc: Exception) -> AQNTError:
        if isinstance(exc, sa_exc.IntegrityError):
            return KeyStateError(f"constraint failed: {_describe(exc)}")
        # Down, unreachable, too slow, or missing its tables: the store
        # cannot answer, which is never the same as "this key is invalid".
        detail = _describe(exc)
        log.warning("SQL store %s unavailable: %s", self, detail)
        return StoreUnavailable(f"SQL store unavailable: {detail}")

    # -- schema ------------------------------------------------------------

    def init_schema(self) -> int:
        """Check the schema, creating the tables if they are missing (and
        *create_schema* allows); return the schema version.

        Safe to run from many processes at once.  Raises
        :class:`~aqnt_auth.StoreUnavailable` when the database cannot be
        reached, :class:`~aqnt_auth.ConfigurationError` when the schema is
        missing (and may not be created) or newer than this aqnt-auth.
        """
        with self._schema_lock:
            try:
                with self.engine.connect() as conn:
                    version = self._call(conn, self._op_schema, (), False,
                                         self._set_local_sync)
            except (sa_exc.SQLAlchemyError, _TimedOut) as exc:
                raise self._failure(exc) from None
            self._schema_ready = True
            return version

    async def _ainit_schema(self) -> None:
        assert self.async_engine is not None
        try:
            async with self.async_engine.connect() as conn:
                await conn.run_sync(self._call, self._op_schema, (), False,
                                    self._set_local_async)
        except (sa_exc.SQLAlchemyError, _TimedOut) as exc:
            raise self._failure(exc) from None
        self._schema_ready = True

    def _op_schema(self, conn: Connection) -> int:
        with conn.begin():
            if self._postgres:
                conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _SCHEMA_LOCK})
            version = self._read_version(conn)
            if version is None:
                if not self._create_schema:
                    raise StoreNotFound(
                        f"table {self.tables.name!r} is missing: run `aqnt-auth store init` "
                        "or apply aqnt_auth's SQL SCHEMA"
                    )
                self._create_tables(conn)
                version = self._read_version(conn)
            elif version < SCHEMA_VERSION:
                if not self._create_schema:
                    raise ConfigurationError(
                        f"table {self.tables.name!r} is at schema version {version}, older "
                        f"than this aqnt-auth's ({SCHEMA_VERSION}): run `aqnt-auth store init` "
                        "to upgrade it, or apply the statements of postgres_upgrade_ddl()"
                    )
                # Under the advisory lock (PostgreSQL) or the write lock of
                # this transaction: one process upgrades, the others see it.
                for statement in upgrade_ddl(self.tables, version, conn.dialect):
                    conn.exec_driver_sql(statement)
                version = self._read_version(conn)
        if version is None or version > SCHEMA_VERSION:
            raise ConfigurationError(
                f"schema version {version} of table {self.tables.name!r} is not one this "
                f"aqnt-auth understands ({SCHEMA_VERSION}); upgrade aqnt-auth"
            )
        return version

    def _read_version(self, conn: Connection) -> int | None:
        tables = self.tables
        if self._postgres:
            found = conn.execute(text("SELECT to_regclass(:name)"),
                                 {"name": tables.qualified_versions}).scalar()
        else:
            found = inspect(conn).has_table(tables.versions.name, schema=tables.schema)
        if not found:
            return None
        version: int | None = conn.execute(
            select(tables.versions.c.version).where(tables.versions.c.name == tables.name)
        ).scalar()
        return version

    def _create_tables(self, conn: Connection) -> None:
        tables = self.tables
        if self._postgres:
            # The documented DDL itself, so docs and database never differ.
            for statement in postgres_ddl(tables.name, tables.schema):
                conn.exec_driver_sql(statement)
            return
        tables.metadata.create_all(conn)
        conn.execute(insert(tables.versions).values(name=tables.name, version=SCHEMA_VERSION))

    # -- operations (sync or under run_sync) --------------------------------

    def _op_get(self, conn: Connection, key_id: str) -> KeyRecord | None:
        row = conn.execute(self._q_get, {"key_id": key_id}).first()
        return None if row is None else record_from_row(row)

    def _op_add(self, conn: Connection, record: KeyRecord, audit: AuditEvent | None) -> None:
        conn.execute(self._q_insert, row_from_record(record))
        self._write_audit(conn, ensure(audit).entries(None, record))
        # Other processes may remember this id as absent (a forged id sent
        # before): they forget that when the key exists.
        self._notify(conn, record.id)

    def _op_list(self, conn: Connection, owner: str | None) -> list[KeyRecord]:
        if owner is None:
            rows = conn.execute(self._q_list)
        else:
            rows = conn.execute(self._q_list_owner, {"owner": owner})
        return [record_from_row(row) for row in rows]

    def _notify(self, conn: Connection, key_id: str) -> None:
        if self._q_notify is not None:
            # Delivered when (and only if) this transaction commits.
            conn.execute(self._q_notify, {"channel": self.channel, "key_id": key_id})

    def _write_audit(self, conn: Connection, entries: list[AuditEntry]) -> None:
        if entries:
            conn.execute(self._q_audit_insert, [
                {"at": e.at, "key_id": e.key_id, "event": e.event, "actor": e.actor,
                 "old": dict(e.old), "new": dict(e.new), "related_key_id": e.related_key_id}
                for e in entries])

    def _locked(self, conn: Connection, key_id: str) -> KeyRecord | None:
        """The record of *key_id*, read after taking its row lock (PostgreSQL)
        or the write lock (SQLite): what the change that follows changes."""
        if conn.execute(self._q_lock, {"key_id": key_id}).rowcount != 1:
            return None
        return record_from_row(conn.execute(self._q_get, {"key_id": key_id}).one())

    def _op_change(self, conn: Connection, stmt: Any, key_id: str, at: dt.datetime | None
                   ) -> KeyRecord | None:
        params = {"key_id": key_id, "at": at}
        if self._returning:
            row = conn.execute(stmt, params).first()
        else:
            conn.execute(stmt, params)
            row = conn.execute(self._q_get, {"key_id": key_id}).first()
        if row is None:
            return None
        self._notify(conn, key_id)
        return record_from_row(row)

    def _op_revoke(self, conn: Connection, key_id: str, at: dt.datetime,
                   audit: AuditEvent | None) -> KeyRecord | None:
        before = self._locked(conn, key_id)
        if before is None:
            return None
        after = self._op_change(conn, self._q_revoke, key_id, at)
        self._write_audit(conn, ensure(audit).entries(before, after))
        return after

    def _op_update(self, conn: Connection, key_id: str, values: dict[str, Any],
                   audit: AuditEvent | None) -> KeyRecord | None:
        t = self.tables.keys
        before = self._locked(conn, key_id)
        if before is None:
            return None
        if values:
            changed = conn.execute(
                update(t).where(t.c.id == key_id, t.c.revoked_at.is_(None)).values(**values))
            if changed.rowcount == 1:
                self._notify(conn, key_id)
        after = record_from_row(conn.execute(self._q_get, {"key_id": key_id}).one())
        self._write_audit(conn, ensure(audit).entries(before, after))
        return after

    def _op_set_expiry(self, conn: Connection, key_id: str, at: dt.datetime | None,
                       audit: AuditEvent | None) -> KeyRecord | None:
        before = self._locked(conn, key_id)
        if before is None:
            return None
        params = {"key_id": key_id, "at": at}
        changed = conn.execute(self._q_set_expiry, params)
        if self._returning:
            row = changed.first()
        elif changed.rowcount == 1:
            row = conn.execute(self._q_get, {"key_id": key_id}).one()
        else:
            row = None
        if row is None:
            raise KeyStateError(before.expiry_refusal(at))
        self._notify(conn, key_id)
        after = record_from_row(row)
        self._write_audit(conn, ensure(audit).entries(before, after))
        return after

    def _op_rotate(self, conn: Connection, key_id: str, plan: RotationPlan,
                   audit: AuditEvent | None) -> KeyRecord | None:
        before = self._locked(conn, key_id)
        if before is None:
            return None
        successors = [record_from_row(r)
                      for r in conn.execute(self._q_successors, {"key_id": key_id})]
        successor, expires_at = plan(before, successors)
        conn.execute(self._q_insert, row_from_record(successor))
        self._notify(conn, successor.id)
        if successor.metered:  # the successor took the quota: mark it moved
            conn.execute(self._q_moved, {"key_id": key_id})
        after = self._op_change(conn, self._q_expiry, key_id, expires_at)
        assert after is not None
        self._write_audit(conn, ensure(audit).rotation(before, after, successor))
        return after

    def _op_consume(self, conn: Connection, key_id: str, now: dt.datetime) -> QuotaUse | None:
        # No NOTIFY: a cached record's quota_remaining is stale by design.
        def take(key: str, cutoffs: dict[str, dt.datetime]) -> QuotaRow | None:
            changed = conn.execute(self._q_take, {"key_id": key, **cutoffs})
            if self._returning:
                row = changed.first()
            elif changed.rowcount == 1:
                row = conn.execute(self._q_quota, {"key_id": key}).first()
            else:
                row = None
            return None if row is None else QuotaRow(*row)

        def read(key: str) -> QuotaRow | None:
            row = conn.execute(self._q_quota, {"key_id": key}).first()
            return None if row is None else QuotaRow(*row)

        def swap(key: str, old: QuotaRow, new: QuotaRow) -> bool:
            changed = conn.execute(self._q_swap, {
                "key_id": key, "old_remaining": old.remaining, "old_refill": old.refill,
                "old_at": old.refilled_at, "new_remaining": new.remaining,
                "new_at": new.refilled_at})
            return changed.rowcount == 1

        def successor(key: str) -> str | None:
            found = conn.execute(self._q_successor, {"key_id": key}).scalar()
            return None if found is None else str(found)

        return consume_with(QuotaOps(take, read, swap, successor), key_id, now)

    def _op_rehash(self, conn: Connection, key_id: str, old: str, new: str) -> bool:
        changed = conn.execute(self._q_rehash, {"key_id": key_id, "old": old, "new": new})
        if changed.rowcount != 1:
            return False
        self._notify(conn, key_id)
        return True

    def _op_delete(self, conn: Connection, key_id: str, audit: AuditEvent | None) -> bool:
        before = self._locked(conn, key_id)
        if before is None:
            return False
        conn.execute(self._q_delete, {"key_id": key_id})
        self._write_audit(conn, ensure(audit).entries(before, None))
        self._notify(conn, key_id)
        return True

    def _op_audit(self, conn: Connection, key_id: str | None, since: dt.datetime | None,
                  until: dt.datetime | None, limit: int | None) -> AuditLog:
        a = self.tables.audit
        query = select(a.c.id, a.c.at, a.c.key_id, a.c.event, a.c.actor, a.c.old, a.c.new,
                       a.c.related_key_id)
        if key_id is not None:
            query = query.where(a.c.key_id == key_id)
        if since is not None:
            query = query.where(a.c.at >= since)
        if until is not None:
            query = query.where(a.c.at < until)
        query = query.order_by(a.c.at.desc(), a.c.id.desc())
        if limit is not None:
            query = query.limit(limit)
        return [entry_of_row(*row) for row in conn.execute(query)]

    def _op_usage(self, conn: Connection, rows: list[dict[str, Any]]) -> None:
        conn.execute(self._q_usage, rows)

    @property
    def _usage_table(self) -> str:
        usage = self.tables.usage.name
        return f"{self.tables.schema}.{usage}" if self.tables.schema else usage

    def _op_usage_history(self, conn: Connection, rows: Sequence[UsageRow],
                          prune_before: int | None) -> None:
        def run(sql: str, params: dict[str, Any]) -> Sequence[Sequence[Any]]:
            result = conn.execute(text(sql), params)
            return result.fetchall() if result.returns_rows else []

        def run_many(sql: str, params: list[dict[str, Any]]) -> None:
            conn.execute(text(sql), params)

        write_usage_rows(run, run_many, self._usage_table, rows, prune_before,
                         postgres=self._postgres)

    def _op_usage_rows(self, conn: Connection, key_id: str | None, since: int, until: int
                       ) -> list[UsageRow]:
        return read_usage_rows(lambda sql, params: conn.execute(text(sql), params).fetchall(),
                               self._usage_table, key_id, since, until)

    # -- the KeyStore protocol --------------------------------------------

    def peek(self, key_id: str) -> KeyRecord | None:
        """The cached record if the cache may answer now, else ``None`` (then
        call :meth:`get`): a warm read without I/O, for the event loop."""
        return self.cache.get(key_id)

    def get(self, key_id: str) -> KeyRecord | None:
        return self.cache.read_through(key_id, self._get_uncached)

    def _get_uncached(self, key_id: str) -> KeyRecord | None:
        return self._run(self._op_get, key_id)

    def add(self, record: KeyRecord, *, audit: AuditEvent | None = None) -> None:
        try:
            self._run(self._op_add, record, audit, write=True)
        finally:
            self.cache.drop(record.id)

    def list(self, *, owner: str | None = None) -> list[KeyRecord]:
        return self._run(self._op_list, owner)

    def revoke(self, key_id: str, at: dt.datetime, *, audit: AuditEvent | None = None
               ) -> KeyRecord | None:
        try:
            return self._run(self._op_revoke, key_id, at, audit, write=True)
        finally:
            # Even after a failure: the commit may have happened.
            self.cache.drop(key_id)

    def set_expiry(self, key_id: str, at: dt.datetime | None, *,
                   audit: AuditEvent | None = None) -> KeyRecord | None:
        try:
            return self._run(self._op_set_expiry, key_id, at, audit, write=True)
        finally:
            self.cache.drop(key_id)

    def update(self, key_id: str, changes: Mapping[str, Any], *,
               audit: AuditEvent | None = None) -> KeyRecord | None:
        values = update_columns(changes)
        try:
            return self._run(self._op_update, key_id, values, audit, write=True)
        finally:
            self.cache.drop(key_id)

    def rotate(self, key_id: str, plan: RotationPlan, *, audit: AuditEvent | None = None
               ) -> KeyRecord | None:
        plan, created = created_by(plan)
        try:
            return self._run(self._op_rotate, key_id, plan, audit, write=True)
        finally:
            self.cache.drop(key_id)
            for new_id in created:  # known here at once, as a created key is
                self.cache.drop(new_id)

    def consume_quota(self, key_id: str, now: dt.datetime) -> QuotaUse | None:
        """One unit of the key's quota: usually one conditional ``UPDATE ...
        RETURNING`` in autocommit, a single round trip (each statement of
        :func:`~aqnt_auth._quota.consume_with` is atomic on its own); never
        repeated after a lost connection (it may have committed); invalidates
        no cached record."""
        return self._run(self._op_consume, key_id, now, once=True)

    def replace_hash(self, key_id: str, old_hash: str, new_hash: str) -> bool:
        try:
            return self._run(self._op_rehash, key_id, old_hash, new_hash, write=True)
        finally:
            self.cache.drop(key_id)

    def delete(self, key_id: str, *, audit: AuditEvent | None = None) -> bool:
        try:
            return self._run(self._op_delete, key_id, audit, write=True)
        finally:
            self.cache.drop(key_id)

    def audit_entries(self, *, key_id: str | None = None, since: dt.datetime | None = None,
                      until: dt.datetime | None = None, limit: int | None = None
                      ) -> AuditLog:
        return self._run(self._op_audit, key_id, since, until, limit)

    def record_usage(self, usage: Mapping[str, UsageDelta]) -> None:
        """Add the counts in one batched ``UPDATE``; exact under concurrency.

        Rows are updated in key-id order, so concurrent flushes from many
        processes queue on row locks instead of deadlocking.  Cached records
        are not invalidated (their usage fields may lag).
        """
        if usage:
            self._run(self._op_usage, _usage_rows(usage), write=True)

    def record_usage_history(self, rows: Sequence[UsageRow], *,
                             prune_before: int | None = None) -> None:
        """Add usage-history rows in one transaction (an upsert adding the
        counts, in key order; PostgreSQL and SQLite); no ``NOTIFY``: no
        record changes."""
        if rows or prune_before is not None:
            self._run(self._op_usage_history, rows, prune_before, write=True)

    def usage_rows(self, *, key_id: str | None = None, since: int, until: int
                   ) -> builtins.list[UsageRow]:
        return self._run(self._op_usage_rows, key_id, since, until)

    def close(self) -> None:
        """Stop the listener and close the pools the store created.  Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self.listener is not None:
            self.listener.stop()
        if self._owns_async and not self._async_disposed and self.async_engine is not None:
            self._async_disposed = True
            _dispose_async(self.async_engine)
        if self._owns_engine:
            self.engine.dispose()


class AsyncSQLAlchemyKeyStore:
    """The native async twin of a :class:`SQLAlchemyKeyStore` (its ``aio``).

    Shares the store's record cache and listener: a warm lookup is a dict
    read on the event loop; a miss goes through the async engine.
    """

    def __init__(self, store: SQLAlchemyKeyStore) -> None:
        self.sync = store
        self._cache = store.cache

    def __repr__(self) -> str:
        return f"AsyncSQLAlchemyKeyStore({self.sync!r})"

    async def get(self, key_id: str) -> KeyRecord | None:
        cache = self._cache
        found = cache.lookup(key_id)
        if found is not None:
            return None if found is ABSENT else found
        epoch = cache.epoch
        record = await self.sync._arun(self.sync._op_get, key_id)
        cache.remember(key_id, record, epoch)
        return record

    async def add(self, record: KeyRecord, *, audit: AuditEvent | None = None) -> None:
        try:
            await self.sync._arun(self.sync._op_add, record, audit, write=True)
        finally:
            self._cache.drop(record.id)

    async def list(self, *, owner: str | None = None) -> list[KeyRecord]:
        return await self.sync._arun(self.sync._op_list, owner)

    async def revoke(self, key_id: str, at: dt.datetime, *, audit: AuditEvent | None = None
                     ) -> KeyRecord | None:
        store = self.sync
        try:
            return await store._arun(store._op_revoke, key_id, at, audit, write=True)
        finally:
            self._cache.drop(key_id)

    async def set_expiry(self, key_id: str, at: dt.datetime | None, *,
                         audit: AuditEvent | None = None) -> KeyRecord | None:
        store = self.sync
        try:
            return await store._arun(store._op_set_expiry, key_id, at, audit, write=True)
        finally:
            self._cache.drop(key_id)

    async def update(self, key_id: str, changes: Mapping[str, Any], *,
                     audit: AuditEvent | None = None) -> KeyRecord | None:
        values = update_columns(changes)
        try:
            return await self.sync._arun(self.sync._op_update, key_id, values, audit,
                                         write=True)
        finally:
            self._cache.drop(key_id)

    async def rotate(self, key_id: str, plan: RotationPlan, *,
                     audit: AuditEvent | None = None) -> KeyRecord | None:
        plan, created = created_by(plan)
        try:
            return await self.sync._arun(self.sync._op_rotate, key_id, plan, audit, write=True)
        finally:
            self._cache.drop(key_id)
            for new_id in created:
                self._cache.drop(new_id)

    async def consume_quota(self, key_id: str, now: dt.datetime) -> QuotaUse | None:
        return await self.sync._arun(self.sync._op_consume, key_id, now, once=True)

    async def replace_hash(self, key_id: str, old_hash: str, new_hash: str) -> bool:
        try:
            return await self.sync._arun(self.sync._op_rehash, key_id, old_hash, new_hash,
                                         write=True)
        finally:
            self._cache.drop(key_id)

    async def delete(self, key_id: str, *, audit: AuditEvent | None = None) -> bool:
        try:
            return await self.sync._arun(self.sync._op_delete, key_id, audit, write=True)
        finally:
            self._cache.drop(key_id)

    async def audit_entries(self, *, key_id: str | None = None,
                            since: dt.datetime | None = None, until: dt.datetime | None = None,
                            limit: int | None = None) -> AuditLog:
        return await self.sync._arun(self.sync._op_audit, key_id, since, until, limit)

    async def record_usage(self, usage: Mapping[str, UsageDelta]) -> None:
        if usage:
            await self.sync._arun(self.sync._op_usage, _usage_rows(usage), write=True)

    async def close(self) -> None:
        """Close the async pool on this loop, then the rest in a thread.  Idempotent."""
        store = self.sync
        if store._closed:
            return
        if store._owns_async and not store._async_disposed and store.async_engine is not None:
            store._async_disposed = True
            await store.async_engine.dispose()
        await asyncio.get_running_loop().run_in_executor(None, store.close)


def _usage_rows(usage: Mapping[str, UsageDelta]) -> list[dict[str, Any]]:
    return [
        {"key_id": key_id, "count": delta.count, "used": delta.last_used_at}
        for key_id, delta in sorted(usage.items())
    ]


def _retryable(exc: sa_exc.DBAPIError, write: bool, retried: bool) -> bool:
    # A pooled connection that died while idle (database restarted): read
    # again once, on a fresh one.  Writes are not repeated: the first may
    # have committed.
    return exc.connection_invalidated and not write and not retried


def _describe(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None)
    if orig is not None:
        exc = orig
    message = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {message[0] if message else ''}".rstrip(": ")


def _dispose_async(engine: AsyncEngine) -> None:
    # Closing asyncio connections needs an event loop; this thread may be
    # running one already, so use a fresh loop in a helper thread.
    def run() -> None:
        try:
            asyncio.run(engine.dispose())
        except Exception as exc:  # pragma: no cover - closing is best effort
            log.warning("closing the async SQL pool failed: %s", exc)

    thread = threading.Thread(target=run, name="aqnt-sql-close")
    thread.start()
    thread.join()


def _forget_pools(ref: weakref.ref[SQLAlchemyKeyStore]) -> None:
    store = ref()
    if store is None:
        return
    # Pooled connections belong to the parent: the child opens its own.
    if store._owns_engine:
        store.engine.dispose(close=False)
    if store._owns_async and store.async_engine is not None:
        store.async_engine.sync_engine.dispose(close=False)
