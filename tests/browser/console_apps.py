"""The apps the console's browser tests serve with real servers: a route
protected by the API-key middleware (``/v1/whoami``) and the key console
mounted beside it under ``/keys-admin`` (exempt from the middleware, as the
README says), sharing one authenticator, on an SQLite file.

``AQNT_TEST_STORE`` names the store, ``AQNT_TEST_SECRET`` the console's
secret key.  ``POST /_flush`` (exempt, for the tests) writes the buffered
usage now, as the flush interval would a moment later.
"""

from __future__ import annotations

import os
from typing import Any

from aqnt_auth import Argon2Hasher, Authenticator

PREFIX = "/keys-admin"
EXEMPT = [PREFIX + "/*", "/_flush"]


def _authenticator() -> Authenticator:
    return Authenticator(os.environ["AQNT_TEST_STORE"], hashers=[Argon2Hasher("cheapest")],
                         usage_flush_interval=3600)


def asgi() -> Any:
    """Starlette: the console through ``Mount``."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Mount, Route

    from aqnt_auth.adapters.asgi import APIKeyMiddleware
    from aqnt_auth.console import asgi_app

    authenticator = _authenticator()

    async def whoami(request: Request) -> JSONResponse:
        return JSONResponse({"key": request.scope["auth"].principal.id})

    async def flush(request: Request) -> JSONResponse:
        return JSONResponse({"flushed": authenticator.flush_usage()})

    console = asgi_app(authenticator=authenticator, secret_key=os.environ["AQNT_TEST_SECRET"],
                       hasher=Argon2Hasher("cheapest"))
    app = Starlette(routes=[Route("/v1/whoami", whoami), Route("/_flush", flush,
                                                               methods=["POST"]),
                            Mount(PREFIX, app=console)])
    return APIKeyMiddleware(app, authenticator=authenticator, exempt_paths=EXEMPT)


def flask() -> Any:
    """Flask: the console through ``init_app``, sharing AQNTAuth's authenticator."""
    from flask import Flask, g

    from aqnt_auth.adapters.flask import AQNTAuth
    from aqnt_auth.console import init_app

    app = Flask(__name__)
    app.config.update(
        SECRET_KEY=os.environ["AQNT_TEST_SECRET"],
        AQNT_AUTH_STORE=os.environ["AQNT_TEST_STORE"],
        AQNT_AUTH_HASHER=Argon2Hasher("cheapest"),
        AQNT_AUTH_HASHERS=[Argon2Hasher("cheapest")],
        AQNT_AUTH_USAGE_FLUSH_INTERVAL=3600,
        AQNT_AUTH_EXEMPT_PATHS=["/_flush"],
    )
    auth = AQNTAuth(app)

    @app.get("/v1/whoami")
    def whoami() -> dict[str, Any]:
        return {"key": g.api_key.id}

    @app.post("/_flush")
    def flush() -> dict[str, Any]:
        return {"flushed": auth.get_authenticator(app).flush_usage()}

    init_app(app, url_prefix=PREFIX)
    return app
