"""The SQLite store's record cache: warm lookups read no file, and a change
committed by any connection (another process, hand-written SQL) is seen."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

import pytest

from aqnt_auth import (
    Argon2Hasher,
    AuditEvent,
    Authenticator,
    KeyManager,
    KeyRecord,
    RevokedAPIKey,
    SQLiteKeyStore,
    StoreUnavailable,
    UsageDelta,
    UsageRow,
)
from aqnt_auth._stores import _sqlite
from aqnt_auth._stores._record_cache import RecordCache
from aqnt_auth._stores._rows import KEY_COLUMNS
from aqnt_auth._stores._sqlite_watch import (
    LOG_SIZE,
    QUOTA_COUNTER_COLUMNS,
    UNWATCHED_COLUMNS,
    ChangeWatcher,
)

from ._changes import CHANGES, changed
from .contract import T0, make_record
from .pg_support import wait_until


class CountingStore(SQLiteKeyStore):
    """Counts the reads that reach the file."""

    def __init__(self, path: Path, **options: Any) -> None:
        super().__init__(path, **options)
        self.reads = 0

    def _read(self, key_id: str) -> KeyRecord | None:
        self.reads += 1
        return super()._read(key_id)


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "keys.db"


@pytest.fixture
def make_store(path: Path) -> Iterator[Callable[..., CountingStore]]:
    """Stores on one file: each stands for a process of its own (its own
    cache, watcher and connections)."""
    stores: list[CountingStore] = []

    def make(**options: Any) -> CountingStore:
        store = CountingStore(path, **options)
        stores.append(store)
        return store

    yield make
    for store in stores:
        store.close()


def _warm(store: SQLiteKeyStore, key_id: str) -> KeyRecord:
    """Read *key_id* until the watcher is up and the record is cached."""
    def cached() -> bool:
        store.get(key_id)
        return store.peek(key_id) is not None

    wait_until(cached, what="the record to be cached")
    record = store.peek(key_id)
    assert record is not None
    return record


def _polled(store: SQLiteKeyStore, polls: int = 2) -> None:
    """Wait until the watcher has read the log *polls* more times."""
    watcher = store.watcher
    assert watcher is not None
    target = watcher.polls + polls
    # A lookup past the lease reads the log.
    wait_until(lambda: store.peek("") is None and watcher.polls >= target,
               what="reads of the change log")


def test_warm_lookup_reads_no_file(make_store: Callable[..., CountingStore]) -> None:
    """Once cached, get() and peek() answer from memory."""
    store = make_store()
    record = make_record()
    store.add(record)
    _warm(store, record.id)
    reads = store.reads
    for _ in range(50):
        assert store.get(record.id) == record
        assert store.peek(record.id) == record
    assert store.reads == reads


@pytest.mark.parametrize("change", sorted(CHANGES))
def test_change_reaches_every_store(make_store: Callable[..., CountingStore],
                                    change: str) -> None:
    """Revoke, expire, rotate, rehash, delete, disable, enable and policy updates
    drop the record at once in the
    changing store and, through the change log, in every other store."""
    here, there = make_store(), make_store()
    record = make_record(expires_at=None)
    if change == "enable":
        record = dataclasses.replace(record, disabled_at=T0, name="was disabled")
    here.add(record)
    _warm(here, record.id)
    _warm(there, record.id)
    CHANGES[change](here, record.id)
    assert changed(here, record.id, change)  # no waiting in the changing process
    wait_until(lambda: there.peek(record.id) is None, what="the change log")
    assert changed(there, record.id, change)


def test_hand_written_sql_is_seen(make_store: Callable[..., CountingStore], path: Path
                                  ) -> None:
    """The triggers log changes made without aqnt-auth, renamed ids included."""
    store = make_store()
    record, renamed = make_record(), make_record()
    store.add(record)
    _warm(store, record.id)
    assert store.get(renamed.id) is None
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE aqnt_api_keys SET name = 'edited', id = ? WHERE id = ?",
                     (renamed.id, record.id))
    wait_until(lambda: store.get(record.id) is None, what="the change log")
    found = store.get(renamed.id)
    assert found is not None
    assert found.name == "edited"


def test_usage_flushes_invalidate_nothing(make_store: Callable[..., CountingStore]) -> None:
    """Usage counts written by another process leave the cache as it is:
    the log does not grow and the record is not read again."""
    here, there = make_store(), make_store()
    record = make_record()
    here.add(record)
    _warm(there, record.id)
    reads = there.reads
    assert there.watcher is not None
    seen = there.watcher.changes_seen
    here.record_usage({record.id: UsageDelta(5, T0)})
    _polled(there)
    assert there.watcher.changes_seen == seen
    assert there.peek(record.id) == record
    assert there.reads == reads
    fresh = here._read(record.id)
    assert fresh is not None
    assert fresh.usage_count == 5  # written, all the same


def test_unknown_id_is_read_once_until_created_anywhere(
    make_store: Callable[..., CountingStore],
) -> None:
    """A forged id costs one read, then none; creating that id (in this
    store at once, in another through the change log) makes it found."""
    here, there = make_store(), make_store()
    first, second = make_record(), make_record()
    for record in (first, second):
        assert there.get(record.id) is None
    reads = there.reads
    for _ in range(20):
        assert there.get(first.id) is None
        assert there.get(second.id) is None
    assert there.reads == reads
    there.add(first)
    assert there.get(first.id) == first  # no waiting in the creating store
    here.add(second)
    wait_until(lambda: there.get(second.id) is not None, what="the change log")
    assert there.get(second.id) == second


def test_fresh_unknown_ids_read_nothing(make_store: Callable[..., CountingStore]) -> None:
    """With the set of key ids loaded, a new forged id every lookup reads
    nothing; a key created in this store (or as a rotation's successor) is
    found at once, one created by another store within the lease."""
    here, there = make_store(), make_store()
    existing, second = make_record(), make_record()
    first = make_record(expires_at=None)
    here.add(existing)
    _warm(there, existing.id)
    assert there.cache.ids == frozenset({existing.id})
    reads = there.reads
    for _ in range(100):
        assert there.get(make_record().id) is None
    assert there.reads == reads
    there.add(first)
    assert there.get(first.id) == first  # no waiting in the creating store
    here.add(second)
    wait_until(lambda: there.get(second.id) is not None, what="the change log")
    assert there.get(second.id) == second
    rotated = KeyManager(there, hasher=Argon2Hasher("cheapest")).rotate(first.id)
    assert there.get(rotated.record.id) == rotated.record  # the successor, at once


def test_a_key_created_by_another_process_is_found(
    make_store: Callable[..., CountingStore], path: Path,
) -> None:
    """A key made by another process (the CLI) after this one loaded its id
    set is found once the change log is read, and is then served warm."""
    store = make_store()
    _polled(store)
    assert store.cache.ids == frozenset()
    made = subprocess.run(
        [sys.executable, "-m", "aqnt_auth", "keys", "create", "--store", f"sqlite:///{path}",
         "--name", "elsewhere", "--argon2-profile", "cheapest", "--json"],
        capture_output=True, text=True, timeout=60, check=True)
    key_id = json.loads(made.stdout)["record"]["id"]
    wait_until(lambda: store.get(key_id) is not None, what="the change log")
    assert key_id in (store.cache.ids or ())


def test_deleted_ids_leave_the_set(make_store: Callable[..., CountingStore]) -> None:
    """A key deleted elsewhere: its id costs one read, then none."""
    here, there = make_store(), make_store()
    record = make_record()
    here.add(record)
    _warm(there, record.id)
    here.delete(record.id)
    wait_until(lambda: there.get(record.id) is None, what="the change log")
    assert record.id not in (there.cache.ids or ())
    reads = there.reads
    assert there.get(record.id) is None
    assert there.reads == reads


def test_id_set_off(make_store: Callable[..., CountingStore]) -> None:
    """id_set_size=0: an unknown id costs one read, then none (absent entries)."""
    store = make_store(id_set_size=0)
    _polled(store)
    assert store.cache.ids is None
    forged = make_record().id
    reads = store.reads
    assert store.get(forged) is None
    assert store.get(forged) is None
    assert store.reads == reads + 1


@pytest.mark.anyio
async def test_async_twin_answers_from_the_cache(make_store: Callable[..., CountingStore]
                                                 ) -> None:
    """aio.get() answers a cached record and a known-absent id on the loop;
    other reads go to a thread."""
    store = make_store()
    record, forged = make_record(), make_record()
    store.add(record)
    assert await store.aio.get(record.id) == record
    _warm(store, record.id)
    assert await store.aio.get(forged.id) is None
    reads = store.reads
    assert await store.aio.get(record.id) == record
    assert await store.aio.get(forged.id) is None
    assert store.reads == reads


def test_a_deaf_cache_reads_the_file(make_store: Callable[..., CountingStore]) -> None:
    """With the watcher stopped nothing is served from memory."""
    store = make_store()
    record = make_record()
    store.add(record)
    _warm(store, record.id)
    assert store.watcher is not None
    store.watcher.stop()
    assert store.peek(record.id) is None
    reads = store.reads
    assert store.get(record.id) == record
    assert store.reads == reads + 1


class BusyConnection:
    """A connection whose every statement finds the database locked."""

    def execute(self, *args: object) -> None:
        busy = sqlite3.OperationalError("database is locked")
        busy.sqlite_errorcode = 5  # type: ignore[attr-defined]  # SQLITE_BUSY
        raise busy

    def close(self) -> None:
        return None


def test_a_busy_log_is_not_a_failure(caplog: pytest.LogCaptureFixture) -> None:
    """A locked file while reading the log: that lookup gets no cached answer
    (it reads the database), nothing is logged, and the log is tried again
    after a lease, not after a failure's back-off."""
    cache = RecordCache(10, 30.0)
    watcher = ChangeWatcher(lambda: cast("sqlite3.Connection", BusyConnection()), cache,
                            log_table="aqnt_key_changes", table="aqnt_api_keys", lease=0.02)
    assert cache.get("anything") is None
    assert not cache.listening
    assert watcher._retry_at - time.monotonic() <= 0.02
    assert not [r for r in caplog.records if r.name == "aqnt_auth.store.sqlite"]


def test_cache_off(make_store: Callable[..., CountingStore]) -> None:
    """cache=False: no watcher, every lookup reads the file."""
    store = make_store(cache=False)
    assert store.watcher is None
    record = make_record()
    store.add(record)
    for _ in range(3):
        assert store.get(record.id) == record
        assert store.peek(record.id) is None
    assert store.reads == 3


def test_a_gap_in_the_log_clears_the_cache(make_store: Callable[..., CountingStore],
                                           path: Path) -> None:
    """A watcher that missed more changes than the log keeps forgets everything."""
    store = make_store()
    record = make_record()
    store.add(record)
    _warm(store, record.id)
    assert store.watcher is not None
    store.watcher.stop()
    other = make_record()
    store.add(other)
    with sqlite3.connect(path) as conn:
        for n in range(LOG_SIZE + 1):
            conn.execute("UPDATE aqnt_api_keys SET name = ? WHERE id = ?", (f"n{n}", other.id))
        (last,) = conn.execute("SELECT MAX(seq) FROM aqnt_key_changes").fetchone()
        (count,) = conn.execute("SELECT COUNT(*) FROM aqnt_key_changes").fetchone()
    assert count == LOG_SIZE  # pruned as it grows
    store.cache.renew(float("inf"))
    store.cache.put(record, store.cache.epoch)
    with sqlite3.connect(path) as conn:
        assert store.watcher.poll(conn, last - LOG_SIZE - 5) == last
    assert store.peek(record.id) is None


def test_the_trigger_watches_every_column_but_usage(path: Path) -> None:
    """A column added to the key table must be added to the update trigger."""
    SQLiteKeyStore(path).close()
    with sqlite3.connect(path) as conn:
        (sql,) = conn.execute(
            "SELECT sql FROM sqlite_master WHERE name = 'aqnt_api_keys_changed'").fetchone()
    watched = sql.split("UPDATE OF", 1)[1].split(" ON ", 1)[0]
    assert {c.strip() for c in watched.split(",")} == (
        set(KEY_COLUMNS) - UNWATCHED_COLUMNS - QUOTA_COUNTER_COLUMNS)


def _v1_file(path: Path, record: KeyRecord) -> None:
    """A database as aqnt-auth with schema version 1 left it."""
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA journal_mode=WAL")
        for statement in _sqlite._STEPS[1]:
            conn.execute(statement)
        conn.execute(
            "INSERT INTO aqnt_api_keys (id, name, mode, prefix, hash, hint, created_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (record.id, record.name, record.mode, record.prefix, record.hash, record.hint,
             _sqlite._to_us(record.created_at)),
        )
        conn.execute("PRAGMA user_version = 1")
    conn.close()


