"""The SQL store's schema, options and deadlines."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import os
import secrets
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from aqnt_auth import (
    Argon2Hasher,
    AuditEvent,
    ConfigurationError,
    KeyManager,
    KeyRecord,
    StoreUnavailable,
    UsageRow,
    open_store,
    sql,
)
from aqnt_auth._stores._deadline import (
    WATCHDOG,
    ConnectTimeout,
    Deadline,
    Watchdog,
    connect_within,
)
from aqnt_auth._stores._sql_ddl import SCHEMA, SCHEMA_VERSION, postgres_ddl, postgres_upgrade_ddl
from aqnt_auth._stores._sqlalchemy import SQLAlchemyKeyStore

from .contract import T0, make_record
from .pg_support import PGSchema, pg_schema_fixture

# -- deadlines (no database) ----------------------------------------------------


def test_watchdog_shuts_down_a_socket_past_its_deadline() -> None:
    """A read that would wait for ever returns (EOF) once the deadline passes."""
    watchdog = Watchdog()
    a, b = socket.socketpair()
    with a, b, watchdog.guard(a.fileno(), 0.05) as deadline:
        assert a.recv(10) == b""
        assert deadline is not None
        assert deadline.fired


def test_watchdog_leaves_finished_operations_alone() -> None:
    """An operation that ends in time is not touched, and is forgotten."""
    watchdog = Watchdog()
    a, b = socket.socketpair()
    with a, b:
        for _ in range(3):
            with watchdog.guard(a.fileno(), 0.05) as deadline:
                b.sendall(b"ping")
                assert a.recv(10) == b"ping"
            assert deadline is not None
            assert not deadline.fired
        assert len(watchdog) == 0
        time.sleep(0.1)  # past every deadline: the socket still works
        b.sendall(b"pong")
        assert a.recv(10) == b"pong"


def test_watchdog_without_socket_does_nothing() -> None:
    with Watchdog().guard(None, 0.01) as deadline:
        assert deadline is None


def test_connect_within_returns_or_raises_what_connect_did() -> None:
    assert connect_within(lambda: 42, 1.0, lambda _: None) == 42

    def refuse() -> int:
        raise ConnectionRefusedError("no")

    with pytest.raises(ConnectionRefusedError):
        connect_within(refuse, 1.0, lambda _: None)


def test_connect_within_gives_up_and_closes_the_late_connection() -> None:
    """A slow attempt raises ConnectTimeout; its connection, when it comes,
    is closed rather than leaked."""
    release, closed = threading.Event(), threading.Event()

    def slow() -> str:
        release.wait(5)
        return "conn"

    with pytest.raises(ConnectTimeout):
        connect_within(slow, 0.05, lambda conn: closed.set())
    release.set()
    assert closed.wait(5)


# -- options ------------------------------------------------------------------


@pytest.mark.parametrize(("option", "value"), [
    ("connect_timeout", 0), ("statement_timeout", -1), ("cache_ttl", 0),
    ("heartbeat", 0), ("lease", 0.1), ("cache_size", -1), ("table", "Keys; DROP"),
    ("channel", "bad channel"), ("schema", "1x"),
])
def test_bad_options_are_refused(option: str, value: object, tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError):
        SQLAlchemyKeyStore(f"sqlite+pysqlite:///{tmp_path / 'k.db'}", cache=False,
                           **{option: value})  # type: ignore[arg-type]


@pytest.mark.parametrize("url", [
    "postgresql+nosuchdriver://u:pw-x@127.0.0.1/db",   # unknown driver
    "mysql+pymysql://u:pw-x@127.0.0.1/db",              # driver not installed
    "postgresql+psycopg://u:pw-x@127.0.0.1:notaport/db",
])
def test_unusable_url_is_a_configuration_error(url: str) -> None:
    """A URL the store cannot use says why, without the password."""
    with pytest.raises(ConfigurationError) as caught:
        open_store(url)
    assert "pw-x" not in str(caught.value)


def test_cache_needs_postgres(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="LISTEN/NOTIFY"):
        SQLAlchemyKeyStore(f"sqlite+pysqlite:///{tmp_path / 'k.db'}", cache=True)


def test_in_memory_sqlite_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="file"):
        SQLAlchemyKeyStore("sqlite+pysqlite://")


def test_unreachable_database_is_unavailable_and_hides_the_password() -> None:
    """Port 1 refuses connections: the store still opens (the schema check is
    deferred), calls raise StoreUnavailable, and no message shows the password."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # nothing listens here once closed
    store = open_store(f"postgres://aqnt:s3cr3t-pw@127.0.0.1:{port}/nothing")
    try:
        assert isinstance(store, SQLAlchemyKeyStore)
        assert store.engine.dialect.driver == "psycopg"  # postgres:// means psycopg 3
        assert "s3cr3t" not in repr(store)
        with pytest.raises(StoreUnavailable) as caught:
            store.get("nosuchkey123")
        assert "s3cr3t" not in str(caught.value)
    finally:
        store.close()


