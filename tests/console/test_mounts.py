"""The mounts through each framework's real test client: the console under
a Starlette and a FastAPI mount, under werkzeug's DispatcherMiddleware and
Flask's init_app, each beside an app protected by the API-key middleware
with the console's prefix exempted as the README says."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import FastAPI
from flask import Flask, g
from starlette.applications import Starlette
from starlette.requests import Request as StarletteRequest
from starlette.responses import JSONResponse
from starlette.routing import Mount, Route
from starlette.testclient import TestClient
from werkzeug.middleware.dispatcher import DispatcherMiddleware
from werkzeug.test import Client as WerkzeugClient

from aqnt_auth import Argon2Hasher, ConfigurationError, KeyManager, MemoryKeyStore
from aqnt_auth.adapters.asgi import APIKeyMiddleware as ASGIMiddleware
from aqnt_auth.adapters.flask import AQNTAuth
from aqnt_auth.adapters.wsgi import APIKeyMiddleware as WSGIMiddleware
from aqnt_auth.console import (
    Admin,
    Call,
    Console,
    Request,
    Response,
    asgi_app,
    init_app,
    wsgi_app,
)

from .conftest import Keys, error

PREFIX = "/keys-admin"


def host_user(request: Request) -> str | Admin | None:
    """The host app's own sign-in, as a test stands it in: a header."""
    user = request.header("x-test-user")
    if user == "reader":
        return Admin("user:reader", False)
    return f"user:{user}" if user else None


def _check_console(get: Any, post: Any, keys: Keys, manager: KeyManager,
                   protected: str) -> None:
    """The same checks through any mount: *get(path, headers)* and
    *post(path, body, headers)* return (status, headers, body bytes)."""
    admin = {"authorization": f"Bearer {keys.admin}"}
    # The API under the prefix, with an admin key.
    status, headers, body = get(PREFIX + "/api/keys", admin)
    assert status == 200
    assert headers["cache-control"] == "no-store"
    assert headers["x-content-type-options"] == "nosniff"
    assert {k["id"] for k in json.loads(body)["data"]} == {
        keys.admin_id, keys.read_id, keys.plain_id}
    # Exact error bodies through the mount.
    status, headers, body = get(PREFIX + "/api/keys", {})
    assert (status, json.loads(body)) == (401, error("missing_api_key"))
    status, _, body = get(PREFIX + "/api/keys/nope", admin)
    assert (status, json.loads(body)) == (404, error("key_not_found"))
    # A change with the host app's sign-in (cookie-like: JSON only).
    status, _, body = post(PREFIX + "/api/keys", {"name": "Mounted"},
                           {"x-test-user": "alice"})
    assert status == 201
    created = json.loads(body)
    assert manager.get(created["api_key"]["id"]).name == "Mounted"
    status, _, body = post(PREFIX + "/api/keys", {"name": "No"}, {"x-test-user": "reader"})
    assert (status, json.loads(body)) == (403, error("insufficient_scope"))
    # The new key works on the protected app beside the console.
    status, _, _ = get(protected, {"authorization": f"Bearer {created['key']}"})
    assert status == 200
    status, _, body = get(protected, {})
    assert (status, json.loads(body)) == (401, error("missing_api_key"))
    # Outside the prefix nothing is the console's, and a look-alike prefix
    # is not exempt.
    status, _, body = get(PREFIX + "x/api/keys", {"x-test-user": "alice"})
    assert status in (401, 404)


def _ping_asgi(request: StarletteRequest) -> JSONResponse:
    return JSONResponse({"pong": True})


@pytest.fixture
def console(memory_store: MemoryKeyStore, cheap_hasher: Argon2Hasher,
            keys: Keys) -> Iterator[Console]:
    built = Console(memory_store, secret_key="s" * 32, hashers=[cheap_hasher],
                    hasher=cheap_hasher, authorize=host_user)
    yield built
    built.close()


def _asgi_calls(client: TestClient) -> tuple[Any, Any]:
    def get(path: str, headers: dict[str, str]) -> tuple[int, Any, bytes]:
        r = client.get(path, headers=headers)
        return r.status_code, r.headers, r.content

    def post(path: str, body: Any, headers: dict[str, str]) -> tuple[int, Any, bytes]:
        r = client.post(path, json=body, headers=headers)
        return r.status_code, r.headers, r.content

    return get, post


