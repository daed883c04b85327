"""The SQL store's record cache: warm lookups without the database, and
invalidation by LISTEN/NOTIFY that never lets a revoked key through."""

from __future__ import annotations

import dataclasses
import datetime as dt
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sqlalchemy import Engine, event

from aqnt_auth import (
    Argon2Hasher,
    Authenticator,
    KeyManager,
    KeyRecord,
    RevokedAPIKey,
    StoreUnavailable,
    UsageDelta,
    UsageRow,
)
from aqnt_auth._stores._record_cache import ABSENT, RecordCache
from aqnt_auth._stores._rows import KEY_COLUMNS
from aqnt_auth._stores._sqlalchemy import SQLAlchemyKeyStore

from ._changes import CHANGES, changed
from .contract import make_record
from .pg_support import PGSchema, pg_schema_fixture, wait_until

UTC = dt.timezone.utc
T0 = dt.datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC)


# -- the cache on its own (a fake clock, no database) -------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def cache(clock: FakeClock) -> RecordCache:
    return RecordCache(maxsize=3, ttl=30.0, absent_size=3, clock=clock)


def test_deaf_cache_answers_nothing_and_asks_for_the_listener(cache: RecordCache) -> None:
    """Before any lease a lookup misses, calls on_deaf, and put() is refused."""
    calls: list[int] = []
    cache.on_deaf = lambda: calls.append(1)
    record = make_record()
    cache.put(record, cache.epoch)
    assert cache.get(record.id) is None
    assert calls == [1]
    assert len(cache) == 0
    assert not cache.listening


def test_leased_cache_serves_until_lease_ends(cache: RecordCache, clock: FakeClock) -> None:
    """With a valid lease a put record is served; past the lease it is not."""
    cache.renew(clock.now + 1.0)
    record = make_record()
    cache.put(record, cache.epoch)
    assert cache.get(record.id) is record
    clock.now += 1.0
    assert cache.get(record.id) is None
    assert not cache.listening


def test_entries_expire_after_ttl(cache: RecordCache, clock: FakeClock) -> None:
    """A record lives at most ttl seconds, even while the listener is healthy."""
    record = make_record()
    cache.renew(clock.now + 100)
    cache.put(record, cache.epoch)
    clock.now += 29.9
    assert cache.get(record.id) is record
    clock.now += 0.1
    assert cache.get(record.id) is None


def test_read_overtaken_by_an_invalidation_is_not_cached(cache: RecordCache,
                                                         clock: FakeClock) -> None:
    """A record read before a change (of any key) was committed and notified
    must not enter the cache: the epoch taken before the read has moved on."""
    cache.renew(clock.now + 100)
    stale = make_record()
    epoch = cache.epoch          # get() takes the epoch, then reads the database...
    cache.drop(stale.id)         # ...meanwhile the key is revoked and notified...
    cache.put(stale, epoch)      # ...and the stale read comes back.
    assert cache.get(stale.id) is None
    fresh = dataclasses.replace(stale, revoked_at=T0)
    cache.put(fresh, cache.epoch)
    assert cache.get(stale.id) is fresh


def test_losing_the_listener_forgets_everything(cache: RecordCache, clock: FakeClock) -> None:
    """deafen() empties the cache and refuses reads that started before it."""
    cache.renew(clock.now + 100)
    record = make_record()
    cache.put(record, cache.epoch)
    epoch = cache.epoch
    cache.deafen()
    cache.renew(clock.now + 100)
    cache.put(record, epoch)
    assert cache.get(record.id) is None
    assert len(cache) == 0


def test_cache_is_bounded_oldest_out(cache: RecordCache, clock: FakeClock) -> None:
    """Past maxsize the oldest entry goes; refreshing an entry makes it young."""
    cache.renew(clock.now + 100)
    a, b, c, d = (make_record() for _ in range(4))
    for record in (a, b, c):
        cache.put(record, cache.epoch)
    cache.put(a, cache.epoch)
    cache.put(d, cache.epoch)
    assert len(cache) == 3
    assert cache.get(b.id) is None
    assert [cache.get(r.id) for r in (a, c, d)] == [a, c, d]


