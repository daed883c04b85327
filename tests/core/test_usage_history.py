"""Usage history (#14) in the core: every outcome counted once at the
drivers' exit, the facts of valid requests, retention, failed flushes."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Sequence
from typing import Any

import pytest

from aqnt_auth import (
    AQNTError,
    Authenticator,
    FailureLimiter,
    KeyManager,
    MemoryKeyStore,
    PermissionDenied,
    UsageRow,
    require_scopes,
)
from aqnt_auth import _authenticator as authenticator_module
from aqnt_auth import _usage as usage_module
from aqnt_auth._outcomes import KEY_OUTCOMES, NO_KEY
from tests.forged import unknown_id, wrong_secret

from ._support import CountingHasher, InstrumentedStore

UTC = dt.timezone.utc
NOW = dt.datetime(2026, 3, 4, 10, 30, tzinfo=UTC).timestamp()


class Clock:
    def __init__(self, now: float = NOW) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def rows_by_key(store: MemoryKeyStore) -> dict[str, UsageRow]:
    rows = store.usage_rows(since=0, until=2**40)
    assert len({r.key_id for r in rows}) == len(rows), "one hour only in these tests"
    return {r.key_id: r for r in rows}


def attempt(auth: Authenticator, header: str | None, **facts: Any) -> str:
    try:
        auth.authenticate(header, **facts)
    except AQNTError as exc:
        return exc.code
    return "ok"


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def auth(store: InstrumentedStore, hasher: CountingHasher, clock: Clock) -> Any:
    with Authenticator(store, hashers=[hasher], usage_flush_interval=3600, rate_limit=None,
                       clock=clock) as a:
        yield a


class TestOutcomes:
    def test_every_outcome_is_counted_once(self, auth: Authenticator, keys: KeyManager,
                                           store: InstrumentedStore, clock: Clock) -> None:
        """Each request is counted once, under its key and outcome or key-less."""
        good = keys.create("good", allowed_paths=["/v1"])
        revoked = keys.create("revoked")
        keys.revoke(revoked.record.id)
        disabled = keys.create("disabled")
        keys.disable(disabled.record.id)
        expired = keys.create("expired")
        store.set_expiry(expired.record.id, dt.datetime.fromtimestamp(NOW - 60, UTC))
        walled = keys.create("walled", allowed_ips=["192.0.2.0/24"])
        for _ in range(3):
            assert attempt(auth, f"Bearer {good.key}", method="GET", path="/v1/x",
                           client="198.51.100.7", user_agent="curl/8") == "ok"
        assert attempt(auth, f"Bearer {good.key}", method="GET", path="/v2") == (
            "insufficient_scope")
        assert attempt(auth, f"Bearer {wrong_secret(good.key)}") == "invalid_api_key"
        assert attempt(auth, f"Bearer {revoked.key}") == "key_revoked"
        assert attempt(auth, f"Bearer {expired.key}") == "key_revoked"
        assert attempt(auth, f"Bearer {disabled.key}") == "key_disabled"
        assert attempt(auth, f"Bearer {walled.key}", client="203.0.113.9") == "ip_not_allowed"
        assert attempt(auth, f"Bearer {unknown_id(good.key)}") == "invalid_api_key"
        assert attempt(auth, "Bearer sk_live_nonsense") == "invalid_api_key"
        assert attempt(auth, None) == "missing_api_key"
        assert attempt(auth, "Basic dXNlcjpwdw==") == "missing_api_key"
        assert auth.flush_usage()
        rows = rows_by_key(store)
        assert {k: dict(r.counts) for k, r in rows.items()} == {
            good.record.id: {"valid": 3, "forbidden": 1, "invalid_secret": 1},
            revoked.record.id: {"revoked": 1},
            expired.record.id: {"expired": 1},
            disabled.record.id: {"disabled": 1},
            walled.record.id: {"ip_not_allowed": 1},
            NO_KEY: {"unknown_key": 1, "malformed": 1, "missing": 2},
        }
        row = rows[good.record.id]
        assert row.hour == int(NOW // 3600 * 3600)
        assert (row.clients, row.last_client, row.last_user_agent) == (1, "198.51.100.7",
                                                                       "curl/8")
        assert row.paths == {"/v1/x": 3}
        assert row.last_at == int(NOW * 1_000_000)

    def test_mode_not_accepted_is_forbidden(self, store: InstrumentedStore,
                                            hasher: CountingHasher, keys: KeyManager) -> None:
        """A key of a mode the server refuses counts as forbidden for that key."""
        issued = keys.create("test key", mode="test")
        with Authenticator(store, hashers=[hasher], allowed_modes=["live"], rate_limit=None,
                           usage_flush_interval=3600) as auth:
            assert attempt(auth, f"Bearer {issued.key}") == "invalid_api_key"
        assert {k: dict(r.counts) for k, r in rows_by_key(store).items()} == {
            issued.record.id: {"forbidden": 1}}

    @pytest.mark.parametrize(("code", "outcome"), [("rate_limit_exceeded", "rate_limited"),
                                                   ("quota_exceeded", "quota_exceeded")])
    def test_policy_errors_are_counted_by_code(self, auth: Authenticator, keys: KeyManager,
                                               store: InstrumentedStore,
                                               monkeypatch: pytest.MonkeyPatch, code: str,
                                               outcome: str) -> None:
        """An error raised by a key's policy that names no outcome is counted by its code."""

        class PolicyError(AQNTError):
            status_code = 429

        PolicyError.code = code

        def refuse(*args: object) -> None:
            raise PolicyError("over")

        monkeypatch.setattr(authenticator_module, "check_client_ip", refuse)
        issued = keys.create("limited", allowed_ips=["0.0.0.0/0"])
        assert attempt(auth, f"Bearer {issued.key}", client="192.0.2.1") == code
        assert auth.flush_usage()
        assert {k: dict(r.counts) for k, r in rows_by_key(store).items()} == {
            issued.record.id: {outcome: 1}}

    def test_throttled_requests_are_key_less(self, store: InstrumentedStore,
                                             hasher: CountingHasher, keys: KeyManager) -> None:
        """The failure limiter: the failures it counts are counted as what they
        were; its refusals before any check as throttled, without a key."""
        issued = keys.create("k")
        limiter = FailureLimiter(per_key="100/hour", per_client="2/hour")
        with Authenticator(store, hashers=[hasher], rate_limit=limiter,
                           usage_flush_interval=3600) as auth:
            codes = [attempt(auth, f"Bearer {wrong_secret(issued.key)}", client="192.0.2.5")
                     for _ in range(4)]
        assert codes == ["invalid_api_key", "invalid_api_key", "rate_limited", "rate_limited"]
        assert {k: dict(r.counts) for k, r in rows_by_key(store).items()} == {
            issued.record.id: {"invalid_secret": 2}, NO_KEY: {"throttled": 2}}

    @pytest.mark.anyio
    async def test_async_and_nowait_count_the_same(self, store: InstrumentedStore,
                                                   hasher: CountingHasher,
                                                   keys: KeyManager) -> None:
        """authenticate_async and authenticate_nowait count once per request too."""
        issued = keys.create("k")
        revoked = keys.create("r")
        keys.revoke(revoked.record.id)
        async with Authenticator(store, hashers=[hasher], rate_limit=None,
                                 usage_flush_interval=3600) as auth:
            await auth.authenticate_async(f"Bearer {issued.key}", path="/a", client="192.0.2.1",
                                          user_agent=b"agent/1")
            for _ in range(2):
                assert auth.authenticate_nowait(f"Bearer {issued.key}", path="/b",
                                                client="192.0.2.2",
                                                user_agent=b"agent/2") is not None
            with pytest.raises(AQNTError):
                await auth.authenticate_async(f"Bearer {revoked.key}")
            with pytest.raises(AQNTError):
                auth.authenticate_nowait(f"Bearer {revoked.key}")
            with pytest.raises(AQNTError):
                await auth.authenticate_async("Bearer garbage")
        rows = rows_by_key(store)
        assert dict(rows[issued.record.id].counts) == {"valid": 3}
        assert rows[issued.record.id].paths == {"/a": 1, "/b": 2}
        assert rows[issued.record.id].clients == 2
        assert rows[issued.record.id].last_user_agent == "agent/2"
        assert dict(rows[revoked.record.id].counts) == {"revoked": 2}
        assert dict(rows[NO_KEY].counts) == {"malformed": 1}


