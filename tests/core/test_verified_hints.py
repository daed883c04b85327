"""The verified-token hint: a warm key skips the checksum, and the hint decides nothing."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from aqnt_auth import Authenticator, InvalidAPIKey, KeyFormat, KeyManager, checksum

from ._support import CountingHasher, InstrumentedStore


@pytest.fixture
def auth(store: InstrumentedStore, hasher: CountingHasher) -> Iterator[Authenticator]:
    with Authenticator(store, hashers=[hasher], track_usage=False, cache_size=3) as a:
        yield a


@pytest.fixture
def key(store: InstrumentedStore, hasher: CountingHasher) -> str:
    return KeyManager(store, hasher=hasher).create("hinted").key


@pytest.fixture
def checksums(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every token KeyFormat.checksum_ok is asked about."""
    seen: list[str] = []
    original = KeyFormat.checksum_ok

    def counting(self: KeyFormat, token: str) -> bool:
        seen.append(token)
        return original(self, token)

    monkeypatch.setattr(KeyFormat, "checksum_ok", counting)
    return seen


class TestWarmPath:
    def test_warm_key_skips_the_checksum(self, auth: Authenticator, key: str,
                                         checksums: list[str]) -> None:
        """The first request checks the checksum once; later ones not at all."""
        auth.authenticate(f"Bearer {key}")
        assert checksums == [key]
        for _ in range(3):
            auth.authenticate(f"Bearer {key}")
        assert checksums == [key]

    def test_stale_hint_still_verifies(self, auth: Authenticator, key: str,
                                       hasher: CountingHasher, checksums: list[str]) -> None:
        """A hinted token whose verification was forgotten gets the full path again."""
        auth.authenticate(f"Bearer {key}")
        auth.cache.clear()
        principal = auth.authenticate(f"Bearer {key}")
        assert principal.name == "hinted"
        assert hasher.calls == 2
        assert checksums == [key, key]

    @pytest.mark.anyio
    async def test_async_driver(self, auth: Authenticator, key: str,
                                checksums: list[str]) -> None:
        await auth.authenticate_async(f"Bearer {key}")
        await auth.authenticate_async(f"Bearer {key}")
        assert checksums == [key]


class TestHintDecidesNothing:
    def test_planted_hint_for_garbage(self, auth: Authenticator, store: InstrumentedStore,
                                      key: str) -> None:
        """A token whose hash() is hinted but never verified is still checksummed:
        garbage gets invalid_api_key before any store call."""
        garbage = key[:-1] + ("A" if key[-1] != "A" else "B")
        for token in (garbage, "sk_live_short", "x" * 70):
            auth._verified_hints.add(hash(token))
            with pytest.raises(InvalidAPIKey):
                auth.authenticate(f"Bearer {token}")
        assert store.gets == 0

    def test_planted_hint_for_a_wrong_secret(self, auth: Authenticator, key: str,
                                             hasher: CountingHasher) -> None:
        """A well-formed token with another secret is verified, and refused."""
        auth.authenticate(f"Bearer {key}")
        manager = KeyManager(InstrumentedStore(), hasher=hasher)
        other = manager.create("elsewhere").key
        forged = key[:20] + other[20:52]
        forged += checksum(forged)
        auth._verified_hints.add(hash(forged))
        with pytest.raises(InvalidAPIKey):
            auth.authenticate(f"Bearer {forged}")

    def test_bounded_like_the_cache(self, auth: Authenticator, store: InstrumentedStore,
                                    hasher: CountingHasher) -> None:
        manager = KeyManager(store, hasher=hasher)
        for i in range(10):
            auth.authenticate(f"Bearer {manager.create(f'k{i}').key}")
            assert len(auth._verified_hints) <= 3