def test_absent_ids_are_remembered_until_created(cache: RecordCache, clock: FakeClock
                                                ) -> None:
    """An id read as absent is answered ABSENT (bounded, expiring) until an
    invalidation of that id, such as its creation, drops it."""
    cache.renew(clock.now + 100)
    assert cache.lookup("forged000001") is None
    cache.put_absent("forged000001", cache.epoch)
    assert cache.lookup("forged000001") is ABSENT
    assert cache.get("forged000001") is None  # get() knows records only
    cache.drop("forged000001")
    assert cache.lookup("forged000001") is None
    for n in range(cache.absent_size + 1):
        cache.put_absent(f"forged{n:06}", cache.epoch)
    assert cache.lookup("forged000000") is None  # the oldest went
    assert cache.lookup(f"forged{cache.absent_size:06}") is ABSENT
    clock.now += 31
    cache.renew(clock.now + 100)
    assert cache.lookup(f"forged{cache.absent_size:06}") is None  # expired


def test_absent_read_overtaken_by_a_creation_is_not_cached(cache: RecordCache,
                                                           clock: FakeClock) -> None:
    """An id read as absent before it was created is not remembered as absent."""
    cache.renew(clock.now + 100)
    epoch = cache.epoch
    cache.drop("new000000001")  # created meanwhile (the NOTIFY, or this process)
    cache.put_absent("new000000001", epoch)
    assert cache.lookup("new000000001") is None


def test_disabled_cache_never_stores(clock: FakeClock) -> None:
    """maxsize 0: nothing is ever cached."""
    cache = RecordCache(maxsize=0, clock=clock)
    cache.renew(clock.now + 100)
    record = make_record()
    cache.put(record, cache.epoch)
    assert cache.get(record.id) is None


@pytest.fixture
def id_cache(clock: FakeClock) -> RecordCache:
    cache = RecordCache(maxsize=3, ttl=30.0, absent_size=3, ids_size=4, ids_ttl=60.0,
                        clock=clock)
    cache.renew(clock.now + 100)
    return cache


