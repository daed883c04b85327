"""KeyManager: issuing, listing, revoking, rotating."""

from __future__ import annotations

import dataclasses
import datetime as dt

import pytest

from aqnt_auth import (
    Argon2Hasher,
    Authenticator,
    ConfigurationError,
    KeyManager,
    KeyNotFound,
    KeyStateError,
    MemoryKeyStore,
    NotAKeyId,
    RevokedAPIKey,
    budget_id,
)

UTC = dt.timezone.utc


class TestCreate:
    def test_plaintext_is_never_stored(self, manager: KeyManager,
                                       memory_store: MemoryKeyStore) -> None:
        """The store holds the hash and a hint; neither the key nor the secret."""
        issued = manager.create("Production Server")
        record = memory_store.get(issued.record.id)
        assert record is not None
        text = repr(dataclasses.asdict(record))
        assert issued.key not in text
        assert issued.key[20:52] not in text
        assert record.hint == issued.key[:8] + "..." + issued.key[-4:]
        assert issued.key not in repr(issued)

    def test_fields(self, manager: KeyManager) -> None:
        issued = manager.create(
            "  Billing  ", mode="test", scopes=["a:b", "a:b", "c"], read_only=True,
            allowed_paths=["/v1/charges/"], expires_in=dt.timedelta(days=1), owner="acct_9",
            metadata={"tier": 2},
        )
        r = issued.record
        assert (r.name, r.mode, r.scopes, r.read_only) == ("Billing", "test", ("a:b", "c"), True)
        assert r.allowed_paths == ("/v1/charges",)
        assert r.owner == "acct_9"
        assert r.metadata == {"tier": 2}
        assert r.expires_at is not None
        assert r.status() == "expiring"

    @pytest.mark.parametrize(
        "kwargs",
        [
            {"name": ""},
            {"name": "   "},
            {"name": "x" * 201},
            {"name": "a\nb"},
            {"name": "ok", "mode": "prod"},
            {"name": "ok", "scopes": ["has space"]},
            {"name": "ok", "scopes": ['quo"te']},
            {"name": "ok", "allowed_paths": ["v1"]},
            {"name": "ok", "allowed_paths": ["/v1/../admin"]},
            {"name": "ok", "metadata": {"x": object()}},
            {"name": "ok", "expires_in": dt.timedelta(0)},
            {"name": "ok", "expires_at": dt.datetime(2030, 1, 1)},
        ],
    )
    def test_bad_input(self, manager: KeyManager, kwargs: dict[str, object]) -> None:
        """Bad options are refused with a ConfigurationError and store nothing."""
        with pytest.raises(ConfigurationError):
            manager.create(**kwargs)  # type: ignore[arg-type]
        assert manager.list() == []


