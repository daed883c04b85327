"""``DjangoKeyStore`` passes the store contract on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import functools
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import pytest
from django.db import DatabaseError, OperationalError, connections
from django.test.utils import CaptureQueriesContext, override_settings

from aqnt_auth import (
    AsyncKeyStore,
    AuditEvent,
    AuditLog,
    KeyRecord,
    KeyStore,
    QuotaUse,
    RotationPlan,
    StoreUnavailable,
    UsageDelta,
    to_async,
)
from aqnt_auth.adapters.django.models import APIKey
from aqnt_auth.adapters.django.store import AsyncDjangoKeyStore, DjangoKeyStore
from tests.stores.contract import StoreContract, make_record

from ._support import STORE_ONLY, close_thread_connections, on_databases, postgres_mark

T = TypeVar("T")


class OwnThread:
    """The "sync" variant for Django: the store's sync methods, called on one
    worker thread this facade owns.  Django refuses ORM calls on a thread
    running an event loop (the test's), and a connection opened there would
    belong to the coroutine's context, beyond anyone's reach to close."""

    def __init__(self, store: KeyStore) -> None:
        self.sync = store
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="contract-sync")

    async def _call(self, func: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.pool, functools.partial(func, *args, **kwargs))

    async def get(self, key_id: str) -> KeyRecord | None:
        return await self._call(self.sync.get, key_id)

    async def add(self, record: KeyRecord, *, audit: AuditEvent | None = None) -> None:
        await self._call(self.sync.add, record, audit=audit)

    async def list(self, *, owner: str | None = None) -> list[KeyRecord]:
        return await self._call(self.sync.list, owner=owner)

    async def revoke(self, key_id: str, at: dt.datetime, *, audit: AuditEvent | None = None
                     ) -> KeyRecord | None:
        return await self._call(self.sync.revoke, key_id, at, audit=audit)

    async def set_expiry(self, key_id: str, at: dt.datetime | None, *,
                         audit: AuditEvent | None = None) -> KeyRecord | None:
        return await self._call(self.sync.set_expiry, key_id, at, audit=audit)

    async def update(self, key_id: str, changes: Mapping[str, Any], *,
                     audit: AuditEvent | None = None) -> KeyRecord | None:
        return await self._call(self.sync.update, key_id, changes, audit=audit)

    async def rotate(self, key_id: str, plan: RotationPlan, *,
                     audit: AuditEvent | None = None) -> KeyRecord | None:
        return await self._call(self.sync.rotate, key_id, plan, audit=audit)

    async def replace_hash(self, key_id: str, old_hash: str, new_hash: str) -> bool:
        return await self._call(self.sync.replace_hash, key_id, old_hash, new_hash)

    async def consume_quota(self, key_id: str, now: dt.datetime) -> QuotaUse | None:
        return await self._call(self.sync.consume_quota, key_id, now)

    async def delete(self, key_id: str, *, audit: AuditEvent | None = None) -> bool:
        return await self._call(self.sync.delete, key_id, audit=audit)

    async def audit_entries(self, *, key_id: str | None = None,
                            since: dt.datetime | None = None, until: dt.datetime | None = None,
                            limit: int | None = None) -> AuditLog:
        return await self._call(self.sync.audit_entries, key_id=key_id, since=since,
                                until=until, limit=limit)

    async def record_usage(self, usage: Mapping[str, UsageDelta]) -> None:
        await self._call(self.sync.record_usage, usage)

    async def close(self) -> None:
        await self._call(self.sync.close)

    def shutdown(self) -> None:
        self.pool.submit(connections.close_all).result()
        self.pool.shutdown()


class _DjangoContract(StoreContract):
    alias = "default"
    cache: bool | None = None

    def thread_done(self) -> None:
        connections.close_all()  # the worker thread's own
        connections.close_all()

    @pytest.fixture
    def store(self) -> Iterator[DjangoKeyStore]:
        store = DjangoKeyStore(using=self.alias, cache=self.cache)
        yield store
        store.close()
        close_thread_connections()

    @pytest.fixture(params=["sync", "async"])
    def kstore(self, request: pytest.FixtureRequest, store: KeyStore
               ) -> Iterator[AsyncKeyStore]:
        if request.param == "async":
            yield to_async(store)
            return
        facade = OwnThread(store)
        yield facade
        facade.shutdown()


@pytest.mark.django_db(transaction=True, available_apps=STORE_ONLY)
class TestDjangoKeyStoreSQLite(_DjangoContract):
    alias = "default"
    concurrent_threads = False  # an in-memory, shared-cache test database

    def test_consumes_from_threads_admit_exactly_the_quota(self, store: KeyStore) -> None:
        pytest.skip("the in-memory SQLite test database is shared-cache, which locks whole "
                    "tables and ignores the busy timeout; tests/stores/test_quota_processes.py "
                    "races processes on a Django SQLite file instead")


@postgres_mark(transaction=True, available_apps=STORE_ONLY)
class TestDjangoKeyStorePostgres(_DjangoContract):
    alias = "postgres"


@postgres_mark(transaction=True, available_apps=STORE_ONLY)
class TestDjangoKeyStorePostgresCached(_DjangoContract):
    """With the record cache, its listener and its id set (off by default in
    Django's test environment)."""

    alias = "postgres"
    cache = True


class TestDjangoKeyStore:
    def test_async_twin_is_native(self) -> None:
        """to_async() gives the store's own sync_to_async twin, not a thread pool."""
        store = DjangoKeyStore(using="default")
        assert store.blocking is True
        assert isinstance(to_async(store), AsyncDjangoKeyStore)
        assert repr(store) == "DjangoKeyStore(using='default')"

    @pytest.mark.parametrize("alias", on_databases())
    def test_get_is_one_query_on_the_primary_key(self, alias: str) -> None:
        """The per-request read is one SELECT by primary key, with no ORDER BY."""
        store = DjangoKeyStore(using=alias)
        record = make_record()
        store.add(record)
        store.get(record.id)  # compiles the query
        with CaptureQueriesContext(connections[alias]) as queries:
            assert store.get(record.id) == record
        assert len(queries) == 1
        sql = queries[0]["sql"]
        assert sql.startswith("SELECT ")
        assert "ORDER BY" not in sql
        assert sql.endswith(f"FROM \"aqnt_auth_apikey\" WHERE \"id\" = '{record.id}'")

    @pytest.mark.parametrize("alias", on_databases(transaction=True, available_apps=STORE_ONLY))
    def test_read_survives_a_closed_connection(self, alias: str) -> None:
        """The kept cursor is dropped when Django reconnects."""
        store = DjangoKeyStore(using=alias)
        record = make_record()
        store.add(record)
        assert store.get(record.id) == record
        connections[alias].close()
        assert store.get(record.id) == record

    @pytest.mark.parametrize("alias", on_databases())
    def test_execute_wrappers_see_every_read(self, alias: str) -> None:
        """Django's execute_wrapper hooks see the warm read too."""
        store = DjangoKeyStore(using=alias)
        record = make_record()
        store.add(record)
        store.get(record.id)
        seen: list[str] = []

        def spy(execute: Callable[..., Any], sql: str, *args: Any) -> Any:
            seen.append(sql)
            return execute(sql, *args)

        with connections[alias].execute_wrapper(spy):
            assert store.get(record.id) == record
            assert store.get(record.id) == record
        assert len(seen) == 2
        assert all("FROM \"aqnt_auth_apikey\" WHERE \"id\" = " in sql for sql in seen)

    @pytest.mark.parametrize("alias", on_databases())
    def test_changed_row_is_read_again(self, alias: str) -> None:
        """A read after a change gives the changed record, not a remembered one."""
        store = DjangoKeyStore(using=alias)
        record = make_record(expires_at=None)
        store.add(record)
        first = store.get(record.id)
        assert store.get(record.id) is first
        store.record_usage({record.id: UsageDelta(3, record.created_at)})
        counted = store.get(record.id)
        assert counted is not None
        assert counted.usage_count == 3
        store.revoke(record.id, record.created_at)
        revoked = store.get(record.id)
        assert revoked is not None
        assert revoked.revoked_at == record.created_at

    @pytest.mark.parametrize("alias", on_databases(transaction=True, available_apps=STORE_ONLY))
    def test_database_failure_is_store_unavailable(self, alias: str) -> None:
        """Every store call answers a database error with StoreUnavailable."""
        store = DjangoKeyStore(using=alias)
        record = make_record()
        store.add(record)

        def fail(*args: Any) -> Any:
            raise OperationalError("server closed the connection unexpectedly")

        calls: list[Callable[[], object]] = [
            lambda: store.get(record.id),
            lambda: store.add(make_record()),
            lambda: store.list(),
            lambda: store.revoke(record.id, record.created_at),
            lambda: store.set_expiry(record.id, None),
            lambda: store.replace_hash(record.id, record.hash, "$argon2id$x"),
            lambda: store.delete(record.id),
            lambda: store.record_usage({record.id: UsageDelta(1, record.created_at)}),
        ]
        with connections[alias].execute_wrapper(fail):
            for call in calls:
                with pytest.raises(StoreUnavailable) as info:
                    call()
                assert "OperationalError" in str(info.value)
        assert store.get(record.id) == record

    @pytest.mark.django_db
    def test_missing_table_is_store_unavailable(self) -> None:
        """A database without the migration is an outage, never 'invalid key'."""
        store = DjangoKeyStore(using="default")
        with connections["default"].cursor() as cursor:
            # Undone with the rest of the test's transaction.
            cursor.execute(f"DROP TABLE {APIKey._meta.db_table}")
        with pytest.raises(StoreUnavailable):
            store.get("nosuchkey123")

    @pytest.mark.django_db
    def test_duplicate_inside_a_transaction_keeps_it_usable(self) -> None:
        """A refused duplicate does not break the caller's transaction."""
        from django.db import transaction

        from aqnt_auth import KeyStateError

        store = DjangoKeyStore(using="default")
        record = make_record()
        with transaction.atomic():
            store.add(record)
            with pytest.raises(KeyStateError):
                store.add(record)
            assert store.get(record.id) == record

    @pytest.mark.django_db
    @override_settings(USE_TZ=False, TIME_ZONE="Europe/Paris")
    def test_round_trip_without_use_tz(self) -> None:
        """With USE_TZ = False (naive local times in the database) records
        still come back aware and equal."""
        store = DjangoKeyStore(using="default")
        record = make_record(last_used_at=make_record().created_at)
        store.add(record)
        got = store.get(record.id)
        assert got == record
        assert got is not None
        assert got.created_at.tzinfo is not None
        later = record.created_at + dt.timedelta(days=1)
        store.record_usage({record.id: UsageDelta(2, later)})
        revoked = store.revoke(record.id, later)
        assert revoked is not None
        assert revoked.revoked_at == later
        assert [r.id for r in store.list()] == [record.id]
        assert store.list()[0] == dataclasses.replace(revoked, usage_count=2,
                                                      last_used_at=later)

    @pytest.mark.django_db
    def test_interface_errors_are_unavailable_too(self) -> None:
        """Errors outside DatabaseError (InterfaceError) are outages as well."""
        from django.db import InterfaceError

        store = DjangoKeyStore(using="default")

        def fail(*args: Any) -> Any:
            raise InterfaceError("connection already closed")

        with connections["default"].execute_wrapper(fail), pytest.raises(StoreUnavailable):
            store.get("nosuchkey123")
        assert not issubclass(InterfaceError, DatabaseError)


def test_record_cache_only_on_an_sqlite_file() -> None:
    """An in-memory test database gets no cache (nothing could watch it), and
    asking for one there is a configuration error."""
    from django.core.exceptions import ImproperlyConfigured

    store = DjangoKeyStore("default")
    assert store.watcher is None
    assert store.peek("anything") is None
    with pytest.raises(ImproperlyConfigured, match="SQLite database file"):
        DjangoKeyStore("default", cache=True)


@postgres_mark(transaction=True, available_apps=STORE_ONLY)
def test_rotation_holds_off_revocations_postgres() -> None:
    """While rotate()'s plan runs, the old key's row is locked against the
    UPDATE a revocation from another connection would make."""
    import psycopg

    store = DjangoKeyStore(using="postgres")
    old = make_record(expires_at=None)
    store.add(old)
    db = connections["postgres"].settings_dict
    tried: list[str] = []

    def plan(current: KeyRecord, successors: Sequence[KeyRecord]
             ) -> tuple[KeyRecord, dt.datetime | None]:
        with psycopg.connect(host=db["HOST"], port=db["PORT"], dbname=db["NAME"],
                             user=db["USER"], autocommit=True) as other, \
                pytest.raises(psycopg.errors.LockNotAvailable):
            other.execute(b"SELECT 1 FROM aqnt_auth_apikey WHERE id = %s "
                          b"FOR NO KEY UPDATE NOWAIT", (current.id,))
        tried.append(current.id)
        return make_record(rotated_from=current.id), current.created_at

    updated = store.rotate(old.id, plan)
    assert tried == [old.id]
    assert updated is not None
    assert (updated.revoked_at, updated.expires_at) == (None, old.created_at)


@pytest.mark.django_db(transaction=True, available_apps=STORE_ONLY)
def test_event_hooks_wait_for_the_callers_transaction() -> None:
    """Inside the caller's atomic(), KeyManager's hooks run when it commits,
    and never when it rolls back (then neither the change nor its entry is kept)."""
    from django.db import transaction

    from aqnt_auth import Argon2Hasher, AuditEntry, KeyManager

    seen: list[tuple[str, str]] = []

    def hook(entry: AuditEntry) -> None:
        seen.append((entry.event, entry.key_id))

    store = DjangoKeyStore()
    keys = KeyManager(store, hasher=Argon2Hasher("cheapest"), on_event=hook)
    try:
        record = keys.create("svc").record
        with transaction.atomic():
            keys.disable(record.id)
            keys._hooks.close()  # let anything queued run: nothing is, yet
            assert seen == [("created", record.id)]
        keys._hooks.close()
        assert seen == [("created", record.id), ("disabled", record.id)]

        def revoke_then_fail() -> None:
            with transaction.atomic():
                keys.revoke(record.id)
                raise RuntimeError("the caller's transaction fails")

        with pytest.raises(RuntimeError):
            revoke_then_fail()
        keys._hooks.close()
        assert seen == [("created", record.id), ("disabled", record.id)]
        got = store.get(record.id)
        assert got is not None
        assert got.revoked_at is None
        assert [e.event for e in store.audit_entries()] == ["disabled", "created"]
    finally:
        keys.close()
        close_thread_connections()