class TestRouteScopes:
    def test_a_scope_refusal_moves_valid_to_forbidden(self, auth: Authenticator,
                                                      keys: KeyManager,
                                                      store: InstrumentedStore) -> None:
        """require_scopes refusing a key that authenticated counts it forbidden,
        once, even when its valid count was flushed in between."""
        issued = keys.create("k", scopes=["charges:read"])
        header = f"Bearer {issued.key}"
        ok = auth.authenticate(header)
        require_scopes(ok, ["charges:read"])
        refused = auth.authenticate(header)
        with pytest.raises(PermissionDenied) as caught:
            require_scopes(refused, ["charges:write"])
        assert caught.value.key_id == issued.record.id
        with pytest.raises(PermissionDenied):
            require_scopes(refused, ["charges:write"])  # counted once
        late = auth.authenticate(header)
        assert auth.flush_usage()  # its valid is written...
        with pytest.raises(PermissionDenied):
            require_scopes(late, ["refunds:write"])  # ...then it is refused
        assert auth.flush_usage()
        assert dict(rows_by_key(store)[issued.record.id].counts) == {"valid": 1,
                                                                     "forbidden": 2}
        assert store.get(issued.record.id).usage_count == 3  # type: ignore[union-attr]


class TestFacts:
    def test_clients_past_trusted_proxies_are_resolved_at_flush(
            self, store: InstrumentedStore, hasher: CountingHasher, keys: KeyManager) -> None:
        """The client is the one the trusted proxy forwarded for (and an
        IPv4-mapped peer its IPv4 address)."""
        issued = keys.create("k")
        with Authenticator(store, hashers=[hasher], rate_limit=None, usage_flush_interval=3600,
                           trusted_proxies=["10.0.0.1"]) as auth:
            auth.authenticate(f"Bearer {issued.key}", client="10.0.0.1",
                              x_forwarded_for="203.0.113.4")
            auth.authenticate(f"Bearer {issued.key}", client="::ffff:192.0.2.8")
            auth.authenticate(f"Bearer {issued.key}", client="10.0.0.1",
                              forwarded="for=203.0.113.4")
        row = rows_by_key(store)[issued.record.id]
        assert (row.clients, row.last_client) == (2, "203.0.113.4")

    def test_bounds(self, auth: Authenticator, keys: KeyManager, store: InstrumentedStore,
                    monkeypatch: pytest.MonkeyPatch) -> None:
        """Distinct clients saturate; paths beyond the bound count without a
        path; long texts are cut; key-shaped path parts are redacted."""
        monkeypatch.setattr(usage_module, "MAX_CLIENTS", 3)
        monkeypatch.setattr(usage_module, "MAX_PATHS", 2)
        issued = keys.create("k")
        for i in range(5):
            auth.authenticate(f"Bearer {issued.key}", client=f"192.0.2.{i}",
                              path=f"/p{i % 3}", user_agent="x" * 1000)
        assert auth.flush_usage()
        row = rows_by_key(store)[issued.record.id]
        assert (row.count("valid"), row.clients) == (5, 3)
        assert row.paths == {"/p0": 2, "/p1": 2}
        assert row.last_user_agent == "x" * 256
        monkeypatch.setattr(usage_module, "MAX_PATHS", 32)
        auth.authenticate(f"Bearer {issued.key}", path=f"/keys/{issued.key}/show")
        assert auth.flush_usage()
        row = rows_by_key(store)[issued.record.id]
        assert (row.count("valid"), row.clients) == (6, 3)
        assert row.paths == {"/p0": 2, "/p1": 2, "/keys/[redacted]/show": 1}
        assert row.last_user_agent is None

    def test_no_secret_hash_or_header_in_any_row(self, auth: Authenticator, keys: KeyManager,
                                                 store: InstrumentedStore) -> None:
        """Nothing a row holds is a key, a secret, its hash or a header value."""
        issued = keys.create("k")
        secrets_ = [issued.key, issued.key[20:52], store.get(issued.record.id).hash,  # type: ignore[union-attr]
                    wrong_secret(issued.key)]
        for header in (f"Bearer {issued.key}", f"Bearer {wrong_secret(issued.key)}",
                       f"Bearer {issued.key}x", f"Basic {issued.key}"):
            attempt(auth, header, path=f"/echo/{issued.key}", user_agent=issued.key,
                    client="192.0.2.1")
        assert auth.flush_usage()
        text = repr(store.usage_rows(since=0, until=2**40))
        for secret in secrets_:
            assert secret not in text
        assert "Bearer" not in text


