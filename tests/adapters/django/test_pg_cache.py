"""``DjangoKeyStore``'s record cache on PostgreSQL: warm reads and forged ids
make no query, and a change committed by any process (another store, another
program's plain SQL) reaches the cache through the NOTIFY trigger of
migration 0005.  Each store stands for a server process of its own (its own
cache, listener and listening session); one change comes from a separate
Python process.  The test database is Django's, one per test run."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django.db import connections

from aqnt_auth import Argon2Hasher, Authenticator, KeyManager, RevokedAPIKey, UsageDelta
from aqnt_auth.adapters.django.models import APIKey
from aqnt_auth.adapters.django.store import DjangoKeyStore
from tests.stores.contract import T0, make_record
from tests.stores.pg_support import wait_until

from ._support import STORE_ONLY, postgres_mark

pytestmark = postgres_mark(transaction=True, available_apps=STORE_ONLY)


@pytest.fixture
def make_store() -> Iterator[Callable[..., DjangoKeyStore]]:
    stores: list[DjangoKeyStore] = []

    def make(**options: Any) -> DjangoKeyStore:
        store = DjangoKeyStore(using="postgres", cache=True, **options)
        stores.append(store)
        return store

    yield make
    for store in stores:
        store.close()  # the listeners' sessions, before the test database is dropped


def _conninfo() -> str:
    db = connections["postgres"].settings_dict
    return f"host={db['HOST']} port={db['PORT']} dbname={db['NAME']} user={db['USER']}"


def _sql(statement: str, *params: object) -> None:
    """Run *statement* on a connection of its own (autocommit), as another
    program would."""
    import psycopg

    with psycopg.connect(_conninfo(), autocommit=True) as conn:
        conn.execute(statement.encode(), params)


def _queries() -> list[str]:
    seen: list[str] = []

    def count(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        seen.append(sql)
        return execute(sql, params, many, context)

    connections["postgres"].execute_wrappers.append(count)
    return seen


def _listening(*stores: DjangoKeyStore) -> None:
    """Until every store's listener holds its lease and has loaded the ids."""
    def ready() -> bool:
        return all(store.peek("") is None and store.cache.listening
                   and store.cache.ids is not None for store in stores)

    wait_until(ready, what="the listeners")


def _warm(store: DjangoKeyStore, key_id: str) -> None:
    def cached() -> bool:
        store.get(key_id)
        return store.peek(key_id) is not None

    wait_until(cached, what="the record to be cached")


def test_warm_reads_and_forged_ids_make_no_query(
    make_store: Callable[..., DjangoKeyStore],
) -> None:
    """Once cached, get() of a key, of a known-absent id and of a new forged
    id runs no SQL on Django's connection."""
    store = make_store()
    record = make_record()
    store.add(record)
    _listening(store)
    _warm(store, record.id)
    seen = _queries()
    try:
        for _ in range(20):
            assert store.get(record.id) == record
            assert store.get(make_record().id) is None
    finally:
        connections["postgres"].execute_wrappers.clear()
    assert seen == []


def test_every_change_reaches_the_other_process(
    make_store: Callable[..., DjangoKeyStore],
) -> None:
    """A revocation through one store, and plain SQL from another program,
    reach the other store's cache; usage flushes notify nothing."""
    here, there = make_store(), make_store()
    record, marker = make_record(expires_at=None), make_record()
    here.add(record)
    here.add(marker)
    _listening(here, there)
    _warm(there, record.id)
    _warm(there, marker.id)
    here.record_usage({record.id: UsageDelta(3, T0)})
    # Notifications arrive in commit order: once the marker's has, one for
    # the usage flush would have too.
    here.revoke(marker.id, T0)
    wait_until(lambda: there.peek(marker.id) is None, what="the notification")
    assert there.peek(record.id) == record  # usage counts invalidate nothing
    here.revoke(record.id, T0)
    assert here.peek(record.id) is None  # at once in the changing process
    wait_until(lambda: there.peek(record.id) is None, what="the notification")
    revoked = there.get(record.id)
    assert revoked is not None
    assert revoked.revoked_at == T0
    _warm(there, record.id)
    _sql("UPDATE aqnt_auth_apikey SET name = 'renamed' WHERE id = %s", record.id)
    wait_until(lambda: there.peek(record.id) is None, what="the notification")
    renamed = there.get(record.id)
    assert renamed is not None
    assert renamed.name == "renamed"


