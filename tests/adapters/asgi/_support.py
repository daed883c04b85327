"""What the ASGI adapter tests share: a recording app, raw ASGI calls, refusal checks."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import MutableMapping
from typing import Any

import httpx

from aqnt_auth import KeyRecord, MemoryKeyStore, Principal

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def assert_refused(response: httpx.Response, status: int, body: bytes, challenge: str | None
                   ) -> None:
    """The exact answer: status, JSON body, Content-Type and WWW-Authenticate."""
    assert response.status_code == status
    assert response.content == body
    assert response.headers["content-type"] == "application/json"
    assert response.headers["content-length"] == str(len(body))
    assert response.headers.get("www-authenticate") == challenge


@dataclasses.dataclass(frozen=True)
class Keys:
    live: str  # scopes charges:read
    test: str
    revoked: str
    expired: str
    read_only: str
    charges_only: str  # allowed_paths /v1/charges
    writer: str  # scopes charges:read, charges:write
    live_id: str


class Recorder:
    """A bare ASGI app that records every scope it is called with.

    HTTP requests get 200 and a JSON echo of the path and the key id the
    middleware left; WebSockets are accepted, sent the key id, and closed.
    """

    def __init__(self) -> None:
        self.scopes: list[Scope] = []
        self.lifespan: list[str] = []

    @property
    def ran(self) -> bool:
        return bool(self.scopes)

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                self.lifespan.append(message["type"])
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                else:
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        self.scopes.append(scope)
        principal: Principal | None = scope.get("state", {}).get("api_key")
        key_id = principal.id if principal is not None else None
        if scope["type"] == "websocket":
            await receive()
            await send({"type": "websocket.accept"})
            await send({"type": "websocket.send", "text": str(key_id)})
            await send({"type": "websocket.close", "code": 1000})
            return
        body = json.dumps({"path": scope["path"], "key": key_id}).encode()
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": body})


def http_scope(path: str = "/", *, method: str = "GET", headers: list[tuple[bytes, bytes]]
               | None = None, root_path: str = "", raw_path: bytes | None = None) -> Scope:
    """A raw ASGI ``http`` scope, as a server would build it."""
    return {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method,
        "scheme": "http", "path": path, "raw_path": raw_path or path.encode(),
        "query_string": b"", "root_path": root_path, "headers": headers or [],
        "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 80),
    }


async def call(app: Any, scope: Scope, inbound: list[Message] | None = None) -> list[Message]:
    """Drive *app* with *scope* directly; return every message it sent."""
    queue = list(inbound or [{"type": "http.request", "body": b"", "more_body": False}])
    sent: list[Message] = []

    # A live client: it hangs up only once the answer has begun.
    answered = asyncio.Event()

    async def receive() -> Message:
        if queue:
            return queue.pop(0)
        await answered.wait()
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        sent.append(message)
        answered.set()

    await app(scope, receive, send)
    return sent


def status_of(messages: list[Message]) -> int:
    return int(messages[0]["status"])


def assert_sent_refusal(messages: list[Message], status: int, body: bytes,
                        challenge: str | None) -> None:
    """:func:`assert_refused` for the raw messages of :func:`call`."""
    assert [m["type"] for m in messages] == ["http.response.start", "http.response.body"]
    assert messages[0]["status"] == status
    headers = dict(messages[0]["headers"])
    assert headers[b"content-type"] == b"application/json"
    assert headers[b"content-length"] == str(len(body)).encode()
    assert headers.get(b"www-authenticate") == (challenge.encode() if challenge else None)
    assert messages[1]["body"] == body


class BrokenStore(MemoryKeyStore):
    """A store whose database is down: every lookup fails as a driver would."""

    def get(self, key_id: str) -> KeyRecord | None:
        raise OSError("connection refused")


def declared_scopes(*scopes: str) -> list[str]:
    """The scopes FastAPI lists in an operation's security requirement for the
    HTTP bearer scheme: those given to ``Security(..., scopes=...)`` since
    FastAPI 0.123; before it, only OAuth2 and OpenID Connect schemes listed any."""
    import fastapi

    major, minor = (int(part) for part in fastapi.__version__.split(".")[:2])
    return list(scopes) if (major, minor) >= (0, 123) else []
