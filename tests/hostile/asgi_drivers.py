"""The ASGI adapters, driven with raw scopes on a real event loop.

Three apps with the same routes (``/health`` open, everything else
protected, a WebSocket endpoint, a lifespan): Starlette behind
:class:`~aqnt_auth.adapters.asgi.APIKeyMiddleware`, Starlette behind its own
``AuthenticationMiddleware`` with
:class:`~aqnt_auth.adapters.starlette.APIKeyBackend`, and FastAPI with the
:class:`~aqnt_auth.adapters.fastapi.APIKey` dependency on its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import urllib.parse
from collections.abc import AsyncIterator, Iterator, MutableMapping
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.authentication import AuthenticationMiddleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request as StarletteRequest
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Route, WebSocketRoute
from starlette.websockets import WebSocket

from aqnt_auth.adapters.asgi import APIKeyMiddleware, principal_of
from aqnt_auth.adapters.starlette import APIKeyBackend, ResponseHeadersMiddleware
from tests.core._support import CountingHasher, InstrumentedStore

from .cases import ORIGIN
from .driver import (
    ALLOWED_MODES,
    BOOM,
    EXEMPT_PATHS,
    HOST,
    METHODS,
    MemoryDriver,
    Outcome,
    Recorder,
    Request,
    Setup,
)

Message = MutableMapping[str, Any]
ASGIApp = Any


def routes(record: Recorder) -> list[BaseRoute]:
    """``/health`` (GET, HEAD), ``/boom`` (raises), and a catch-all for every
    method and WebSockets."""

    async def health(request: StarletteRequest) -> Response:
        record("health", principal_of(request.scope))
        return PlainTextResponse("ok")

    async def protected(request: StarletteRequest) -> Response:
        record("protected", principal_of(request.scope))
        return JSONResponse({"ok": True})

    async def boom(request: StarletteRequest) -> Response:
        record("boom", principal_of(request.scope))
        raise RuntimeError(BOOM)

    async def socket(websocket: WebSocket) -> None:
        record("protected", principal_of(websocket.scope))
        await websocket.accept()
        await websocket.close()

    return [
        Route("/health", health, methods=["GET", "HEAD"]),
        Route("/boom", boom),
        Route("/{rest:path}", protected, methods=list(METHODS)),
        WebSocketRoute("/{rest:path}", socket),
    ]


def lifespan(record: Recorder) -> Any:
    @contextlib.asynccontextmanager
    async def run(app: object) -> AsyncIterator[None]:
        record("lifespan", None)
        yield

    return run


def scope_of(request: Request) -> dict[str, Any]:
    """The raw scope an ASGI server builds: header names lower-cased, values untouched."""
    headers = [(b"host", HOST.encode()), *((n.lower(), v) for n, v in request.headers)]
    # uvicorn decodes the path as UTF-8 with replacement characters.
    path = urllib.parse.unquote(request.path)
    common = {
        "asgi": {"version": "3.0", "spec_version": "2.4"}, "http_version": "1.1",
        "path": path, "raw_path": request.path.encode("ascii"),
        "query_string": request.query, "root_path": request.root, "headers": headers,
        "client": (request.peer, 50000), "server": (HOST, 80), "state": {},
    }
    if request.method == "WEBSOCKET":
        extensions: dict[str, object] = (
            {"websocket.http.response": {}} if request.ws_extension else {}
        )
        return {"type": "websocket", "scheme": "ws", "subprotocols": [],
                "extensions": extensions, **common}
    return {"type": "http", "scheme": "http", "method": request.method, **common}


class ASGIDriver(MemoryDriver):
    """An ASGI app driven with raw scopes on its own event loop."""

    def __init__(self, name: str, app: ASGIApp, store: InstrumentedStore,
                 hasher: CountingHasher, recorder: Recorder) -> None:
        super().__init__(store, hasher)
        self.name = name
        self.app = app
        self.recorder = recorder
        self.loop = asyncio.new_event_loop()

    def close(self) -> None:
        self.loop.run_until_complete(self.loop.shutdown_default_executor())
        self.loop.close()

    def send(self, request: Request) -> Outcome:
        if request.method == "LIFESPAN":
            inbound: list[Message] = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]
            scope: dict[str, Any] = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}
        elif request.method == "WEBSOCKET":
            inbound = [{"type": "websocket.connect"}]
            scope = scope_of(request)
        else:
            inbound = [{"type": "http.request", "body": b"", "more_body": False}]
            scope = scope_of(request)
        sent, escaped = self.loop.run_until_complete(self._call(scope, inbound))
        endpoint, principal = self.recorder.take()
        outcome = _outcome(scope["type"], sent, endpoint, principal)
        outcome.escaped = escaped
        return outcome

    async def _call(self, scope: dict[str, Any], inbound: list[Message]
                    ) -> tuple[list[Message], BaseException | None]:
        sent: list[Message] = []
        final = ({"type": "websocket.disconnect", "code": 1000} if scope["type"] == "websocket"
                 else {"type": "http.disconnect"})

        # A live client: it hangs up only once the answer has begun.  (One
        # that hangs up while its key waits for argon2 gets no answer at all.)
        answered = asyncio.Event()

        async def receive() -> Message:
            if inbound:
                return inbound.pop(0)
            await answered.wait()
            return final

        async def send(message: Message) -> None:
            sent.append(message)
            answered.set()

        try:
            await self.app(scope, receive, send)
        except Exception as exc:  # the server would log it and answer 500
            return sent, exc
        return sent, None


def _outcome(kind: str, sent: list[Message], endpoint: str | None, principal: object | None
             ) -> Outcome:
    if kind == "lifespan":
        types = [m["type"] for m in sent]
        assert types == ["lifespan.startup.complete", "lifespan.shutdown.complete"], types
        return Outcome(None, [], b"", endpoint, principal)
    status: int | None = None
    headers: list[tuple[str, str]] = []
    body = b""
    close_code: int | None = None
    for message in sent:
        kind = message["type"]
        if kind in ("http.response.start", "websocket.http.response.start"):
            status = message["status"]
            headers = [(k.decode("latin-1").lower(), v.decode("latin-1"))
                       for k, v in message.get("headers", [])]
        elif kind in ("http.response.body", "websocket.http.response.body"):
            body += message.get("body", b"")
        elif kind == "websocket.accept":
            status = 101
        elif kind == "websocket.close" and status is None:
            close_code = message.get("code", 1000)
    return Outcome(status, headers, body, endpoint, principal, close_code=close_code)


def _find(app: Starlette, cls: type[Any]) -> Any:
    node: Any = app.middleware_stack
    while node is not None and not isinstance(node, cls):
        node = getattr(node, "app", None)
    return node


def _cors(setup: Setup) -> list[Middleware]:
    """Starlette's CORSMiddleware where it belongs: outermost, first in the list."""
    if not setup.cors:
        return []
    return [Middleware(CORSMiddleware, allow_origins=[ORIGIN], allow_methods=["*"],
                       allow_headers=["Authorization"])]


