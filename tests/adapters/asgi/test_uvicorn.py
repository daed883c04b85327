"""End to end: a real uvicorn server on 127.0.0.1, a random port, httpx as the client."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from aqnt_auth import Argon2Hasher, KeyManager, SQLiteKeyStore
from aqnt_auth.adapters.asgi import APIKeyMiddleware
from tests import bodies

from ._support import assert_refused, bearer


@contextmanager
def serve(app: Any) -> Iterator[str]:
    """Run *app* under uvicorn in a thread; yield its base URL; shut it down cleanly."""
    # IPPROTO_TCP explicitly: asyncio sets TCP_NODELAY only on sockets that say so,
    # and without it every small response waits out a delayed ACK (~40 ms).
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level="warning", lifespan="on", ws="websockets-sansio")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        for _ in range(1000):  # at most ~10 s for start-up
            if server.started or not thread.is_alive():
                break
            time.sleep(0.01)
        assert server.started, "uvicorn did not start"
        yield f"127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()
    assert not thread.is_alive()


def test_real_server(tmp_path: Path, cheap_hasher: Argon2Hasher) -> None:
    """Every answer over real HTTP and WebSocket; usage flushed to SQLite at shutdown."""
    store_path = tmp_path / "keys.db"
    manager = KeyManager(SQLiteKeyStore(store_path), hasher=cheap_hasher)
    live = manager.create("live")
    reader = manager.create("reader", read_only=True)
    revoked = manager.create("revoked")
    manager.revoke(revoked.record.id)
    ran: list[str] = []

    async def whoami(request: Request) -> JSONResponse:
        ran.append(request.method)
        return JSONResponse({"id": request.state.api_key.id, "user": request.user.identity})

    async def stream(websocket: WebSocket) -> None:
        ran.append("ws")
        await websocket.accept()
        await websocket.send_text(websocket.state.api_key.id)
        await websocket.close()

    app = Starlette(
        routes=[Route("/v1/whoami", whoami, methods=["GET", "POST"]),
                Route("/health", whoami), WebSocketRoute("/ws", stream)],
        middleware=[Middleware(APIKeyMiddleware, store=f"sqlite:///{store_path}",
                               hashers=[cheap_hasher], exempt_paths=["/ws-open"])],
    )
    with serve(app) as address, httpx.Client(base_url=f"http://{address}") as client:
        ok = client.get("/v1/whoami", headers=bearer(live.key))
        assert ok.json() == {"id": live.record.id, "user": live.record.id}
        assert client.get("/v1/whoami", headers=bearer(live.key)).status_code == 200  # warm
        assert_refused(client.get("/v1/whoami"), 401, bodies.MISSING, bodies.CHALLENGE)
        assert_refused(client.get("/v1/whoami", headers=bearer("sk_live_nope")), 401,
                       bodies.INVALID, bodies.INVALID_CHALLENGE)
        assert_refused(client.get("/v1/whoami", headers=bearer(revoked.key)), 401, bodies.REVOKED,
                       bodies.INVALID_CHALLENGE)
        assert_refused(client.post("/v1/whoami", headers=bearer(reader.key)), 403, bodies.FORBIDDEN,
                       bodies.READ_ONLY_CHALLENGE)
        # /health is not exempt here: every path needs a key unless listed.
        assert_refused(client.get("/health"), 401, bodies.MISSING, bodies.CHALLENGE)
        head = client.head("/v1/whoami")
        assert head.status_code == 401
        assert head.headers["www-authenticate"] == bodies.CHALLENGE

        with connect(f"ws://{address}/ws", additional_headers=bearer(live.key)) as ws:
            assert ws.recv(timeout=10) == live.record.id
        with pytest.raises(InvalidStatus) as refused:
            connect(f"ws://{address}/ws", open_timeout=10)
        assert refused.value.response.status_code == 401
        assert refused.value.response.body == bodies.MISSING
        assert refused.value.response.headers["WWW-Authenticate"] == bodies.CHALLENGE
    assert ran == ["GET", "GET", "ws"]
    # The lifespan shutdown flushed the usage counts (3 requests with the live key).
    assert manager.get(live.record.id).usage_count == 3
    manager.close()