def test_upgrade_from_version_1(path: Path) -> None:
    """A version 1 file is migrated in place: keys kept, the change log and
    its triggers added, and changes then reach every store."""
    record = make_record(scopes=(), allowed_paths=(), metadata={}, owner=None, read_only=False,
                         expires_at=None, rotated_from=None)
    _v1_file(path, record)
    here, there = SQLiteKeyStore(path), SQLiteKeyStore(path)
    try:
        with sqlite3.connect(path) as conn:
            assert conn.execute("PRAGMA user_version").fetchone() == (_sqlite.SCHEMA_VERSION,)
            names = {name for (name,) in conn.execute("SELECT name FROM sqlite_master")}
        conn.close()
        assert {"aqnt_key_changes", "aqnt_api_keys_created", "aqnt_api_keys_changed",
                "aqnt_api_keys_deleted"} <= names
        assert here.get(record.id) == dataclasses.replace(record, usage_count=0)
        _warm(there, record.id)
        here.revoke(record.id, T0)
        wait_until(lambda: there.peek(record.id) is None, what="the change log")
        got = there.get(record.id)
        assert got is not None
        assert got.revoked_at == T0
    finally:
        here.close()
        there.close()


def test_upgrade_from_version_6(path: Path) -> None:
    """A version 6 file gains the usage table (7), keys kept; a usage flush
    writes no change log entry: no record cache is invalidated by it."""
    record = make_record(scopes=(), allowed_paths=(), metadata={}, owner=None, read_only=False,
                         expires_at=None, rotated_from=None)
    _v1_file(path, record)
    with sqlite3.connect(path) as conn:
        for step in (2, 3, 4, 5, 6):
            for statement in _sqlite._STEPS[step]:
                conn.execute(statement)
        conn.execute("PRAGMA user_version = 6")
    conn.close()
    here, there = SQLiteKeyStore(path), SQLiteKeyStore(path)
    try:
        with sqlite3.connect(path) as conn:
            assert conn.execute("PRAGMA user_version").fetchone() == (7,)
            (before,) = conn.execute("SELECT COUNT(*) FROM aqnt_key_changes").fetchone()
        conn.close()
        assert here.get(record.id) == record
        _warm(there, record.id)
        cached = there.peek(record.id)
        for _ in range(2):
            here.record_usage_history([UsageRow(record.id, 3600, {"valid": 1, "revoked": 2})])
        here.record_usage({record.id: UsageDelta(3, T0)})
        with sqlite3.connect(path) as conn:
            assert conn.execute("SELECT COUNT(*) FROM aqnt_key_changes").fetchone() == (before,)
        conn.close()
        assert there.get(record.id) is cached
        assert there.usage_rows(since=0, until=7200) == [
            UsageRow(record.id, 3600, {"valid": 2, "revoked": 4})]
    finally:
        here.close()
        there.close()