class TestManage:
    def test_get_and_list(self, manager: KeyManager) -> None:
        a = manager.create("a")
        b = manager.create("b")
        assert manager.get(a.record.id) == a.record
        assert [r.id for r in manager.list()] == [a.record.id, b.record.id]
        with pytest.raises(KeyNotFound):
            manager.get("nosuchkey123")

    def test_list_active_only(self, manager: KeyManager) -> None:
        a = manager.create("a")
        b = manager.create("b")
        manager.revoke(a.record.id)
        assert [r.id for r in manager.list(include_inactive=False)] == [b.record.id]
        assert len(manager.list()) == 2

    def test_revoke_is_final(self, manager: KeyManager) -> None:
        issued = manager.create("a")
        first = manager.revoke(issued.record.id)
        assert first.status() == "revoked"
        again = manager.revoke(issued.record.id)
        assert again.revoked_at == first.revoked_at
        with pytest.raises(KeyStateError):
            manager.rotate(issued.record.id)
        with pytest.raises(KeyStateError):
            manager.expire(issued.record.id, dt.datetime(2099, 1, 1, tzinfo=UTC))
        with pytest.raises(KeyNotFound):
            manager.revoke("nosuchkey123")

    def test_expiry_only_moves_earlier(self, manager: KeyManager) -> None:
        """An expiry once set only moves earlier: extending it would revive an
        expired key or a rotated-out predecessor (#10)."""
        soon = dt.datetime.now(UTC) + dt.timedelta(hours=1)
        issued = manager.create("a", expires_at=soon)
        assert not issued.record.allows_expiry(None)
        with pytest.raises(KeyStateError, match="an expiry can only move earlier"):
            manager.expire(issued.record.id, soon + dt.timedelta(seconds=1))
        assert manager.get(issued.record.id).expires_at == soon
        earlier = soon - dt.timedelta(minutes=30)
        assert manager.expire(issued.record.id, earlier).expires_at == earlier
        # A key without an expiry may get any; a rotated-out predecessor keeps its end.
        free = manager.create("b")
        assert free.record.allows_expiry(None)
        manager.rotate(free.record.id, grace=dt.timedelta(hours=1))
        with pytest.raises(KeyStateError):
            manager.expire(free.record.id, dt.datetime(2099, 1, 1, tzinfo=UTC))

    def test_expiry_refusal_says_why(self, manager: KeyManager) -> None:
        """A refused expiry names the key, its expiry and the change refused."""
        soon = dt.datetime(2030, 1, 1, tzinfo=UTC)
        record = manager.create("a", expires_at=soon).record
        assert record.expiry_refusal(None) == (
            f"key {record.id} expires at 2030-01-01T00:00:00+00:00: clearing it is refused, "
            "an expiry can only move earlier (rotate or create a key instead)")
        with pytest.raises(KeyStateError, match="moving it to 2030-01-02T00:00:00"):
            manager.expire(record.id, soon + dt.timedelta(days=1))
        manager.revoke(record.id)
        with pytest.raises(KeyStateError, match=f"^key {record.id} is revoked: a revoked key "
                           "cannot be changed$"):
            manager.expire(record.id, soon - dt.timedelta(days=1))

    def test_rotate_with_grace(self, manager: KeyManager,
                               memory_store: MemoryKeyStore) -> None:
        """The new key copies everything; the old one works until the grace ends."""
        old = manager.create("svc", scopes=["x"], read_only=True, allowed_paths=["/v1"],
                             owner="o", metadata={"k": "v"}, mode="test")
        new = manager.rotate(old.record.id, grace=dt.timedelta(hours=24))
        n = new.record
        assert n.id != old.record.id
        assert (n.name, n.mode, n.scopes, n.read_only, n.allowed_paths, n.owner, n.metadata) == (
            "svc", "test", ("x",), True, ("/v1",), "o", {"k": "v"})
        assert n.rotated_from == old.record.id
        old_now = manager.get(old.record.id)
        assert old_now.expires_at is not None
        assert old_now.expires_at - n.created_at == dt.timedelta(hours=24)
        hasher = manager.hasher
        with Authenticator(memory_store, hashers=[hasher]) as auth:
            assert auth.authenticate(f"Bearer {old.key}").id == old.record.id
            assert auth.authenticate(f"Bearer {new.key}").id == n.id

    def test_rotate_without_grace_ends_the_old_key(self, manager: KeyManager,
                                                   memory_store: MemoryKeyStore) -> None:
        old = manager.create("svc")
        manager.rotate(old.record.id)
        with Authenticator(memory_store, hashers=[manager.hasher]) as auth, \
                pytest.raises(RevokedAPIKey):
            auth.authenticate(f"Bearer {old.key}")

    def test_rotate_never_extends_an_expiry(self, manager: KeyManager) -> None:
        old = manager.create("svc", expires_in=dt.timedelta(hours=1))
        manager.rotate(old.record.id, grace=dt.timedelta(days=7))
        assert manager.get(old.record.id).expires_at == old.record.expires_at

    def test_negative_grace(self, manager: KeyManager) -> None:
        old = manager.create("svc")
        with pytest.raises(ConfigurationError):
            manager.rotate(old.record.id, grace=dt.timedelta(seconds=-1))

    def test_delete(self, manager: KeyManager) -> None:
        issued = manager.create("a")
        manager.delete(issued.record.id)
        with pytest.raises(KeyNotFound):
            manager.delete(issued.record.id)

    def test_status_and_rotation_age(self, manager: KeyManager) -> None:
        issued = manager.create("a")
        r = issued.record
        later = r.created_at + dt.timedelta(days=91)
        assert r.due_for_rotation(later) is True
        assert r.due_for_rotation(r.created_at + dt.timedelta(days=89)) is False
        expired = dataclasses.replace(r, expires_at=r.created_at + dt.timedelta(seconds=1))
        assert expired.status(later) == "expired"
        assert expired.due_for_rotation(later) is False