class TestASGI:
    def test_starlette_mount(self, console: Console, keys: Keys, manager: KeyManager,
                             memory_store: MemoryKeyStore, cheap_hasher: Argon2Hasher) -> None:
        app = Starlette(routes=[Route("/v1/ping", _ping_asgi),
                                Mount(PREFIX, app=asgi_app(console=console))])
        protected = ASGIMiddleware(app, store=memory_store, hashers=[cheap_hasher],
                                   exempt_paths=[PREFIX + "/*"])
        with TestClient(protected) as client:
            _check_console(*_asgi_calls(client), keys, manager, "/v1/ping")
            # Not exempted, the console's own sign-in never reaches it.
            bare = ASGIMiddleware(app, store=memory_store, hashers=[cheap_hasher])
            with TestClient(bare) as unexempt:
                r = unexempt.get(PREFIX + "/api/keys", headers={"x-test-user": "alice"})
                assert (r.status_code, r.json()) == (401, error("missing_api_key"))

    def test_fastapi_mount(self, console: Console, keys: Keys, manager: KeyManager,
                           memory_store: MemoryKeyStore, cheap_hasher: Argon2Hasher) -> None:
        api = FastAPI()

        @api.get("/v1/ping")
        def ping() -> dict[str, str]:
            return {"pong": "yes"}

        api.mount(PREFIX, asgi_app(console=console))
        api.add_middleware(ASGIMiddleware, store=memory_store, hashers=[cheap_hasher],
                           exempt_paths=[PREFIX + "/*"])
        with TestClient(api) as client:
            _check_console(*_asgi_calls(client), keys, manager, "/v1/ping")

    def test_starlette_authentication_backend(
            self, console: Console, keys: Keys, manager: KeyManager,
            memory_store: MemoryKeyStore, cheap_hasher: Argon2Hasher) -> None:
        from starlette.middleware import Middleware
        from starlette.middleware.authentication import AuthenticationMiddleware

        from aqnt_auth.adapters.starlette import APIKeyBackend

        backend = APIKeyBackend(memory_store, hashers=[cheap_hasher],
                                exempt_paths=[PREFIX + "/*"])
        app = Starlette(
            routes=[Route("/v1/ping", _ping_asgi),
                    Mount(PREFIX, app=asgi_app(console=console))],
            middleware=[Middleware(AuthenticationMiddleware, backend=backend,
                                   on_error=backend.on_error)])
        with TestClient(app) as client:
            _check_console(*_asgi_calls(client), keys, manager, "/v1/ping")

    def test_fastapi_app_wide_dependency(
            self, console: Console, keys: Keys, manager: KeyManager,
            memory_store: MemoryKeyStore, cheap_hasher: Argon2Hasher) -> None:
        """An app-wide APIKey dependency guards the app's routes, not a mount."""
        from fastapi import Depends

        from aqnt_auth.adapters.fastapi import APIKey, add_error_handlers

        api = FastAPI(dependencies=[Depends(APIKey(memory_store, hashers=[cheap_hasher]))])
        add_error_handlers(api)

        @api.get("/v1/ping")
        def ping() -> dict[str, str]:
            return {"pong": "yes"}

        api.mount(PREFIX, asgi_app(console=console))
        with TestClient(api) as client:
            _check_console(*_asgi_calls(client), keys, manager, "/v1/ping")

    def test_root_path_and_redirect(self, console: Console) -> None:
        app = Starlette(routes=[Mount(PREFIX, app=asgi_app(console=console))])
        seen: list[tuple[str, str]] = []

        def where(call: Call) -> Response:
            seen.append((call.request.root_path, call.request.path))
            return Response(204)

        console.router.add("GET", "/where", where, access="public")
        with TestClient(app) as client:
            assert client.get(PREFIX + "/where").status_code == 204
            assert seen == [(PREFIX, "/where")]

    def test_body_too_large(self, console: Console, keys: Keys) -> None:
        with TestClient(asgi_app(console=console)) as client:
            r = client.post("/api/keys", content=b"x" * (1024 * 1024 + 1),
                            headers={"authorization": f"Bearer {keys.admin}",
                                     "content-type": "application/json"})
        assert r.status_code == 400
        assert r.json()["error"]["code"] == "invalid_request"
        assert r.headers["cache-control"] == "no-store"

    def test_store_and_console_both_refused(self, console: Console) -> None:
        with pytest.raises(ConfigurationError, match="not both"):
            asgi_app("memory://", console=console)

    def test_lifespan_closes_an_owned_console(self, memory_store: MemoryKeyStore) -> None:
        app = asgi_app(memory_store, secret_key="s" * 32)
        closed: list[bool] = []
        app.console.authenticator.close = lambda: closed.append(True)  # type: ignore[method-assign]
        with TestClient(app):
            pass
        assert closed == [True]