class TestIdSet:
    """The set of existing key ids: an id outside it is absent without a read."""

    def test_unknown_ids_are_absent_known_ones_are_read(self, id_cache: RecordCache) -> None:
        """Once loaded, any id outside the set is ABSENT; one inside it is a
        miss (read the database); nothing is answered before the load or
        while the cache is deaf."""
        assert id_cache.ids_wanted()
        assert id_cache.lookup("forged000001") is None  # not loaded yet: read
        id_cache.load_ids(lambda limit: ["key000000001", "key000000002"])
        assert not id_cache.ids_wanted()
        assert id_cache.ids == frozenset({"key000000001", "key000000002"})
        assert id_cache.lookup("forged000001") is ABSENT
        assert id_cache.lookup(f"forged{secrets.token_hex(3)}") is ABSENT
        assert id_cache.lookup("key000000001") is None
        id_cache.renew(0.0)
        assert id_cache.lookup("forged000001") is None  # deaf: nothing is trusted

    def test_a_change_heard_adds_its_id(self, id_cache: RecordCache) -> None:
        """A drop (a creation, in this process or notified) makes the id
        known; a read that finds it absent (a deleted key) takes it out."""
        id_cache.load_ids(lambda limit: [])
        id_cache.drop("new000000001")
        assert id_cache.lookup("new000000001") is None
        id_cache.put_absent("new000000001", id_cache.epoch)
        assert id_cache.ids == frozenset()
        assert id_cache.lookup("new000000001") is ABSENT

    def test_a_change_during_the_load_is_kept(self, id_cache: RecordCache) -> None:
        """An id dropped while the ids are read (a key this process creates
        meanwhile) is in the set even if the read missed it."""
        def read(limit: int) -> list[str]:
            id_cache.drop("made00000001")
            return ["key000000001"]

        id_cache.load_ids(read)
        assert id_cache.ids == frozenset({"key000000001", "made00000001"})

    def test_a_clear_during_the_load_discards_it(self, id_cache: RecordCache) -> None:
        """A re-synchronisation while the ids are read: the load is not
        trusted, and another is wanted."""
        def read(limit: int) -> list[str]:
            id_cache.clear()
            return ["key000000001"]

        id_cache.load_ids(read)
        assert id_cache.ids is None
        assert id_cache.ids_wanted()
        assert id_cache.lookup("forged000001") is None

    def test_a_failed_load_changes_nothing(self, id_cache: RecordCache) -> None:
        def read(limit: int) -> list[str]:
            raise OSError("gone")

        with pytest.raises(OSError, match="gone"):
            id_cache.load_ids(read)
        assert id_cache.ids is None
        assert id_cache._loading is None

    def test_too_many_keys_go_without(self, id_cache: RecordCache) -> None:
        """The read asks for one id over the bound; a table past it leaves the
        cache without an id set for good, on its absent entries alone."""
        asked: list[int] = []

        def read(limit: int) -> list[str]:
            asked.append(limit)
            return [f"key{n:09}" for n in range(limit)]

        id_cache.load_ids(read)
        assert asked == [5]
        assert id_cache.ids is None
        assert not id_cache.ids_wanted()
        assert id_cache.lookup("forged000001") is None

    def test_growing_past_the_bound_asks_for_a_new_load(self, id_cache: RecordCache) -> None:
        id_cache.load_ids(lambda limit: ["a", "b", "c", "d"])
        id_cache.drop("e")
        assert id_cache.ids is None
        assert id_cache.ids_wanted()
        id_cache.load_ids(lambda limit: ["a", "e"])  # b, c and d were deleted
        assert id_cache.ids == frozenset({"a", "e"})

    def test_loaded_again_after_ids_ttl(self, id_cache: RecordCache, clock: FakeClock
                                        ) -> None:
        id_cache.load_ids(lambda limit: ["a"])
        clock.now += 59
        assert not id_cache.ids_wanted()
        clock.now += 2
        assert id_cache.ids_wanted()
        assert id_cache.ids == frozenset({"a"})  # still trusted until the load replaces it

    def test_losing_the_invalidator_forgets_the_ids(self, id_cache: RecordCache) -> None:
        id_cache.load_ids(lambda limit: ["a"])
        id_cache.deafen()
        assert id_cache.ids is None
        assert id_cache.ids_wanted()

    def test_off_by_default(self, clock: FakeClock) -> None:
        """A cache built without ids_size keeps no id set."""
        cache = RecordCache(maxsize=3, clock=clock)
        cache.renew(clock.now + 100)
        assert not cache.ids_wanted()
        cache.drop("a")
        assert cache.lookup("forged000001") is None


# -- against PostgreSQL ---------------------------------------------------------


@pytest.fixture(scope="module")
def pg() -> Iterator[PGSchema]:
    yield from pg_schema_fixture()


@pytest.fixture
def make_store(pg: PGSchema) -> Iterator[Callable[..., SQLAlchemyKeyStore]]:
    stores: list[SQLAlchemyKeyStore] = []

    def make(**options: Any) -> SQLAlchemyKeyStore:
        options.setdefault("channel", pg.name)
        options.setdefault("listener_name", f"aqnt-test-{secrets.token_hex(4)}")
        store = SQLAlchemyKeyStore(pg.url(), **options)
        stores.append(store)
        return store

    yield make
    for store in stores:
        store.close()


def _warm(store: SQLAlchemyKeyStore, key_id: str) -> KeyRecord:
    """Read *key_id* until the listener is up and the record is cached."""
    def cached() -> bool:
        store.get(key_id)
        return store.cache.get(key_id) is not None

    wait_until(cached, what="the record to be cached")
    record = store.cache.get(key_id)
    assert record is not None
    return record


def _listening(*stores: SQLAlchemyKeyStore) -> None:
    """Wait until every store's listener holds its lease (a lookup starts it)."""
    def ready() -> bool:
        return all(store.peek("") is None and store.cache.listening for store in stores)

    wait_until(ready, what="the listeners")


def _statements(engine: Engine) -> list[str]:
    seen: list[str] = []

    @event.listens_for(engine, "before_cursor_execute")
    def count(conn: object, cursor: object, statement: str, *args: object) -> None:
        seen.append(statement)

    return seen


def test_warm_lookup_makes_no_round_trip(make_store: Callable[..., SQLAlchemyKeyStore]
                                         ) -> None:
    """Once cached, get() runs no SQL at all."""
    store = make_store()
    record = make_record()
    store.add(record)
    statements = _statements(store.engine)
    _warm(store, record.id)
    before = len(statements)
    for _ in range(50):
        assert store.get(record.id) == record
    assert len(statements) == before


