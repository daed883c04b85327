"""The warm path: a key that verified before, decided without the flow's generator.

Both drivers try it first, and ``authenticate_nowait`` exposes it; it must
decide exactly as the flow would, with one store read per request, and hand
anything else to the flow.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import threading
import time
from typing import Any

import pytest

from aqnt_auth import (
    Authenticator,
    DisabledAPIKey,
    InvalidAPIKey,
    KeyManager,
    MemoryKeyStore,
    MissingAPIKey,
    PermissionDenied,
    Principal,
    RateLimited,
    RateLimitExceeded,
    RevokedAPIKey,
    StoreUnavailable,
    require_scopes,
)
from aqnt_auth._cache import Verified
from aqnt_auth._outcomes import EXPIRED

from ._support import BlockingInstrumentedStore, CountingHasher, InstrumentedStore, SpyLimiter


class TestSync:
    def test_one_store_read_per_warm_request(self, auth: Authenticator, keys: KeyManager,
                                             store: InstrumentedStore,
                                             hasher: CountingHasher) -> None:
        issued = keys.create("k")
        auth.authenticate(f"Bearer {issued.key}")
        reads = store.gets
        for _ in range(3):
            assert auth.authenticate(f"Bearer {issued.key}").id == issued.record.id
        assert store.gets == reads + 3
        assert hasher.calls == 1

    def test_deleted_key(self, auth: Authenticator, keys: KeyManager,
                         store: InstrumentedStore) -> None:
        """A warm key deleted from the store is unknown at once, in one read."""
        issued = keys.create("k")
        auth.authenticate(f"Bearer {issued.key}")
        keys.delete(issued.record.id)
        reads = store.gets
        with pytest.raises(InvalidAPIKey):
            auth.authenticate(f"Bearer {issued.key}")
        assert store.gets == reads + 1

    def test_restrictions_and_revocation(self, auth: Authenticator, keys: KeyManager) -> None:
        issued = keys.create("k", read_only=True)
        auth.authenticate(f"Bearer {issued.key}")
        with pytest.raises(PermissionDenied):
            auth.authenticate(f"Bearer {issued.key}", method="POST", path="/")
        keys.revoke(issued.record.id)
        with pytest.raises(RevokedAPIKey):
            auth.authenticate(f"Bearer {issued.key}")

    def test_store_failure(self, auth: Authenticator, keys: KeyManager,
                           store: InstrumentedStore) -> None:
        """A store that breaks on the warm path is a 503, never a 401."""
        issued = keys.create("k")
        auth.authenticate(f"Bearer {issued.key}")
        store.failure = OSError("connection reset")
        with pytest.raises(StoreUnavailable):
            auth.authenticate(f"Bearer {issued.key}")

    # A changed stored hash handing over to the flow: test_authenticator's
    # test_changed_hash_misses_the_cache.


@pytest.mark.anyio
class TestAsync:
    async def test_memory_store(self, auth: Authenticator, keys: KeyManager,
                                store: InstrumentedStore) -> None:
        issued = keys.create("k")
        await auth.authenticate_async(f"Bearer {issued.key}")
        reads = store.gets
        assert (await auth.authenticate_async(f"Bearer {issued.key}")).id == issued.record.id
        assert store.gets == reads + 1
        keys.revoke(issued.record.id)
        with pytest.raises(RevokedAPIKey):
            await auth.authenticate_async(f"Bearer {issued.key}")

    async def test_blocking_store_is_never_read_on_the_loop(
        self, hasher: CountingHasher
    ) -> None:
        """A blocking store skips the inline warm path: its reads stay in threads."""
        store = BlockingInstrumentedStore()
        issued = KeyManager(store, hasher=hasher).create("k")
        with Authenticator(store, hashers=[hasher], usage_flush_interval=3600) as auth:
            for _ in range(2):
                await auth.authenticate_async(f"Bearer {issued.key}")
        assert threading.get_ident() not in store.get_threads


class TestNowait:
    def test_warm_key(self, auth: Authenticator, keys: KeyManager,
                      hasher: CountingHasher) -> None:
        """None while the key is cold; then the principal, with no argon2 at all."""
        issued = keys.create("k", read_only=True)
        assert auth.authenticate_nowait(f"Bearer {issued.key}") is None
        assert hasher.calls == 0
        auth.authenticate(f"Bearer {issued.key}")
        principal = auth.authenticate_nowait(f"Bearer {issued.key}", method="GET", path="/")
        assert principal is not None
        assert principal.id == issued.record.id
        with pytest.raises(PermissionDenied):
            auth.authenticate_nowait(f"Bearer {issued.key}", method="POST", path="/")
        assert hasher.calls == 1

    @pytest.mark.parametrize("as_bytes", [True, False])
    @pytest.mark.parametrize("limited", [True, False])
    def test_header_looked_up_as_it_arrived(self, store: InstrumentedStore,
                                            hasher: CountingHasher, keys: KeyManager,
                                            as_bytes: bool, limited: bool) -> None:
        """"Bearer <key>" as bytes or text is answered from the cache; a
        look-alike that differs in one character, even one the digest encodes
        alike (a non-ASCII character), never is."""
        issued = keys.create("k")
        with Authenticator(store, hashers=[hasher], usage_flush_interval=3600,
                           rate_limit=SpyLimiter() if limited else None) as auth:
            auth.authenticate(f"Bearer {issued.key}")

            def header(token: str) -> str | bytes:
                value = f"Bearer {token}"
                return value.encode("utf-8") if as_bytes else value

            principal = auth.authenticate_nowait(header(issued.key))
            assert principal is not None
            assert principal.id == issued.record.id
            for token in (issued.key[:-1] + "?", issued.key[:-1] + "\u00e9", issued.key + "x"):
                if limited:
                    assert auth.authenticate_nowait(header(token)) is None
                else:
                    with pytest.raises(InvalidAPIKey):
                        auth.authenticate_nowait(header(token))
        assert hasher.calls == 1

    @pytest.mark.parametrize("header", [None, "Bearer sk_live_garbage", "Basic eDp5"])
    def test_decided_offline(self, store: InstrumentedStore, hasher: CountingHasher,
                             header: str | None) -> None:
        """Without a failure limiter, what needs no store is refused right away,
        as authenticate() would."""
        with Authenticator(store, hashers=[hasher], rate_limit=None) as auth, \
                pytest.raises((InvalidAPIKey, MissingAPIKey)):
            auth.authenticate_nowait(header)

    @pytest.mark.parametrize("header", [None, "Basic eDp5"])
    def test_missing_key_decided_offline_with_the_limiter(self, auth: Authenticator,
                                                          header: str | None) -> None:
        """A missing key is no failure to count: refused at once, limiter or not."""
        assert auth.rate_limit is not None  # on by default
        with pytest.raises(MissingAPIKey):
            auth.authenticate_nowait(header)

    def test_blocking_store_never_answers(self, hasher: CountingHasher) -> None:
        store = BlockingInstrumentedStore()
        issued = KeyManager(store, hasher=hasher).create("k")
        with Authenticator(store, hashers=[hasher], usage_flush_interval=3600) as auth:
            auth.authenticate(f"Bearer {issued.key}")
            reads = store.gets
            assert auth.authenticate_nowait(f"Bearer {issued.key}") is None
            assert auth.authenticate_nowait("Bearer sk_live_garbage") is None
        assert store.gets == reads

    @pytest.mark.anyio
    async def test_failure_limiter_leaves_the_warm_path_alone(
        self, store: InstrumentedStore, hasher: CountingHasher, keys: KeyManager
    ) -> None:
        """With a failure limiter a verified key is still answered nowait and
        never touches the limiter; an invalid key is left to the async path,
        which counts it against the client."""
        issued = keys.create("k")
        limiter = SpyLimiter(per_key="5/minute", per_client="2/minute")
        async with Authenticator(store, hashers=[hasher], rate_limit=limiter,
                                 usage_flush_interval=3600) as auth:
            auth.authenticate(f"Bearer {issued.key}")
            admits = limiter.admits
            for _ in range(3):
                principal = auth.authenticate_nowait(f"Bearer {issued.key}")
                assert principal is not None
            assert (limiter.admits, limiter.failures) == (admits, 0)
            for _ in range(2):
                assert auth.authenticate_nowait("Bearer sk_live_garbage") is None
                with pytest.raises(InvalidAPIKey):
                    await auth.authenticate_async("Bearer sk_live_garbage", client="6.6.6.6")
            assert limiter.failures == 2
            with pytest.raises(RateLimited):
                await auth.authenticate_async("Bearer sk_live_garbage", client="6.6.6.6")


def _decide(auth: Authenticator, key: str, driver: str, method: str = "GET") -> Principal:
    """One request through *driver*: the sync, the nowait or the async one."""
    header = f"Bearer {key}"
    if driver == "sync":
        return auth.authenticate(header, method=method, path="/")
    if driver == "nowait":
        # As ASGI middleware does: the async driver where nowait cannot answer
        # (a refusal for the failure limiter to count).
        principal = auth.authenticate_nowait(header.encode(), method, "/")
        if principal is not None:
            return principal
    return asyncio.run(auth.authenticate_async(header, method=method, path="/"))


def _entry(auth: Authenticator, key: str) -> Verified:
    entry = auth.cache.get(auth.cache.digest(key))
    assert entry is not None
    return entry


@pytest.mark.parametrize("driver", ["sync", "nowait", "async"])
class TestAcceptedRecord:
    """A warm key whose record is plain (usable, no policy, no restriction) is
    remembered with the very record it was accepted with; while the store
    returns that object, only the expiry is checked again.  Any change is a
    new record, seen on the next request."""

    def test_remembered_only_when_plain(self, auth: Authenticator, keys: KeyManager,
                                        store: InstrumentedStore, driver: str) -> None:
        plain, restricted = keys.create("plain"), keys.create("ro", read_only=True)
        for issued in (plain, restricted):
            auth.authenticate(f"Bearer {issued.key}")
            for _ in range(2):
                assert _decide(auth, issued.key, driver).id == issued.record.id
            # Warm on a memory store: nowait decides, inline.
            assert auth.authenticate_nowait(f"Bearer {issued.key}", "GET", "/") is not None
        assert _entry(auth, plain.key).accepted is store.get(plain.record.id)
        assert _entry(auth, restricted.key).accepted is None
        with pytest.raises(PermissionDenied):
            _decide(auth, restricted.key, driver, method="POST")

    @pytest.mark.parametrize(("change", "error"), [
        (lambda keys, key_id: keys.revoke(key_id), RevokedAPIKey),
        (lambda keys, key_id: keys.disable(key_id), DisabledAPIKey),
        (lambda keys, key_id: keys.delete(key_id), InvalidAPIKey),
        (lambda keys, key_id: keys.update(key_id, allowed_ips=["192.0.2.1"]), None),
    ])
    def test_every_change_is_seen_at_once(self, auth: Authenticator, keys: KeyManager,
                                          driver: str, change: Any, error: type | None
                                          ) -> None:
        issued = keys.create("k")
        auth.authenticate(f"Bearer {issued.key}")
        _decide(auth, issued.key, driver)
        assert _entry(auth, issued.key).accepted is not None
        change(keys, issued.record.id)
        if error is not None:
            with pytest.raises(error):
                _decide(auth, issued.key, driver)
        else:
            # An allowlist is checked against the client: from elsewhere, 403.
            with pytest.raises(PermissionDenied):
                asyncio.run(auth.authenticate_async(f"Bearer {issued.key}", client="198.51.100.7"))
            with pytest.raises(PermissionDenied):
                auth.authenticate(f"Bearer {issued.key}", client="198.51.100.7")
            assert auth.authenticate_nowait(f"Bearer {issued.key}") is None  # needs the client

    def test_a_rate_limit_added_is_enforced(self, auth: Authenticator, keys: KeyManager,
                                            driver: str) -> None:
        issued = keys.create("k")
        auth.authenticate(f"Bearer {issued.key}")
        _decide(auth, issued.key, driver)
        keys.update(issued.record.id, rate_limits=["1/hour"])
        principal = _decide(auth, issued.key, driver)
        assert principal.response_headers  # RateLimit headers: the limit applies
        with pytest.raises(RateLimitExceeded):
            _decide(auth, issued.key, driver)

    def test_expiry_reached_while_remembered(self, store: InstrumentedStore,
                                             hasher: CountingHasher, driver: str) -> None:
        now = [float(int(time.time()))]  # sums below are exact
        keys = KeyManager(store, hasher=hasher)
        issued = keys.create("k")
        keys.expire(issued.record.id, dt.datetime.fromtimestamp(now[0] + 60, dt.timezone.utc))
        with Authenticator(store, hashers=[hasher], usage_flush_interval=3600,
                           clock=lambda: now[0]) as auth:
            auth.authenticate(f"Bearer {issued.key}")
            for _ in range(2):
                _decide(auth, issued.key, driver)
            assert _entry(auth, issued.key).accepted is store.get(issued.record.id)
            now[0] += 59.5
            _decide(auth, issued.key, driver)
            now[0] += 0.5  # the expiry itself: no longer valid
            with pytest.raises(RevokedAPIKey) as refused:
                _decide(auth, issued.key, driver)
            assert refused.value.outcome == EXPIRED
            assert refused.value.key_id == issued.record.id

    def test_counted_as_any_valid_request(self, auth: Authenticator, keys: KeyManager,
                                          driver: str) -> None:
        """Usage counts every request of the remembered lane, and a scope
        refusal after it still moves the request to forbidden."""
        issued = keys.create("k", scopes=["read"])
        auth.authenticate(f"Bearer {issued.key}")
        for _ in range(3):
            principal = _decide(auth, issued.key, driver)
        assert _entry(auth, issued.key).accepted is not None
        assert auth.pending_usage() == {issued.record.id: 4}
        with pytest.raises(PermissionDenied):
            require_scopes(principal, ["write"])
        assert auth.flush_usage()
        totals = keys.usage(issued.record.id).totals
        assert {k: n for k, n in totals.items() if n} == {"valid": 3, "forbidden": 1}


def test_memory_store_reads_with_the_dicts_own_get() -> None:
    """The memory store's get() is its dict's (no Python frame on the warm
    path), unless a subclass has a get() of its own."""
    store = MemoryKeyStore()
    issued = KeyManager(store, hasher=CountingHasher()).create("k")
    assert store.get(issued.record.id) is issued.record
    assert store.get("nope") is None
    assert type(store.get).__name__ == "builtin_function_or_method"
    instrumented = InstrumentedStore()
    instrumented.get("nope")
    assert instrumented.gets == 1
