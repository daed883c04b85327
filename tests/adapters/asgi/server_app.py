"""The hello app behind the ASGI middleware, for tests that need real
uvicorn processes (``--factory tests.adapters.asgi.server_app:create_app``).

Configured from the environment: ``AQNT_TEST_STORE`` (a SQLite file, shared
by the processes), ``AQNT_TEST_RATE_LIMIT`` (a storage URI, or ``off``),
``AQNT_TEST_REDIS_PREFIX`` (the limiters' Redis key prefix, unique per test
run), ``AQNT_TEST_KEY_RATE_LIMIT`` (the storage URI keys' own rate limits are
counted on), ``AQNT_TEST_CACHE_TTL``, ``AQNT_TEST_PROFILE`` (the argon2 profile
keys are verified with) and ``AQNT_TEST_OPTIONS`` (more Authenticator
options, as JSON).  ``GET /_stats``, outside the middleware, reports how many
argon2 verifications the process ran, and the statuses it answered
(``none``: no answer at all) outside ``/health``.
"""

from __future__ import annotations

import json
import os
import threading
from collections import Counter
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from aqnt_auth import Argon2Hasher, FailureLimiter, KeyRateLimiter, SQLiteKeyStore
from aqnt_auth.adapters.asgi import APIKeyMiddleware

ASGIApp = Callable[[MutableMapping[str, Any], Any, Any], Awaitable[None]]


class CountingArgon2(Argon2Hasher):
    def __init__(self, profile: str) -> None:
        super().__init__(profile)
        self.calls = 0
        self._lock = threading.Lock()

    def verify(self, stored: str, secret: str) -> bool:
        with self._lock:
            self.calls += 1
        return super().verify(stored, secret)


async def _answer(send: Any, status: int, body: bytes) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


async def hello(scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
    await _answer(send, 200, b'{"hello": "world"}')


def create_app() -> ASGIApp:
    env = os.environ
    hasher = CountingArgon2(env.get("AQNT_TEST_PROFILE", "cheapest"))
    limit = env.get("AQNT_TEST_RATE_LIMIT", "memory://")
    rate_limit: FailureLimiter | None = None
    if limit != "off":
        options = {"key_prefix": env["AQNT_TEST_REDIS_PREFIX"]} if limit.startswith(
            "redis") else None
        rate_limit = FailureLimiter(storage_uri=limit, storage_options=options)
    options = json.loads(env.get("AQNT_TEST_OPTIONS", "{}"))
    key_limit = env.get("AQNT_TEST_KEY_RATE_LIMIT")
    if key_limit is not None:
        # Keys' own rate limits, counted under the run's Redis prefix.
        options["key_rate_limit_storage"] = KeyRateLimiter(
            key_limit, storage_options={"key_prefix": env["AQNT_TEST_REDIS_PREFIX"]}
            if key_limit.startswith("redis") else None)
    protected = APIKeyMiddleware(
        hello, store=SQLiteKeyStore(env["AQNT_TEST_STORE"]), hashers=[hasher],
        rate_limit=rate_limit, cache_ttl=float(env.get("AQNT_TEST_CACHE_TTL", "300")),
        exempt_paths=["/health"], **options,
    )
    statuses: Counter[str] = Counter()

    async def app(scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] == "/_stats":
            body = json.dumps({"argon2": hasher.calls, "statuses": statuses})
            await _answer(send, 200, body.encode())
            return
        if scope["type"] != "http" or scope["path"] == "/health":
            await protected(scope, receive, send)
            return
        answered = False

        async def counting_send(message: MutableMapping[str, Any]) -> None:
            nonlocal answered
            if message["type"] == "http.response.start":
                answered = True
                statuses[str(message["status"])] += 1
            await send(message)

        await protected(scope, receive, counting_send)
        if not answered:
            statuses["none"] += 1

    return app