@pytest.mark.anyio
async def test_warm_async_lookup_makes_no_round_trip(
    make_store: Callable[..., SQLAlchemyKeyStore],
) -> None:
    """The async twin shares the cache (and the listener) with the sync store."""
    store = make_store()
    assert store.aio is not None
    assert store.async_engine is not None
    record = make_record()
    await store.aio.add(record)
    statements = _statements(store.async_engine.sync_engine)
    assert await store.aio.get(record.id) == record
    wait_until(lambda: store.cache.listening, what="the listener")
    assert await store.aio.get(record.id) == record
    assert store.cache.get(record.id) == record  # cached by the async read
    before = len(statements)
    for _ in range(50):
        assert await store.aio.get(record.id) == record
    assert len(statements) == before
    await store.aio.close()


@pytest.mark.parametrize("change", sorted(set(CHANGES) - {"rotate"}))
def test_change_reaches_every_process(make_store: Callable[..., SQLAlchemyKeyStore],
                                      change: str) -> None:
    """Revoke, expire, rehash, delete, disable, enable and policy updates drop
    the record at once in the
    changing store and, by NOTIFY, in every other store holding it."""
    here, there = make_store(), make_store()
    record = make_record(expires_at=None)
    if change == "enable":
        record = dataclasses.replace(record, disabled_at=T0, name="was disabled")
    here.add(record)
    _warm(here, record.id)
    _warm(there, record.id)
    CHANGES[change](here, record.id)
    assert changed(here, record.id, change)  # no waiting in the changing process
    wait_until(lambda: there.cache.get(record.id) is None, what="the notification")
    assert changed(there, record.id, change)


def test_unknown_id_is_read_once_until_created_anywhere(
    make_store: Callable[..., SQLAlchemyKeyStore],
) -> None:
    """A forged id costs one query, then none; creating that id (in this
    process at once, in another by NOTIFY) makes it found."""
    here, there = make_store(), make_store()
    first, second = make_record(), make_record()
    _listening(here, there)
    statements = _statements(there.engine)
    for record in (first, second):
        assert there.get(record.id) is None
    before = len(statements)
    for _ in range(20):
        assert there.get(first.id) is None
        assert there.get(second.id) is None
    assert len(statements) == before
    there.add(first)
    assert there.get(first.id) == first  # no waiting in the creating process
    here.add(second)
    wait_until(lambda: there.get(second.id) is not None, what="the notification")
    assert there.get(second.id) == second


def test_fresh_unknown_ids_make_no_round_trip(
    make_store: Callable[..., SQLAlchemyKeyStore],
) -> None:
    """With the set of key ids loaded by the listener, a new forged id every
    lookup runs no SQL; a key created in this process (or as a rotation's
    successor) is found at once, one created by another process once its
    NOTIFY arrives."""
    here, there = make_store(), make_store()
    existing, second = make_record(), make_record()
    first = make_record(expires_at=None)
    here.add(existing)
    _listening(here, there)
    wait_until(lambda: there.cache.ids is not None, what="the id set")
    assert existing.id in (there.cache.ids or ())
    statements = _statements(there.engine)
    for _ in range(100):
        assert there.get(make_record().id) is None
    assert statements == []
    there.add(first)
    assert there.get(first.id) == first  # no waiting in the creating process
    here.add(second)
    wait_until(lambda: there.get(second.id) is not None, what="the notification")
    assert there.get(second.id) == second
    rotated = KeyManager(there, hasher=Argon2Hasher("cheapest")).rotate(first.id)
    assert there.get(rotated.record.id) == rotated.record  # the successor, at once


def test_a_key_inserted_without_notify_is_found_after_cache_ttl(
    make_store: Callable[..., SQLAlchemyKeyStore], pg: PGSchema,
) -> None:
    """Hand-written SQL that forgets NOTIFY: the listener loads the ids again
    every cache_ttl, so the key is found within that."""
    store = make_store(cache_ttl=0.5)
    template = make_record()
    store.add(template)
    _listening(store)
    wait_until(lambda: store.cache.ids is not None, what="the id set")
    copy = make_record().id
    columns = ", ".join(KEY_COLUMNS[1:])
    pg.execute(f"INSERT INTO aqnt_api_keys (id, {columns}) "  # noqa: S608 - constants
               f"SELECT %s, {columns} FROM aqnt_api_keys WHERE id = %s", (copy, template.id))
    wait_until(lambda: store.get(copy) is not None, what="the id set's reload")


