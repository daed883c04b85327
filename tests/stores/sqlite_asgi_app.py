"""The hello ASGI app behind the API-key middleware, on the SQLite store.

``python -m uvicorn --factory tests.stores.sqlite_asgi_app:create_app`` serves
it with the database file from ``AQNT_TEST_SQLITE_PATH``: the multi-server
tests run several of these on one file.  Usage is flushed every 50 ms, so
the servers write to the file all the time.
"""

from __future__ import annotations

import json
import os
from collections.abc import MutableMapping
from typing import Any

from aqnt_auth import Argon2Hasher, SQLiteKeyStore
from aqnt_auth.adapters.asgi import APIKeyMiddleware

from .pg_asgi_app import ASGIApp, hello

PATH_ENV = "AQNT_TEST_SQLITE_PATH"


def create_app() -> ASGIApp:
    """The uvicorn factory.  ``GET /_cache`` (outside the middleware) tells
    whether the record cache answers and how many polls found changes."""
    store = SQLiteKeyStore(os.environ[PATH_ENV])
    protected = APIKeyMiddleware(hello, store=store, hashers=[Argon2Hasher("cheapest")],
                                 exempt_paths=["/health"], usage_flush_interval=0.05)
    watcher = store.watcher
    assert watcher is not None

    async def app(scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] == "/_cache":
            store.peek("")  # a lookup reads the change log if the lease ran out
            body = json.dumps({"listening": store.cache.listening,
                               "changes_seen": watcher.changes_seen}).encode()
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", b"application/json")]})
            await send({"type": "http.response.body", "body": body})
            return
        await protected(scope, receive, send)

    return app
