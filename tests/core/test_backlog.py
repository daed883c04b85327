"""The queue in front of argon2: bounded in length, in waiting time and in
memory; work nobody waits for any more is dropped; warm keys never queue."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from aqnt_auth import (
    ARGON2_PROFILES,
    Argon2Hasher,
    Authenticator,
    ClientDisconnected,
    ConfigurationError,
    FailureLimiter,
    InvalidAPIKey,
    KeyManager,
    Overloaded,
    RateLimited,
    checksum,
)
from tests import bodies

from ._support import CountingHasher, InstrumentedStore


def wrong(key: str, n: int) -> str:
    head = key[:20] + f"{n:032d}"
    return f"Bearer {head}{checksum(head)}"


def until(condition: Callable[[], bool]) -> None:
    for _ in range(5000):
        if condition():
            return
        time.sleep(0.001)
    pytest.fail("condition never became true")


class Held:
    """An authenticator whose argon2 verifications wait on a gate the test opens."""

    def __init__(self, **options: Any) -> None:
        self.gate = threading.Event()
        self.hasher = CountingHasher(self.gate)
        self.store = InstrumentedStore()
        manager = KeyManager(self.store, hasher=self.hasher)
        self.key = manager.create("attacked").key
        self.warm_key = manager.create("warm").key
        options.setdefault("rate_limit", None)
        self.auth = Authenticator(self.store, hashers=[self.hasher], **options)
        self.threads: list[threading.Thread] = []
        self.errors: list[BaseException] = []

    def attempt(self, header: str, client: str | None = None) -> None:
        """Authenticate *header* in a thread, collecting what it raises."""

        def run() -> None:
            try:
                self.auth.authenticate(header, client=client)
            except Exception as exc:
                self.errors.append(exc)

        thread = threading.Thread(target=run)
        thread.start()
        self.threads.append(thread)

    def finish(self) -> None:
        self.gate.set()
        for thread in self.threads:
            thread.join(30)
        self.auth.close()


@pytest.fixture
def held() -> Iterator[Callable[..., Held]]:
    made: list[Held] = []

    def make(**options: Any) -> Held:
        made.append(Held(**options))
        return made[-1]

    yield make
    for h in made:
        h.finish()


class TestQueueBound:
    def test_full_queue_is_503_at_once_without_argon2(self, held: Callable[..., Held]) -> None:
        """One verification running, one queued: the next is refused with the
        README's exact 503 and Retry-After, before any argon2."""
        h = held(max_concurrent_hashes=1, max_queued_hashes=1, max_hash_wait=60)
        h.attempt(wrong(h.key, 1))
        until(lambda: h.hasher.calls == 1)
        h.attempt(wrong(h.key, 2))
        until(lambda: h.auth._gate.pending == 1)
        with pytest.raises(Overloaded) as info:
            h.auth.authenticate(wrong(h.key, 3))
        assert h.hasher.calls == 1
        answer = h.auth.render_error(info.value)
        assert (answer.status, answer.body) == (503, bodies.UNAVAILABLE)
        assert dict(answer.headers)["Retry-After"] == "1"
        h.gate.set()
        for thread in h.threads:
            thread.join(30)
        assert [type(e) for e in h.errors] == [InvalidAPIKey, InvalidAPIKey]
        assert h.hasher.calls == 2

    def test_waiting_past_the_bound_is_503(self, held: Callable[..., Held]) -> None:
        """A verification that cannot get a turn within max_hash_wait is refused."""
        h = held(max_concurrent_hashes=1, max_queued_hashes=100, max_hash_wait=0.05)
        h.attempt(wrong(h.key, 1))
        until(lambda: h.hasher.calls == 1)
        with pytest.raises(Overloaded):
            h.auth.authenticate(wrong(h.key, 2))
        assert h.hasher.calls == 1
        assert h.auth._gate.pending == 0

    def test_a_client_over_its_limit_gets_429_instead(self, held: Callable[..., Held]) -> None:
        """If the client went over its failure limit while it waited (another
        worker counted its failures), the answer is 429, not 503."""
        limiter = FailureLimiter(per_key="100/minute", per_client="2/minute")
        h = held(max_concurrent_hashes=1, max_queued_hashes=100, max_hash_wait=0.2,
                 rate_limit=limiter)
        h.attempt(wrong(h.key, 1), client="198.51.100.1")
        until(lambda: h.hasher.calls == 1)

        def meanwhile() -> None:
            # The failures land while the request waits (it was admitted before).
            until(lambda: h.auth._gate.pending == 1)
            for _ in range(2):
                limiter.failed("203.0.113.9", None)

        thread = threading.Thread(target=meanwhile)
        thread.start()
        with pytest.raises(RateLimited):
            h.auth.authenticate(wrong(h.key, 2), client="203.0.113.9")
        thread.join()
        assert h.hasher.calls == 1

    def test_queued_work_of_a_client_over_its_limit_is_dropped(
        self, held: Callable[..., Held], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A verification that waited behind others is checked against the
        limiter again when its turn comes: 429 without argon2."""
        # Per hour: a per-minute window that turned between the two requests
        # would admit the second.
        limiter = FailureLimiter(per_key="1/hour", per_client="100/hour")
        h = held(max_concurrent_hashes=1, max_queued_hashes=10, max_hash_wait=60,
                 rate_limit=limiter)
        h.attempt(wrong(h.key, 1), client="203.0.113.9")
        until(lambda: h.hasher.calls == 1)
        h.attempt(wrong(h.key, 2), client="203.0.113.9")
        until(lambda: h.auth._gate.pending == 1)
        # The first failure is counted as its request ends, just after its
        # argon2 gives the turn to the second: on a loaded machine the second
        # could be checked first.  Its check (the only limiter call left)
        # waits for the first request to end, so this tests the re-check,
        # not which thread the scheduler runs first.
        first, admit = h.threads[0], limiter.admit

        def admit_after_the_first(client: str | None, key_id: str | None) -> None:
            first.join(30)
            admit(client, key_id)

        monkeypatch.setattr(limiter, "admit", admit_after_the_first)
        h.finish()
        assert sorted(type(e).__name__ for e in h.errors) == ["InvalidAPIKey", "RateLimited"]
        assert h.hasher.calls == 1

    def test_warm_keys_never_queue(self, held: Callable[..., Held]) -> None:
        """With the queue full, a key that verified before is still answered."""
        h = held(max_concurrent_hashes=1, max_queued_hashes=0, max_hash_wait=60)
        h.gate.set()
        h.auth.authenticate(f"Bearer {h.warm_key}")
        h.gate.clear()
        h.attempt(wrong(h.key, 1))
        until(lambda: h.hasher.running == 1)
        with pytest.raises(Overloaded):
            h.auth.authenticate(wrong(h.key, 2))
        assert h.auth.authenticate(f"Bearer {h.warm_key}").name == "warm"
        assert h.auth.authenticate_nowait(f"Bearer {h.warm_key}") is not None

    def test_bad_options(self) -> None:
        store = InstrumentedStore()
        for options in ({"max_queued_hashes": -1}, {"max_hash_wait": -1.0},
                        {"max_hash_wait": float("nan")}, {"max_hash_memory_mib": 0}):
            with pytest.raises(ConfigurationError):
                Authenticator(store, **options)


class TestCancelled:
    @pytest.mark.anyio
    async def test_cancelled_request_is_not_hashed(self, held: Callable[..., Held]) -> None:
        """A queued verification whose request was cancelled never runs argon2."""
        h = held(max_concurrent_hashes=1, max_hash_wait=60)
        first = asyncio.ensure_future(h.auth.authenticate_async(wrong(h.key, 1)))
        second = asyncio.ensure_future(h.auth.authenticate_async(wrong(h.key, 2)))
        while h.hasher.calls == 0 or h.auth._gate.pending == 0:
            await asyncio.sleep(0.001)
        second.cancel()
        # The cancellation lands when the loop next runs that task: wait for
        # it while the verification is still queued.  Opening the gate first
        # let the worker start it before the cancellation landed (then it is
        # no longer queued work, and runs).
        with pytest.raises(asyncio.CancelledError):
            await second
        h.gate.set()
        with pytest.raises(InvalidAPIKey):
            await first
        while h.auth._gate.pending:
            await asyncio.sleep(0.001)
        assert h.hasher.calls == 1

    @pytest.mark.anyio
    async def test_runs_while_one_request_still_waits(self, held: Callable[..., Held]) -> None:
        """Two requests share one queued verification: cancelling one leaves the other's."""
        h = held(max_concurrent_hashes=1, max_hash_wait=60)
        blocker = asyncio.ensure_future(h.auth.authenticate_async(wrong(h.key, 1)))
        while h.hasher.running == 0:
            await asyncio.sleep(0.001)
        a = asyncio.ensure_future(h.auth.authenticate_async(f"Bearer {h.warm_key}"))
        b = asyncio.ensure_future(h.auth.authenticate_async(f"Bearer {h.warm_key}"))
        while h.auth._gate.pending == 0:
            await asyncio.sleep(0.001)
        await asyncio.sleep(0.01)  # both joined the one flight
        a.cancel()
        h.gate.set()
        assert (await b).name == "warm"
        with pytest.raises(InvalidAPIKey):
            await blocker
        assert h.hasher.calls == 2

    @pytest.mark.anyio
    async def test_disconnect_withdraws_the_verification(
        self, held: Callable[..., Held]
    ) -> None:
        """When *disconnected* returns (the client hung up) while argon2 is
        awaited, ClientDisconnected is raised and the queued work is dropped."""
        h = held(max_concurrent_hashes=1, max_hash_wait=60)
        blocker = asyncio.ensure_future(h.auth.authenticate_async(wrong(h.key, 1)))
        while h.hasher.running == 0:
            await asyncio.sleep(0.001)
        hung_up = asyncio.Event()
        queued = asyncio.ensure_future(h.auth.authenticate_async(
            wrong(h.key, 2), disconnected=hung_up.wait))
        while h.auth._gate.pending == 0:
            await asyncio.sleep(0.001)
        hung_up.set()
        with pytest.raises(ClientDisconnected):
            await queued
        h.gate.set()
        with pytest.raises(InvalidAPIKey):
            await blocker
        while h.auth._gate.pending:
            await asyncio.sleep(0.001)
        assert h.hasher.calls == 1

    @pytest.mark.anyio
    async def test_a_watch_that_never_fires_costs_nothing(self, held: Callable[..., Held]
                                                          ) -> None:
        h = held()
        h.gate.set()
        never = asyncio.Event()
        principal = await h.auth.authenticate_async(f"Bearer {h.warm_key}",
                                                    disconnected=never.wait)
        assert principal.name == "warm"


def small(memory_kib: int) -> Argon2Hasher:
    return Argon2Hasher(dataclasses.replace(ARGON2_PROFILES["cheapest"], memory_cost=memory_kib))


class TestMemoryBudget:
    def test_high_memory_profile_is_refused_by_default(self) -> None:
        """rfc9106-high-memory (2 GiB a hash) exceeds the default budget:
        refused when configured and when a key would be created, with nothing
        allocated (the parameters are read, no hash is computed)."""
        hasher = Argon2Hasher("rfc9106-high-memory")
        assert hasher.memory_kib() == 2 * 1024 * 1024
        with pytest.raises(ConfigurationError, match="2048 MiB"):
            Authenticator(InstrumentedStore(), hashers=[hasher])
        with pytest.raises(ConfigurationError, match="max_hash_memory_mib"):
            KeyManager(InstrumentedStore(), hasher=hasher).create("big")

    def test_default_keeps_the_owasp_concurrency(self) -> None:
        with Authenticator(InstrumentedStore(), max_concurrent_hashes=64) as auth:
            assert auth.max_hash_memory_mib >= 64 * 19
        with Authenticator(InstrumentedStore(), max_concurrent_hashes=2) as auth:
            assert auth.max_hash_memory_mib == 1024

    def test_a_small_budget_refuses_a_larger_profile_at_creation(self) -> None:
        with pytest.raises(ConfigurationError):
            KeyManager(InstrumentedStore(), hasher=small(2048), max_hash_memory_mib=1).create("k")
        KeyManager(InstrumentedStore(), hasher=small(1024), max_hash_memory_mib=1).create("k")

    def test_verifications_never_exceed_the_budget(self) -> None:
        """Eight concurrent verifications of a 512 KiB profile under a 1 MiB
        budget: never more than two at once, though four are allowed by count."""
        gate = threading.Event()
        hasher = CountingHasher(gate, profile=small(512).parameters)
        store = InstrumentedStore()
        key = KeyManager(store, hasher=hasher).create("k").key
        auth = Authenticator(store, hashers=[hasher], max_concurrent_hashes=4,
                             max_hash_memory_mib=1, max_hash_wait=60, rate_limit=None)
        refused: list[str] = []

        def attempt(n: int) -> None:
            try:
                auth.authenticate(wrong(key, n))
            except InvalidAPIKey as exc:
                refused.append(exc.code)

        threads = [threading.Thread(target=attempt, args=(n,)) for n in range(8)]
        for t in threads:
            t.start()
        until(lambda: hasher.running == 2 and auth._gate.pending == 6)
        gate.set()
        for t in threads:
            t.join(30)
        assert hasher.calls == 8
        assert refused == ["invalid_api_key"] * 8
        assert hasher.peak == 2
        auth.close()

    def test_a_stored_hash_over_the_budget_is_refused_and_logged(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        """A key made with more memory than this server allows is never
        verified: 401 and an error for the operator, no argon2."""
        store = InstrumentedStore()
        key = KeyManager(store, hasher=small(2048), max_hash_memory_mib=2).create("k").key
        hasher = CountingHasher()
        with Authenticator(store, hashers=[hasher], max_hash_memory_mib=1) as auth, \
                caplog.at_level(logging.ERROR, logger="aqnt_auth"), \
                pytest.raises(InvalidAPIKey):
            auth.authenticate(f"Bearer {key}")
        assert hasher.calls == 0
        assert "over max_hash_memory_mib" in caplog.text
        assert key not in caplog.text
