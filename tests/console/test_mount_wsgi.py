"""The WSGI mounts through werkzeug's and Flask's test clients: under
DispatcherMiddleware beside the WSGI API-key middleware with the console's
prefix exempted, and Flask's init_app beside AQNTAuth.  Run by the Flask
nox sessions too (oldest and newest Flask and werkzeug)."""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask, g
from werkzeug.middleware.dispatcher import DispatcherMiddleware
from werkzeug.test import Client as WerkzeugClient

from aqnt_auth import Argon2Hasher, ConfigurationError, KeyManager, MemoryKeyStore
from aqnt_auth.adapters.flask import AQNTAuth
from aqnt_auth.adapters.wsgi import APIKeyMiddleware as WSGIMiddleware
from aqnt_auth.console import Call, Console, Request, Response, init_app, wsgi_app

from ._mounts import PREFIX, check_console, host_user, mounted_console  # noqa: F401 (the console fixture)
from .conftest import Keys


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
        check_console(*_wsgi_calls(WerkzeugClient(app)), keys, manager, "/v1/ping")
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
        check_console(*_wsgi_calls(app.test_client()), keys, manager, "/v1/ping")
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
