"""What the WSGI and Flask adapter tests share: a key store, a real server, refusal checks."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from werkzeug.serving import make_server
from werkzeug.test import Client, TestResponse

from aqnt_auth import KeyManager, KeyRecord, MemoryKeyStore
from tests import bodies

if TYPE_CHECKING:
    from _typeshed.wsgi import WSGIApplication


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def assert_refused(response: TestResponse, status: int, body: bytes, challenge: str | None
                   ) -> None:
    """The exact answer: status, JSON body, Content-Type and WWW-Authenticate."""
    assert response.status_code == status
    assert response.get_data() == body
    assert response.headers["Content-Type"] == "application/json"
    assert response.headers.get("WWW-Authenticate") == challenge


def assert_limited_per_client(client: Client, strangers: KeyManager, calls: list[Any]) -> None:
    """Behind a limit of two failures a client: the third unknown key from
    one REMOTE_ADDR is 429 with Retry-After, another address still gets 401;
    the app (which appends to *calls* when it runs) never runs."""

    def attempt(addr: str) -> TestResponse:
        return client.get("/", headers=bearer(strangers.create("x").key),
                          environ_overrides={"REMOTE_ADDR": addr})

    def refused(response: TestResponse, status: int, body: bytes, challenge: str | None
                ) -> None:
        assert_refused(response, status, body, challenge)
        assert calls == []

    for _ in range(2):
        refused(attempt("10.0.0.1"), 401, bodies.INVALID, bodies.INVALID_CHALLENGE)
    response = attempt("10.0.0.1")
    refused(response, 429, bodies.RATE_LIMITED, None)
    assert int(response.headers["Retry-After"]) >= 1
    refused(attempt("10.0.0.2"), 401, bodies.INVALID, bodies.INVALID_CHALLENGE)


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
