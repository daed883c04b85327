"""The failure limiter is on by default in every adapter, per (key id, client).

Each adapter, configured with nothing but a store and a hasher: eleven wrong
secrets for one key id from one address make the eleventh a 429 (the default
is ten a minute per id and client), while the key's owner, from another
address, is still let in; the documented off-switch turns the limiter off.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest
from flask import Flask
from werkzeug.test import Client

from aqnt_auth import Argon2Hasher, FailureLimiter, KeyManager, MemoryKeyStore, checksum
from aqnt_auth.adapters import asgi, wsgi
from aqnt_auth.adapters.flask import CONFIG_DEFAULTS, AQNTAuth
from tests import bodies

CHEAP = Argon2Hasher("cheapest")
ATTACKER, OWNER = "203.0.113.7", "192.0.2.1"


def wrong_secret(key: str, n: int) -> str:
    head = key[:20] + f"{n:032d}"
    return head + checksum(head)


def ok_app(environ: Any, start_response: Any) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]


async def ok_asgi(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


Get = Callable[[str, str], tuple[int, bytes]]


def check(get: Get, key: str, limited: bool) -> None:
    for n in range(10):
        assert get(wrong_secret(key, n), ATTACKER) == (401, bodies.INVALID)
    assert get(wrong_secret(key, 10), ATTACKER) == (
        (429, bodies.RATE_LIMITED) if limited else (401, bodies.INVALID))
    assert get(key, OWNER)[0] == 200


def wsgi_get(app: Any) -> Get:
    client = Client(app)

    def get(key: str, addr: str) -> tuple[int, bytes]:
        response = client.get("/", headers={"Authorization": f"Bearer {key}"},
                              environ_overrides={"REMOTE_ADDR": addr})
        return response.status_code, response.get_data()

    return get


@pytest.fixture
def store_and_key() -> tuple[MemoryKeyStore, str]:
    store = MemoryKeyStore()
    return store, KeyManager(store, hasher=CHEAP).create("owner").key


@pytest.mark.parametrize("off", [False, True])
def test_wsgi(store_and_key: tuple[MemoryKeyStore, str], off: bool) -> None:
    store, key = store_and_key
    options: dict[str, Any] = {"rate_limit": None} if off else {}
    app = wsgi.APIKeyMiddleware(ok_app, store=store, hashers=[CHEAP], **options)
    assert isinstance(app.authenticator.rate_limit, FailureLimiter) is not off
    check(wsgi_get(app), key, limited=not off)


@pytest.mark.parametrize("off", [False, True])
def test_flask(store_and_key: tuple[MemoryKeyStore, str], off: bool) -> None:
    store, key = store_and_key
    assert CONFIG_DEFAULTS["AQNT_AUTH_RATE_LIMIT"] == "memory://"
    app = Flask(__name__)
    app.config.update(AQNT_AUTH_STORE=store, AQNT_AUTH_HASHERS=[CHEAP])
    if off:
        app.config["AQNT_AUTH_RATE_LIMIT"] = None
    app.get("/")(lambda: "ok")
    auth = AQNTAuth(app)
    assert isinstance(auth.get_authenticator(app).rate_limit, FailureLimiter) is not off
    check(wsgi_get(app), key, limited=not off)


@pytest.mark.anyio
@pytest.mark.parametrize("off", [False, True])
async def test_asgi(store_and_key: tuple[MemoryKeyStore, str], off: bool) -> None:
    store, key = store_and_key
    options: dict[str, Any] = {"rate_limit": None} if off else {}
    app = asgi.APIKeyMiddleware(ok_asgi, store=store, hashers=[CHEAP], **options)
    answers: list[tuple[int, bytes]] = []
    clients = {addr: httpx.AsyncClient(transport=httpx.ASGITransport(app, client=(addr, 1)),
                                       base_url="http://t") for addr in (ATTACKER, OWNER)}
    try:
        for n in range(11):
            r = await clients[ATTACKER].get(
                "/", headers={"Authorization": f"Bearer {wrong_secret(key, n)}"})
            answers.append((r.status_code, r.content))
        owner = await clients[OWNER].get("/", headers={"Authorization": f"Bearer {key}"})
    finally:
        for c in clients.values():
            await c.aclose()
    assert answers[:10] == [(401, bodies.INVALID)] * 10
    assert answers[10] == ((401, bodies.INVALID) if off else (429, bodies.RATE_LIMITED))
    assert owner.status_code == 200
