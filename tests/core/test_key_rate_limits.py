"""Per-key rate limits (#13): parsing, counting, the RateLimit headers, the
shared and rotation budgets, async counting off the loop, storage outages."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import logging
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from aqnt_auth import (
    Argon2Hasher,
    Authenticator,
    ConfigurationError,
    IssuedKey,
    KeyManager,
    KeyRateLimiter,
    KeyRecord,
    MemoryKeyStore,
    QuotaExceeded,
    RateLimitExceeded,
    RateLimitUnavailable,
    budget_id,
)
from aqnt_auth._policies import Headers, normalise_rate_limits

from ..conftest import require_service

EXCEEDED = (b'{"error": {"type": "rate_limit_error", "message": "Rate limit exceeded for this '
            b'API key", "code": "rate_limit_exceeded"}}')
UNAVAILABLE = (b'{"error": {"type": "api_error", "message": "Rate limiting is temporarily '
               b'unavailable", "code": "rate_limit_unavailable"}}')


def limits_of(headers: Headers) -> tuple[str, list[tuple[str, int, int]]]:
    """The RateLimit-Policy value, and each RateLimit item as (name, r, t)."""
    found = dict(headers)
    items = []
    for item in found["RateLimit"].split(", "):
        name, r, t = item.split(";")
        assert r.startswith("r=")
        assert t.startswith("t=")
        items.append((name.strip('"'), int(r[2:]), int(t[2:])))
    return found["RateLimit-Policy"], items


@pytest.fixture
def keys(memory_store: MemoryKeyStore, cheap_hasher: Argon2Hasher) -> KeyManager:
    return KeyManager(memory_store, hasher=cheap_hasher)


@pytest.fixture
def auth(memory_store: MemoryKeyStore, cheap_hasher: Argon2Hasher) -> Iterator[Authenticator]:
    with Authenticator(memory_store, hashers=[cheap_hasher], track_usage=False) as a:
        yield a


def bearer(issued: IssuedKey) -> str:
    return f"Bearer {issued.key}"


class TestParsing:
    def test_canonical_sorted_deduplicated(self) -> None:
        """Limits are stored canonical, shortest period first, once each."""
        assert normalise_rate_limits(
            ["100 per minute", "5/second", "100/minute", "10 per 2 seconds", " 5000/hour "]
        ) == ("5/second", "10/2 seconds", "100/minute", "5000/hour")
        assert normalise_rate_limits("7/day") == ("7/day",)
        assert normalise_rate_limits([]) == ()

    @pytest.mark.parametrize(("value", "message"), [
        ("100", "is not LIMIT/PERIOD"),
        ("100/fortnight", "is not LIMIT/PERIOD"),
        ("0/minute", "at least 1"),
        ("1/second;5/minute", "one limit per string"),
        (5, "must be a string"),
    ])
    def test_refused_with_a_clear_message(self, value: Any, message: str) -> None:
        with pytest.raises(ConfigurationError, match=message):
            normalise_rate_limits([value])

    def test_at_most_ten(self) -> None:
        with pytest.raises(ConfigurationError, match="at most 10 rate limits"):
            normalise_rate_limits([f"{n}/minute" for n in range(1, 12)])

    def test_manager_checks_at_create_and_update(self, keys: KeyManager) -> None:
        """create() and update() normalise or refuse; an empty list or
        clear_rate_limits removes them; rotation carries them over."""
        issued = keys.create("a", rate_limits=["100 per minute"], owner="o", shared_limit=True)
        record = issued.record
        assert (record.rate_limits, record.rate_limit_shared, record.policed) == (
            ("100/minute",), True, True)
        with pytest.raises(ConfigurationError, match="LIMIT/PERIOD"):
            keys.create("b", rate_limits=["lots"])
        with pytest.raises(ConfigurationError, match="needs a key with an owner"):
            keys.create("b", rate_limits=["1/second"], shared_limit=True)
        with pytest.raises(ConfigurationError, match="LIMIT/PERIOD"):
            keys.update(record.id, rate_limits=["1/eon"])
        assert keys.get(record.id).rate_limits == ("100/minute",)
        updated = keys.update(record.id, rate_limits=["5/second", "1000/day"], shared_limit=False)
        assert (updated.rate_limits, updated.rate_limit_shared) == (
            ("5/second", "1000/day"), False)
        with pytest.raises(ConfigurationError, match="not both"):
            keys.update(record.id, rate_limits=["1/second"], clear_rate_limits=True)
        successor = keys.rotate(record.id, grace=dt.timedelta(hours=1)).record
        assert successor.rate_limits == ("5/second", "1000/day")
        cleared = keys.update(successor.id, clear_rate_limits=True)
        assert cleared.rate_limits == ()
        assert not cleared.policed
        assert keys.update(record.id, rate_limits=[]).rate_limits == ()


class TestCounting:
    def test_headers_on_every_success_then_429(self, keys: KeyManager,
                                               auth: Authenticator) -> None:
        """r counts down from the limit, t is within the window; past the
        limit: 429, the exact body, Retry-After and the headers with r=0."""
        issued = keys.create("a", rate_limits=["3/minute", "100/hour"])
        seen = []
        for _ in range(3):
            principal = auth.authenticate(bearer(issued))
            policy, items = limits_of(principal.response_headers)
            assert policy == '"3/minute";q=3;w=60, "100/hour";q=100;w=3600'
            seen.append([(name, r) for name, r, _ in items])
            (_, _, t_minute), (_, _, t_hour) = items
            assert 58 <= t_minute <= 60
            assert 3598 <= t_hour <= 3600
        assert seen == [[("3/minute", 2), ("100/hour", 99)],
                        [("3/minute", 1), ("100/hour", 98)],
                        [("3/minute", 0), ("100/hour", 97)]]
        with pytest.raises(RateLimitExceeded) as refused:
            auth.authenticate(bearer(issued))
        answer = auth.render_error(refused.value)
        assert answer.status == 429
        assert answer.body == EXCEEDED
        headers = dict(answer.headers)
        assert 58 <= int(headers["Retry-After"]) <= 60
        policy, items = limits_of(answer.headers)
        assert policy == '"3/minute";q=3;w=60, "100/hour";q=100;w=3600'
        assert [(name, r) for name, r, _ in items] == [("3/minute", 0)]
        assert items[0][2] == int(headers["Retry-After"])
        # A refusal by the minute limit is not counted against the hour.
        auth.key_rate_limiter.reset()
        _, items = limits_of(auth.authenticate(bearer(issued)).response_headers)
        assert [(name, r) for name, r, _ in items] == [("3/minute", 2), ("100/hour", 99)]

    def test_a_key_without_limits_never_reaches_the_limiter(
            self, keys: KeyManager, memory_store: MemoryKeyStore,
            cheap_hasher: Argon2Hasher) -> None:
        """No headers, and a broken limiter storage does not matter to it."""
        limiter = KeyRateLimiter("redis://127.0.0.1:1")
        with Authenticator(memory_store, hashers=[cheap_hasher], track_usage=False,
                           key_rate_limit_storage=limiter) as auth:
            plain = keys.create("plain")
            principal = auth.authenticate(bearer(plain))
            assert principal.response_headers == ()
            assert not plain.record.policed
            limited = keys.create("limited", rate_limits=["5/minute"])
            with pytest.raises(RateLimitUnavailable):
                auth.authenticate(bearer(limited))

    def test_a_bad_stored_limit_is_refused_and_logged(
            self, keys: KeyManager, memory_store: MemoryKeyStore, auth: Authenticator,
            caplog: pytest.LogCaptureFixture) -> None:
        """A limit written around KeyManager that does not parse: 503, logged
        with the key id (never the key), not a 500."""
        issued = keys.create("a")
        memory_store.update(issued.record.id, {"rate_limits": ("lots",)})
        with caplog.at_level(logging.ERROR, "aqnt_auth"), \
                pytest.raises(RateLimitUnavailable):
            auth.authenticate(bearer(issued))
        assert f"key {issued.record.id}: its stored rate limits are invalid" in caplog.text
        assert issued.key not in caplog.text

    def test_limits_changed_take_effect(self, keys: KeyManager, auth: Authenticator) -> None:
        """A key given limits later is counted from then on; cleared, it is not."""
        issued = keys.create("a")
        assert auth.authenticate(bearer(issued)).response_headers == ()
        keys.update(issued.record.id, rate_limits=["1/hour"])
        auth.authenticate(bearer(issued))
        with pytest.raises(RateLimitExceeded):
            auth.authenticate(bearer(issued))
        keys.update(issued.record.id, clear_rate_limits=True)
        assert auth.authenticate(bearer(issued)).response_headers == ()

    def test_shared_per_owner(self, keys: KeyManager, auth: Authenticator) -> None:
        """Keys sharing their owner's limit draw on one budget; another owner's
        key, and a key of the same owner counted per key, do not."""
        one = keys.create("one", owner="acme", rate_limits=["2/hour"], shared_limit=True)
        two = keys.create("two", owner="acme", rate_limits=["2/hour"], shared_limit=True)
        own = keys.create("own", owner="acme", rate_limits=["2/hour"])
        other = keys.create("other", owner="umbrella", rate_limits=["2/hour"], shared_limit=True)
        assert budget_id(one.record) == budget_id(two.record) == "owner:acme"
        auth.authenticate(bearer(one))
        _, [(_, remaining, _)] = limits_of(auth.authenticate(bearer(two)).response_headers)
        assert remaining == 0
        with pytest.raises(RateLimitExceeded):
            auth.authenticate(bearer(one))
        with pytest.raises(RateLimitExceeded):
            auth.authenticate(bearer(two))
        for issued in (own, other):
            _, [(_, remaining, _)] = limits_of(auth.authenticate(bearer(issued)).response_headers)
            assert remaining == 1

    def test_rotation_grace_shares_one_budget(self, keys: KeyManager,
                                              auth: Authenticator) -> None:
        """While both work, a key and its successor (and the next one) count
        against one budget: rotating does not reset the limit."""
        old = keys.create("a", rate_limits=["3/hour"])
        auth.authenticate(bearer(old))
        new = keys.rotate(old.record.id, grace=dt.timedelta(hours=1))
        _, [(_, remaining, _)] = limits_of(auth.authenticate(bearer(new)).response_headers)
        assert remaining == 1
        newer = keys.rotate(new.record.id, grace=dt.timedelta(hours=1))
        auth.authenticate(bearer(old))
        for issued in (old, new, newer):
            with pytest.raises(RateLimitExceeded):
                auth.authenticate(bearer(issued))

    @pytest.mark.parametrize("strategy", ["moving-window", "sliding-window-counter"])
    def test_other_strategies(self, keys: KeyManager, memory_store: MemoryKeyStore,
                              cheap_hasher: Argon2Hasher, strategy: str) -> None:
        with Authenticator(memory_store, hashers=[cheap_hasher], track_usage=False,
                           key_rate_limit_strategy=strategy) as auth:
            issued = keys.create("a", rate_limits=["2/hour"])
            counts = [limits_of(auth.authenticate(bearer(issued)).response_headers)[1][0][1]
                      for _ in range(2)]
            assert counts == [1, 0]
            with pytest.raises(RateLimitExceeded) as refused:
                auth.authenticate(bearer(issued))
            assert 1 <= refused.value.retry_after <= 3600


class TestConfiguration:
    def test_options(self, memory_store: MemoryKeyStore) -> None:
        with pytest.raises(ConfigurationError, match="strategy must be one of"):
            Authenticator(memory_store, key_rate_limit_strategy="leaky")
        with pytest.raises(ConfigurationError, match="bad key rate limit storage"):
            Authenticator(memory_store, key_rate_limit_storage="nope://")
        with pytest.raises(ConfigurationError, match="set its strategy and fail_open on it"):
            Authenticator(memory_store, key_rate_limit_storage=KeyRateLimiter(),
                          key_rate_limit_fail_open=True)
        with pytest.raises(ConfigurationError, match="storage URI or a KeyRateLimiter"):
            Authenticator(memory_store, key_rate_limit_storage=None)  # type: ignore[arg-type]
        limiter = KeyRateLimiter(strategy="moving-window", fail_open=True)
        with Authenticator(memory_store, key_rate_limit_storage=limiter) as auth:
            assert auth.key_rate_limiter is limiter
        assert repr(limiter) == ("KeyRateLimiter('memory://', strategy='moving-window', "
                                 "fail_open=True)")


class TestOutage:
    def test_fails_closed_by_default_and_logs(self, keys: KeyManager,
                                              memory_store: MemoryKeyStore,
                                              cheap_hasher: Argon2Hasher,
                                              caplog: pytest.LogCaptureFixture) -> None:
        """An unreachable storage: 503 rate_limit_unavailable with Retry-After,
        logged (storage named, password hidden, no key material)."""
        issued = keys.create("a", rate_limits=["5/minute"])
        with Authenticator(memory_store, hashers=[cheap_hasher], track_usage=False,
                           key_rate_limit_storage="redis://:hunter2@127.0.0.1:1"
                           ) as auth, caplog.at_level(logging.ERROR, "aqnt_auth"):
            with pytest.raises(RateLimitUnavailable) as refused:
                auth.authenticate(bearer(issued))
            answer = auth.render_error(refused.value)
        assert (answer.status, answer.body) == (503, UNAVAILABLE)
        assert dict(answer.headers)["Retry-After"] == "1"
        assert "RateLimit" not in dict(answer.headers)
        text = caplog.text
        assert "key rate limiter storage redis://***@127.0.0.1:1 failed (failing closed" in text
        assert "hunter2" not in text
        assert issued.key not in text
        assert issued.key[-32:] not in text

    def test_fails_open_when_asked_and_logs(self, keys: KeyManager,
                                            memory_store: MemoryKeyStore,
                                            cheap_hasher: Argon2Hasher,
                                            caplog: pytest.LogCaptureFixture) -> None:
        issued = keys.create("a", rate_limits=["1/minute"])
        with Authenticator(memory_store, hashers=[cheap_hasher], track_usage=False,
                           key_rate_limit_storage="redis://127.0.0.1:1",
                           key_rate_limit_fail_open=True
                           ) as auth, caplog.at_level(logging.ERROR, "aqnt_auth"):
            for _ in range(3):
                assert auth.authenticate(bearer(issued)).response_headers == ()
        assert caplog.text.count("failing open: requests admitted") == 1  # once a second
        assert issued.key not in caplog.text


class _ThreadRecorder(KeyRateLimiter):
    """A memory limiter that says it blocks, and records where it counts."""

    def __init__(self) -> None:
        super().__init__()
        self.blocking = True
        self.threads: list[threading.Thread] = []

    def hit(self, record: KeyRecord) -> Headers:
        self.threads.append(threading.current_thread())
        return super().hit(record)


class TestAsync:
    @pytest.mark.anyio
    async def test_memory_counts_on_the_nowait_path(self, keys: KeyManager,
                                                    auth: Authenticator) -> None:
        """On memory storage a warm limited key is answered without waiting,
        and counted once per request whatever the path."""
        issued = keys.create("a", rate_limits=["3/hour"])
        first = await auth.authenticate_async(bearer(issued))
        second = auth.authenticate_nowait(bearer(issued))
        assert second is not None
        remaining = [limits_of(p.response_headers)[1][0][1] for p in (first, second)]
        assert remaining == [2, 1]
        await auth.authenticate_async(bearer(issued))
        with pytest.raises(RateLimitExceeded):
            auth.authenticate_nowait(bearer(issued))

    @pytest.mark.anyio
    async def test_a_blocking_storage_is_counted_in_a_thread(
            self, keys: KeyManager, memory_store: MemoryKeyStore,
            cheap_hasher: Argon2Hasher) -> None:
        """A networked storage is never called on the event loop: nowait
        leaves the key to the async path, which counts in a worker thread,
        once, cold and warm."""
        limiter = _ThreadRecorder()
        issued = keys.create("a", rate_limits=["2/hour"])
        async with Authenticator(memory_store, hashers=[cheap_hasher], track_usage=False,
                                 key_rate_limit_storage=limiter) as auth:
            cold = await auth.authenticate_async(bearer(issued))
            assert auth.authenticate_nowait(bearer(issued)) is None
            warm = await auth.authenticate_async(bearer(issued))
            with pytest.raises(RateLimitExceeded):
                await auth.authenticate_async(bearer(issued))
        assert [limits_of(p.response_headers)[1][0][1] for p in (cold, warm)] == [1, 0]
        assert len(limiter.threads) == 3
        assert threading.main_thread() not in limiter.threads


    @pytest.mark.anyio
    async def test_with_a_quota_both_apply_off_the_loop(
            self, keys: KeyManager, memory_store: MemoryKeyStore,
            cheap_hasher: Argon2Hasher) -> None:
        """A key with rate limits on a blocking storage and a quota: the limit
        is counted in a thread, then the quota charged last, once each."""
        limiter = _ThreadRecorder()
        issued = keys.create("a", rate_limits=["5/hour"], quota=2)
        async with Authenticator(memory_store, hashers=[cheap_hasher], track_usage=False,
                                 key_rate_limit_storage=limiter) as auth:
            first = await auth.authenticate_async(bearer(issued))
            second = await auth.authenticate_async(bearer(issued))
            with pytest.raises(QuotaExceeded):
                await auth.authenticate_async(bearer(issued))
        assert [limits_of(p.response_headers)[1][0][1] for p in (first, second)] == [4, 3]
        assert len(limiter.threads) == 3
        assert keys.get(issued.record.id).quota_remaining == 0


@pytest.fixture
def redis_uri() -> str:
    require_service("Redis", "127.0.0.1", 6379)
    return "redis://127.0.0.1:6379"


class TestRedis:
    @pytest.mark.anyio
    async def test_two_authenticators_share_the_budget(
            self, keys: KeyManager, memory_store: MemoryKeyStore, cheap_hasher: Argon2Hasher,
            redis_uri: str) -> None:
        """Two servers on one Redis admit the limit together, sync and async."""
        prefix = f"aqnt-test-{uuid.uuid4().hex}"
        issued = keys.create("a", rate_limits=["4/hour"])
        auths = [Authenticator(memory_store, hashers=[cheap_hasher], track_usage=False,
                               key_rate_limit_storage=KeyRateLimiter(
                                   redis_uri, storage_options={"key_prefix": prefix}))
                 for _ in range(2)]
        try:
            admitted = refused = 0
            for n in range(6):
                try:
                    if n % 2:
                        await auths[0].authenticate_async(bearer(issued))
                    else:
                        await asyncio.to_thread(auths[1].authenticate, bearer(issued))
                    admitted += 1
                except RateLimitExceeded:
                    refused += 1
            assert (admitted, refused) == (4, 2)
        finally:
            for auth in auths:
                auth.key_rate_limiter.reset()
                auth.close()


def test_budget_id_is_the_lineage_not_the_key() -> None:
    record = KeyRecord(id="b" * 16, name="n", mode="live", hash="h", hint="x",
                       rate_limits=("1/second",), lineage_id="a" * 16)
    assert budget_id(record) == "key:" + "a" * 16
    assert budget_id(dataclasses.replace(record, rate_limit_shared=True, owner="o")) == "owner:o"
