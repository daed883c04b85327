"""KeyManager's audit log (#14): actors, reading it back, event hooks, and
the key-hygiene findings."""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import threading
from collections.abc import Iterator

import pytest

from aqnt_auth import (
    AUDIT_EVENTS,
    Argon2Hasher,
    AuditEntry,
    AuditEvent,
    ConfigurationError,
    KeyManager,
    KeyNotFound,
    KeyStateError,
    MemoryKeyStore,
    NotAKeyId,
)
from aqnt_auth._audit import default_actor

UTC = dt.timezone.utc
T0 = dt.datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


class Clock:
    """A clock that moves one second per reading: distinct, ordered entry times."""

    def __init__(self, start: dt.datetime = T0) -> None:
        self.now = start

    def __call__(self) -> dt.datetime:
        self.now += dt.timedelta(seconds=1)
        return self.now


@pytest.fixture
def keys(memory_store: MemoryKeyStore, cheap_hasher: Argon2Hasher) -> Iterator[KeyManager]:
    manager = KeyManager(memory_store, hasher=cheap_hasher, clock=Clock(), actor="ops@box")
    yield manager
    manager.close()


class TestActors:
    def test_default_and_per_call_actor(self, keys: KeyManager) -> None:
        """The manager's actor, unless a call names another."""
        issued = keys.create("svc")
        keys.disable(issued.record.id, actor="alice")
        keys.enable(issued.record.id)
        keys.update(issued.record.id, name="renamed", actor="bob")
        keys.expire(issued.record.id, T0 + dt.timedelta(days=1), actor="carol")
        rotated = keys.rotate(issued.record.id, actor="dave")
        keys.revoke(rotated.record.id, actor="erin")
        keys.delete(issued.record.id)
        got = [(e.event, e.key_id, e.actor) for e in keys.audit()]
        old, new = issued.record.id, rotated.record.id
        assert got == [
            ("deleted", old, "ops@box"),
            ("revoked", new, "erin"),
            ("created", new, "dave"),
            ("rotated", old, "dave"),
            ("expiry_set", old, "carol"),
            ("updated", old, "bob"),
            ("enabled", old, "ops@box"),
            ("disabled", old, "alice"),
            ("created", old, "ops@box"),
        ]

    def test_no_actor_is_none(self, memory_store: MemoryKeyStore,
                              cheap_hasher: Argon2Hasher) -> None:
        """Without any actor the entry says so (None), it does not guess."""
        issued = KeyManager(memory_store, hasher=cheap_hasher).create("svc")
        (entry,) = memory_store.audit_entries()
        assert (entry.key_id, entry.actor) == (issued.record.id, None)

    @pytest.mark.parametrize("actor", ["", "   ", "a\nb", "x" * 201, 7])
    def test_bad_actor_is_refused(self, memory_store: MemoryKeyStore, actor: object) -> None:
        """An actor is printable text of at most 200 characters."""
        with pytest.raises(ConfigurationError, match="actor"):
            KeyManager(memory_store, actor=actor)  # type: ignore[arg-type]
        with pytest.raises(ConfigurationError, match="actor"):
            AuditEvent(actor=actor)  # type: ignore[arg-type]

    def test_default_actor_is_user_at_host(self) -> None:
        """The command-line front ends' actor: the OS user and the host."""
        user, _, host = default_actor().partition("@")
        assert user
        assert host

    def test_failed_changes_write_nothing(self, keys: KeyManager) -> None:
        """Unknown ids, refused expiries and rotations, a revoked key's update."""
        issued = keys.create("svc", expires_in=dt.timedelta(days=1))
        with pytest.raises(KeyNotFound):
            keys.revoke("nosuchkey123")
        with pytest.raises(KeyNotFound):
            keys.delete("nosuchkey123")
        with pytest.raises(KeyStateError):
            keys.expire(issued.record.id, T0 + dt.timedelta(days=30))
        keys.revoke(issued.record.id)
        with pytest.raises(KeyStateError):
            keys.update(issued.record.id, name="revived?")
        with pytest.raises(KeyStateError):
            keys.rotate(issued.record.id)
        keys.revoke(issued.record.id)  # again: no change, no entry
        assert [e.event for e in keys.audit()] == ["revoked", "created"]


class TestReading:
    def test_filters(self, keys: KeyManager) -> None:
        """By key id, since, until and limit; newest first."""
        a = keys.create("a").record
        b = keys.create("b").record
        keys.revoke(a.id)
        entries = keys.audit()
        assert [e.event for e in entries] == ["revoked", "created", "created"]
        assert [e.key_id for e in keys.audit(key_id=b.id)] == [b.id]
        assert keys.audit(since=entries[0].at) == entries[:1]
        assert keys.audit(until=entries[1].at) == entries[2:]
        assert keys.audit(limit=2) == entries[:2]
        assert all(isinstance(e, AuditEntry) for e in entries)
        with pytest.raises(dataclasses.FrozenInstanceError):
            entries[0].actor = "x"  # type: ignore[misc]

    @pytest.mark.parametrize("kwargs", [{"limit": 0}, {"limit": True},
                                        {"since": dt.datetime(2026, 1, 1)},
                                        {"until": dt.datetime(2026, 1, 1)}])
    def test_bad_queries(self, keys: KeyManager, kwargs: dict[str, object]) -> None:
        with pytest.raises(ConfigurationError):
            keys.audit(**kwargs)  # type: ignore[arg-type]

    def test_a_whole_key_is_not_an_id(self, keys: KeyManager) -> None:
        """audit(key_id=<a key>) refuses, naming the id, never the key."""
        issued = keys.create("svc")
        with pytest.raises(NotAKeyId) as refused:
            keys.audit(key_id=issued.key)
        assert issued.key not in str(refused.value)

    def test_to_dict_is_json_ready(self, keys: KeyManager) -> None:
        issued = keys.create("svc", scopes=["a"])
        (entry,) = keys.audit()
        data = entry.to_dict()
        assert data["event"] == "created"
        assert data["at"] == entry.at.isoformat()
        assert data["new"]["scopes"] == ["a"]
        assert data["key_id"] == issued.record.id