@pytest.mark.anyio
async def test_authenticator_serves_warm_keys_without_waiting(
    make_store: Callable[..., CountingStore],
) -> None:
    """On the SQLite store authenticate_nowait answers a warm key, and a
    revocation by another store is refused."""
    store, admin = make_store(), make_store()
    hasher = Argon2Hasher("cheapest")
    issued = KeyManager(admin, hasher=hasher).create("k")
    header = f"Bearer {issued.key}"
    async with Authenticator(store, hashers=[hasher], track_usage=False) as auth:
        assert auth.authenticate_nowait(header) is None  # never verified
        await auth.authenticate_async(header)
        _warm(store, issued.record.id)
        reads = store.reads
        principal = auth.authenticate_nowait(header)
        assert principal is not None
        assert principal.id == issued.record.id
        assert store.reads == reads
        KeyManager(admin, hasher=hasher).revoke(issued.record.id)
        wait_until(lambda: store.peek(issued.record.id) is None, what="the change log")
        with pytest.raises(RevokedAPIKey):
            await auth.authenticate_async(header)


def test_upgrade_from_version_2(path: Path) -> None:
    """A version 2 file gains the policy columns (3), keys kept with the
    defaults; the change-log trigger then watches them: a disable made by
    one store reaches another."""
    record = make_record(scopes=(), allowed_paths=(), metadata={}, owner=None, read_only=False,
                         expires_at=None, rotated_from=None)
    _v1_file(path, record)
    with sqlite3.connect(path) as conn:
        for statement in _sqlite._STEPS[2]:
            conn.execute(statement)
        conn.execute("PRAGMA user_version = 2")
    conn.close()
    here, there = SQLiteKeyStore(path), SQLiteKeyStore(path)
    try:
        with sqlite3.connect(path) as conn:
            assert conn.execute("PRAGMA user_version").fetchone() == (_sqlite.SCHEMA_VERSION,)
            (sql,) = conn.execute(
                "SELECT sql FROM sqlite_master WHERE name = 'aqnt_api_keys_changed'").fetchone()
        conn.close()
        assert "disabled_at" in sql
        assert "allowed_ips" in sql
        assert here.get(record.id) == record
        _warm(there, record.id)
        here.update(record.id, {"disabled_at": T0})
        wait_until(lambda: there.peek(record.id) is None, what="the change log")
        got = there.get(record.id)
        assert got is not None
        assert got.disabled_at == T0
    finally:
        here.close()
        there.close()


