"""The FastAPI app of the hostile suite: the APIKey dependency on its own.

No ``from __future__ import annotations``: FastAPI reads the endpoints'
annotations at run time, and they refer to names local to :func:`build`.
"""

from typing import Annotated, Any

from fastapi import FastAPI, Security, WebSocket
from fastapi.responses import JSONResponse, PlainTextResponse
from starlette.middleware import Middleware

from aqnt_auth import KeyStore, Principal
from aqnt_auth.adapters.fastapi import APIKey, add_error_handlers

from .driver import BOOM, METHODS, Recorder


def build(record: Recorder, store: KeyStore, lifespan: Any, debug: bool,
          cors: list[Middleware], **options: Any) -> tuple[FastAPI, APIKey]:
    """``/health`` without the dependency; ``/boom`` (raises), every other
    path, method and WebSocket behind it, configured with *store* and *options*;
    *cors*: the CORS middleware, if any (around the whole app, as FastAPI's
    ``add_middleware`` puts it)."""
    api_key = APIKey(store, **options)
    Key = Annotated[Principal, Security(api_key)]  # noqa: N806 - a type alias
    app = FastAPI(debug=debug, lifespan=lifespan, openapi_url=None, docs_url=None, redoc_url=None,
                  middleware=cors)
    add_error_handlers(app)

    @app.api_route("/health", methods=["GET", "HEAD"])
    async def health() -> PlainTextResponse:
        record("health", None)
        return PlainTextResponse("ok")

    @app.get("/boom")
    async def boom(key: Key) -> None:
        record("boom", key)
        raise RuntimeError(BOOM)

    @app.api_route("/{rest:path}", methods=list(METHODS))
    async def protected(key: Key) -> JSONResponse:
        record("protected", key)
        return JSONResponse({"ok": True})

    @app.websocket("/{rest:path}")
    async def socket(websocket: WebSocket, key: Key) -> None:
        record("protected", key)
        await websocket.accept()
        await websocket.close()

    return app, api_key
