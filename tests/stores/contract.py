"""The store contract: one suite that every :class:`~aqnt_auth.KeyStore` passes.

Subclass :class:`StoreContract` and provide a ``store`` fixture returning a
fresh, empty synchronous store; every test then runs twice, once through the
store's sync methods and once through its async twin (its native ``aio`` or
:func:`aqnt_auth.to_async`).  The tests are written once, as coroutines: the
sync variant wraps the store in :class:`DirectAsync`, which calls straight
through.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Final

import pytest

from aqnt_auth import (
    Argon2Hasher,
    AsyncKeyStore,
    AuditEntry,
    AuditEvent,
    AuditLog,
    KeyManager,
    KeyRecord,
    KeyStateError,
    KeyStore,
    QuotaUse,
    RotationPlan,
    UsageDelta,
    UsageHistoryStore,
    UsageRow,
    to_async,
)
from aqnt_auth._outcomes import NO_KEY
from aqnt_auth._usage_history import TOP_PATHS

UTC = dt.timezone.utc
T0 = dt.datetime(2026, 1, 2, 3, 4, 5, 123456, tzinfo=UTC)


class DirectAsync:
    """Awaitable facade over a sync store, calling it inline: the "sync" variant."""

    def __init__(self, store: KeyStore) -> None:
        self.sync = store

    async def get(self, key_id: str) -> KeyRecord | None:
        return self.sync.get(key_id)

    async def add(self, record: KeyRecord, *, audit: AuditEvent | None = None) -> None:
        self.sync.add(record, audit=audit)

    async def list(self, *, owner: str | None = None) -> list[KeyRecord]:
        return self.sync.list(owner=owner)

    async def revoke(self, key_id: str, at: dt.datetime, *, audit: AuditEvent | None = None
                     ) -> KeyRecord | None:
        return self.sync.revoke(key_id, at, audit=audit)

    async def set_expiry(self, key_id: str, at: dt.datetime | None, *,
                         audit: AuditEvent | None = None) -> KeyRecord | None:
        return self.sync.set_expiry(key_id, at, audit=audit)

    async def update(self, key_id: str, changes: Mapping[str, Any], *,
                     audit: AuditEvent | None = None) -> KeyRecord | None:
        return self.sync.update(key_id, changes, audit=audit)

    async def rotate(self, key_id: str, plan: RotationPlan, *,
                     audit: AuditEvent | None = None) -> KeyRecord | None:
        return self.sync.rotate(key_id, plan, audit=audit)

    async def replace_hash(self, key_id: str, old_hash: str, new_hash: str) -> bool:
        return self.sync.replace_hash(key_id, old_hash, new_hash)

    async def consume_quota(self, key_id: str, now: dt.datetime) -> QuotaUse | None:
        return self.sync.consume_quota(key_id, now)

    async def delete(self, key_id: str, *, audit: AuditEvent | None = None) -> bool:
        return self.sync.delete(key_id, audit=audit)

    async def audit_entries(self, *, key_id: str | None = None,
                            since: dt.datetime | None = None, until: dt.datetime | None = None,
                            limit: int | None = None) -> AuditLog:
        return self.sync.audit_entries(key_id=key_id, since=since, until=until, limit=limit)

    async def record_usage(self, usage: Mapping[str, UsageDelta]) -> None:
        self.sync.record_usage(usage)

    async def close(self) -> None:
        self.sync.close()


_counter = 0

#: Every policy field (#13) set to something non-default.
POLICIES: Final[dict[str, Any]] = {
    "disabled_at": T0 + dt.timedelta(minutes=5),
    "rate_limits": ("100/minute", "5000/hour"),
    "rate_limit_shared": True,
    "quota_remaining": 1000,
    "quota_refill": "1000/day",
    "quota_refilled_at": T0 + dt.timedelta(minutes=6),
    "allowed_ips": ("10.0.0.0/8", "2001:db8::/32", "192.0.2.7"),
}


def make_record(**changes: Any) -> KeyRecord:
    """A record with every field set to something non-default."""
    global _counter
    _counter += 1
    base = KeyRecord(
        id=f"id{_counter:010d}",
        name="Production Server",
        mode="live",
        hash="$argon2id$v=19$m=8,t=1,p=1$c2FsdHNhbHQ$aGFzaA",
        hint="sk_live_...abcd",
        prefix="sk",
        created_at=T0 + dt.timedelta(seconds=_counter),
        expires_at=T0 + dt.timedelta(days=30),
        revoked_at=None,
        last_used_at=None,
        usage_count=0,
        scopes=("charges:read", "charges:write"),
        read_only=True,
        allowed_paths=("/v1/charges", "/v1/refunds"),
        owner="acct_123",
        metadata={"team": "payments", "nested": {"a": [1, 2, 3]}, "ok": True},
    )
    return dataclasses.replace(base, **changes)


class HookedHasher:
    """argon2's cheapest profile that runs :attr:`during_hash` (once) while it
    hashes a secret: what another process does while ``rotate()`` hashes."""

    def __init__(self) -> None:
        self.inner = Argon2Hasher("cheapest")
        self.identifier = self.inner.identifier
        self.expensive = self.inner.expensive
        self.during_hash: Callable[[], object] | None = None

    def hash(self, secret: str) -> str:
        hook, self.during_hash = self.during_hash, None
        if hook is not None:
            hook()
        return self.inner.hash(secret)

    def verify(self, stored: str, secret: str) -> bool:
        return self.inner.verify(stored, secret)

    def needs_rehash(self, stored: str) -> bool:
        return self.inner.needs_rehash(stored)


def successor_plan(expires_at: dt.datetime | None, seen: list[tuple[KeyRecord, list[str]]],
                   **changes: Any) -> RotationPlan:
    """A plan that records what the store showed it and inserts a successor."""

    def plan(old: KeyRecord, successors: Sequence[KeyRecord]
             ) -> tuple[KeyRecord, dt.datetime | None]:
        seen.append((old, [s.id for s in successors]))
        return make_record(rotated_from=old.id, **changes), expires_at

    return plan


def by(actor: str, minutes: int) -> AuditEvent:
    """An audit event by *actor*, *minutes* after T0."""
    return AuditEvent(actor=actor, at=T0 + dt.timedelta(minutes=minutes))


class FailingAudit(AuditEvent):
    """An audit event whose entries cannot be made: an exception in the
    middle of the store's transaction, after the change was written."""

    def entries(self, before: KeyRecord | None, after: KeyRecord | None) -> AuditLog:
        raise RuntimeError("injected mid-transaction")

    def rotation(self, before: KeyRecord, after: KeyRecord, successor: KeyRecord
                 ) -> AuditLog:
        raise RuntimeError("injected mid-transaction")


