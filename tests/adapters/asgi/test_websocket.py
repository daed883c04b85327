"""WebSockets: authenticated on the handshake, refused before the app sees them."""

from __future__ import annotations

import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import WebSocketRoute
from starlette.testclient import TestClient, WebSocketDenialResponse
from starlette.websockets import WebSocket

from aqnt_auth import Authenticator
from aqnt_auth.adapters.asgi import APIKeyMiddleware
from tests import bodies

from ._support import Keys, Recorder, bearer, call


@pytest.fixture
def ran() -> list[str]:
    return []


@pytest.fixture
def client(authenticator: Authenticator, ran: list[str]) -> TestClient:
    async def stream(websocket: WebSocket) -> None:
        ran.append(websocket.url.path)
        await websocket.accept()
        key = websocket.state.api_key if websocket.user.is_authenticated else None
        await websocket.send_text(key.id if key is not None else "anonymous")
        await websocket.close()

    app = Starlette(
        routes=[WebSocketRoute("/ws", stream), WebSocketRoute("/public/ws", stream)],
        middleware=[Middleware(APIKeyMiddleware, authenticator=authenticator,
                               exempt_paths=["/public/*"])],
    )
    return TestClient(app)


def test_valid_key_opens_the_socket(client: TestClient, keys: Keys, ran: list[str]) -> None:
    """A valid key: accepted, and the endpoint sees the principal."""
    with client.websocket_connect("/ws", headers=bearer(keys.live)) as ws:
        assert ws.receive_text() == keys.live_id
    assert ran == ["/ws"]


def test_read_only_key_may_open_a_socket(client: TestClient, keys: Keys) -> None:
    """The handshake is a GET: a read-only key may open a socket."""
    with client.websocket_connect("/ws", headers=bearer(keys.read_only)) as ws:
        assert ws.receive_text() != "anonymous"


@pytest.mark.parametrize(
    ("key_attr", "body", "challenge"),
    [(None, bodies.MISSING, bodies.CHALLENGE),
     ("revoked", bodies.REVOKED, bodies.INVALID_CHALLENGE)],
    ids=["missing", "revoked"],
)
def test_refused_with_an_http_response(client: TestClient, keys: Keys, ran: list[str],
                                       key_attr: str | None, body: bytes,
                                       challenge: str) -> None:
    """With the websocket.http.response extension: a real 401 with the JSON body."""
    headers = bearer(getattr(keys, key_attr)) if key_attr else {}
    with pytest.raises(WebSocketDenialResponse) as refused, \
            client.websocket_connect("/ws", headers=headers):
        pass  # pragma: no cover - never connects
    response = refused.value
    assert response.status_code == 401
    assert response.content == body
    assert response.headers["content-type"] == "application/json"
    assert response.headers["www-authenticate"] == challenge
    assert ran == []


def test_exempt_socket(client: TestClient, ran: list[str]) -> None:
    """An exempt WebSocket path opens without a key."""
    with client.websocket_connect("/public/ws") as ws:
        assert ws.receive_text() == "anonymous"
    assert ran == ["/public/ws"]


@pytest.mark.anyio
async def test_without_the_extension_closes_with_1008(authenticator: Authenticator) -> None:
    """A server without the extension: the handshake is answered with close 1008."""
    recorder = Recorder()
    app = APIKeyMiddleware(recorder, authenticator=authenticator)
    scope = {"type": "websocket", "asgi": {"version": "3.0"}, "path": "/ws", "root_path": "",
             "raw_path": b"/ws", "query_string": b"", "headers": [], "scheme": "ws",
             "subprotocols": []}
    sent = await call(app, scope, [{"type": "websocket.connect"}])
    assert sent == [{"type": "websocket.close", "code": 1008, "reason": "missing_api_key"}]
    assert not recorder.ran
