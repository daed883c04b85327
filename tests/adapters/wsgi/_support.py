"""What the WSGI and Flask adapter tests share: exact bodies, a key store, a real server."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Final

from werkzeug.serving import make_server
from werkzeug.test import TestResponse

from aqnt_auth import KeyRecord, MemoryKeyStore

if TYPE_CHECKING:
    from _typeshed.wsgi import WSGIApplication


def _body(type_: str, message: str, code: str) -> bytes:
    return json.dumps({"error": {"type": type_, "message": message, "code": code}}).encode()


MISSING: Final = _body("authentication_error", "No API key provided", "missing_api_key")
INVALID: Final = _body("authentication_error", "Invalid API key provided", "invalid_api_key")
REVOKED: Final = _body("authentication_error", "API key has been revoked", "key_revoked")
FORBIDDEN: Final = _body(
    "permission_error", "This API key does not have the required permissions",
    "insufficient_scope",
)
UNAVAILABLE: Final = _body(
    "api_error", "Authentication is temporarily unavailable", "auth_unavailable"
)
RATE_LIMITED: Final = _body(
    "rate_limit_error", "Too many failed authentication attempts", "rate_limited"
)

CHALLENGE: Final = 'Bearer realm="api"'
INVALID_CHALLENGE: Final = 'Bearer realm="api", error="invalid_token"'
SCOPE_CHALLENGE: Final = 'Bearer realm="api", error="insufficient_scope"'


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def assert_refused(response: TestResponse, status: int, body: bytes, challenge: str | None
                   ) -> None:
    """The exact answer: status, JSON body, Content-Type and WWW-Authenticate."""
    assert response.status_code == status
    assert response.get_data() == body
    assert response.headers["Content-Type"] == "application/json"
    assert response.headers.get("WWW-Authenticate") == challenge


class BrokenStore(MemoryKeyStore):
    """A store whose database is down: every lookup fails as a driver would."""

    def get(self, key_id: str) -> KeyRecord | None:
        raise OSError("connection refused")


@contextmanager
def serve(app: WSGIApplication) -> Iterator[str]:
    """Serve *app* with werkzeug's threaded server on 127.0.0.1; yield its base URL."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