def _summary(entries: Sequence[AuditEntry]) -> list[tuple[str, str, str | None]]:
    return [(e.event, e.key_id, e.actor) for e in entries]


H0: Final = int(T0.timestamp()) // 3600 * 3600
HOUR: Final = 3600


class UsageHistoryContract:
    """Usage history (issue #14): mix into a ``Test...`` class with a ``store``
    fixture (a fresh, empty store that keeps usage history)."""

    def test_rows_add_up_and_keep_the_later_client(self, store: KeyStore) -> None:
        """Counts add up per key and hour; the client count keeps the larger
        value; the last client and user agent are the later ones; paths merge."""
        assert isinstance(store, UsageHistoryStore)
        store.record_usage_history([
            UsageRow("k1", H0, {"valid": 3, "revoked": 1}, 2, 20, "192.0.2.1", "ua/2",
                     {"/a": 2, "/b": 1}),
            UsageRow(NO_KEY, H0, {"missing": 4, "malformed": 1}),
        ])
        store.record_usage_history([
            UsageRow("k1", H0, {"valid": 2, "forbidden": 1}, 1, 10, "192.0.2.9", "ua/1",
                     {"/b": 5}),
            UsageRow("k1", H0 + HOUR, {"valid": 1}, 1, 30, "192.0.2.3", None, {"/c": 1}),
            UsageRow(NO_KEY, H0, {"missing": 1, "unknown_key": 2}),
        ])
        rows = store.usage_rows(since=H0, until=H0 + 2 * HOUR)
        assert rows == [
            UsageRow(NO_KEY, H0, {"missing": 5, "malformed": 1, "unknown_key": 2}),
            UsageRow("k1", H0, {"valid": 5, "revoked": 1, "forbidden": 1}, 2, 20, "192.0.2.1",
                     "ua/2", {"/a": 2, "/b": 6}),
            UsageRow("k1", H0 + HOUR, {"valid": 1}, 1, 30, "192.0.2.3", None, {"/c": 1}),
        ]
        assert store.usage_rows(key_id="k1", since=H0 + HOUR, until=H0 + 2 * HOUR) == rows[2:]
        assert store.usage_rows(key_id=NO_KEY, since=H0, until=H0 + HOUR) == rows[:1]
        assert store.usage_rows(since=H0 + 2 * HOUR, until=H0 + 9 * HOUR) == []

    def test_paths_keep_the_most_requested(self, store: KeyStore) -> None:
        """A row keeps the ten most requested paths over every flush."""
        assert isinstance(store, UsageHistoryStore)
        for n in range(12):
            paths = {f"/p{i}": 1 for i in range(12)} | {"/hot": n + 1}
            store.record_usage_history([UsageRow("k2", H0, {"valid": 13}, paths=paths)])
        (row,) = store.usage_rows(key_id="k2", since=H0, until=H0 + HOUR)
        assert row.count("valid") == 12 * 13
        assert len(row.paths) == TOP_PATHS
        assert row.paths["/hot"] == sum(range(1, 13))

    def test_prune_deletes_older_hours(self, store: KeyStore) -> None:
        """prune_before deletes the rows of earlier hours, in the same write."""
        assert isinstance(store, UsageHistoryStore)
        store.record_usage_history([UsageRow("k3", H0 + h * HOUR, {"valid": 1})
                                    for h in range(5)] + [UsageRow(NO_KEY, H0, {"missing": 1})])
        store.record_usage_history([UsageRow("k3", H0 + 4 * HOUR, {"valid": 1})],
                                   prune_before=H0 + 3 * HOUR)
        rows = store.usage_rows(since=0, until=H0 + 9 * HOUR)
        assert [(r.key_id, r.hour, r.count("valid")) for r in rows] == [
            ("k3", H0 + 3 * HOUR, 1), ("k3", H0 + 4 * HOUR, 2)]
        store.record_usage_history([], prune_before=H0 + 9 * HOUR)
        assert store.usage_rows(since=0, until=H0 + 9 * HOUR) == []

    #: Whether the store takes writes from several threads at once (Django's
    #: in-memory SQLite test database, shared-cache, does not wait for locks).
    concurrent_threads = True

    def thread_done(self) -> None:
        """Called at the end of each thread a test starts (close its connections)."""

    def test_concurrent_history_flushes_add_up(self, store: KeyStore) -> None:
        """Flushes from many threads at once lose no count."""
        assert isinstance(store, UsageHistoryStore)
        if not self.concurrent_threads:
            pytest.skip("this database does not take concurrent writers (see the "
                        "multi-process tests)")
        history = store

        def flush(i: int) -> None:
            try:
                history.record_usage_history([
                    UsageRow("k4", H0, {"valid": i, "invalid_secret": 1}, i, i,
                             f"192.0.2.{i}", None, {"/x": i}),
                    UsageRow(NO_KEY, H0, {"unknown_key": i}),
                ])
            finally:
                self.thread_done()

        threads = [threading.Thread(target=flush, args=(i,)) for i in range(1, 11)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        rows = {r.key_id: r for r in store.usage_rows(since=H0, until=H0 + HOUR)}
        assert rows["k4"].counts == {"valid": 55, "invalid_secret": 10}
        assert rows["k4"].paths == {"/x": 55}
        assert (rows["k4"].clients, rows["k4"].last_client) == (10, "192.0.2.10")
        assert rows[NO_KEY].counts == {"unknown_key": 55}


class StoreContract(UsageHistoryContract):
    """Mix into a ``Test...`` class that defines a ``store`` fixture."""

    @pytest.fixture(params=["sync", "async"])
    def kstore(self, request: pytest.FixtureRequest, store: KeyStore) -> AsyncKeyStore:
        if request.param == "sync":
            return DirectAsync(store)
        return to_async(store)

    @pytest.mark.anyio
    async def test_unknown_id_is_none(self, kstore: AsyncKeyStore) -> None:
        """get() of an id never stored returns None, not an error."""
        assert await kstore.get("nosuchkey123") is None

    @pytest.mark.anyio
    async def test_round_trip_keeps_every_field(self, kstore: AsyncKeyStore) -> None:
        """A record comes back equal, field by field, with aware UTC datetimes."""
        record = make_record(
            revoked_at=None,
            last_used_at=T0 + dt.timedelta(hours=1),
            usage_count=7,
            rotated_from="oldkey000001",
        )
        await kstore.add(record)
        got = await kstore.get(record.id)
        assert got == record
        assert got is not None
        assert got.created_at.utcoffset() == dt.timedelta(0)
        assert isinstance(got.scopes, tuple)
        assert isinstance(got.allowed_paths, tuple)

    @pytest.mark.anyio
    async def test_round_trip_keeps_every_policy(self, kstore: AsyncKeyStore) -> None:
        """The per-key policies (#13) come back as stored, with aware UTC times."""
        record = make_record(**POLICIES)
        await kstore.add(record)
        got = await kstore.get(record.id)
        assert got == record
        assert got is not None
        assert got.halted
        assert got.disabled_at is not None
        assert got.disabled_at.utcoffset() == dt.timedelta(0)
        assert isinstance(got.rate_limits, tuple)
        assert isinstance(got.allowed_ips, tuple)
        assert (await kstore.list(owner=record.owner))[-1] == record

    @pytest.mark.anyio
    async def test_round_trip_keeps_the_lineage(self, kstore: AsyncKeyStore) -> None:
        """The first key of a rotation chain (#13's rate-limit budget) comes
        back as stored, and is not something update() may change."""
        record = make_record(rotated_from="id0000000001", lineage_id="id0000000000")
        await kstore.add(record)
        assert await kstore.get(record.id) == record
        assert (await kstore.list(owner=record.owner))[-1].lineage_id == "id0000000000"
        with pytest.raises(ValueError, match="lineage_id"):
            await kstore.update(record.id, {"lineage_id": "other"})

    @pytest.mark.anyio
    async def test_update_sets_name_scopes_and_policies(self, kstore: AsyncKeyStore) -> None:
        """update() writes exactly the fields given and returns the record as stored."""
        record = make_record(usage_count=3)
        await kstore.add(record)
        got = await kstore.update(record.id, {"name": "renamed", "scopes": ("a:b",), **POLICIES})
        expected = dataclasses.replace(record, name="renamed", scopes=("a:b",), **POLICIES)
        assert got == expected
        assert await kstore.get(record.id) == expected
        cleared: dict[str, Any] = {
            "disabled_at": None, "rate_limits": (), "rate_limit_shared": False,
            "quota_remaining": None, "quota_refill": None, "quota_refilled_at": None,
            "allowed_ips": ()}
        got = await kstore.update(record.id, cleared)
        assert got == dataclasses.replace(expected, **cleared)
        assert got is not None
        assert not got.halted
        assert await kstore.get(record.id) == got

    @pytest.mark.anyio
    async def test_update_unknown_is_none(self, kstore: AsyncKeyStore) -> None:
        """update() of an id never stored returns None and creates nothing."""
        assert await kstore.update("nosuchkey123", {"name": "x"}) is None
        assert await kstore.get("nosuchkey123") is None

    @pytest.mark.anyio
    async def test_update_leaves_a_revoked_key_as_it_is(self, kstore: AsyncKeyStore) -> None:
        """Revocation is final: update() of a revoked key changes nothing."""
        record = make_record()
        await kstore.add(record)
        revoked = await kstore.revoke(record.id, T0)
        assert await kstore.update(record.id, {"name": "revived?",
                                               "disabled_at": T0}) == revoked
        assert await kstore.get(record.id) == revoked

    @pytest.mark.anyio
    async def test_update_refuses_the_secret(self, kstore: AsyncKeyStore) -> None:
        """The hash (and the id, times of use...) are not updatable."""
        record = make_record()
        await kstore.add(record)
        with pytest.raises(ValueError, match="hash"):
            await kstore.update(record.id, {"hash": "$argon2id$other"})
        assert await kstore.get(record.id) == record

    @pytest.mark.anyio
    async def test_minimal_record_round_trip(self, kstore: AsyncKeyStore) -> None:
        """Empty scopes, paths and metadata and no optional times survive too."""
        record = make_record(
            expires_at=None, scopes=(), allowed_paths=(), owner=None, metadata={},
            read_only=False, mode="test", hint="sk_test_...wxyz",
        )
        await kstore.add(record)
        assert await kstore.get(record.id) == record

    @pytest.mark.anyio
    async def test_long_argon2_hash_fits(self, kstore: AsyncKeyStore) -> None:
        """The hash column holds a full argon2 PHC string of a heavy profile."""
        phc = "$argon2id$v=19$m=2097152,t=1,p=4$" + "s" * 22 + "$" + "h" * 86
        record = make_record(hash=phc)
        await kstore.add(record)
        got = await kstore.get(record.id)
        assert got is not None
        assert got.hash == phc

    @pytest.mark.anyio
    async def test_duplicate_id_is_refused(self, kstore: AsyncKeyStore) -> None:
        """Adding a second record with an existing id raises KeyStateError."""
        record = make_record()
        await kstore.add(record)
        with pytest.raises(KeyStateError):
            await kstore.add(dataclasses.replace(record, name="other"))
        got = await kstore.get(record.id)
        assert got is not None
        assert got.name == record.name

    @pytest.mark.anyio
    async def test_list_oldest_first_and_by_owner(self, kstore: AsyncKeyStore) -> None:
        """list() orders by creation time and filters by owner."""
        late = make_record(created_at=T0 + dt.timedelta(days=2), owner="acct_a")
        early = make_record(created_at=T0 + dt.timedelta(days=1), owner="acct_b")
        await kstore.add(late)
        await kstore.add(early)
        assert [r.id for r in await kstore.list()] == [early.id, late.id]
        assert [r.id for r in await kstore.list(owner="acct_a")] == [late.id]
        assert await kstore.list(owner="nobody") == []

    @pytest.mark.anyio
    async def test_revoke_is_final_and_keeps_first_time(self, kstore: AsyncKeyStore) -> None:
        """Revoking sets revoked_at once; a second revoke keeps the first time."""
        record = make_record()
        await kstore.add(record)
        first = await kstore.revoke(record.id, T0 + dt.timedelta(hours=1))
        assert first is not None
        assert first.revoked_at == T0 + dt.timedelta(hours=1)
        again = await kstore.revoke(record.id, T0 + dt.timedelta(hours=5))
        assert again is not None
        assert again.revoked_at == T0 + dt.timedelta(hours=1)
        # Changing the expiry never clears a revocation: it is refused.
        with pytest.raises(KeyStateError, match=f"key {record.id} is revoked"):
            await kstore.set_expiry(record.id, None)
        got = await kstore.get(record.id)
        assert got is not None
        assert got.revoked_at == T0 + dt.timedelta(hours=1)

    @pytest.mark.anyio
    async def test_revoke_unknown_is_none(self, kstore: AsyncKeyStore) -> None:
        """Revoking an id that does not exist returns None."""
        assert await kstore.revoke("nosuchkey123", T0) is None

    @pytest.mark.anyio
    async def test_set_expiry_sets_and_moves_earlier(self, kstore: AsyncKeyStore) -> None:
        """set_expiry() sets an expiry, keeps it, and moves it earlier."""
        record = make_record(expires_at=None)
        await kstore.add(record)
        never = await kstore.set_expiry(record.id, None)
        assert never == record
        soon = T0 + dt.timedelta(minutes=5)
        changed = await kstore.set_expiry(record.id, soon)
        assert changed == dataclasses.replace(record, expires_at=soon)
        same = await kstore.set_expiry(record.id, soon)
        assert same is not None
        assert same.expires_at == soon
        earlier = await kstore.set_expiry(record.id, soon - dt.timedelta(microseconds=1))
        assert earlier is not None
        assert earlier.expires_at == soon - dt.timedelta(microseconds=1)
        assert await kstore.get(record.id) == earlier
        assert await kstore.set_expiry("nosuchkey123", soon) is None

    @pytest.mark.anyio
    @pytest.mark.parametrize("later", [None, dt.timedelta(microseconds=1), dt.timedelta(days=9)])
    async def test_set_expiry_refuses_to_revive(self, kstore: AsyncKeyStore,
                                                later: dt.timedelta | None) -> None:
        """Clearing or extending a set expiry is refused at the store, and
        nothing is written: an expired key is never revived (#10)."""
        record = make_record(expires_at=T0)
        await kstore.add(record)
        at = None if later is None else T0 + later
        with pytest.raises(KeyStateError, match="an expiry can only move earlier"):
            await kstore.set_expiry(record.id, at)
        assert await kstore.get(record.id) == record
        assert await kstore.list() == [record]

    @pytest.mark.anyio
    async def test_set_expiry_of_a_revoked_key_is_refused(self, kstore: AsyncKeyStore) -> None:
        """A revoked key's expiry is not changed, not even moved earlier."""
        record = make_record(expires_at=None)
        await kstore.add(record)
        revoked = await kstore.revoke(record.id, T0)
        with pytest.raises(KeyStateError, match=f"key {record.id} is revoked"):
            await kstore.set_expiry(record.id, T0 - dt.timedelta(days=1))
        assert await kstore.get(record.id) == revoked

    def test_earlier_expiry_while_expiring_is_kept(self, store: KeyStore,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
        """An earlier expiry committed between KeyManager.expire's read and
        its write is not undone: the write is refused at the store."""
        keys = KeyManager(store, hasher=Argon2Hasher("cheapest"))
        record = keys.create("svc", expires_at=T0 + dt.timedelta(hours=2)).record
        sooner = T0 + dt.timedelta(minutes=30)
        read = store.get

        def get_then_change(key_id: str) -> KeyRecord | None:
            found = read(key_id)
            monkeypatch.setattr(store, "get", read)
            store.set_expiry(key_id, sooner)  # another process, meanwhile
            return found

        monkeypatch.setattr(store, "get", get_then_change)
        with pytest.raises(KeyStateError, match="an expiry can only move earlier"):
            keys.expire(record.id, T0 + dt.timedelta(hours=1))
        assert store.get(record.id) == dataclasses.replace(record, expires_at=sooner)

    def test_revocation_while_expiring_is_kept(self, store: KeyStore,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
        """A key revoked between KeyManager.expire's read and its write keeps
        its record as revoked: the expiry is refused at the store."""
        keys = KeyManager(store, hasher=Argon2Hasher("cheapest"))
        record = keys.create("svc").record
        read = store.get

        def get_then_revoke(key_id: str) -> KeyRecord | None:
            found = read(key_id)
            monkeypatch.setattr(store, "get", read)
            store.revoke(key_id, T0)  # another process, meanwhile
            return found

        monkeypatch.setattr(store, "get", get_then_revoke)
        with pytest.raises(KeyStateError, match=f"key {record.id} is revoked"):
            keys.expire(record.id, T0 + dt.timedelta(hours=1))
        assert store.get(record.id) == dataclasses.replace(record, revoked_at=T0)

    @pytest.mark.anyio
    async def test_replace_hash_is_compare_and_swap(self, kstore: AsyncKeyStore) -> None:
        """replace_hash() succeeds only while the stored hash is still the old one."""
        record = make_record()
        await kstore.add(record)
        assert await kstore.replace_hash(record.id, record.hash, "$argon2id$new") is True
        assert await kstore.replace_hash(record.id, record.hash, "$argon2id$newer") is False
        got = await kstore.get(record.id)
        assert got is not None
        assert got.hash == "$argon2id$new"
        assert await kstore.replace_hash("nosuchkey123", "a", "b") is False

    @pytest.mark.anyio
    async def test_rotate_inserts_the_successor_and_sets_the_expiry(
            self, kstore: AsyncKeyStore) -> None:
        """rotate() shows the plan the old record and its successors, inserts the
        successor and sets the old key's expiry; it returns the old record."""
        old = make_record(expires_at=None)
        await kstore.add(old)
        seen: list[tuple[KeyRecord, list[str]]] = []
        ends = T0 + dt.timedelta(hours=1)
        updated = await kstore.rotate(old.id, successor_plan(ends, seen))
        assert updated == dataclasses.replace(old, expires_at=ends)
        assert seen[0] == (old, [])
        (successor,) = [r for r in await kstore.list() if r.id != old.id]
        assert successor.rotated_from == old.id
        assert await kstore.get(successor.id) == successor
        # A second rotation is shown the first successor.
        await kstore.rotate(old.id, successor_plan(ends, seen))
        assert seen[1][1] == [successor.id]

    @pytest.mark.anyio
    async def test_rotate_refused_writes_nothing(self, kstore: AsyncKeyStore) -> None:
        """A plan that raises, or a successor id that exists, changes nothing."""
        old = make_record(expires_at=None)
        await kstore.add(old)

        def refuse(record: KeyRecord, successors: Sequence[KeyRecord]
                   ) -> tuple[KeyRecord, dt.datetime | None]:
            raise KeyStateError("no")

        with pytest.raises(KeyStateError, match="no"):
            await kstore.rotate(old.id, refuse)
        with pytest.raises(KeyStateError):
            await kstore.rotate(old.id, successor_plan(T0, [], id=old.id))
        assert await kstore.list() == [old]
        seen: list[tuple[KeyRecord, list[str]]] = []
        assert await kstore.rotate("nosuchkey123", successor_plan(T0, seen)) is None
        assert seen == []

    @pytest.mark.anyio
    async def test_rotate_sees_a_revocation(self, kstore: AsyncKeyStore) -> None:
        """The plan is shown the record as committed, revocation included."""
        old = make_record()
        await kstore.add(old)
        await kstore.revoke(old.id, T0)
        seen: list[tuple[KeyRecord, list[str]]] = []
        await kstore.rotate(old.id, successor_plan(T0, seen))
        assert seen[0][0].revoked_at == T0

    def test_revocation_while_rotating_wins(self, store: KeyStore) -> None:
        """A key revoked while rotate() hashes the new secret gets no successor."""
        hasher = HookedHasher()
        keys = KeyManager(store, hasher=hasher)
        old = keys.create("svc").record
        hasher.during_hash = lambda: store.revoke(old.id, T0)
        with pytest.raises(KeyStateError, match=f"key {old.id} was revoked"):
            keys.rotate(old.id, grace=dt.timedelta(hours=24))
        assert store.list() == [dataclasses.replace(old, revoked_at=T0)]

    def test_rotation_while_rotating_is_refused(self, store: KeyStore) -> None:
        """Two rotations of one key at once: the second is refused, and the
        first one's grace period is kept."""
        hasher = HookedHasher()
        keys = KeyManager(store, hasher=hasher)
        old = keys.create("svc").record
        first: list[str] = []
        hasher.during_hash = lambda: first.append(
            keys.rotate(old.id, grace=dt.timedelta(hours=24)).record.id)
        with pytest.raises(KeyStateError) as refused:
            keys.rotate(old.id)
        assert f"its successor is {first[0]}" in str(refused.value)
        assert {r.id for r in store.list()} == {old.id, first[0]}
        kept = store.get(old.id)
        assert kept is not None
        assert kept.expires_at is not None
        assert kept.expires_at > dt.datetime.now(UTC) + dt.timedelta(hours=23)

    @pytest.mark.anyio
    async def test_delete(self, kstore: AsyncKeyStore) -> None:
        """delete() removes the record and says whether it existed."""
        record = make_record()
        await kstore.add(record)
        assert await kstore.delete(record.id) is True
        assert await kstore.get(record.id) is None
        assert await kstore.delete(record.id) is False

    @pytest.mark.anyio
    async def test_record_usage_adds_and_moves_forward(self, kstore: AsyncKeyStore) -> None:
        """Counts add up; last_used_at only moves forward; unknown ids are ignored."""
        a, b = make_record(), make_record()
        await kstore.add(a)
        await kstore.add(b)
        t1 = T0 + dt.timedelta(hours=1)
        t2 = T0 + dt.timedelta(hours=2)
        await kstore.record_usage({a.id: UsageDelta(3, t2), "nosuchkey123": UsageDelta(1, t2)})
        await kstore.record_usage({a.id: UsageDelta(2, t1), b.id: UsageDelta(1, t1)})
        await kstore.record_usage({})
        got_a, got_b = await kstore.get(a.id), await kstore.get(b.id)
        assert got_a is not None
        assert got_b is not None
        assert (got_a.usage_count, got_a.last_used_at) == (5, t2)
        assert (got_b.usage_count, got_b.last_used_at) == (1, t1)

    @pytest.mark.anyio
    async def test_concurrent_usage_adds_up_exactly(self, kstore: AsyncKeyStore) -> None:
        """Many concurrent flushes lose no count."""
        record = make_record()
        await kstore.add(record)

        async def flush(i: int) -> None:
            await kstore.record_usage({record.id: UsageDelta(i, T0 + dt.timedelta(seconds=i))})

        await asyncio.gather(*(flush(i) for i in range(1, 21)))
        got = await kstore.get(record.id)
        assert got is not None
        assert got.usage_count == sum(range(1, 21))
        assert got.last_used_at == T0 + dt.timedelta(seconds=20)

    # -- quotas (#13) ---------------------------------------------------------

    @pytest.mark.anyio
    async def test_consume_quota_counts_down_then_refuses(self, kstore: AsyncKeyStore) -> None:
        """Each consume takes one unit; at 0 it refuses and takes nothing;
        a quota that does not refill says no refill is due."""
        record = make_record(quota_remaining=3, quota_refill=None, quota_refilled_at=T0)
        await kstore.add(record)
        uses = [await kstore.consume_quota(record.id, T0) for _ in range(5)]
        assert uses == [QuotaUse(True, 2, None), QuotaUse(True, 1, None),
                        QuotaUse(True, 0, None), QuotaUse(False, 0, None),
                        QuotaUse(False, 0, None)]

    @pytest.mark.anyio
    async def test_consume_without_quota_admits(self, kstore: AsyncKeyStore) -> None:
        """A key without a quota is admitted (remaining None); an unknown id is None."""
        record = make_record()
        await kstore.add(record)
        assert await kstore.consume_quota(record.id, T0) == QuotaUse(True, None, None)
        assert await kstore.consume_quota("nosuchkey123", T0) is None

    @pytest.mark.anyio
    async def test_consume_quota_refills_at_the_period_boundary(
            self, kstore: AsyncKeyStore) -> None:
        """A refill is due PERIOD after quota_refilled_at: the quota is set back
        to COUNT (not added to) and quota_refilled_at advances by whole periods."""
        record = make_record(quota_remaining=1, quota_refill="5/day", quota_refilled_at=T0)
        await kstore.add(record)
        day = dt.timedelta(days=1)
        assert await kstore.consume_quota(record.id, T0 + dt.timedelta(hours=1)) == QuotaUse(
            True, 0, T0 + day)
        refused = await kstore.consume_quota(record.id, T0 + day - dt.timedelta(microseconds=1))
        assert refused == QuotaUse(False, 0, T0 + day)
        # Two days and three hours later: refilled once, to 5, on the boundary.
        later = T0 + 2 * day + dt.timedelta(hours=3)
        assert await kstore.consume_quota(record.id, later) == QuotaUse(True, 4, T0 + 3 * day)
        assert await kstore.consume_quota(record.id, later) == QuotaUse(True, 3, T0 + 3 * day)
        assert await kstore.consume_quota(record.id, T0 + 3 * day) == QuotaUse(
            True, 4, T0 + 4 * day)

    @pytest.mark.anyio
    async def test_update_of_the_quota_takes_effect(self, kstore: AsyncKeyStore) -> None:
        """A used-up quota set again by update() admits again; a cleared one admits all."""
        record = make_record(quota_remaining=0, quota_refill=None, quota_refilled_at=T0)
        await kstore.add(record)
        assert await kstore.consume_quota(record.id, T0) == QuotaUse(False, 0, None)
        await kstore.update(record.id, {"quota_remaining": 1, "quota_refill": None,
                                        "quota_refilled_at": T0})
        assert await kstore.consume_quota(record.id, T0) == QuotaUse(True, 0, None)
        assert await kstore.consume_quota(record.id, T0) == QuotaUse(False, 0, None)
        await kstore.update(record.id, {"quota_remaining": None, "quota_refill": None,
                                        "quota_refilled_at": None})
        assert await kstore.consume_quota(record.id, T0) == QuotaUse(True, None, None)

    @pytest.mark.anyio
    async def test_concurrent_consumes_admit_exactly_the_quota(
            self, kstore: AsyncKeyStore) -> None:
        """Concurrent consumes (worker threads for a blocking store) admit
        exactly the quota, never below zero."""
        record = make_record(quota_remaining=12, quota_refill=None, quota_refilled_at=T0)
        await kstore.add(record)
        uses = await asyncio.gather(*(kstore.consume_quota(record.id, T0) for _ in range(20)))
        admitted = [u for u in uses if u is not None and u.admitted]
        assert len(admitted) == 12
        assert sorted(u.remaining for u in admitted if u.remaining is not None) == list(range(12))
        assert await kstore.consume_quota(record.id, T0) == QuotaUse(False, 0, None)

    def test_consumes_from_threads_admit_exactly_the_quota(self, store: KeyStore) -> None:
        """Eight threads racing on one quota (and its refill) admit exactly it."""
        record = make_record(quota_remaining=30, quota_refill="40/hour", quota_refilled_at=T0)
        store.add(record)
        # Past the boundary: the first consumes race to refill (to 40) too.
        now = T0 + dt.timedelta(hours=1, minutes=1)

        def worker() -> list[bool]:
            try:
                return [bool((u := store.consume_quota(record.id, now)) and u.admitted)
                        for _ in range(8)]
            finally:
                self.thread_done()

        with ThreadPoolExecutor(8) as pool:
            results = [flag for got in pool.map(lambda _: worker(), range(8)) for flag in got]
        assert results.count(True) == 40
        assert store.consume_quota(record.id, now) == QuotaUse(
            False, 0, T0 + dt.timedelta(hours=2))

    def thread_done(self) -> None:
        """Called at the end of a test's worker thread (Django closes its
        connections there)."""

    @pytest.mark.anyio
    async def test_rotation_moves_the_quota_to_the_successor(
            self, kstore: AsyncKeyStore) -> None:
        """A successor carrying a quota takes the counter: the old key's is
        marked moved, and a consume with the old key spends the successor's."""
        old = make_record(quota_remaining=3, quota_refill="3/day", quota_refilled_at=T0)
        await kstore.add(old)
        assert await kstore.consume_quota(old.id, T0) == QuotaUse(True, 2, T0 + dt.timedelta(1))
        new: list[KeyRecord] = []

        def plan(current: KeyRecord, successors: Sequence[KeyRecord]
                 ) -> tuple[KeyRecord, dt.datetime | None]:
            new.append(make_record(rotated_from=current.id,
                                   quota_remaining=current.quota_remaining,
                                   quota_refill=current.quota_refill,
                                   quota_refilled_at=current.quota_refilled_at))
            return new[0], T0 + dt.timedelta(hours=1)

        rotated = await kstore.rotate(old.id, plan)
        assert rotated is not None
        assert (rotated.quota_remaining, rotated.quota_refilled_at) == (0, None)
        assert rotated.quota_refill == "3/day"
        day = T0 + dt.timedelta(days=1)
        assert await kstore.consume_quota(old.id, T0) == QuotaUse(True, 1, day)
        assert await kstore.consume_quota(new[0].id, T0) == QuotaUse(True, 0, day)
        assert await kstore.consume_quota(old.id, T0) == QuotaUse(False, 0, day)
        assert await kstore.consume_quota(new[0].id, T0) == QuotaUse(False, 0, day)

    @pytest.mark.anyio
    async def test_close_is_idempotent(self, kstore: AsyncKeyStore) -> None:
        """close() may be called twice."""
        await kstore.close()
        await kstore.close()

    # -- the audit log (#14) ------------------------------------------------------------

    @pytest.mark.anyio
    async def test_every_change_writes_its_audit_entry(self, kstore: AsyncKeyStore) -> None:
        """Each change writes one entry (a rotation two) with who, when, the
        event and the changed fields' old and new values; newest first."""
        record = make_record(expires_at=None, owner="acct_audit")
        await kstore.add(record, audit=by("alice@host", 1))
        await kstore.update(record.id, {"name": "renamed", "scopes": ("a:b",)},
                            audit=by("bob", 2))
        await kstore.update(record.id, {"disabled_at": T0}, audit=by("bob", 3))
        await kstore.update(record.id, {"disabled_at": None}, audit=by("bob", 4))
        ends = T0 + dt.timedelta(days=1)
        await kstore.set_expiry(record.id, ends, audit=by("carol", 5))
        seen: list[tuple[KeyRecord, list[str]]] = []
        await kstore.rotate(record.id, successor_plan(ends - dt.timedelta(hours=1), seen),
                            audit=by("carol", 6))
        await kstore.revoke(record.id, T0 + dt.timedelta(minutes=7), audit=by("dave", 7))
        await kstore.delete(record.id, audit=by("erin", 8))
        (successor,) = await kstore.list()
        entries = await kstore.audit_entries()
        assert _summary(entries) == [
            ("deleted", record.id, "erin"),
            ("revoked", record.id, "dave"),
            ("created", successor.id, "carol"),
            ("rotated", record.id, "carol"),
            ("expiry_set", record.id, "carol"),
            ("enabled", record.id, "bob"),
            ("disabled", record.id, "bob"),
            ("updated", record.id, "bob"),
            ("created", record.id, "alice@host"),
        ]
        ids = [e.id for e in entries]
        assert all(isinstance(i, int) for i in ids)
        assert len(set(ids)) == len(ids)
        by_event = {(e.event, e.key_id): e for e in entries}
        created = by_event["created", record.id]
        assert created.at == T0 + dt.timedelta(minutes=1)
        assert created.at.utcoffset() == dt.timedelta(0)
        assert created.old == {}
        assert created.new["name"] == "Production Server"
        assert created.new["scopes"] == ["charges:read", "charges:write"]
        assert created.new["metadata"] == {"team": "payments", "nested": {"a": [1, 2, 3]},
                                           "ok": True}
        assert "hash" not in created.new
        assert "usage_count" not in created.new
        updated = by_event["updated", record.id]
        assert updated.old == {"name": "Production Server",
                               "scopes": ["charges:read", "charges:write"]}
        assert updated.new == {"name": "renamed", "scopes": ["a:b"]}
        assert by_event["disabled", record.id].new == {"disabled_at": T0.isoformat()}
        assert by_event["enabled", record.id].old == {"disabled_at": T0.isoformat()}
        assert by_event["expiry_set", record.id].old == {"expires_at": None}
        assert by_event["expiry_set", record.id].new == {"expires_at": ends.isoformat()}
        rotated = by_event["rotated", record.id]
        assert rotated.related_key_id == successor.id
        assert rotated.old == {"expires_at": ends.isoformat()}
        assert rotated.new == {"expires_at": (ends - dt.timedelta(hours=1)).isoformat()}
        assert by_event["created", successor.id].related_key_id == record.id
        revoked = by_event["revoked", record.id]
        assert revoked.new == {"revoked_at": (T0 + dt.timedelta(minutes=7)).isoformat()}
        deleted = by_event["deleted", record.id]
        assert deleted.new == {}
        assert deleted.old["name"] == "renamed"

    @pytest.mark.anyio
    async def test_audit_queries(self, kstore: AsyncKeyStore) -> None:
        """By key, since (inclusive), until (exclusive) and limit, newest first;
        a deleted key's entries are kept."""
        a, b = make_record(), make_record()
        await kstore.add(a, audit=by("x", 1))
        await kstore.add(b, audit=by("x", 2))
        await kstore.revoke(a.id, T0, audit=by("y", 3))
        await kstore.delete(b.id, audit=by("y", 4))
        assert _summary(await kstore.audit_entries(key_id=a.id)) == [
            ("revoked", a.id, "y"), ("created", a.id, "x")]
        assert _summary(await kstore.audit_entries(key_id=b.id)) == [
            ("deleted", b.id, "y"), ("created", b.id, "x")]
        since = await kstore.audit_entries(since=T0 + dt.timedelta(minutes=2))
        assert [e.event for e in since] == ["deleted", "revoked", "created"]
        until = await kstore.audit_entries(until=T0 + dt.timedelta(minutes=2))
        assert _summary(until) == [("created", a.id, "x")]
        window = await kstore.audit_entries(since=T0 + dt.timedelta(minutes=2),
                                            until=T0 + dt.timedelta(minutes=4))
        assert [e.event for e in window] == ["revoked", "created"]
        assert [e.event for e in await kstore.audit_entries(limit=1)] == ["deleted"]
        assert await kstore.audit_entries(key_id="nosuchkey123") == []

    @pytest.mark.anyio
    async def test_no_change_no_entry(self, kstore: AsyncKeyStore) -> None:
        """Calls that change nothing write nothing: an unknown id, a second
        revocation, an update of a revoked key, the same expiry again, a hash
        upgrade, usage counters, a quota's unit taken."""
        record = make_record(expires_at=None)
        await kstore.add(record, audit=by("x", 1))
        assert await kstore.revoke("nosuchkey123", T0, audit=by("x", 2)) is None
        assert await kstore.update("nosuchkey123", {"name": "n"}, audit=by("x", 2)) is None
        assert await kstore.set_expiry("nosuchkey123", T0, audit=by("x", 2)) is None
        assert await kstore.delete("nosuchkey123", audit=by("x", 2)) is False
        seen: list[tuple[KeyRecord, list[str]]] = []
        assert await kstore.rotate("nosuchkey123", successor_plan(T0, seen),
                                   audit=by("x", 2)) is None
        await kstore.set_expiry(record.id, None, audit=by("x", 3))
        await kstore.replace_hash(record.id, record.hash, "$argon2id$new")
        await kstore.record_usage({record.id: UsageDelta(3, T0)})
        metered = make_record(quota_remaining=5, quota_refill="5/day", quota_refilled_at=T0)
        await kstore.add(metered, audit=by("x", 3))
        used = await kstore.consume_quota(metered.id, T0 + dt.timedelta(minutes=1))
        assert used is not None
        await kstore.delete(metered.id, audit=by("x", 3))
        await kstore.revoke(record.id, T0, audit=by("x", 4))
        await kstore.revoke(record.id, T0 + dt.timedelta(hours=1), audit=by("x", 5))
        await kstore.update(record.id, {"name": "revived?"}, audit=by("x", 6))
        assert [e.event for e in await kstore.audit_entries(key_id=record.id)] == [
            "revoked", "created"]
        # A quota's countdown is usage, not a change: its key has only what was done to it.
        assert [e.event for e in await kstore.audit_entries(key_id=metered.id)] == [
            "deleted", "created"]

    @pytest.mark.anyio
    async def test_refused_change_writes_no_entry(self, kstore: AsyncKeyStore) -> None:
        """A refused expiry, a refused rotation and a duplicate id write no entry."""
        record = make_record(expires_at=T0)
        await kstore.add(record, audit=by("x", 1))
        with pytest.raises(KeyStateError):
            await kstore.set_expiry(record.id, None, audit=by("x", 2))
        with pytest.raises(KeyStateError):
            await kstore.set_expiry(record.id, T0 + dt.timedelta(days=1), audit=by("x", 2))

        def refuse(old: KeyRecord, successors: Sequence[KeyRecord]
                   ) -> tuple[KeyRecord, dt.datetime | None]:
            raise KeyStateError("no")

        with pytest.raises(KeyStateError):
            await kstore.rotate(record.id, refuse, audit=by("x", 3))
        with pytest.raises(KeyStateError):
            await kstore.add(dataclasses.replace(record, name="twin"), audit=by("x", 4))
        assert _summary(await kstore.audit_entries()) == [("created", record.id, "x")]

    @pytest.mark.anyio
    async def test_failure_mid_transaction_undoes_the_change(self, kstore: AsyncKeyStore
                                                            ) -> None:
        """An exception after the change was written and before the entry
        was: neither is kept (one transaction)."""
        record = make_record(expires_at=None)
        await kstore.add(record, audit=by("x", 1))
        fresh = make_record()
        with pytest.raises(RuntimeError, match="injected"):
            await kstore.add(fresh, audit=FailingAudit())
        with pytest.raises(RuntimeError, match="injected"):
            await kstore.revoke(record.id, T0, audit=FailingAudit())
        with pytest.raises(RuntimeError, match="injected"):
            await kstore.update(record.id, {"name": "renamed"}, audit=FailingAudit())
        with pytest.raises(RuntimeError, match="injected"):
            await kstore.set_expiry(record.id, T0, audit=FailingAudit())
        with pytest.raises(RuntimeError, match="injected"):
            await kstore.rotate(record.id, successor_plan(T0, []), audit=FailingAudit())
        with pytest.raises(RuntimeError, match="injected"):
            await kstore.delete(record.id, audit=FailingAudit())
        assert await kstore.get(fresh.id) is None
        assert await kstore.get(record.id) == record
        assert await kstore.list() == [record]
        assert _summary(await kstore.audit_entries()) == [("created", record.id, "x")]

    @pytest.mark.anyio
    async def test_store_calls_without_an_event_are_audited(self, kstore: AsyncKeyStore
                                                           ) -> None:
        """A change made without an AuditEvent is still audited, by no one,
        at the time it was written."""
        record = make_record()
        before = dt.datetime.now(UTC)
        await kstore.add(record)
        await kstore.revoke(record.id, T0)
        entries = await kstore.audit_entries(key_id=record.id)
        assert [(e.event, e.actor) for e in entries] == [("revoked", None), ("created", None)]
        assert all(e.at >= before - dt.timedelta(seconds=1) for e in entries)

    @pytest.mark.anyio
    async def test_scanner_event_names_the_revocation(self, kstore: AsyncKeyStore) -> None:
        """An event may name the change itself (the leak scanner's revocation)."""
        record = make_record()
        await kstore.add(record, audit=by("x", 1))
        at = T0 + dt.timedelta(minutes=2)
        await kstore.revoke(record.id, T0, audit=AuditEvent(actor="scan", at=at,
                                                            event="scanner_revoked"))
        (entry, _) = await kstore.audit_entries(key_id=record.id)
        assert (entry.event, entry.actor) == ("scanner_revoked", "scan")
        assert entry.new == {"revoked_at": T0.isoformat()}

    def test_no_secret_or_hash_in_any_audit_entry(self, store: KeyStore) -> None:
        """Through KeyManager, every kind of change: neither a key, its secret,
        its hash nor an Authorization value is in any entry."""
        keys = KeyManager(store, hasher=Argon2Hasher("cheapest"), actor="alice@host")
        issued = keys.create("svc", scopes=["a:b"], allowed_ips=["10.0.0.0/8"],
                             metadata={"team": "x"})
        rotated = keys.rotate(issued.record.id, grace=dt.timedelta(hours=1))
        keys.update(rotated.record.id, name="renamed", scopes=["c:d"], allowed_ips=[])
        keys.disable(rotated.record.id)
        keys.enable(rotated.record.id)
        keys.expire(rotated.record.id, dt.datetime.now(UTC) + dt.timedelta(days=1))
        keys.revoke(issued.record.id)
        keys.delete(issued.record.id)
        secrets = []
        for plain in (issued.key, rotated.key):
            secrets += [plain, keys.format.parse(plain).secret, f"Bearer {plain}"]
        hashes = [issued.record.hash, rotated.record.hash]
        entries = keys.audit()
        assert [e.event for e in entries] == [
            "deleted", "revoked", "expiry_set", "enabled", "disabled", "updated", "created",
            "rotated", "created"]
        assert {e.actor for e in entries} == {"alice@host"}
        dumped = repr(entries) + "".join(str(e.to_dict()) for e in entries)
        for value in [*secrets, *hashes]:
            assert value not in dumped
        assert "$argon2" not in dumped