def test_notify_star_reloads_the_ids(make_store: Callable[..., SQLAlchemyKeyStore],
                                     pg: PGSchema) -> None:
    """``NOTIFY <channel>, '*'`` after hand-written SQL: the id set is read again."""
    store = make_store()
    template = make_record()
    store.add(template)
    _listening(store)
    wait_until(lambda: store.cache.ids is not None, what="the id set")
    copy = make_record().id
    columns = ", ".join(KEY_COLUMNS[1:])
    pg.execute(f"INSERT INTO aqnt_api_keys (id, {columns}) "  # noqa: S608 - constants
               f"SELECT %s, {columns} FROM aqnt_api_keys WHERE id = %s", (copy, template.id))
    pg.execute(f"NOTIFY {store.channel}, '*'")
    wait_until(lambda: store.get(copy) is not None, what="the reload")


@pytest.mark.anyio
async def test_async_unknown_id_is_read_once(
    make_store: Callable[..., SQLAlchemyKeyStore],
) -> None:
    """The async twin remembers absent ids in the shared cache too."""
    store = make_store()
    assert store.aio is not None
    assert store.async_engine is not None
    _listening(store)
    statements = _statements(store.async_engine.sync_engine)
    record = make_record()
    assert await store.aio.get(record.id) is None
    before = len(statements)
    assert await store.aio.get(record.id) is None
    assert len(statements) == before
    await store.aio.add(record)
    assert await store.aio.get(record.id) == record
    await store.aio.close()


@pytest.mark.anyio
async def test_async_change_reaches_every_process(
    make_store: Callable[..., SQLAlchemyKeyStore],
) -> None:
    """A revocation through the async twin notifies like a sync one."""
    here, there = make_store(), make_store()
    assert here.aio is not None
    record = make_record()
    here.add(record)
    _warm(here, record.id)
    _warm(there, record.id)
    await here.aio.revoke(record.id, T0)
    got = await here.aio.get(record.id)
    assert got is not None
    assert got.revoked_at == T0
    wait_until(lambda: there.cache.get(record.id) is None, what="the notification")
    got = there.get(record.id)
    assert got is not None
    assert got.revoked_at == T0
    await here.aio.close()


def test_notify_star_clears_every_cache(make_store: Callable[..., SQLAlchemyKeyStore],
                                        pg: PGSchema) -> None:
    """After hand-written SQL, NOTIFY <channel>, '*' drops every cached record."""
    store = make_store()
    records = [make_record() for _ in range(3)]
    for record in records:
        store.add(record)
        _warm(store, record.id)
    pg.execute(f"NOTIFY {pg.name}, '*'")
    wait_until(lambda: len(store.cache) == 0, what="the cache to clear")


def test_usage_does_not_invalidate(make_store: Callable[..., SQLAlchemyKeyStore]) -> None:
    """Usage flushes send no NOTIFY: a cached record's usage fields may lag
    (by at most cache_ttl); the database has the exact count."""
    cached, plain = make_store(), make_store(cache=False)
    record = make_record()
    cached.add(record)
    _warm(cached, record.id)
    cached.record_usage({record.id: UsageDelta(5, T0)})
    got = cached.get(record.id)
    assert got is not None
    assert got.usage_count == 0
    got = plain.get(record.id)
    assert got is not None
    assert got.usage_count == 5


def test_usage_history_sends_no_notify(make_store: Callable[..., SQLAlchemyKeyStore]) -> None:
    """Usage-history flushes (#14) write their own table and notify nothing:
    another process's cached record stays cached.  A change to another key,
    committed after them, is the fence: notifications arrive in commit order."""
    writer, other = make_store(), make_store()
    record, fence = make_record(), make_record()
    writer.add(record)
    writer.add(fence)
    _warm(other, record.id)
    _warm(other, fence.id)
    cached = other.peek(record.id)
    assert cached is not None
    for _ in range(3):
        writer.record_usage_history([UsageRow(record.id, 3600, {"valid": 2, "revoked": 1})],
                                    prune_before=0)
    writer.revoke(fence.id, T0)
    wait_until(lambda: other.peek(fence.id) is None, what="the fence's notification")
    assert other.peek(record.id) is cached
    assert other.usage_rows(key_id=record.id, since=0, until=7200) == [
        UsageRow(record.id, 3600, {"valid": 6, "revoked": 3})]