def test_core_import_does_not_load_sqlalchemy() -> None:
    """SQLAlchemy is an optional extra: importing the package must not need it."""
    code = ("import sys, aqnt_auth; "
            "assert 'sqlalchemy' not in sys.modules and 'psycopg' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


# -- the schema -----------------------------------------------------------------


@pytest.fixture(scope="module")
def pg() -> Iterator[PGSchema]:
    yield from pg_schema_fixture()


def _table() -> str:
    return f"keys_{secrets.token_hex(4)}"


def test_schema_constant_is_the_default_ddl() -> None:
    """SCHEMA documents exactly the statements the store runs by default."""
    expected = ";\n".join(postgres_ddl()) + ";\n"
    assert expected == SCHEMA
    assert "CREATE TABLE IF NOT EXISTS aqnt_api_keys" in SCHEMA
    assert "PRIMARY KEY" in SCHEMA
    assert f"VALUES ('aqnt_api_keys', {SCHEMA_VERSION})" in SCHEMA


def test_readme_shows_the_schema() -> None:
    """The DDL in the README is SCHEMA, character for character."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    blocks = [block.split("```", 1)[0] for block in readme.split("```sql\n")[1:]]
    assert SCHEMA in blocks
    assert sql.SCHEMA is SCHEMA
    assert sql.SQLAlchemyKeyStore is SQLAlchemyKeyStore


def test_store_runs_on_tables_made_from_the_documented_ddl(pg: PGSchema) -> None:
    """A team that applies SCHEMA by hand gets a working store with
    create_schema=False; applying it twice is harmless."""
    table = _table()
    for _ in range(2):
        for statement in postgres_ddl(table):
            pg.execute(statement)
    store = SQLAlchemyKeyStore(pg.url(), table=table, create_schema=False, cache=False)
    try:
        assert store.init_schema() == SCHEMA_VERSION
        record = make_record()
        store.add(record)
        assert store.get(record.id) == record
    finally:
        store.close()


@pytest.mark.parametrize(("write", "aio"), [(False, False), (True, False), (True, True)],
                         ids=["read", "write", "async write"])
def test_a_deadline_passed_after_the_answer_costs_the_next_operation_nothing(
        pg: PGSchema, monkeypatch: pytest.MonkeyPatch, write: bool, aio: bool) -> None:
    """An operation that has its answer (a write, its commit) but is kept
    from the CPU past its deadline before the watchdog lets go of it keeps
    its answer; the connection, whose socket the watchdog shut down
    meanwhile, is not handed to the next operation, which used to fail
    with "server closed the connection unexpectedly" (a 503 for a request
    that had done nothing wrong)."""
    timeout = 0.2
    store = SQLAlchemyKeyStore(pg.url(), table=_table(), cache=False,
                               statement_timeout=timeout,
                               engine_options={"pool_size": 1, "max_overflow": 0})
    try:
        record = make_record()
        store.add(record)
        disarm = WATCHDOG.disarm
        stalled: list[bool] = []

        def late_disarm(deadline: Deadline) -> None:
            if not stalled:  # once: the thread stalls after the answer came,
                # until the watchdog has fired (it wakes every `timeout`)
                until = time.monotonic() + 30
                while not deadline.fired and time.monotonic() < until:
                    time.sleep(timeout / 4)
                stalled.append(deadline.fired)
            disarm(deadline)

        monkeypatch.setattr(WATCHDOG, "disarm", late_disarm)
        if aio:
            assert store.aio is not None
            twin = store.aio

            async def revoke_twice() -> None:
                await twin.revoke(record.id, T0)  # committed, then the stall
                assert stalled == [True]
                await twin.revoke(record.id, T0 + dt.timedelta(seconds=1))

            asyncio.run(revoke_twice())
        elif write:
            store.revoke(record.id, T0)  # committed, then the stall
        else:
            assert store.get(record.id) == record
        assert stalled == [True]  # the watchdog did fire
        # The same pool of one connection: the next write (which, unlike a
        # read, is not retried) and read work.
        store.revoke(record.id, T0 + dt.timedelta(seconds=1))
        got = store.get(record.id)
        assert got is not None
        assert got.revoked_at == (T0 if write else T0 + dt.timedelta(seconds=1))
    finally:
        store.close()


def test_missing_schema_without_create_is_a_configuration_error(pg: PGSchema) -> None:
    with pytest.raises(ConfigurationError, match="store init"):
        SQLAlchemyKeyStore(pg.url(), table=_table(), create_schema=False, cache=False)


def test_newer_schema_is_refused(pg: PGSchema) -> None:
    table = _table()
    SQLAlchemyKeyStore(pg.url(), table=table, cache=False).close()
    pg.execute("UPDATE aqnt_auth_schema SET version = %s WHERE name = %s",
               (SCHEMA_VERSION + 1, table))
    with pytest.raises(ConfigurationError, match="upgrade aqnt-auth"):
        SQLAlchemyKeyStore(pg.url(), table=table, cache=False)


def test_schema_creation_races_safely(pg: PGSchema) -> None:
    """Many processes starting at once on an empty database: one creates the
    tables, none fails."""
    table = _table()
    results: list[object] = []

    def start() -> None:
        try:
            store = SQLAlchemyKeyStore(pg.url(), table=table, cache=False)
            results.append(store.init_schema())
            store.close()
        except Exception as exc:
            results.append(exc)

    threads = [threading.Thread(target=start) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [SCHEMA_VERSION] * 6
    assert pg.execute("SELECT version FROM aqnt_auth_schema WHERE name = %s", (table,)) == [
        (SCHEMA_VERSION,)]
    indexes = pg.execute("SELECT indexdef FROM pg_indexes WHERE tablename = %s", (table,))
    assert any("(id)" in str(row[0]) for row in indexes)  # lookup by key id is indexed


def test_explicit_schema_option(pg: PGSchema) -> None:
    """schema= qualifies every table, whatever the connection's search_path."""
    url = pg.url().split("?")[0]
    table = _table()
    store = SQLAlchemyKeyStore(url, schema=pg.name, table=table, cache=False)
    try:
        record = make_record()
        store.add(record)
        assert store.get(record.id) == record
        assert pg.execute(f"SELECT count(*) FROM {pg.name}.{table}") == [(1,)]  # noqa: S608
    finally:
        store.close()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_forked_child_gets_its_own_connections(pg: PGSchema) -> None:
    """A pre-forking server: the child reads through its own connections and
    listener, and the parent's keep working."""
    store = SQLAlchemyKeyStore(pg.url(), channel=pg.name, listener_name="aqnt-fork-test")
    try:
        record = make_record()
        store.add(record)
        assert store.get(record.id) == record
        for _ in range(500):
            if store.cache.listening:
                break
            time.sleep(0.01)
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child reports through its exit status
            status = 1
            try:
                got = store.get(record.id)
                status = 0 if got == record else 2
            finally:
                os._exit(status)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert store.get(record.id) == record
        assert store.cache.listening
        store.revoke(record.id, record.created_at)
        got = store.get(record.id)
        assert got is not None
        assert got.revoked_at == record.created_at
    finally:
        store.close()


# -- upgrades ---------------------------------------------------------------------

#: The columns schema version 2 added (#13's per-key policies).
_V2_COLUMNS = ("disabled_at", "rate_limits", "rate_limit_shared", "quota_remaining",
               "quota_refill", "quota_refilled_at", "allowed_ips")


def _downgrade_to_v4(run: Callable[[str], object], table: str) -> None:
    """Make current tables what version 4 was: without the usage table."""
    run(f"DROP TABLE {table}_usage")
    run(f"UPDATE aqnt_auth_schema SET version = 4 WHERE name = '{table}'")  # noqa: S608


def _downgrade_to_v3(run: Callable[[str], object], table: str) -> None:
    """Make current tables what version 3 was: without the audit table."""
    _downgrade_to_v4(run, table)
    run(f"DROP TABLE {table}_audit")
    run(f"UPDATE aqnt_auth_schema SET version = 3 WHERE name = '{table}'")  # noqa: S608


def _downgrade_to_v2(run: Callable[[str], object], table: str) -> None:
    """Make current tables what version 2 was: without the lineage column."""
    _downgrade_to_v3(run, table)
    run(f"ALTER TABLE {table} DROP COLUMN lineage_id")
    run(f"UPDATE aqnt_auth_schema SET version = 2 WHERE name = '{table}'")  # noqa: S608


def _downgrade_to_v1(run: Callable[[str], object], table: str) -> None:
    """Make current tables what version 1 was: without the policy columns."""
    _downgrade_to_v2(run, table)
    for column in _V2_COLUMNS:
        run(f"ALTER TABLE {table} DROP COLUMN {column}")
    run(f"UPDATE aqnt_auth_schema SET version = 1 WHERE name = '{table}'")  # noqa: S608


def _check_history(store: SQLAlchemyKeyStore, key_id: str) -> None:
    """The usage table exists and adds up."""
    for _ in range(2):
        store.record_usage_history([UsageRow(key_id, 7200, {"valid": 2}, 1, 5, "192.0.2.1",
                                             "ua", {"/a": 2})])
    assert store.usage_rows(key_id=key_id, since=0, until=10_800) == [
        UsageRow(key_id, 7200, {"valid": 4}, 1, 5, "192.0.2.1", "ua", {"/a": 4})]


def _check_upgraded(url: str, table: str, record: KeyRecord, **options: Any) -> None:
    store = SQLAlchemyKeyStore(url, table=table, cache=False, **options)
    try:
        assert store.init_schema() == SCHEMA_VERSION
        got = store.get(record.id)
        assert got == record  # kept, with the policies' defaults
        assert got is not None
        assert got.rate_limits == ()
        assert got.disabled_at is None
        updated = store.update(record.id, {"disabled_at": T0, "allowed_ips": ("::1",)},
                               audit=AuditEvent(actor="ops", at=T0))
        assert updated is not None
        assert updated.disabled_at == T0
        assert store.get(record.id) == updated
        assert updated.lineage_id is None
        (entry,) = store.audit_entries(key_id=record.id)
        assert (entry.event, entry.actor, entry.at) == ("updated", "ops", T0)
        assert entry.new == {"disabled_at": T0.isoformat(), "allowed_ips": ["::1"]}
        successor = make_record(rotated_from=record.id, lineage_id=record.id)
        store.add(successor)
        assert store.get(successor.id) == successor
        _check_history(store, record.id)
    finally:
        store.close()


def test_upgrade_from_version_4_on_postgresql(pg: PGSchema) -> None:
    """A version 4 database gains the usage table (5) on open, keys kept."""
    table = _table()
    record = make_record()
    store = SQLAlchemyKeyStore(pg.url(), table=table, cache=False)
    store.add(record)
    store.close()
    _downgrade_to_v4(pg.execute, table)
    with pytest.raises(ConfigurationError, match="store init"):
        SQLAlchemyKeyStore(pg.url(), table=table, create_schema=False, cache=False)
    store = SQLAlchemyKeyStore(pg.url(), table=table, cache=False)
    try:
        assert store.init_schema() == SCHEMA_VERSION == 5
        assert store.get(record.id) == record
        _check_history(store, record.id)
    finally:
        store.close()
    assert pg.execute("SELECT version FROM aqnt_auth_schema WHERE name = %s", (table,)) == [
        (SCHEMA_VERSION,)]


def test_upgrade_from_version_4_on_a_sqlite_file(tmp_path: Path) -> None:
    """The usage-table upgrade through SQLAlchemy on an SQLite file."""
    url = f"sqlite+pysqlite:///{tmp_path / 'k.db'}"
    record = make_record()
    store = SQLAlchemyKeyStore(url, cache=False)
    store.add(record)
    store.close()
    with contextlib.closing(sqlite3.connect(tmp_path / "k.db")) as conn:
        _downgrade_to_v4(conn.execute, "aqnt_api_keys")
        conn.commit()
    store = SQLAlchemyKeyStore(url, cache=False)
    try:
        assert store.init_schema() == SCHEMA_VERSION
        assert store.get(record.id) == record
        _check_history(store, record.id)
    finally:
        store.close()


def test_upgrade_from_version_1_on_postgresql(pg: PGSchema) -> None:
    """A version 1 table gains the policy columns on open, keys kept, under
    the schema lock; create_schema=False names the way to upgrade instead."""
    table = _table()
    record = make_record()
    store = SQLAlchemyKeyStore(pg.url(), table=table, cache=False)
    store.add(record)
    store.close()
    _downgrade_to_v1(pg.execute, table)
    with pytest.raises(ConfigurationError, match="store init"):
        SQLAlchemyKeyStore(pg.url(), table=table, create_schema=False, cache=False)
    _check_upgraded(pg.url(), table, record)
    assert pg.execute("SELECT version FROM aqnt_auth_schema WHERE name = %s", (table,)) == [
        (SCHEMA_VERSION,)]


def test_upgrade_from_version_2_on_postgresql(pg: PGSchema) -> None:
    """A version 2 table gains the lineage column (3) on open, keys kept."""
    table = _table()
    record = make_record()
    store = SQLAlchemyKeyStore(pg.url(), table=table, cache=False)
    store.add(record)
    store.close()
    _downgrade_to_v2(pg.execute, table)
    with pytest.raises(ConfigurationError, match="store init"):
        SQLAlchemyKeyStore(pg.url(), table=table, create_schema=False, cache=False)
    _check_upgraded(pg.url(), table, record)
    assert pg.execute("SELECT version FROM aqnt_auth_schema WHERE name = %s", (table,)) == [
        (SCHEMA_VERSION,)]


def test_upgrade_from_version_2_on_a_sqlite_file(tmp_path: Path) -> None:
    """The lineage step through SQLAlchemy on an SQLite file."""
    url = f"sqlite+pysqlite:///{tmp_path / 'k.db'}"
    record = make_record()
    store = SQLAlchemyKeyStore(url, cache=False)
    store.add(record)
    store.close()
    with contextlib.closing(sqlite3.connect(tmp_path / "k.db")) as conn:
        _downgrade_to_v2(conn.execute, "aqnt_api_keys")
        conn.commit()
    _check_upgraded(url, "aqnt_api_keys", record)


def test_upgrade_from_version_3_on_postgresql(pg: PGSchema) -> None:
    """A version 3 table gains its audit table (4) on open, keys kept."""
    table = _table()
    record = make_record()
    store = SQLAlchemyKeyStore(pg.url(), table=table, cache=False)
    store.add(record)
    store.close()
    _downgrade_to_v3(pg.execute, table)
    assert pg.execute("SELECT to_regclass(%s)", (f"{table}_audit",)) == [(None,)]
    with pytest.raises(ConfigurationError, match="store init"):
        SQLAlchemyKeyStore(pg.url(), table=table, create_schema=False, cache=False)
    _check_upgraded(pg.url(), table, record)
    assert pg.execute("SELECT version FROM aqnt_auth_schema WHERE name = %s", (table,)) == [
        (SCHEMA_VERSION,)]


def test_upgrade_from_version_3_on_a_sqlite_file(tmp_path: Path) -> None:
    """The audit step through SQLAlchemy on an SQLite file."""
    url = f"sqlite+pysqlite:///{tmp_path / 'k.db'}"
    record = make_record()
    store = SQLAlchemyKeyStore(url, cache=False)
    store.add(record)
    store.close()
    with contextlib.closing(sqlite3.connect(tmp_path / "k.db")) as conn:
        _downgrade_to_v3(conn.execute, "aqnt_api_keys")
        conn.commit()
    _check_upgraded(url, "aqnt_api_keys", record)


def test_audit_rows_hold_no_secret_or_hash_on_postgresql(pg: PGSchema) -> None:
    """The audit table's raw rows on PostgreSQL, every column: no key,
    secret, hash or Authorization value after every kind of change."""
    table = _table()
    store = SQLAlchemyKeyStore(pg.url(), table=table, cache=False)
    keys = KeyManager(store, hasher=Argon2Hasher("cheapest"), actor="alice@host")
    try:
        issued = keys.create("svc", scopes=["a:b"], allowed_ips=["10.0.0.0/8"])
        rotated = keys.rotate(issued.record.id, grace=dt.timedelta(hours=1))
        keys.update(rotated.record.id, name="renamed", allowed_ips=[])
        keys.disable(rotated.record.id)
        keys.enable(rotated.record.id)
        keys.revoke(issued.record.id)
        keys.delete(issued.record.id)
    finally:
        keys.close()
    rows = pg.execute(f"SELECT * FROM {table}_audit")  # noqa: S608
    assert len(rows) == 8
    dumped = repr(rows)
    for plain, record in ((issued.key, issued.record), (rotated.key, rotated.record)):
        for secret in (plain, keys.format.parse(plain).secret, f"Bearer {plain}", record.hash):
            assert secret not in dumped
    assert "$argon2" not in dumped


def test_upgrade_ddl_is_documented_text() -> None:
    """The PostgreSQL upgrade is plain text a team can apply, ending with the version row."""
    statements = postgres_upgrade_ddl(1)
    assert "ADD COLUMN IF NOT EXISTS disabled_at" in statements[0]
    assert statements[2].startswith("CREATE TABLE IF NOT EXISTS aqnt_api_keys_audit (")
    assert postgres_upgrade_ddl(3)[0] == statements[2]
    assert statements[-1] == (f"UPDATE aqnt_auth_schema SET version = {SCHEMA_VERSION} "  # noqa: S608
                              "WHERE name = 'aqnt_api_keys'")
    assert postgres_upgrade_ddl(SCHEMA_VERSION) == statements[-1:]


def test_upgrade_from_version_1_on_a_sqlite_file(tmp_path: Path) -> None:
    """The same upgrade through SQLAlchemy on an SQLite file."""
    url = f"sqlite+pysqlite:///{tmp_path / 'k.db'}"
    record = make_record()
    store = SQLAlchemyKeyStore(url, cache=False)
    store.add(record)
    store.close()
    with contextlib.closing(sqlite3.connect(tmp_path / "k.db")) as conn:
        _downgrade_to_v1(conn.execute, "aqnt_api_keys")
        conn.commit()
    _check_upgraded(url, "aqnt_api_keys", record)


def test_a_table_name_leaves_room_for_its_audit_table(tmp_path: Path) -> None:
    """The audit log's table is <table>_audit: a table name too long for it is
    refused with the reason, before anything is created."""
    url = f"sqlite+pysqlite:///{tmp_path / 'k.db'}"
    with pytest.raises(ConfigurationError, match="audit table"):
        SQLAlchemyKeyStore(url, table="t" * 58, cache=False)
    store = SQLAlchemyKeyStore(url, table="t" * 57, cache=False)
    try:
        assert store.tables.audit.name == "t" * 57 + "_audit"
        assert store.audit_entries() == []
    finally:
        store.close()
