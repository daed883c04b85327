"""Brute-force and flood limits on failed verifications."""

from __future__ import annotations

import uuid

import pytest

from aqnt_auth import (
    Authenticator,
    ConfigurationError,
    FailureLimiter,
    InvalidAPIKey,
    KeyManager,
    MissingAPIKey,
    RateLimited,
    StoreUnavailable,
    checksum,
)
from tests import bodies

from ..conftest import require_service
from ._support import CountingHasher, InstrumentedStore


def guess(key: str, n: int) -> str:
    head = key[:20] + f"{n:032d}"
    return f"Bearer {head}{checksum(head)}"


@pytest.fixture
def setup() -> tuple[InstrumentedStore, CountingHasher, str, str]:
    store, hasher = InstrumentedStore(), CountingHasher()
    issued = KeyManager(store, hasher=hasher).create("victim")
    return store, hasher, issued.key, issued.record.id


class TestPerKey:
    def test_guessing_an_id_is_throttled(self, setup: tuple[InstrumentedStore, CountingHasher,
                                                            str, str]) -> None:
        """Past the per-id limit, a client's guesses for that id get 429 without argon2."""
        store, hasher, key, _ = setup
        limiter = FailureLimiter(per_key="3/minute", per_client="1000/minute")
        with Authenticator(store, hashers=[hasher], rate_limit=limiter) as auth:
            for n in range(3):
                with pytest.raises(InvalidAPIKey):
                    auth.authenticate(guess(key, n), client="10.0.0.1")
            calls = hasher.calls
            with pytest.raises(RateLimited) as info:
                auth.authenticate(guess(key, 99), client="10.0.0.1")
            assert hasher.calls == calls
            response = auth.render_error(info.value)
            assert response.status == 429
            assert response.body == bodies.RATE_LIMITED
            assert int(dict(response.headers)["Retry-After"]) >= 1
            # The id's counter is this client's: another address is not refused.
            with pytest.raises(InvalidAPIKey):
                auth.authenticate(guess(key, 100), client="10.0.0.2")

    @pytest.mark.parametrize("cache_ttl", [300.0, 0.0])
    def test_the_owner_is_never_locked_out(
        self, setup: tuple[InstrumentedStore, CountingHasher, str, str], cache_ttl: float
    ) -> None:
        """11 wrong secrets from 11 addresses for one id (past the default
        10/minute): the owner's valid key still works, on this worker (whose
        cache entry expired, with ``cache_ttl=0``) and on one that never saw it."""
        store, hasher, key, key_id = setup
        limiter = FailureLimiter()  # the defaults
        worker = Authenticator(store, hashers=[hasher], rate_limit=limiter, cache_ttl=cache_ttl)
        fresh = Authenticator(store, hashers=[hasher], rate_limit=limiter)
        with worker, fresh:
            assert worker.authenticate(f"Bearer {key}", client="192.0.2.1").id == key_id
            for n in range(11):
                with pytest.raises(InvalidAPIKey):
                    worker.authenticate(guess(key, n), client=f"203.0.113.{n}")
            for auth in (worker, fresh):
                assert auth.authenticate(f"Bearer {key}", client="192.0.2.1").id == key_id
                assert auth.authenticate(f"Bearer {key}", client="192.0.2.77").id == key_id

    def test_a_verified_key_keeps_working_under_attack(
        self, setup: tuple[InstrumentedStore, CountingHasher, str, str]
    ) -> None:
        store, hasher, key, key_id = setup
        limiter = FailureLimiter(per_key="2/minute", per_client="1000/minute")
        with Authenticator(store, hashers=[hasher], rate_limit=limiter) as auth:
            assert auth.authenticate(f"Bearer {key}", client="1.1.1.1").id == key_id
            for n in range(5):
                with pytest.raises((InvalidAPIKey, RateLimited)):
                    auth.authenticate(guess(key, n), client="6.6.6.6")
            assert auth.authenticate(f"Bearer {key}", client="1.1.1.1").id == key_id

    @pytest.mark.anyio
    async def test_async(self, setup: tuple[InstrumentedStore, CountingHasher, str, str]) -> None:
        store, hasher, key, _ = setup
        limiter = FailureLimiter(per_key="2/minute", per_client="1000/minute")
        async with Authenticator(store, hashers=[hasher], rate_limit=limiter) as auth:
            for n in range(2):
                with pytest.raises(InvalidAPIKey):
                    await auth.authenticate_async(guess(key, n))
            with pytest.raises(RateLimited):
                await auth.authenticate_async(guess(key, 3))


class TestPerClient:
    def test_garbage_from_one_client_is_throttled(
        self, setup: tuple[InstrumentedStore, CountingHasher, str, str]
    ) -> None:
        """Malformed keys count against the client; then 429 before any store call."""
        store, hasher, key, _ = setup
        limiter = FailureLimiter(per_key="100/minute", per_client="5/minute")
        with Authenticator(store, hashers=[hasher], rate_limit=limiter) as auth:
            for _ in range(5):
                with pytest.raises(InvalidAPIKey):
                    auth.authenticate("Bearer garbage", client="6.6.6.6")
            with pytest.raises(RateLimited):
                auth.authenticate("Bearer garbage", client="6.6.6.6")
            gets = store.gets
            with pytest.raises(RateLimited):
                auth.authenticate(guess(key, 1), client="6.6.6.6")
            assert store.gets == gets
            # Other clients are unaffected; so is a proven key from the same address.
            with pytest.raises(InvalidAPIKey):
                auth.authenticate("Bearer garbage", client="7.7.7.7")

    def test_missing_keys_are_not_failures(
        self, setup: tuple[InstrumentedStore, CountingHasher, str, str]
    ) -> None:
        store, hasher, _, _ = setup
        limiter = FailureLimiter(per_client="1/minute")
        with Authenticator(store, hashers=[hasher], rate_limit=limiter) as auth:
            for _ in range(5):
                with pytest.raises(MissingAPIKey):
                    auth.authenticate(None, client="1.2.3.4")


