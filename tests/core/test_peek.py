"""A blocking store with a record cache (``peek``) serves warm requests without waiting."""

from __future__ import annotations

import pytest

from aqnt_auth import Authenticator, KeyManager, KeyRecord, RevokedAPIKey

from ._support import BlockingInstrumentedStore, CountingHasher, SpyLimiter


class PeekingStore(BlockingInstrumentedStore):
    """Blocking, but with a cache that can be switched off (as when deaf)."""

    def __init__(self) -> None:
        super().__init__()
        self.cache_answers = True
        self.peeks = 0

    def peek(self, key_id: str) -> KeyRecord | None:
        self.peeks += 1
        return self._records.get(key_id) if self.cache_answers else None


@pytest.fixture
def setup() -> tuple[PeekingStore, CountingHasher, str]:
    store, hasher = PeekingStore(), CountingHasher()
    return store, hasher, KeyManager(store, hasher=hasher).create("k").key


class TestNowait:
    @pytest.mark.anyio
    async def test_warm_request_is_answered_from_peek(
        self, setup: tuple[PeekingStore, CountingHasher, str]
    ) -> None:
        """After one verification, nowait answers from the cache: no get(), no thread."""
        store, hasher, key = setup
        async with Authenticator(store, hashers=[hasher]) as auth:
            assert auth.authenticate_nowait(f"Bearer {key}") is None  # cold: never verified
            await auth.authenticate_async(f"Bearer {key}")
            gets = store.gets
            principal = auth.authenticate_nowait(f"Bearer {key}")
            assert principal is not None
            assert store.gets == gets
            assert store.peeks >= 1

    @pytest.mark.anyio
    async def test_a_deaf_cache_means_ask_the_store(
        self, setup: tuple[PeekingStore, CountingHasher, str]
    ) -> None:
        """peek() returning None is "ask get()", never "no such key"."""
        store, hasher, key = setup
        async with Authenticator(store, hashers=[hasher]) as auth:
            await auth.authenticate_async(f"Bearer {key}")
            store.cache_answers = False
            assert auth.authenticate_nowait(f"Bearer {key}") is None
            assert (await auth.authenticate_async(f"Bearer {key}")).name == "k"

    @pytest.mark.anyio
    async def test_revocation_seen_through_peek(
        self, setup: tuple[PeekingStore, CountingHasher, str]
    ) -> None:
        store, hasher, key = setup
        async with Authenticator(store, hashers=[hasher]) as auth:
            await auth.authenticate_async(f"Bearer {key}")
            KeyManager(store, hasher=hasher).revoke(key[8:20])
            with pytest.raises(RevokedAPIKey):
                auth.authenticate_nowait(f"Bearer {key}")

    def test_also_with_a_failure_limiter(
        self, setup: tuple[PeekingStore, CountingHasher, str]
    ) -> None:
        """The failure limiter (on by default) leaves a verified key "nowait":
        it is answered from peek and never touches the limiter."""
        store, hasher, key = setup
        limiter = SpyLimiter()
        with Authenticator(store, hashers=[hasher], rate_limit=limiter) as auth:
            auth.authenticate(f"Bearer {key}")  # cold: admitted once
            admits = limiter.admits
            principal = auth.authenticate_nowait(f"Bearer {key}")
            assert principal is not None
            assert limiter.admits == admits
            assert limiter.failures == 0

    def test_the_sync_driver_still_reads_the_store(
        self, setup: tuple[PeekingStore, CountingHasher, str]
    ) -> None:
        store, hasher, key = setup
        with Authenticator(store, hashers=[hasher]) as auth:
            auth.authenticate(f"Bearer {key}")
            gets = store.gets
            auth.authenticate(f"Bearer {key}")
            assert store.gets == gets + 1