class TestFlushing:
    def test_retention_prunes_once_an_hour(self, store: InstrumentedStore,
                                           hasher: CountingHasher, keys: KeyManager,
                                           clock: Clock) -> None:
        """Rows older than the retention are deleted by a flush, at most once an hour."""
        issued = keys.create("k")
        with Authenticator(store, hashers=[hasher], rate_limit=None, usage_flush_interval=3600,
                           usage_retention_days=2, clock=clock) as auth:
            day = 86_400
            for age_days in (3, 1.5, 0):
                clock.now = NOW - age_days * day
                auth.authenticate(f"Bearer {issued.key}")
            clock.now = NOW - 3 * day
            assert auth.flush_usage()  # the first flush prunes: nothing older than 5 days
            assert len(store.usage_rows(since=0, until=2**40)) == 3
            clock.now = NOW - 3 * day + 1800
            auth.authenticate(f"Bearer {issued.key}")
            clock.now = NOW
            assert auth.flush_usage()  # an hour has passed: the 3-day-old hour goes
            hours = [r.hour for r in store.usage_rows(since=0, until=2**40)]
            assert hours == [int((NOW - 1.5 * day) // 3600 * 3600), int(NOW // 3600 * 3600)]
            clock.now = NOW + 1800
            store.record_usage_history([UsageRow("old", 0, {"valid": 1})])
            assert auth.flush_usage()  # within the hour: no second prune
            assert len(store.usage_rows(since=0, until=2**40)) == 3

    def test_failed_history_flush_is_retried(self, store: InstrumentedStore,
                                             hasher: CountingHasher, keys: KeyManager,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
        """A failed write keeps its rows for the next flush: nothing lost or doubled."""
        issued = keys.create("k")
        real = store.record_usage_history
        calls: list[int] = []

        def flaky(rows: Sequence[UsageRow], *, prune_before: int | None = None) -> None:
            calls.append(len(rows))
            if len(calls) == 1:
                raise OSError("down")
            real(rows, prune_before=prune_before)

        monkeypatch.setattr(store, "record_usage_history", flaky)
        with Authenticator(store, hashers=[hasher], rate_limit=None,
                           usage_flush_interval=3600) as auth:
            auth.authenticate(f"Bearer {issued.key}", path="/a")
            attempt(auth, None)
            assert not auth.flush_usage()
            auth.authenticate(f"Bearer {issued.key}", path="/a")
            assert auth.flush_usage()
        rows = rows_by_key(store)
        assert dict(rows[issued.record.id].counts) == {"valid": 2}
        assert rows[issued.record.id].paths == {"/a": 2}
        assert dict(rows[NO_KEY].counts) == {"missing": 1}
        assert store.get(issued.record.id).usage_count == 2  # type: ignore[union-attr]

    def test_history_can_be_turned_off(self, store: InstrumentedStore, hasher: CountingHasher,
                                       keys: KeyManager) -> None:
        """usage_history=False keeps the per-key counters only."""
        issued = keys.create("k")
        with Authenticator(store, hashers=[hasher], rate_limit=None,
                           usage_history=False) as auth:
            auth.authenticate(f"Bearer {issued.key}")
            attempt(auth, None)
        assert store.usage_rows(since=0, until=2**40) == []
        assert store.get(issued.record.id).usage_count == 1  # type: ignore[union-attr]

    def test_a_store_without_history_keeps_counters(self, hasher: CountingHasher) -> None:
        """A store of one's own without the history methods still counts requests."""

        @dataclasses.dataclass
        class Plain:
            inner: MemoryKeyStore
            blocking = False

            def __getattr__(self, name: str) -> Any:
                if name in ("record_usage_history", "usage_rows"):
                    raise AttributeError(name)
                return getattr(self.inner, name)

        inner = MemoryKeyStore()
        issued = KeyManager(inner, hasher=hasher).create("k")
        with Authenticator(Plain(inner), hashers=[hasher], rate_limit=None) as auth:
            auth.authenticate(f"Bearer {issued.key}")
        assert inner.get(issued.record.id).usage_count == 1  # type: ignore[union-attr]
        assert inner.usage_rows(since=0, until=2**40) == []


def test_key_outcomes_are_the_interface() -> None:
    """The outcome names agreed with the other front ends."""
    assert KEY_OUTCOMES == ("valid", "invalid_secret", "revoked", "expired", "disabled",
                            "rate_limited", "quota_exceeded", "ip_not_allowed", "forbidden")


def test_a_counted_principal_still_pickles(auth: Authenticator, keys: KeyManager) -> None:
    """The principal's link to the usage buffer (for scope refusals) is not
    part of it: it pickles and copies as the key alone."""
    import copy
    import pickle

    issued = keys.create("k")
    principal = auth.authenticate(f"Bearer {issued.key}")
    # Our own bytes, just made: nothing untrusted is unpickled.
    for clone in (pickle.loads(pickle.dumps(principal)), copy.copy(principal)):  # noqa: S301
        assert clone == principal
        assert clone.id == issued.record.id
        assert getattr(clone, "_usage", None) is None
