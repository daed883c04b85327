"""The verification cache: bounded, expiring, thread-safe, keyed per process."""

from __future__ import annotations

import contextlib
import hashlib
import threading

from aqnt_auth import Authenticator, InvalidAPIKey, KeyManager, VerificationCache, checksum

from ._support import CountingHasher, InstrumentedStore


class TestVerificationCache:
    def test_bounded_lru(self) -> None:
        cache = VerificationCache(maxsize=3, ttl=60)
        digests = [cache.digest(f"key{i}") for i in range(5)]
        for d in digests[:3]:
            cache.add(d, "id", "live", "sk", "h")
        assert cache.get(digests[0]) is not None  # now most recently used
        cache.add(digests[3], "id", "live", "sk", "h")
        assert len(cache) == 3
        assert cache.get(digests[1]) is None  # least recently used, evicted
        assert cache.get(digests[0]) is not None

    def test_ttl(self) -> None:
        now = [0.0]
        cache = VerificationCache(maxsize=10, ttl=5, clock=lambda: now[0])
        d = cache.digest("key")
        cache.add(d, "id", "live", "sk", "h")
        now[0] = 4.9
        assert cache.get(d) is not None
        now[0] = 5.0
        assert cache.get(d) is None
        assert len(cache) == 0

    def test_digest_is_keyed_per_process(self) -> None:
        """Two caches (two processes) give different digests for the same key."""
        a, b = VerificationCache(), VerificationCache()
        assert a.digest("sk_live_x") == a.digest("sk_live_x")
        assert a.digest("sk_live_x") != b.digest("sk_live_x")
        assert len(a.digest("sk_live_x")) == 16
        # Keyed: not the plain BLAKE2s anyone could compute.
        assert a.digest("sk_live_x") != hashlib.blake2s(b"sk_live_x", digest_size=16).digest()

    def test_digest_of_bytes_is_that_of_the_ascii_text(self) -> None:
        """A header that arrived as bytes is looked up without decoding it."""
        cache = VerificationCache()
        assert cache.digest(b"sk_live_abc") == cache.digest("sk_live_abc")
        assert cache.digest(b"sk_live_ab?") == cache.digest("sk_live_ab\u00e9")
        assert cache.digest(b"sk_live_abc") != cache.digest(b"sk_live_abd")

    def test_holds_no_secret(self) -> None:
        cache = VerificationCache()
        key = "sk_live_" + "A" * 12 + "S" * 32 + "C" * 6
        d = cache.digest(key)
        cache.add(d, "A" * 12, "live", "sk", "$argon2id$...")
        entry = cache.get(d)
        assert entry is not None
        assert "S" * 32 not in repr(entry)

    def test_disabled(self) -> None:
        cache = VerificationCache(maxsize=0)
        d = cache.digest("k")
        cache.add(d, "id", "live", "sk", "h")
        assert cache.get(d) is None

    def test_thread_safe_under_contention(self) -> None:
        cache = VerificationCache(maxsize=100, ttl=60)
        errors: list[BaseException] = []

        def work(n: int) -> None:
            try:
                for i in range(2000):
                    d = cache.digest(f"{n}-{i % 150}")
                    if cache.get(d) is None:
                        cache.add(d, "id", "live", "sk", "h")
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        assert len(cache) <= 100


def test_bounded_under_a_flood_of_bogus_keys() -> None:
    """10^5 distinct bogus keys against a known id leave the cache empty."""
    store = InstrumentedStore()
    hasher = CountingHasher()
    issued = KeyManager(store, hasher=hasher).create("k")
    with Authenticator(store, hashers=[hasher], cache_size=1000) as auth:
        auth.authenticate(f"Bearer {issued.key}")
        for i in range(100_000):
            # Random-looking unknown ids: each is one store miss, no argon2.
            head = f"sk_live_{i:012d}" + "s" * 32
            with contextlib.suppress(InvalidAPIKey):
                auth.authenticate(f"Bearer {head}{checksum(head)}")
        assert len(auth.cache) == 1
        assert hasher.calls == 1
        assert len(auth._flights) == 0