def test_a_quota_counter_notifies_nothing_setting_a_quota_does(
    make_store: Callable[..., DjangoKeyStore],
) -> None:
    """Migration 0007: the requests of a key with a quota (its counter)
    notify nothing; setting or removing a quota does."""
    here, there = make_store(), make_store()
    record, marker = make_record(quota_remaining=5, quota_refill=None,
                                 quota_refilled_at=T0), make_record()
    here.add(record)
    here.add(marker)
    _listening(here, there)
    _warm(there, record.id)
    _warm(there, marker.id)
    for _ in range(3):
        assert here.consume_quota(record.id, T0)
    _sql("UPDATE aqnt_auth_apikey SET quota_remaining = 9 WHERE id = %s", record.id)
    here.revoke(marker.id, T0)  # notifications arrive in commit order
    wait_until(lambda: there.peek(marker.id) is None, what="the notification")
    assert there.peek(record.id) == record  # stale by design
    _sql("UPDATE aqnt_auth_apikey SET quota_remaining = NULL WHERE id = %s", record.id)
    wait_until(lambda: there.peek(record.id) is None, what="the notification")
    got = there.get(record.id)
    assert got is not None
    assert not got.metered


def test_a_key_created_elsewhere_is_found(make_store: Callable[..., DjangoKeyStore]) -> None:
    """Created by another store, or inserted by another program: the id set
    learns it from the NOTIFY; created here (or saved through the ORM here),
    at once."""
    here, there = make_store(), make_store()
    template = make_record()
    here.add(template)
    _listening(here, there)
    made_there = make_record()
    there.add(made_there)
    assert there.get(made_there.id) == made_there
    made_here = make_record()
    here.add(made_here)
    wait_until(lambda: there.get(made_here.id) is not None, what="the notification")
    copy = make_record().id
    assert there.get(copy) is None
    columns = [str(f.column) for f in APIKey._meta.concrete_fields]
    rest = ", ".join(c for c in columns if c != "id")
    _sql(f"INSERT INTO aqnt_auth_apikey (id, {rest}) "  # noqa: S608 - model columns
         f"SELECT %s, {rest} FROM aqnt_auth_apikey WHERE id = %s", copy, template.id)
    wait_until(lambda: there.get(copy) is not None, what="the notification")


def test_truncate_clears_every_cache(make_store: Callable[..., DjangoKeyStore]) -> None:
    store = make_store()
    record = make_record()
    store.add(record)
    _listening(store)
    _warm(store, record.id)
    _sql("TRUNCATE aqnt_auth_apikey")
    wait_until(lambda: store.get(record.id) is None, what="the notification")


def test_a_revocation_by_another_process_is_refused(
    make_store: Callable[..., DjangoKeyStore],
) -> None:
    """A server process answers a key warm from its cache; a separate Python
    process revokes it with plain SQL; the server refuses the key from then on."""
    store = make_store()
    hasher = Argon2Hasher("cheapest")
    issued = KeyManager(store, hasher=hasher).create("served")
    header = f"Bearer {issued.key}"
    with Authenticator(store, hashers=[hasher], track_usage=False) as auth:
        auth.authenticate(header)
        _listening(store)
        _warm(store, issued.record.id)
        assert auth.authenticate(header).id == issued.record.id
        subprocess.run(
            [sys.executable, "-c",
             "import sys, psycopg\n"
             "with psycopg.connect(sys.argv[1], autocommit=True) as conn:\n"
             "    conn.execute(b'UPDATE aqnt_auth_apikey SET revoked_at = now() WHERE id = %s',"
             " (sys.argv[2],))\n",
             _conninfo(), issued.record.id],
            check=True, timeout=60)
        wait_until(lambda: store.peek(issued.record.id) is None, what="the notification")
        with pytest.raises(RevokedAPIKey):
            auth.authenticate(header)