class Clock:
    """A clock a test moves by hand."""

    def __init__(self) -> None:
        self.now = dt.datetime(2026, 3, 1, 12, 0, tzinfo=UTC)

    def __call__(self) -> dt.datetime:
        return self.now


class TestRotationLifecycle:
    @pytest.fixture
    def clock(self) -> Clock:
        return Clock()

    @pytest.fixture
    def keys(self, memory_store: MemoryKeyStore, cheap_hasher: Argon2Hasher,
             clock: Clock) -> KeyManager:
        return KeyManager(memory_store, hasher=cheap_hasher, clock=clock)

    def test_successor_keeps_the_remaining_lifetime(self, keys: KeyManager,
                                                    clock: Clock) -> None:
        """A key that expires in 7 days gets a successor that expires then too."""
        old = keys.create("svc", expires_in=dt.timedelta(days=7)).record
        clock.now += dt.timedelta(days=2)
        new = keys.rotate(old.id, grace=dt.timedelta(hours=1)).record
        assert new.expires_at == old.expires_at
        assert keys.get(old.id).expires_at == clock.now + dt.timedelta(hours=1)

    def test_caller_sets_another_expiry(self, keys: KeyManager, clock: Clock) -> None:
        old = keys.create("svc", expires_in=dt.timedelta(days=7)).record
        new = keys.rotate(old.id, expires_in=dt.timedelta(days=30)).record
        assert new.expires_at == clock.now + dt.timedelta(days=30)
        later = clock.now + dt.timedelta(days=90)
        newer = keys.rotate(new.id, expires_at=later).record
        assert newer.expires_at == later
        for bad in ({"expires_in": dt.timedelta(0)},
                    {"expires_at": clock.now - dt.timedelta(seconds=1)},
                    {"expires_at": dt.datetime(2030, 1, 1)},
                    {"expires_at": later, "expires_in": dt.timedelta(days=1)}):
            with pytest.raises(ConfigurationError):
                keys.rotate(newer.id, **bad)
        assert keys.get(newer.id).expires_at == later

    def test_permanent_key_gets_a_permanent_successor(self, keys: KeyManager) -> None:
        old = keys.create("svc").record
        assert keys.rotate(old.id, grace=dt.timedelta(hours=1)).record.expires_at is None

    def test_expired_key_cannot_be_rotated(self, keys: KeyManager, clock: Clock) -> None:
        """An expired key is not rotated into a working one."""
        old = keys.create("svc", expires_in=dt.timedelta(hours=1)).record
        clock.now += dt.timedelta(hours=1)
        with pytest.raises(KeyStateError, match=f"key {old.id} expired at 2026-03-01T13:00:00"):
            keys.rotate(old.id)
        assert [r.id for r in keys.list()] == [old.id]

    def test_revoked_key_cannot_be_rotated(self, keys: KeyManager) -> None:
        old = keys.create("svc").record
        keys.revoke(old.id)
        with pytest.raises(KeyStateError, match="revocation is final"):
            keys.rotate(old.id)
        assert [r.id for r in keys.list()] == [old.id]

    def test_rotating_again_in_the_grace_period_is_refused(self, keys: KeyManager,
                                                          clock: Clock) -> None:
        """The refusal names the successor and when the old key stops working;
        force=True rotates anyway, with the new grace."""
        old = keys.create("svc").record
        first = keys.rotate(old.id, grace=dt.timedelta(hours=24)).record
        clock.now += dt.timedelta(hours=1)
        with pytest.raises(KeyStateError) as refused:
            keys.rotate(old.id)
        assert str(refused.value).startswith(
            f"key {old.id} was already rotated: its successor is {first.id}, and {old.id} "
            "stops working at 2026-03-02T12:00:00+00:00; "
            f"rotate {first.id} instead, or rotate {old.id} again with --force")
        assert keys.get(old.id).expires_at == first.created_at + dt.timedelta(hours=24)
        assert len(keys.list()) == 2
        second = keys.rotate(old.id, grace=dt.timedelta(hours=2), force=True).record
        assert second.rotated_from == old.id
        assert keys.get(old.id).expires_at == clock.now + dt.timedelta(hours=2)

    def test_a_revoked_successor_does_not_block(self, keys: KeyManager) -> None:
        """Once its successor is revoked, the old key may be rotated again."""
        old = keys.create("svc").record
        first = keys.rotate(old.id, grace=dt.timedelta(hours=24)).record
        keys.revoke(first.id)
        assert keys.rotate(old.id, grace=dt.timedelta(hours=1)).record.rotated_from == old.id