class TestDefaults:
    def test_on_by_default(self, setup: tuple[InstrumentedStore, CountingHasher, str, str]
                           ) -> None:
        """Without a rate_limit option failures are throttled in memory, per process."""
        store, hasher, key, _ = setup
        with Authenticator(store, hashers=[hasher]) as auth:
            assert isinstance(auth.rate_limit, FailureLimiter)
            assert auth.rate_limit.storage_uri == "memory://"
            for n in range(10):
                with pytest.raises(InvalidAPIKey):
                    auth.authenticate(guess(key, n), client="198.51.100.1")
            with pytest.raises(RateLimited):
                auth.authenticate(guess(key, 10), client="198.51.100.1")

    def test_none_turns_it_off(self, setup: tuple[InstrumentedStore, CountingHasher, str, str]
                               ) -> None:
        store, hasher, key, _ = setup
        with Authenticator(store, hashers=[hasher], rate_limit=None) as auth:
            assert auth.rate_limit is None
            for n in range(12):
                with pytest.raises(InvalidAPIKey):
                    auth.authenticate(guess(key, n), client="198.51.100.1")

    def test_a_storage_uri(self) -> None:
        """A string is the storage of a limiter with the default limits."""
        with Authenticator(InstrumentedStore(), rate_limit="redis://127.0.0.1:6379") as auth:
            assert isinstance(auth.rate_limit, FailureLimiter)
            assert auth.rate_limit.blocking
        with pytest.raises(ConfigurationError):
            Authenticator(InstrumentedStore(), rate_limit="nosuch://x")
        with pytest.raises(ConfigurationError):
            Authenticator(InstrumentedStore(), rate_limit=10)  # type: ignore[arg-type]

    def test_every_authenticator_has_its_own(self) -> None:
        a, b = Authenticator(InstrumentedStore()), Authenticator(InstrumentedStore())
        assert a.rate_limit is not b.rate_limit
        a.close()
        b.close()


def test_bad_configuration() -> None:
    with pytest.raises(ConfigurationError):
        FailureLimiter(per_key="lots")
    with pytest.raises(ConfigurationError):
        FailureLimiter(strategy="leaky")


def test_limiter_storage_failure_fails_closed(
    setup: tuple[InstrumentedStore, CountingHasher, str, str]
) -> None:
    """Without its counters the limiter answers 503, never lets guesses through unthrottled."""
    store, hasher, key, _ = setup
    limiter = FailureLimiter(storage_uri="redis://127.0.0.1:1")
    with Authenticator(store, hashers=[hasher], rate_limit=limiter) as auth, \
            pytest.raises(StoreUnavailable):
        auth.authenticate(guess(key, 1), client="1.2.3.4")


def test_redis_storage_is_shared_between_servers(
    setup: tuple[InstrumentedStore, CountingHasher, str, str]
) -> None:
    """Two authenticators (two servers) share failure counts through Redis."""
    require_service("Redis", "127.0.0.1", 6379)
    store, hasher, key, _ = setup
    # A namespace per run: the key id is random, so counters never collide.
    uri = "redis://127.0.0.1:6379"
    a = Authenticator(store, hashers=[hasher],
                      rate_limit=FailureLimiter(per_key="2/minute", storage_uri=uri))
    b = Authenticator(store, hashers=[hasher],
                      rate_limit=FailureLimiter(per_key="2/minute", storage_uri=uri))
    client = str(uuid.uuid4())
    with pytest.raises(InvalidAPIKey):
        a.authenticate(guess(key, 1), client=client)
    with pytest.raises(InvalidAPIKey):
        b.authenticate(guess(key, 2), client=client)
    with pytest.raises(RateLimited):
        a.authenticate(guess(key, 3), client=client)
    with pytest.raises(RateLimited):
        b.authenticate(guess(key, 4), client=client)
    a.close()
    b.close()


def test_ipv6_clients_are_counted_per_network(
    setup: tuple[InstrumentedStore, CountingHasher, str, str]
) -> None:
    """Rotating through one /64 does not buy a fresh budget per address."""
    store, hasher, _, _ = setup
    limiter = FailureLimiter(per_client="3/minute")
    with Authenticator(store, hashers=[hasher], rate_limit=limiter) as auth:
        for n in range(3):
            with pytest.raises(InvalidAPIKey):
                auth.authenticate("Bearer garbage", client=f"2001:db8:1:2::{n + 1:x}")
        with pytest.raises(RateLimited):
            auth.authenticate("Bearer garbage", client="2001:db8:1:2:ffff::9")
        # Another /64, and IPv4 clients, have their own budgets.
        with pytest.raises(InvalidAPIKey):
            auth.authenticate("Bearer garbage", client="2001:db8:1:3::1")
        with pytest.raises(InvalidAPIKey):
            auth.authenticate("Bearer garbage", client="192.0.2.1")


def test_bad_ipv6_prefix() -> None:
    with pytest.raises(ConfigurationError):
        FailureLimiter(ipv6_prefix=0)
