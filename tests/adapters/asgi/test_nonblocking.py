"""The event loop stays free: argon2 runs in threads, a warm key never leaves the loop."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import threading
from typing import Any

import anyio
import httpx
import pytest

from aqnt_auth import Argon2Hasher, KeyManager, MemoryKeyStore
from aqnt_auth.adapters.asgi import APIKeyMiddleware

from ._support import Recorder, bearer

pytestmark = pytest.mark.anyio


class GatedHasher:
    """An "expensive" hasher whose verify blocks until the test releases it."""

    identifier = "$gated$"
    expensive = True

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()

    def hash(self, secret: str) -> str:
        return self.identifier + hashlib.sha256(secret.encode()).hexdigest()

    def verify(self, stored: str, secret: str) -> bool:
        self.entered.set()
        # Bounded, so a regression fails the test instead of hanging it.
        if not self.release.wait(timeout=30):
            raise AssertionError("the test never released the verification")
        return hmac.compare_digest(stored, self.hash(secret))

    def needs_rehash(self, stored: str) -> bool:
        return False


async def test_exempt_request_is_answered_while_a_cold_verify_runs() -> None:
    """While a cold key's verification is blocked, an exempt request still completes."""
    hasher = GatedHasher()
    store = MemoryKeyStore()
    issued = KeyManager(store, hasher=hasher).create("cold")
    app = APIKeyMiddleware(Recorder(), store=store, hashers=[hasher], exempt_paths=["/health"])
    results: dict[str, httpx.Response] = {}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://testserver") as client:

        async def cold() -> None:
            results["cold"] = await client.get("/v1/charges", headers=bearer(issued.key))

        async with anyio.create_task_group() as tg:
            tg.start_soon(cold)
            await anyio.to_thread.run_sync(hasher.entered.wait)
            health = await client.get("/health")
            assert health.status_code == 200
            # Answered while the cold verification was still held.
            assert "cold" not in results
            assert not hasher.release.is_set()
            hasher.release.set()
    assert results["cold"].status_code == 200
    await app.aclose()


async def test_warm_key_on_a_memory_store_never_leaves_the_loop(
    monkeypatch: pytest.MonkeyPatch, cheap_hasher: Argon2Hasher
) -> None:
    """Once verified, a key on a store that does no I/O needs no thread at all."""
    store = MemoryKeyStore()
    issued = KeyManager(store, hasher=cheap_hasher).create("warm")
    app = APIKeyMiddleware(Recorder(), store=store, hashers=[cheap_hasher])
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://testserver") as client:
        assert (await client.get("/", headers=bearer(issued.key))).status_code == 200  # cold

        def no_threads(*args: Any) -> Any:
            raise AssertionError("a warm request left the event loop")

        loop = asyncio.get_running_loop()
        monkeypatch.setattr(loop, "run_in_executor", no_threads)
        monkeypatch.setattr(threading.Thread, "start", no_threads)
        for _ in range(3):
            assert (await client.get("/", headers=bearer(issued.key))).status_code == 200
    monkeypatch.undo()
    await app.aclose()