def test_upgrade_from_version_3(path: Path) -> None:
    """A version 3 file gains the lineage column (4): keys kept without one,
    and a rotated key's lineage then round-trips."""
    record = make_record(scopes=(), allowed_paths=(), metadata={}, owner=None, read_only=False,
                         expires_at=None, rotated_from=None)
    _v1_file(path, record)
    with sqlite3.connect(path) as conn:
        for step in (2, 3):
            for statement in _sqlite._STEPS[step]:
                conn.execute(statement)
        conn.execute("PRAGMA user_version = 3")
    conn.close()
    store = SQLiteKeyStore(path)
    try:
        with sqlite3.connect(path) as conn:
            assert conn.execute("PRAGMA user_version").fetchone() == (_sqlite.SCHEMA_VERSION,)
            columns = [row[1] for row in conn.execute("PRAGMA table_info(aqnt_api_keys)")]
        conn.close()
        assert columns[-1] == "lineage_id"
        got = store.get(record.id)
        assert got == record
        assert got is not None
        assert got.lineage_id is None
        successor = make_record(rotated_from=record.id, lineage_id=record.id)
        store.add(successor)
        assert store.get(successor.id) == successor
    finally:
        store.close()


def test_upgrade_from_version_4(path: Path) -> None:
    """A version 4 file gains the audit log (5): keys kept, and every change
    from then on is audited, in the changing transaction (a failure of the
    audit write undoes the change)."""
    record = make_record(scopes=(), allowed_paths=(), metadata={}, owner=None, read_only=False,
                         expires_at=None, rotated_from=None)
    _v1_file(path, record)
    with sqlite3.connect(path) as conn:
        for step in (2, 3, 4):
            for statement in _sqlite._STEPS[step]:
                conn.execute(statement)
        conn.execute("PRAGMA user_version = 4")
    conn.close()
    store = SQLiteKeyStore(path)
    try:
        with sqlite3.connect(path) as conn:
            assert conn.execute("PRAGMA user_version").fetchone() == (_sqlite.SCHEMA_VERSION,)
            names = {name for (name,) in conn.execute("SELECT name FROM sqlite_master")}
        conn.close()
        assert {"aqnt_key_audit", "aqnt_key_audit_key", "aqnt_key_audit_at"} <= names
        assert store.get(record.id) == record
        assert store.audit_entries() == []
        store.update(record.id, {"name": "renamed"}, audit=AuditEvent(actor="ops", at=T0))
        (entry,) = store.audit_entries(key_id=record.id)
        assert (entry.event, entry.actor, entry.at) == ("updated", "ops", T0)
        assert (entry.old, entry.new) == ({"name": record.name}, {"name": "renamed"})
        # Without its audit table a change cannot be written at all.
        with sqlite3.connect(path) as conn:
            conn.execute("ALTER TABLE aqnt_key_audit RENAME TO aqnt_key_audit_gone")
        conn.close()
        with pytest.raises(StoreUnavailable):
            store.revoke(record.id, T0)
        got = store.get(record.id)
        assert got is not None
        assert got.revoked_at is None
    finally:
        store.close()