def test_concurrent_flushes_from_many_stores_add_up(
    make_store: Callable[..., SQLAlchemyKeyStore],
) -> None:
    """Four stores (four pools: as four processes would) flushing overlapping
    batches at once lose no count and never deadlock."""
    stores = [make_store(cache=False) for _ in range(4)]
    records = [make_record() for _ in range(5)]
    for record in records:
        stores[0].add(record)
    errors: list[BaseException] = []

    def flush(store: SQLAlchemyKeyStore, seed: int) -> None:
        try:
            for i in range(10):
                batch = {r.id: UsageDelta(1 + (seed + i + n) % 3,
                                          T0 + dt.timedelta(seconds=seed * 100 + i))
                         for n, r in enumerate(reversed(records) if seed % 2 else records)}
                store.record_usage(batch)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=flush, args=(store, seed))
               for seed, store in enumerate(stores * 2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    for n, record in enumerate(records):
        expected = 0
        for seed in range(8):
            position = len(records) - 1 - n if seed % 2 else n
            expected += sum(1 + (seed + i + position) % 3 for i in range(10))
        got = stores[1].get(record.id)
        assert got is not None
        assert got.usage_count == expected
        assert got.last_used_at == T0 + dt.timedelta(seconds=709)


def test_killed_listener_never_lets_a_revoked_key_through(
    make_store: Callable[..., SQLAlchemyKeyStore], pg: PGSchema, cheap_hasher: Argon2Hasher,
) -> None:
    """The listener's backend is terminated mid-run and the key revoked (by
    another process) while it is down: under continuous requests, nothing
    that starts after the revocation is accepted, during the outage or
    after the listener is back and has re-synchronised."""
    server = make_store(listener_retry=0.5)
    other = make_store(cache=False)
    issued = KeyManager(other, hasher=cheap_hasher).create("victim")
    bearer = f"Bearer {issued.key}"
    auth = Authenticator(server, hashers=[cheap_hasher], track_usage=False)
    auth.authenticate(bearer)
    _warm(server, issued.record.id)
    assert server.listener is not None
    first_pid = server.listener.backend_pid

    outcomes: list[tuple[float, str]] = []
    stop = threading.Event()

    def requests() -> None:
        while not stop.is_set():
            started = time.monotonic()
            try:
                auth.authenticate(bearer)
                outcome = "accepted"
            except RevokedAPIKey:
                outcome = "revoked"
            except StoreUnavailable:
                outcome = "unavailable"
            outcomes.append((started, outcome))
            time.sleep(0.001)

    worker = threading.Thread(target=requests)
    worker.start()
    try:
        wait_until(lambda: len(outcomes) > 20, what="requests")
        killed = time.monotonic()
        terminated = pg.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE application_name = %s", (server.listener.name,))
        assert terminated == [(True,)]
        wait_until(lambda: not server.cache.listening, what="the listener to notice")
        KeyManager(other, hasher=cheap_hasher).revoke(issued.record.id)
        revoked = time.monotonic()
        wait_until(lambda: server.listener is not None and server.listener.connections >= 2
                   and server.cache.listening, what="the listener to come back")
        back = time.monotonic()
        second_pid = server.listener.backend_pid
        wait_until(lambda: sum(1 for s, _ in outcomes if s > back) > 20, what="requests")
    finally:
        stop.set()
        worker.join()
    auth.close()

    assert second_pid not in (None, first_pid)
    assert {o for s, o in outcomes if s < killed} == {"accepted"}
    after = [o for s, o in outcomes if s > revoked]
    assert set(after) == {"revoked"}
    # Both phases were exercised: while deaf (reads from the database) and
    # after the re-synchronisation (served from the cache again).
    assert any(revoked < s < back for s, _ in outcomes)
    assert any(s > back for s, _ in outcomes)