def test_without_the_trigger_every_lookup_reads(
    make_store: Callable[..., DjangoKeyStore], caplog: pytest.LogCaptureFixture,
) -> None:
    """Before migration 0005 (no trigger) the listener refuses to start: the
    cache never answers, so nothing can be served stale; it says why."""
    _sql('DROP TRIGGER "aqnt_auth_apikey_notify" ON aqnt_auth_apikey')
    try:
        store = make_store()
        record = make_record()
        store.add(record)
        store.get(record.id)
        wait_until(lambda: "run manage.py migrate" in caplog.text, what="the warning")
        assert store.peek(record.id) is None
        assert not store.cache.listening
    finally:
        _sql('CREATE TRIGGER "aqnt_auth_apikey_notify" AFTER INSERT OR UPDATE OR DELETE '
             'ON aqnt_auth_apikey FOR EACH ROW EXECUTE FUNCTION "aqnt_auth_apikey_notify"()')


def test_migration_0005_installs_the_trigger_on_postgres_and_unapplies() -> None:
    """From 0004 with a key in the table: 0005 keeps the key and notifies its
    changes (not its usage updates); unapplied, it leaves no trigger or
    function behind."""
    import psycopg
    from django.core.management import call_command

    def installed() -> set[str]:
        with psycopg.connect(_conninfo()) as conn:
            triggers = conn.execute(b"SELECT tgname FROM pg_trigger WHERE NOT tgisinternal "
                                    b"AND tgrelid = 'aqnt_auth_apikey'::regclass").fetchall()
            functions = conn.execute(b"SELECT proname FROM pg_proc "
                                     b"WHERE proname = 'aqnt_auth_apikey_notify'").fetchall()
        return {name for (name,) in triggers + functions}

    record = make_record()
    DjangoKeyStore(using="postgres", cache=False).add(record)
    call_command("migrate", "aqnt_auth", "0004", database="postgres", verbosity=0)
    try:
        assert installed() == set()
    finally:
        call_command("migrate", "aqnt_auth", database="postgres", verbosity=0)
    assert installed() == {"aqnt_auth_apikey_notify", "aqnt_auth_apikey_notify_truncate"}
    with psycopg.connect(_conninfo(), autocommit=True) as listening:
        listening.execute(b"LISTEN aqnt_auth_apikey")
        _sql("UPDATE aqnt_auth_apikey SET usage_count = usage_count + 1 WHERE id = %s",
             record.id)
        _sql("UPDATE aqnt_auth_apikey SET name = 'kept' WHERE id = %s", record.id)
        heard = [n.payload for n in listening.notifies(timeout=5, stop_after=1)]
    assert heard == [record.id]  # the rename; the usage update said nothing
    kept = DjangoKeyStore(using="postgres", cache=False).get(record.id)
    assert kept is not None
    assert kept.name == "kept"


def test_record_cache_setting() -> None:
    """AQNT_AUTH["RECORD_CACHE"] reaches the store the middleware uses: True
    starts a listener on PostgreSQL (off by default under the test runner),
    False reads the row on every request."""
    from django.test.utils import override_settings

    from aqnt_auth.adapters.django.settings import runtime

    from ._support import auth_settings

    for setting, listening in ((None, False), (True, True), (False, False)):
        with override_settings(AQNT_AUTH=auth_settings(DATABASE="postgres",
                                                       RECORD_CACHE=setting)):
            store = runtime().authenticator.store
            assert isinstance(store, DjangoKeyStore)
            assert (store.listener is not None) is listening
            assert store.watcher is None