@contextlib.contextmanager
def open_asgi(adapter: str, store: InstrumentedStore, hasher: CountingHasher, setup: Setup
              ) -> Iterator[ASGIDriver]:
    recorder = Recorder()
    debug = setup.debug
    options: dict[str, Any] = {"hashers": [hasher], "allowed_modes": ALLOWED_MODES,
                               "rate_limit": setup.rate_limit,
                               "trusted_proxies": setup.trusted_proxies}
    if adapter == "fastapi":
        from ._fastapi_app import build

        app, api_key = build(recorder, store, lifespan(recorder), debug, cors=_cors(setup),
                             **options)
        driver = ASGIDriver(adapter, app, store, hasher, recorder)
        try:
            yield driver
        finally:
            driver.close()
            assert api_key.authenticator is not None
            api_key.authenticator.close()
        return
    if adapter == "asgi":
        middleware = Middleware(APIKeyMiddleware, store=store, exempt_paths=EXEMPT_PATHS,
                                **options)
        starlette = Starlette(debug, routes=routes(recorder),
                              middleware=[*_cors(setup), middleware],
                              lifespan=lifespan(recorder))
        driver = ASGIDriver(adapter, starlette, store, hasher, recorder)
        try:
            yield driver
        finally:
            ours = _find(starlette, APIKeyMiddleware)
            if ours is not None:
                driver.loop.run_until_complete(ours.aclose())
            driver.close()
        return
    backend = APIKeyBackend(store, exempt_paths=EXEMPT_PATHS, **options)
    starlette = Starlette(
        debug,
        routes=routes(recorder),
        middleware=[*_cors(setup), Middleware(ResponseHeadersMiddleware),
                    Middleware(AuthenticationMiddleware, backend=backend,
                               on_error=backend.on_error)],
        lifespan=lifespan(recorder),
    )
    driver = ASGIDriver(adapter, starlette, store, hasher, recorder)
    try:
        yield driver
    finally:
        driver.loop.run_until_complete(backend.aclose())
        driver.close()
