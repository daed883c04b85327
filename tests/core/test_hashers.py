"""Hashers: argon2id profiles and HMAC-SHA256 with a pepper."""

from __future__ import annotations

import dataclasses
import threading

import argon2
import pytest

from aqnt_auth import (
    ARGON2_PROFILES,
    Argon2Hasher,
    Authenticator,
    ConfigurationError,
    Hasher,
    HMACHasher,
    InvalidStoredHash,
    KeyManager,
    MemoryKeyStore,
)

SECRET = "s" * 32
PEPPER = b"0123456789abcdef0123456789abcdef"


class TestArgon2Hasher:
    def test_default_is_owasp_minimum(self) -> None:
        """argon2id, m=19 MiB, t=2, p=1 by default, as OWASP recommends."""
        hasher = Argon2Hasher()
        stored = hasher.hash(SECRET)
        assert stored.startswith("$argon2id$v=19$m=19456,t=2,p=1$")
        assert hasher.verify(stored, SECRET) is True
        assert hasher.verify(stored, SECRET[:-1] + "x") is False

    def test_rfc9106_profile_is_available(self) -> None:
        """The RFC 9106 low-memory profile is a named option."""
        params = ARGON2_PROFILES["rfc9106-low-memory"]
        assert params == argon2.profiles.RFC_9106_LOW_MEMORY
        assert Argon2Hasher("rfc9106-low-memory").parameters.memory_cost == 65536

    def test_unknown_profile(self) -> None:
        with pytest.raises(ConfigurationError, match="unknown argon2 profile"):
            Argon2Hasher("fastest")

    def test_argon2i_parameters_refused(self) -> None:
        params = argon2.Parameters(argon2.Type.I, 19, 16, 32, 2, 1024, 1)
        with pytest.raises(ConfigurationError):
            Argon2Hasher(params)

    @pytest.mark.parametrize("stored", ["$argon2id$garbage", "$argon2id$v=19$m=8,t=1,p=1$@@@$@@@"])
    def test_corrupt_hash_is_not_a_mismatch(self, stored: str) -> None:
        """A corrupt stored hash raises InvalidStoredHash, not False."""
        with pytest.raises(InvalidStoredHash):
            Argon2Hasher("cheapest").verify(stored, SECRET)

    def test_needs_rehash(self) -> None:
        """A hash made with other parameters needs a rehash."""
        old = Argon2Hasher("cheapest").hash(SECRET)
        assert Argon2Hasher("owasp").needs_rehash(old) is True
        assert Argon2Hasher("cheapest").needs_rehash(old) is False

    def test_stronger_hash_is_not_downgraded(self) -> None:
        """A hash stronger than the configured profile in any parameter is kept."""
        cheapest = ARGON2_PROFILES["cheapest"]
        hasher = Argon2Hasher(cheapest)
        stronger = {
            "memory_cost": dataclasses.replace(cheapest, memory_cost=16),
            "time_cost": dataclasses.replace(cheapest, time_cost=2),
            "hash_len": dataclasses.replace(cheapest, hash_len=32),
            # stronger in memory, weaker in time: still never rewritten
            "mixed": dataclasses.replace(cheapest, memory_cost=32, time_cost=1),
        }
        for name, params in stronger.items():
            stored = Argon2Hasher(params).hash(SECRET)
            assert hasher.needs_rehash(stored) is False, name
        assert Argon2Hasher(dataclasses.replace(cheapest, time_cost=2)).needs_rehash(
            Argon2Hasher(dataclasses.replace(cheapest, memory_cost=32)).hash(SECRET)) is False

    def test_weaker_hash_in_each_parameter_is_upgraded(self) -> None:
        """A hash weaker in one parameter (the others equal) needs a rehash."""
        base = dataclasses.replace(ARGON2_PROFILES["cheapest"], memory_cost=16, time_cost=2,
                                   hash_len=16, salt_len=16)
        hasher = Argon2Hasher(base)
        for field in ("memory_cost", "time_cost", "hash_len", "salt_len"):
            weaker = dataclasses.replace(base, **{field: getattr(base, field) // 2})
            assert hasher.needs_rehash(Argon2Hasher(weaker).hash(SECRET)) is True, field
        assert hasher.needs_rehash(hasher.hash(SECRET)) is False

    def test_protocol(self) -> None:
        assert isinstance(Argon2Hasher("cheapest"), Hasher)
        assert isinstance(HMACHasher(PEPPER), Hasher)

    def test_threads(self) -> None:
        """One hasher verifies from many threads at once."""
        hasher = Argon2Hasher("cheapest")
        stored = hasher.hash(SECRET)
        results: list[bool] = []

        def work() -> None:
            results.extend(hasher.verify(stored, SECRET) for _ in range(50))

        threads = [threading.Thread(target=work) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert results == [True] * 400


class TestHMACHasher:
    def test_round_trip(self) -> None:
        """The stored hash names the hasher and the pepper id."""
        hasher = HMACHasher(PEPPER, pepper_id="2026")
        stored = hasher.hash(SECRET)
        assert stored.startswith("$hmac-sha256$k=2026$")
        assert hasher.verify(stored, SECRET) is True
        assert hasher.verify(stored, "x" * 32) is False
        assert SECRET not in stored

    def test_other_pepper_does_not_verify(self) -> None:
        stored = HMACHasher(PEPPER).hash(SECRET)
        other = HMACHasher(b"another-pepper-of-32-bytes-long!")
        assert other.verify(stored, SECRET) is False

    def test_pepper_rotation(self) -> None:
        """Old peppers still verify, and their hashes need a rehash."""
        old = HMACHasher(PEPPER, pepper_id="1")
        stored = old.hash(SECRET)
        new = HMACHasher(b"n" * 32, pepper_id="2", previous={"1": PEPPER})
        assert new.verify(stored, SECRET) is True
        assert new.needs_rehash(stored) is True
        assert new.needs_rehash(new.hash(SECRET)) is False

    @pytest.mark.parametrize(
        "stored",
        ["$hmac-sha256$", "$hmac-sha256$k=9$AAAA", "$hmac-sha256$x=1$AAAA", "$hmac-sha256$k=1$A"],
    )
    def test_corrupt(self, stored: str) -> None:
        with pytest.raises(InvalidStoredHash):
            HMACHasher(PEPPER).verify(stored, SECRET)

    def test_short_pepper_refused(self) -> None:
        with pytest.raises(ConfigurationError, match="16 bytes"):
            HMACHasher(b"short")

    def test_from_env(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.delenv("AQNT_AUTH_PEPPER", raising=False)
        assert HMACHasher.from_env() is None
        monkeypatch.setenv("AQNT_AUTH_PEPPER", PEPPER.decode())
        hasher = HMACHasher.from_env()
        assert hasher is not None
        assert hasher.verify(HMACHasher(PEPPER).hash(SECRET), SECRET)


def test_one_store_holds_both_kinds() -> None:
    """Keys hashed by argon2id and by HMAC live side by side in one store."""
    store = MemoryKeyStore()
    argon, hmac_hasher = Argon2Hasher("cheapest"), HMACHasher(PEPPER)
    a = KeyManager(store, hasher=argon).create("argon")
    h = KeyManager(store, hasher=hmac_hasher).create("hmac")
    with Authenticator(store, hashers=[argon, hmac_hasher]) as auth:
        assert auth.authenticate(f"Bearer {a.key}").id == a.record.id
        assert auth.authenticate(f"Bearer {h.key}").id == h.record.id
