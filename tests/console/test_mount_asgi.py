"""The ASGI mount through Starlette's test client: under a Starlette mount
beside an app protected by the API-key middleware (or Starlette's
AuthenticationMiddleware) with the console's prefix exempted as the README
says; the prefix from root_path, lifespan, a body too large.  Run by the
Starlette nox sessions too (oldest and newest Starlette)."""

from __future__ import annotations

from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request as StarletteRequest
from starlette.responses import JSONResponse
from starlette.routing import Mount, Route
from starlette.testclient import TestClient

from aqnt_auth import Argon2Hasher, ConfigurationError, KeyManager, MemoryKeyStore
from aqnt_auth.adapters.asgi import APIKeyMiddleware as ASGIMiddleware
from aqnt_auth.console import Call, Console, Response, asgi_app

from ._mounts import PREFIX, check_console, mounted_console  # noqa: F401 (the console fixture)
from .conftest import Keys, error


def _ping_asgi(request: StarletteRequest) -> JSONResponse:
    return JSONResponse({"pong": True})


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
            check_console(*_asgi_calls(client), keys, manager, "/v1/ping")
            # Not exempted, the console's own sign-in never reaches it.
            bare = ASGIMiddleware(app, store=memory_store, hashers=[cheap_hasher])
            with TestClient(bare) as unexempt:
                r = unexempt.get(PREFIX + "/api/keys", headers={"x-test-user": "alice"})
                assert (r.status_code, r.json()) == (401, error("missing_api_key"))

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
            check_console(*_asgi_calls(client), keys, manager, "/v1/ping")

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