def test_audit_rows_hold_no_secret_or_hash(path: Path) -> None:
    """The audit table's raw rows, every column: no key, secret, hash or
    Authorization value, after every kind of change."""
    store = SQLiteKeyStore(path)
    keys = KeyManager(store, hasher=Argon2Hasher("cheapest"), actor="alice@host")
    try:
        issued = keys.create("svc", scopes=["a:b"], allowed_ips=["10.0.0.0/8"])
        rotated = keys.rotate(issued.record.id, grace=dt.timedelta(hours=1))
        keys.update(rotated.record.id, name="renamed", allowed_ips=[])
        keys.disable(rotated.record.id)
        keys.enable(rotated.record.id)
        keys.revoke(issued.record.id)
        keys.delete(issued.record.id)
        with sqlite3.connect(path) as conn:
            rows = conn.execute("SELECT * FROM aqnt_key_audit").fetchall()
        conn.close()
        assert len(rows) == 8
        dumped = repr(rows)
        for plain, record in ((issued.key, issued.record), (rotated.key, rotated.record)):
            for secret in (plain, keys.format.parse(plain).secret, f"Bearer {plain}",
                           record.hash):
                assert secret not in dumped
        assert "$argon2" not in dumped
    finally:
        keys.close()


def _log_size(path: Path) -> int:
    with sqlite3.connect(path) as conn:
        (count,) = conn.execute("SELECT COUNT(*) FROM aqnt_key_changes").fetchone()
    conn.close()
    return int(count)


