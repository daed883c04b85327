"""The warm path: a key that verified before, decided without the flow's generator.

Both drivers try it first, and ``authenticate_nowait`` exposes it; it must
decide exactly as the flow would, with one store read per request, and hand
anything else to the flow.
"""

from __future__ import annotations

import threading

import pytest

from aqnt_auth import (
    Authenticator,
    InvalidAPIKey,
    KeyManager,
    MissingAPIKey,
    PermissionDenied,
    RateLimited,
    RevokedAPIKey,
    StoreUnavailable,
)

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