class TestDisableAndUpdate:
    def test_disable_is_reversible(self, manager: KeyManager) -> None:
        """disable() sets disabled_at (the first time kept), status "disabled";
        enable() clears it; list(include_inactive=False) still lists it."""
        issued = manager.create("a")
        first = manager.disable(issued.record.id)
        assert first.disabled_at is not None
        assert first.status() == "disabled"
        assert first.public_dict()["status"] == "disabled"
        assert manager.disable(issued.record.id).disabled_at == first.disabled_at
        assert manager.list(include_inactive=False) == [first]
        enabled = manager.enable(issued.record.id)
        assert enabled.disabled_at is None
        assert enabled.status() == "active"
        assert manager.get(issued.record.id) == enabled

    def test_revocation_stays_final(self, manager: KeyManager) -> None:
        """A revoked key cannot be disabled, enabled or updated."""
        issued = manager.create("a")
        revoked = manager.revoke(issued.record.id)
        for call in (manager.disable, manager.enable,
                     lambda k: manager.update(k, name="revived?")):
            with pytest.raises(KeyStateError, match="revocation is final"):
                call(issued.record.id)
        assert manager.get(issued.record.id) == revoked

    def test_update_name_and_scopes_never_the_secret(self, manager: KeyManager) -> None:
        """update() changes what it is given, checked as create() checks it."""
        issued = manager.create("a", scopes=["x"])
        updated = manager.update(issued.record.id, name=" b ", scopes=["y", "z", "y"])
        assert (updated.name, updated.scopes) == ("b", ("y", "z"))
        assert updated.hash == issued.record.hash
        assert manager.update(issued.record.id) == updated
        with pytest.raises(ConfigurationError):
            manager.update(issued.record.id, name=" ")
        with pytest.raises(ConfigurationError):
            manager.update(issued.record.id, scopes=["has space"])
        with pytest.raises(KeyNotFound):
            manager.update("nosuchkey123", name="x")

    def test_ip_allowlist_is_checked_once_and_carried_over(self, manager: KeyManager) -> None:
        """create() and update() normalise the allowlist or refuse it; an empty
        list removes it; rotation carries it to the successor."""
        issued = manager.create("a", allowed_ips=["10.0.0.0/8", "::ffff:192.0.2.1"])
        assert issued.record.allowed_ips == ("10.0.0.0/8", "192.0.2.1")
        assert issued.record.policed
        with pytest.raises(ConfigurationError, match="host bits"):
            manager.create("b", allowed_ips=["10.0.0.1/8"])
        with pytest.raises(ConfigurationError, match="host bits"):
            manager.update(issued.record.id, allowed_ips=["10.0.0.1/8"])
        assert manager.get(issued.record.id).allowed_ips == ("10.0.0.0/8", "192.0.2.1")
        updated = manager.update(issued.record.id, allowed_ips=["2001:db8::/32"])
        assert updated.allowed_ips == ("2001:db8::/32",)
        successor = manager.rotate(issued.record.id).record
        assert successor.allowed_ips == ("2001:db8::/32",)
        cleared = manager.update(successor.id, allowed_ips=[])
        assert cleared.allowed_ips == ()
        assert not cleared.policed

    def test_rotation_keeps_one_lineage(self, manager: KeyManager) -> None:
        """Every successor names the chain's first key, which is the budget
        its rate limits and quota count under; a new key is its own."""
        first = manager.create("a", owner="o").record
        assert first.lineage_id is None
        assert budget_id(first) == f"key:{first.id}"
        second = manager.rotate(first.id, grace=dt.timedelta(hours=1)).record
        third = manager.rotate(second.id, grace=dt.timedelta(hours=1)).record
        assert (second.lineage_id, third.lineage_id) == (first.id, first.id)
        assert manager.get(third.id).lineage_id == first.id
        assert {budget_id(r) for r in (first, second, third)} == {f"key:{first.id}"}
        shared = dataclasses.replace(third, rate_limit_shared=True)
        assert budget_id(shared) == "owner:o"
        assert budget_id(shared, per_owner=False) == f"key:{first.id}"
        assert budget_id(dataclasses.replace(shared, owner=None)) == f"key:{first.id}"
        assert budget_id(first, per_owner=True) == "owner:o"

    def test_a_disabled_key_is_not_rotated(self, manager: KeyManager) -> None:
        issued = manager.create("a")
        manager.disable(issued.record.id)
        with pytest.raises(KeyStateError, match="enable it"):
            manager.rotate(issued.record.id)

    def test_status_order(self, manager: KeyManager) -> None:
        """revoked, then expired, then disabled, then expiring or active."""
        r = manager.create("a").record
        later = r.created_at + dt.timedelta(days=2)
        disabled = dataclasses.replace(r, disabled_at=r.created_at)
        assert disabled.status(later) == "disabled"
        expiring = dataclasses.replace(disabled, expires_at=r.created_at + dt.timedelta(days=1))
        assert expiring.status(r.created_at) == "disabled"
        assert expiring.status(later) == "expired"
        assert dataclasses.replace(expiring, revoked_at=r.created_at).status(later) == "revoked"


class TestKeyGivenForId:
    def test_a_whole_key_is_named_by_its_id_never_echoed(self, manager: KeyManager) -> None:
        """Every method taking a key id refuses a whole key (or a mangled one),
        names the id to use, and leaves the key alone."""
        issued = manager.create("svc")
        key_id = issued.record.id
        typo = issued.key[:-1] + ("x" if issued.key[-1] != "x" else "y")
        calls = (manager.get, manager.revoke, manager.rotate, manager.delete, manager.disable,
                 manager.enable, lambda k: manager.update(k, name="x"),
                 lambda k: manager.expire(k, dt.datetime(2099, 1, 1, tzinfo=UTC)))
        for key in (issued.key, typo, issued.key + "\n"):
            for call in calls:
                with pytest.raises(NotAKeyId) as info:
                    call(key)
                message = str(info.value)
                assert message.startswith(f"that is an API key, not a key id: use its id {key_id}")
                assert issued.key[:-4] not in message
        assert manager.get(key_id).status() == "active"
        assert len(manager.list()) == 1
