"""A warm request through the ASGI middleware: its checks and nothing else.

With the failure limiter on (the default), a key that verified before is
answered without the limiter, argon2, a coroutine of the async driver or
more than the one store read that revocation needs, and leaves the same
principal in the scope as the full path would.
"""

from __future__ import annotations

from typing import Any

import pytest

from aqnt_auth import KeyManager, Principal
from aqnt_auth.adapters.asgi import APIKeyAuth, APIKeyMiddleware
from tests.core._support import CountingHasher, InstrumentedStore, SpyLimiter

from ._support import Recorder, call, http_scope, status_of

pytestmark = pytest.mark.anyio


def _headers(value: bytes) -> list[tuple[bytes, bytes]]:
    return [(b"host", b"testserver"), (b"authorization", value)]


@pytest.fixture
def hasher() -> CountingHasher:
    return CountingHasher()


@pytest.fixture
def store() -> InstrumentedStore:
    return InstrumentedStore()


@pytest.fixture
def key(store: InstrumentedStore, hasher: CountingHasher) -> str:
    return KeyManager(store, hasher=hasher).create("warm", scopes=["charges:read"]).key


async def test_warm_request_reads_once_and_never_asks_the_limiter(
    store: InstrumentedStore, hasher: CountingHasher, key: str
) -> None:
    limiter = SpyLimiter()
    recorder = Recorder()
    app = APIKeyMiddleware(recorder, store=store, hashers=[hasher], rate_limit=limiter,
                           usage_flush_interval=3600)
    header = _headers(f"Bearer {key}".encode())
    assert status_of(await call(app, http_scope(headers=header))) == 200  # cold
    counts = (store.gets, hasher.calls, limiter.admits, limiter.failures)
    assert counts[1:] == (1, 1, 0)  # the cold key was admitted once, never failed

    async def no_async_driver(*args: Any, **kwargs: Any) -> Principal:
        raise AssertionError("a warm request awaited the async driver")

    app._authenticate = no_async_driver
    for i in range(1, 4):
        assert status_of(await call(app, http_scope(headers=header))) == 200
        assert (store.gets, hasher.calls, limiter.admits, limiter.failures) == (
            counts[0] + i, *counts[1:])
    scope = recorder.scopes[-1]
    auth = scope["user"]
    assert isinstance(auth, APIKeyAuth)
    assert scope["auth"] is auth
    assert auth.principal is scope["state"]["api_key"]
    assert auth.identity == auth.principal.id
    assert auth.scopes == ["charges:read"]
    await app.aclose()


@pytest.mark.parametrize("value", [
    "Bearer {key}", "bearer {key}", "BEARER {key}", "Bearer  {key}", "Bearer {key} ",
    " Bearer {key}", "Bearer {key}\t",
])
async def test_every_spelling_of_a_warm_header_is_answered_warm(
    store: InstrumentedStore, hasher: CountingHasher, key: str, value: str
) -> None:
    """Only "Bearer <key>" is looked up as it arrived; every other spelling the
    header parser accepts is parsed first, and still answered without argon2
    or the async driver."""
    app = APIKeyMiddleware(Recorder(), store=store, hashers=[hasher],
                           usage_flush_interval=3600)
    canonical = _headers(f"Bearer {key}".encode())
    assert status_of(await call(app, http_scope(headers=canonical))) == 200

    async def no_async_driver(*args: Any, **kwargs: Any) -> Principal:
        raise AssertionError("a warm request awaited the async driver")

    app._authenticate = no_async_driver
    header = _headers(value.format(key=key).encode())
    assert status_of(await call(app, http_scope(headers=header))) == 200
    assert hasher.calls == 1
    await app.aclose()


async def test_no_exemption_rules_still_refuses_preflights_and_every_path(
    store: InstrumentedStore, hasher: CountingHasher
) -> None:
    """With no exempt paths and preflights not allowed, nothing is asked about
    exemptions, and nothing goes through without a key."""
    recorder = Recorder()
    app = APIKeyMiddleware(recorder, store=store, hashers=[hasher])
    assert app._exempt is None
    preflight = [(b"origin", b"https://a.example"),
                 (b"access-control-request-method", b"POST")]
    for scope in (http_scope("/health"), http_scope("/", method="OPTIONS", headers=preflight)):
        assert status_of(await call(app, scope)) == 401
    assert not recorder.ran
    await app.aclose()
