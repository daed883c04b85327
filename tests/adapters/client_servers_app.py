"""The apps of the real-server client-address tests, one per protocol.

``hypercorn 'tests.adapters.client_servers_app:asgi_app()'`` (the ASGI
middleware) and ``gunicorn 'tests.adapters.client_servers_app:flask_app()'``
(the Flask extension), configured from the environment: ``AQNT_TEST_STORE``
(a SQLite key file made by the test) and ``AQNT_TEST_TRUSTED_PROXIES``
(comma-separated, may be empty).  Failures are limited to 3 a minute per
client, so a test sees the 429 after a few requests.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from flask import Flask

from aqnt_auth import Argon2Hasher, FailureLimiter, SQLiteKeyStore
from aqnt_auth.adapters.asgi import APIKeyMiddleware
from aqnt_auth.adapters.flask import AQNTAuth

ASGIApp = Callable[[MutableMapping[str, Any], Any, Any], Awaitable[None]]


def _options() -> dict[str, Any]:
    proxies = os.environ.get("AQNT_TEST_TRUSTED_PROXIES", "")
    return {
        "store": SQLiteKeyStore(os.environ["AQNT_TEST_STORE"]),
        "hashers": [Argon2Hasher("cheapest")],
        "rate_limit": FailureLimiter(per_key="100/minute", per_client="3/minute"),
        "trusted_proxies": [p for p in proxies.split(",") if p],
    }


async def _hello(scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
    body = b'{"hello": "world"}'
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def asgi_app() -> ASGIApp:
    return APIKeyMiddleware(_hello, exempt_paths=["/health"], **_options())


def flask_app() -> Flask:
    app = Flask("client_servers")
    options = _options()
    app.config.update(AQNT_AUTH_STORE=options["store"], AQNT_AUTH_HASHERS=options["hashers"],
                      AQNT_AUTH_RATE_LIMIT=options["rate_limit"],
                      AQNT_AUTH_TRUSTED_PROXIES=options["trusted_proxies"],
                      AQNT_AUTH_EXEMPT_PATHS=["/health"])

    @app.route("/health")
    def health() -> str:
        return "ok"

    @app.route("/v1")
    def hello() -> dict[str, str]:
        return {"hello": "world"}

    AQNTAuth(app)
    return app