def test_upgrade_from_version_5(path: Path) -> None:
    """A version 5 file (6): keys kept; a quota's counter, written by every
    request of a key with a quota, no longer invalidates other processes'
    cached record, while setting or removing a quota still does."""
    record = make_record(scopes=(), allowed_paths=(), metadata={}, owner=None, read_only=False,
                         expires_at=None, rotated_from=None)
    _v1_file(path, record)
    with sqlite3.connect(path) as conn:
        for step in (2, 3, 4, 5):
            for statement in _sqlite._STEPS[step]:
                conn.execute(statement)
        conn.execute("PRAGMA user_version = 5")
    conn.close()
    here, there = SQLiteKeyStore(path), SQLiteKeyStore(path)
    try:
        with sqlite3.connect(path) as conn:
            assert conn.execute("PRAGMA user_version").fetchone() == (_sqlite.SCHEMA_VERSION,)
        conn.close()
        assert here.get(record.id) == record
        metered = here.update(record.id, {"quota_remaining": 5, "quota_refill": "5/day",
                                          "quota_refilled_at": T0})
        assert metered is not None
        _warm(there, record.id)
        logged = _log_size(path)
        for _ in range(3):
            assert here.consume_quota(record.id, T0)
        assert here.update(record.id, {"quota_remaining": 9, "quota_refilled_at": T0})
        assert _log_size(path) == logged  # the counter: nothing logged
        assert there.peek(record.id) == metered  # stale by design
        here.update(record.id, {"quota_remaining": None, "quota_refill": None,
                                "quota_refilled_at": None})
        assert _log_size(path) > logged
        logged = _log_size(path)
        wait_until(lambda: there.peek(record.id) is None, what="the change log")
        got = there.get(record.id)
        assert got is not None
        assert not got.metered
        # Setting a quota on a key without one is logged even with no refill.
        here.update(record.id, {"quota_remaining": 1, "quota_refilled_at": T0})
        assert _log_size(path) == logged + 1
        wait_until(lambda: there.peek(record.id) is None, what="the change log")
        got = there.get(record.id)
        assert got is not None
        assert got.metered
    finally:
        here.close()
        there.close()


def test_management_read_shows_flushed_counters(path: Path) -> None:
    """A usage flush leaves the cached record as it was (counters only), so
    KeyManager.get reads past the cache: the console's key page and `keys
    show` in a long-lived process see the flushed count and last use."""
    store = CountingStore(path)
    manager = KeyManager(store, hasher=Argon2Hasher("cheapest"))
    issued = manager.create("counted", mode="live")
    auth = Authenticator(store, rate_limit=None, usage_flush_interval=3600,
                         hashers=[Argon2Hasher("cheapest")])
    try:
        auth.authenticate(f"Bearer {issued.key}")
        auth.authenticate(f"Bearer {issued.key}")
        assert store.get(issued.record.id) is not None  # the cached record
        assert auth.flush_usage()
        cached = store.cache.get(issued.record.id)
        assert cached is not None
        assert cached.usage_count == 0
        record = manager.get(issued.record.id)
        assert record.usage_count == 2
        assert record.last_used_at is not None
        # The request path finds the fresh record cached again.
        reads = store.reads
        auth.authenticate(f"Bearer {issued.key}")
        assert store.reads == reads
    finally:
        auth.close()
        store.close()