class TestHooks:
    def test_hooks_get_each_entry_after_the_commit(self, memory_store: MemoryKeyStore,
                                                   cheap_hasher: Argon2Hasher) -> None:
        """on_event sees every entry, a per-event hook only its event; in order,
        on another thread, with the change already readable from the store."""
        seen: list[tuple[str, str, bool]] = []
        revoked: list[str] = []
        threads: set[int] = set()

        def every(entry: AuditEntry) -> None:
            threads.add(threading.get_ident())
            seen.append((entry.event, entry.key_id,
                         memory_store.audit_entries(key_id=entry.key_id, limit=1) != []))

        keys = KeyManager(memory_store, hasher=cheap_hasher, on_event=every)
        keys.on("revoked", lambda entry: revoked.append(entry.key_id))
        issued = keys.create("svc")
        keys.revoke(issued.record.id)
        keys.close()  # waits for the queued hooks
        assert seen == [("created", issued.record.id, True), ("revoked", issued.record.id, True)]
        assert revoked == [issued.record.id]
        assert threading.get_ident() not in threads

    def test_a_slow_hook_blocks_nothing(self, memory_store: MemoryKeyStore,
                                        cheap_hasher: Argon2Hasher) -> None:
        """The change returns while its hook still runs (a webhook timing out)."""
        release = threading.Event()
        order: list[str] = []

        def slow(entry: AuditEntry) -> None:
            release.wait(30)  # only bounds a broken run; the order decides
            order.append("hook")

        keys = KeyManager(memory_store, hasher=cheap_hasher, on_event=slow)
        keys.create("svc")
        order.append("returned")
        release.set()
        keys.close()
        assert order == ["returned", "hook"]

    def test_a_failing_hook_is_logged_not_raised(self, memory_store: MemoryKeyStore,
                                                 cheap_hasher: Argon2Hasher,
                                                 caplog: pytest.LogCaptureFixture) -> None:
        after: list[str] = []

        def broken(entry: AuditEntry) -> None:
            raise RuntimeError("webhook down")

        keys = KeyManager(memory_store, hasher=cheap_hasher, on_event=broken)
        keys.on("*", lambda entry: after.append(entry.event))
        with caplog.at_level(logging.ERROR, logger="aqnt_auth.hooks"):
            issued = keys.create("svc")
            keys.close()
        assert memory_store.get(issued.record.id) is not None
        assert after == ["created"]
        assert "event hook" in caplog.text
        assert "webhook down" in caplog.text
        assert issued.key not in caplog.text

    def test_failed_change_calls_no_hook(self, memory_store: MemoryKeyStore,
                                         cheap_hasher: Argon2Hasher) -> None:
        seen: list[AuditEntry] = []
        keys = KeyManager(memory_store, hasher=cheap_hasher, on_event=seen.append)
        with pytest.raises(KeyNotFound):
            keys.revoke("nosuchkey123")
        keys.close()
        assert seen == []

    def test_unknown_event_is_refused(self, keys: KeyManager) -> None:
        with pytest.raises(ConfigurationError, match="unknown event"):
            keys.on("revokd", print)
        for event in (*AUDIT_EVENTS, "*"):
            keys.on(event, print)


class TestHygiene:
    def test_findings(self, memory_store: MemoryKeyStore, cheap_hasher: Argon2Hasher) -> None:
        """The four findings, over keys neither revoked nor expired."""
        now = T0 + dt.timedelta(days=200)
        keys = KeyManager(memory_store, hasher=cheap_hasher, clock=lambda: T0)
        old = keys.create("old").record  # created T0: idle, due, no expiry, live
        fenced = keys.create("fenced", allowed_ips=["10.0.0.0/8"],
                             expires_at=now + dt.timedelta(days=1)).record
        test = keys.create("test", mode="test", expires_at=now + dt.timedelta(days=1)).record
        gone = keys.create("gone").record
        keys.revoke(gone.id)
        keys.create("expired", expires_at=T0 + dt.timedelta(days=1))
        fresh = KeyManager(memory_store, hasher=cheap_hasher, clock=lambda: now).create(
            "fresh", expires_in=dt.timedelta(days=30)).record
        found = keys.hygiene(now=now)
        assert found.checked_at == now
        ids = {name: {r.id for r in records} for name, records in found.findings().items()}
        assert ids == {
            "never_expire": {old.id},
            "idle": {old.id, fenced.id, test.id},
            "live_without_allowlist": {old.id, fresh.id},
            "due_for_rotation": {old.id, fenced.id, test.id},
        }
        assert found

    def test_recent_use_is_not_idle(self, memory_store: MemoryKeyStore,
                                    cheap_hasher: Argon2Hasher) -> None:
        from aqnt_auth import UsageDelta

        keys = KeyManager(memory_store, hasher=cheap_hasher, clock=lambda: T0)
        record = keys.create("used", allowed_ips=["::1"],
                             expires_at=T0 + dt.timedelta(days=10)).record
        now = T0 + dt.timedelta(days=5)
        memory_store.record_usage({record.id: UsageDelta(1, now - dt.timedelta(days=1))})
        found = keys.hygiene(now=now)
        assert not found
        assert found.idle == []
        later = keys.hygiene(now=T0 + dt.timedelta(days=9))
        assert later.idle == []
