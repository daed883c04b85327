"""A hello-world ASGI app behind the API-key middleware, on the SQL store.

``python -m uvicorn --factory tests.stores.pg_asgi_app:create_app`` serves it
with the store URL from ``AQNT_TEST_STORE_URL``: the multi-server tests run
two of these against one database.
"""

from __future__ import annotations

import json
import os
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from aqnt_auth import Argon2Hasher, Authenticator
from aqnt_auth._stores._sqlalchemy import SQLAlchemyKeyStore
from aqnt_auth.adapters.asgi import APIKeyMiddleware

STORE_URL_ENV = "AQNT_TEST_STORE_URL"
BODY = b'{"hello": "world"}'

ASGIApp = Callable[[MutableMapping[str, Any], Any, Any], Awaitable[None]]


async def hello(scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
    """Answers every HTTP request with 200 and a small JSON body."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(BODY)).encode())]})
    await send({"type": "http.response.body", "body": BODY})


def protect(authenticator: Authenticator) -> APIKeyMiddleware:
    """The hello app behind the middleware; ``/health`` is exempt."""
    return APIKeyMiddleware(hello, authenticator=authenticator, exempt_paths=["/health"])


def create_app() -> ASGIApp:
    """The uvicorn factory: the store URL comes from the environment.

    ``GET /_cache`` (outside the middleware) tells whether the record cache
    is answering, so a test can wait for warm servers.
    """
    store = SQLAlchemyKeyStore(os.environ[STORE_URL_ENV])
    protected = APIKeyMiddleware(hello, store=store, hashers=[Argon2Hasher("cheapest")],
                                 exempt_paths=["/health"])

    async def app(scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] == "/_cache":
            body = json.dumps({"listening": store.cache.listening}).encode()
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", b"application/json")]})
            await send({"type": "http.response.body", "body": body})
            return
        await protected(scope, receive, send)

    return app
