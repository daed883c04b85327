"""One default store everywhere (#11): a key made by ``aqnt-auth keys create``
with no flags works in every adapter configured with no store at all.

Each adapter is built in a fresh working directory where the CLI has just
written its default store, ``sqlite:///aqnt_keys.db``, and is given nothing
but the app (Flask: no ``AQNT_AUTH_STORE``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from flask import Flask
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.authentication import AuthenticationMiddleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from werkzeug.test import Client

from aqnt_auth import DEFAULT_STORE_URL, Authenticator, SQLiteKeyStore
from aqnt_auth.adapters import asgi, starlette, wsgi
from aqnt_auth.adapters.flask import AQNTAuth
from tests import bodies
from tests.core.test_cli import run


@pytest.fixture
def cli_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A key from ``aqnt-auth keys create`` with no --store and no $AQNT_AUTH_STORE."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("AQNT_AUTH_STORE", raising=False)
    code, text = run("keys", "create", "--name", "svc", "--argon2-profile", "cheapest", "--json")
    assert code == 0
    created = json.loads(text)
    assert created["store"] == f"sqlite:///{(tmp_path / 'aqnt_keys.db').resolve()}"
    return str(created["key"])


def uses_the_default(authenticator: Authenticator) -> None:
    assert DEFAULT_STORE_URL == "sqlite:///aqnt_keys.db"
    assert isinstance(authenticator.store, SQLiteKeyStore)
    assert Path(authenticator.store.path).resolve() == Path("aqnt_keys.db").resolve()


def ok_wsgi(environ: Any, start_response: Any) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]


async def ok_asgi(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


def wsgi_answers(app: Any, key: str) -> list[tuple[int, bytes]]:
    client = Client(app)
    return [(r.status_code, r.get_data()) for r in (
        client.get("/", headers={"Authorization": f"Bearer {key}"}),
        client.get("/"),
    )]


async def asgi_answers(app: Any, key: str) -> list[tuple[int, bytes]]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://testserver") as client:
        return [(r.status_code, r.content) for r in (
            await client.get("/", headers={"Authorization": f"Bearer {key}"}),
            await client.get("/"),
        )]


EXPECTED = [(200, b"ok"), (401, bodies.MISSING)]


@pytest.mark.anyio
async def test_asgi_middleware(cli_key: str) -> None:
    app = asgi.APIKeyMiddleware(ok_asgi)
    try:
        uses_the_default(app.authenticator)
        assert await asgi_answers(app, cli_key) == EXPECTED
    finally:
        app.authenticator.close()


@pytest.mark.anyio
async def test_starlette_backend(cli_key: str) -> None:
    backend = starlette.APIKeyBackend()

    async def endpoint(request: Request) -> PlainTextResponse:
        return PlainTextResponse("ok")

    app = Starlette(routes=[Route("/", endpoint)], middleware=[
        Middleware(AuthenticationMiddleware, backend=backend, on_error=backend.on_error)])
    try:
        uses_the_default(backend.authenticator)
        assert await asgi_answers(app, cli_key) == EXPECTED
    finally:
        backend.authenticator.close()


def test_wsgi_middleware(cli_key: str) -> None:
    app = wsgi.APIKeyMiddleware(ok_wsgi)
    try:
        uses_the_default(app.authenticator)
        assert wsgi_answers(app, cli_key) == EXPECTED
    finally:
        app.authenticator.close()


def test_flask(cli_key: str) -> None:
    app = Flask(__name__)
    app.get("/")(lambda: "ok")
    auth = AQNTAuth(app)
    try:
        uses_the_default(auth.get_authenticator(app))
        assert wsgi_answers(app, cli_key) == EXPECTED
    finally:
        auth.close(app)