def _wsgi_calls(client: WerkzeugClient) -> tuple[Any, Any]:
    def get(path: str, headers: dict[str, str]) -> tuple[int, Any, bytes]:
        r = client.get(path, headers=headers)
        return r.status_code, {k.lower(): v for k, v in r.headers.items()}, r.get_data()

    def post(path: str, body: Any, headers: dict[str, str]) -> tuple[int, Any, bytes]:
        r = client.post(path, json=body, headers=headers)
        return r.status_code, {k.lower(): v for k, v in r.headers.items()}, r.get_data()

    return get, post


class TestWSGI:
    def test_dispatcher_middleware(self, console: Console, keys: Keys, manager: KeyManager,
                                   memory_store: MemoryKeyStore,
                                   cheap_hasher: Argon2Hasher) -> None:
        def ping(environ: dict[str, Any], start_response: Any) -> list[bytes]:
            start_response("200 OK", [("Content-Type", "application/json")])
            return [b'{"pong": true}']

        app = WSGIMiddleware(DispatcherMiddleware(ping, {PREFIX: wsgi_app(console=console)}),
                             store=memory_store, hashers=[cheap_hasher],
                             exempt_paths=[PREFIX + "/*"])
        _check_console(*_wsgi_calls(WerkzeugClient(app)), keys, manager, "/v1/ping")
        seen: list[str] = []

        def where(call: Call) -> Response:
            seen.append(call.request.root_path)
            return Response(204)

        console.router.add("GET", "/where", where, access="public")
        assert WerkzeugClient(app).get(PREFIX + "/where").status_code == 204
        assert seen == [PREFIX]

    def test_flask_init_app(self, keys: Keys, manager: KeyManager,
                            memory_store: MemoryKeyStore, cheap_hasher: Argon2Hasher) -> None:
        app = Flask(__name__)
        app.config.update(AQNT_AUTH_STORE=memory_store, AQNT_AUTH_HASHERS=[cheap_hasher],
                          SECRET_KEY="flask-secret-for-tests-only-0123")
        AQNTAuth(app)

        @app.get("/v1/ping")
        def ping() -> dict[str, str]:
            return {"key": g.api_key.id}

        console = init_app(app, authorize=host_user, hasher=cheap_hasher)
        # It shares AQNTAuth's authenticator, and Flask's secret.
        assert console.authenticator is app.extensions["aqnt_auth"]._state(app).authenticator
        assert console.secret_key == b"flask-secret-for-tests-only-0123"
        _check_console(*_wsgi_calls(app.test_client()), keys, manager, "/v1/ping")
        client = app.test_client()
        redirect = client.get(PREFIX)
        assert (redirect.status_code, redirect.headers["Location"]) == (308, PREFIX + "/")
        with pytest.raises(ConfigurationError, match="already registered"):
            init_app(app)

    def test_flask_hook_runs_in_the_request_context(
            self, memory_store: MemoryKeyStore, cheap_hasher: Argon2Hasher,
            keys: Keys) -> None:
        from flask import request as flask_request

        app = Flask(__name__)

        def authorize(request: Request) -> str | None:
            assert request.native is flask_request._get_current_object()  # type: ignore[attr-defined]
            return flask_request.headers.get("x-test-user")

        init_app(app, url_prefix="/admin/keys", store=memory_store, secret_key="s" * 32,
                 hashers=[cheap_hasher], hasher=cheap_hasher, authorize=authorize)
        r = app.test_client().get("/admin/keys/api/keys", headers={"x-test-user": "alice"})
        assert r.status_code == 200
        assert len(r.get_json()["data"]) == 3

    def test_flask_bad_prefix(self) -> None:
        with pytest.raises(ConfigurationError, match="url_prefix"):
            init_app(Flask(__name__), url_prefix="keys/")
