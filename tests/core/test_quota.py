"""Usage quotas (#13) in the core: the refill rule, and the authenticator
charging a key's quota last, on every path, off the event loop."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import threading
from pathlib import Path

import pytest

from aqnt_auth import (
    Argon2Hasher,
    Authenticator,
    ConfigurationError,
    IPNotAllowed,
    KeyManager,
    KeyRecord,
    KeyStateError,
    MemoryKeyStore,
    PermissionDenied,
    QuotaExceeded,
    QuotaUse,
    SQLiteKeyStore,
    StoreUnavailable,
)
from aqnt_auth._quota import parse_refill, quota_view
from tests import bodies

from ._support import BlockingInstrumentedStore, CountingHasher, InstrumentedStore

UTC = dt.timezone.utc
T0 = dt.datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


class Clock:
    """One injected wall clock, for the manager (datetimes) and the
    authenticator (seconds)."""

    def __init__(self, at: dt.datetime = T0) -> None:
        self.at = at

    def now(self) -> dt.datetime:
        return self.at

    def seconds(self) -> float:
        return self.at.timestamp()


class CountingStore(InstrumentedStore):
    """The instrumented memory store, also counting quota charges and their threads."""

    def __init__(self) -> None:
        super().__init__()
        self.charges = 0
        self.charge_threads: set[int] = set()

    def consume_quota(self, key_id: str, now: dt.datetime) -> QuotaUse | None:
        self.charges += 1
        self.charge_threads.add(threading.get_ident())
        return super().consume_quota(key_id, now)


class BlockingCountingStore(CountingStore):
    blocking = True


def bearer(key: str) -> str:
    return f"Bearer {key}"


class TestRefill:
    @pytest.mark.parametrize(("text", "amount", "period", "canonical"), [
        ("1000/day", 1000, dt.timedelta(days=1), "1000/day"),
        (" 50000 / Months ", 50000, dt.timedelta(days=30), "50000/month"),
        ("5/minute", 5, dt.timedelta(minutes=1), "5/minute"),
        ("7/weeks", 7, dt.timedelta(days=7), "7/week"),
        ("1/hour", 1, dt.timedelta(hours=1), "1/hour"),
    ])
    def test_parses_once_into_canonical_text(self, text: str, amount: int,
                                             period: dt.timedelta, canonical: str) -> None:
        """COUNT/PERIOD, spaces, case and a plural tolerated; stored canonically."""
        refill = parse_refill(text)
        assert (refill.amount, refill.period, refill.text) == (amount, period, canonical)

    @pytest.mark.parametrize("text", ["", "day", "1000", "1000/fortnight", "0/day", "-5/day",
                                      "1.5/day", "1000/day/2", "1000 per day"])
    def test_refuses_anything_else(self, text: str) -> None:
        with pytest.raises(ConfigurationError, match="quota refill"):
            parse_refill(text)

    def test_view_counts_a_due_refill_in(self) -> None:
        """What management shows: the units the next request finds."""
        view = quota_view(0, "10/hour", T0, T0 + dt.timedelta(hours=2, minutes=5))
        assert view == {"remaining": 10, "refill": "10/hour",
                        "refills_at": (T0 + dt.timedelta(hours=3)).isoformat(),
                        "moved_to_successor": False}
        assert quota_view(3, None, T0, T0)["remaining"] == 3  # type: ignore[index]
        assert quota_view(0, "10/hour", None, T0)["moved_to_successor"] is True  # type: ignore[index]
        assert quota_view(None, None, None, T0) is None


class TestManager:
    def test_create_checks_and_stores_the_quota(self, keys: KeyManager) -> None:
        record = keys.create("metered", quota=10, quota_refill="1000 / Day").record
        assert (record.quota_remaining, record.quota_refill) == (10, "1000/day")
        assert record.quota_refilled_at is not None
        assert record.metered
        assert record.policed
        assert keys.create("refill only", quota_refill="5/hour").record.quota_remaining == 5
        plain = keys.create("plain").record
        assert not plain.metered
        assert not plain.policed
        for bad in ({"quota": -1}, {"quota": True}, {"quota": "5"},
                    {"quota_refill": "5/fortnight"}):
            with pytest.raises(ConfigurationError):
                keys.create("bad", **bad)

    def test_update_sets_refills_and_clears(self, keys: KeyManager) -> None:
        key_id = keys.create("metered", quota=10).record.id
        record = keys.update(key_id, quota_refill="20/day")
        # A new refill alone keeps the units left.
        assert (record.quota_remaining, record.quota_refill) == (10, "20/day")
        record = keys.update(key_id, quota=3)
        assert (record.quota_remaining, record.quota_refill) == (3, "20/day")
        record = keys.update(key_id, quota_refill="")
        assert (record.quota_remaining, record.quota_refill) == (3, None)
        with pytest.raises(ConfigurationError, match="not both"):
            keys.update(key_id, quota=1, clear_quota=True)
        record = keys.update(key_id, clear_quota=True)
        assert (record.quota_remaining, record.quota_refill, record.quota_refilled_at) == (
            None, None, None)
        assert not record.policed


class TestAuthenticator:
    def test_sync_counts_down_then_refuses(self, keys: KeyManager,
                                           auth: Authenticator) -> None:
        """Exactly the quota is admitted; then 429 quota_exceeded, exact body,
        no Retry-After without a refill."""
        issued = keys.create("metered", quota=2)
        for _ in range(2):
            assert auth.authenticate(bearer(issued.key)).id == issued.record.id
        with pytest.raises(QuotaExceeded) as refused:
            auth.authenticate(bearer(issued.key))
        answer = auth.render_error(refused.value)
        assert (answer.status, answer.body) == (429, bodies.QUOTA_EXCEEDED)
        assert dict(answer.headers) == {"Content-Type": "application/json"}
        assert auth.pending_usage() == {issued.record.id: 2}  # refusals are not usage

    def test_keys_without_a_quota_never_charge(self, hasher: CountingHasher) -> None:
        """The store's consume_quota is never called for a key without a quota."""
        store = CountingStore()
        issued = KeyManager(store, hasher=hasher).create("plain")
        with Authenticator(store, hashers=[hasher]) as auth:
            for _ in range(3):
                auth.authenticate(bearer(issued.key))
            assert asyncio.run(auth.authenticate_async(bearer(issued.key))).id == issued.record.id
            assert auth.authenticate_nowait(bearer(issued.key)) is not None
        assert store.charges == 0

    def test_charged_last(self, hasher: CountingHasher) -> None:
        """A request refused for its restrictions or its address takes no unit."""
        store = CountingStore()
        keys = KeyManager(store, hasher=hasher)
        read_only = keys.create("ro", quota=5, read_only=True)
        local = keys.create("ip", quota=5, allowed_ips=["10.0.0.0/8"])
        with Authenticator(store, hashers=[hasher]) as auth:
            with pytest.raises(PermissionDenied):
                auth.authenticate(bearer(read_only.key), method="POST", path="/")
            with pytest.raises(IPNotAllowed):
                auth.authenticate(bearer(local.key), client="192.0.2.1")
            assert store.charges == 0
            auth.authenticate(bearer(local.key), client="10.1.2.3")
        assert store.charges == 1
        assert keys.get(local.record.id).quota_remaining == 4
        assert keys.get(read_only.record.id).quota_remaining == 5

    def test_async_charges_off_the_loop_and_nowait_defers(self, hasher: CountingHasher
                                                          ) -> None:
        """For a blocking store the nowait path answers None for a metered key
        and the async driver charges the quota in a worker thread."""
        store = BlockingCountingStore()
        issued = KeyManager(store, hasher=hasher).create("metered", quota=2)

        async def run(auth: Authenticator) -> tuple[list[object], int]:
            loop_thread = threading.get_ident()
            answers: list[object] = []
            for _ in range(3):
                answers.append(auth.authenticate_nowait(bearer(issued.key)))
                try:
                    answers.append((await auth.authenticate_async(bearer(issued.key))).id)
                except QuotaExceeded as exc:
                    answers.append(exc.code)
            return answers, loop_thread

        with Authenticator(store, hashers=[hasher]) as auth:
            answers, loop_thread = asyncio.run(run(auth))
        assert answers == [None, issued.record.id, None, issued.record.id, None,
                           "quota_exceeded"]
        assert store.charges == 3
        assert loop_thread not in store.charge_threads

    def test_async_on_a_store_without_io_charges_inline(self, hasher: CountingHasher) -> None:
        """A memory store is charged on the loop (no thread hop); nowait still defers."""
        store = CountingStore()
        issued = KeyManager(store, hasher=hasher).create("metered", quota=1)

        async def run(auth: Authenticator) -> tuple[object, object, int]:
            first = auth.authenticate_nowait(bearer(issued.key))
            principal = await auth.authenticate_async(bearer(issued.key))
            with pytest.raises(QuotaExceeded):
                await auth.authenticate_async(bearer(issued.key))
            return first, principal.id, threading.get_ident()

        with Authenticator(store, hashers=[hasher]) as auth:
            first, got, loop_thread = asyncio.run(run(auth))
        assert (first, got) == (None, issued.record.id)
        assert store.charge_threads == {loop_thread}

    def test_refill_with_an_injected_clock(self, hasher: CountingHasher) -> None:
        """Used up: Retry-After counts down to the refill; at the boundary the
        quota is back to COUNT, whatever was left."""
        clock = Clock()
        store = MemoryKeyStore()
        issued = KeyManager(store, hasher=hasher, clock=clock.now).create(
            "metered", quota=1, quota_refill="3/hour")
        with Authenticator(store, hashers=[hasher], clock=clock.seconds) as auth:
            auth.authenticate(bearer(issued.key))
            clock.at = T0 + dt.timedelta(minutes=45)
            with pytest.raises(QuotaExceeded) as refused:
                auth.authenticate(bearer(issued.key))
            assert refused.value.retry_after == 15 * 60
            assert ("Retry-After", "900") in auth.render_error(refused.value).headers
            clock.at = T0 + dt.timedelta(hours=1)
            for _ in range(3):
                auth.authenticate(bearer(issued.key))
            with pytest.raises(QuotaExceeded) as refused:
                auth.authenticate(bearer(issued.key))
            assert refused.value.retry_after == 3600

    def test_a_stale_cached_count_never_admits(self, tmp_path: Path) -> None:
        """The cache says units are left, the store (used up by another
        process) says none: refused.  A new quota set through the manager
        applies to the next request."""
        path = tmp_path / "keys.db"
        hasher = Argon2Hasher("cheapest")
        # A lease of an hour: this store never rereads a cached record.
        store = SQLiteKeyStore(path, lease=3600)
        keys = KeyManager(store, hasher=hasher)
        issued = keys.create("metered", quota=3)
        with Authenticator(store, hashers=[hasher]) as auth:
            auth.authenticate(bearer(issued.key))
            other = SQLiteKeyStore(path)  # another process, using the key up
            assert other.consume_quota(issued.record.id, dt.datetime.now(UTC)) == QuotaUse(
                True, 1, None)
            assert other.consume_quota(issued.record.id, dt.datetime.now(UTC)) == QuotaUse(
                True, 0, None)
            other.close()
            cached = store.peek(issued.record.id)
            assert cached is not None
            assert cached.quota_remaining == 3
            with pytest.raises(QuotaExceeded):
                auth.authenticate(bearer(issued.key))
            keys.update(issued.record.id, quota=1)
            auth.authenticate(bearer(issued.key))
            with pytest.raises(QuotaExceeded):
                auth.authenticate(bearer(issued.key))
            keys.update(issued.record.id, clear_quota=True)
            for _ in range(3):
                auth.authenticate(bearer(issued.key))

    def test_rotation_shares_one_quota(self, keys: KeyManager, auth: Authenticator) -> None:
        """During the grace period the old and the new key spend one counter;
        the old key's quota cannot be changed, the new one's can."""
        old = keys.create("metered", quota=3, quota_refill="3/day")
        auth.authenticate(bearer(old.key))
        new = keys.rotate(old.record.id, grace=dt.timedelta(hours=1))
        assert new.record.quota_remaining == 2
        auth.authenticate(bearer(old.key))
        auth.authenticate(bearer(new.key))
        for key in (old.key, new.key):
            with pytest.raises(QuotaExceeded):
                auth.authenticate(bearer(key))
        with pytest.raises(KeyStateError, match="quota moved to its successor"):
            keys.update(old.record.id, quota=10)
        keys.update(new.record.id, quota=1)
        auth.authenticate(bearer(old.key))
        with pytest.raises(QuotaExceeded):
            auth.authenticate(bearer(new.key))

    def test_rotating_again_with_force(self, keys: KeyManager, auth: Authenticator) -> None:
        """A forced second rotation is refused while the first successor, live,
        holds the shared counter (two live successors cannot share it); once
        that successor is gone (revoked or deleted) the key rotates again, and
        the new key gets the count left, or none if the holder was deleted
        (never a fresh quota, never marked moved)."""
        old = keys.create("metered", quota=3)
        first = keys.rotate(old.record.id, grace=dt.timedelta(hours=1))
        auth.authenticate(bearer(first.key))
        with pytest.raises(KeyStateError, match=f"successor {first.record.id}, which holds"):
            keys.rotate(old.record.id, grace=dt.timedelta(hours=1), force=True)
        keys.revoke(first.record.id)
        second = keys.rotate(old.record.id, grace=dt.timedelta(hours=1), force=True)
        assert second.record.quota_remaining == 2
        keys.revoke(second.record.id)
        keys.delete(second.record.id)
        keys.delete(first.record.id)
        third = keys.rotate(old.record.id, grace=dt.timedelta(hours=1), force=True)
        assert third.record.quota_remaining == 0
        assert third.record.quota_refilled_at is not None
        with pytest.raises(QuotaExceeded):
            auth.authenticate(bearer(third.key))
        keys.update(third.record.id, quota=1)
        auth.authenticate(bearer(old.key))  # the old key spends the new one's
        with pytest.raises(QuotaExceeded):
            auth.authenticate(bearer(third.key))

    def test_a_store_without_consume_quota_fails_closed(self, hasher: CountingHasher) -> None:
        """A third-party store that cannot count quotas: 503, never a free pass."""

        class OldStore(BlockingInstrumentedStore):
            consume_quota = None  # type: ignore[assignment]

        store = OldStore()
        record = KeyManager(MemoryKeyStore(), hasher=hasher).create("metered", quota=5)
        store.add(record.record)
        auth = Authenticator(store, hashers=[hasher])  # type: ignore[arg-type]
        with auth, pytest.raises(StoreUnavailable):
            auth.authenticate(bearer(record.key))

    def test_record_flags(self) -> None:
        base = KeyRecord(id="k" * 12, name="n", mode="live", hash="h", hint="x")
        assert (base.metered, base.policed) == (False, False)
        metered = dataclasses.replace(base, quota_remaining=0)
        assert (metered.metered, metered.policed) == (True, True)
        assert "metered" not in metered.public_dict()
