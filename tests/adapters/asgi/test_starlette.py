"""Starlette glue: APIKeyBackend, requires, and the error handlers."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

import httpx
import pytest
from starlette.applications import Starlette
from starlette.authentication import AuthenticationError
from starlette.authentication import requires as starlette_requires
from starlette.endpoints import HTTPEndpoint
from starlette.middleware import Middleware
from starlette.middleware.authentication import AuthenticationMiddleware
from starlette.requests import HTTPConnection, Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route, WebSocketRoute
from starlette.testclient import TestClient, WebSocketDenialResponse
from starlette.websockets import WebSocket

from aqnt_auth import Authenticator, MissingAPIKey, require_scopes
from aqnt_auth.adapters import starlette as aqnt_starlette
from aqnt_auth.adapters.asgi import APIKeyMiddleware
from aqnt_auth.adapters.starlette import (
    APIKeyAuthenticationError,
    APIKeyBackend,
    add_error_handlers,
)
from tests import bodies

from ._support import BrokenStore, Keys, assert_refused, bearer

pytestmark = pytest.mark.anyio

_F = TypeVar("_F", bound=Callable[..., Any])
# mypy sees aqnt_auth.adapters as untyped (see pyproject.toml): restate the type.
requires: Callable[..., Callable[[_F], _F]] = aqnt_starlette.requires

WRITE_CHALLENGE = 'Bearer realm="api", error="insufficient_scope", scope="charges:write"'


def routes(ran: list[str]) -> list[Any]:
    """Endpoints of every shape, each noting that it ran."""

    async def whoami(request: Request) -> PlainTextResponse:
        ran.append("whoami")
        user = request.user
        return PlainTextResponse(user.identity if user.is_authenticated else "anonymous")

    @requires("charges:write")
    async def create(request: Request) -> PlainTextResponse:
        ran.append("create")
        return PlainTextResponse("created")

    @requires("charges:read")
    def read_sync(request: Request) -> PlainTextResponse:
        ran.append("read_sync")
        return PlainTextResponse("read")

    class Charges(HTTPEndpoint):
        @requires("charges:write")
        async def post(self, request: Request) -> PlainTextResponse:
            ran.append("endpoint")
            return PlainTextResponse("created")

    async def manual(request: Request) -> PlainTextResponse:
        require_scopes(request.state.api_key, ["charges:write"])
        ran.append("manual")
        return PlainTextResponse("created")

    @starlette_requires("charges:read")
    async def theirs(request: Request) -> PlainTextResponse:
        ran.append("theirs")
        return PlainTextResponse("read")

    @requires("charges:write")
    async def stream(websocket: WebSocket) -> None:
        ran.append("stream")
        await websocket.accept()
        await websocket.close()

    return [
        Route("/whoami", whoami),
        Route("/health", whoami),
        Route("/charges", create, methods=["POST"]),
        Route("/charges", read_sync, methods=["GET"]),
        Route("/endpoint", Charges),
        Route("/manual", manual, methods=["POST"]),
        Route("/theirs", theirs),
        WebSocketRoute("/ws", stream),
    ]


@pytest.fixture
def ran() -> list[str]:
    return []


@pytest.fixture
def middleware_app(authenticator: Authenticator, ran: list[str]) -> Starlette:
    app = Starlette(
        routes=routes(ran),
        middleware=[Middleware(APIKeyMiddleware, authenticator=authenticator,
                               exempt_paths=["/health"])],
    )
    add_error_handlers(app)
    return app


def backend_app(backend: APIKeyBackend, ran: list[str]) -> Starlette:
    app = Starlette(
        routes=routes(ran),
        middleware=[Middleware(AuthenticationMiddleware, backend=backend,
                               on_error=backend.on_error)],
    )
    add_error_handlers(app)
    return app


async def _client(app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://testserver") as c:
        yield c


@pytest.fixture
async def client(middleware_app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    async for c in _client(middleware_app):
        yield c


class TestRequires:
    @pytest.mark.parametrize(("method", "path", "name"),
                             [("POST", "/charges", "create"), ("POST", "/endpoint", "endpoint")])
    async def test_scope_present(self, client: httpx.AsyncClient, keys: Keys, ran: list[str],
                                 method: str, path: str, name: str) -> None:
        """A key with the scope reaches the endpoint (functions and HTTPEndpoint methods)."""
        response = await client.request(method, path, headers=bearer(keys.writer))
        assert response.text == "created"
        assert ran == [name]

    @pytest.mark.parametrize("path", ["/charges", "/endpoint", "/manual"])
    async def test_scope_missing_gets_our_403(self, client: httpx.AsyncClient, keys: Keys,
                                              ran: list[str], path: str) -> None:
        """Without the scope: the contract's JSON 403 naming the scope, not plain text."""
        response = await client.post(path, headers=bearer(keys.live))
        assert_refused(response, 403, bodies.FORBIDDEN, WRITE_CHALLENGE)
        assert ran == []

    async def test_sync_endpoint(self, client: httpx.AsyncClient, keys: Keys,
                                 ran: list[str]) -> None:
        """Plain (sync) endpoints are wrapped too."""
        assert (await client.get("/charges", headers=bearer(keys.live))).text == "read"
        response = await client.get("/charges", headers=bearer(keys.test))
        assert_refused(response, 403, bodies.FORBIDDEN,
                       'Bearer realm="api", error="insufficient_scope", scope="charges:read"')
        assert ran == ["read_sync"]

    async def test_without_a_key_on_an_exempt_route(self, authenticator: Authenticator,
                                                    ran: list[str]) -> None:
        """A requires() route reached without a key (exempted) answers 401, not 403."""
        app = Starlette(routes=routes(ran), middleware=[
            Middleware(APIKeyMiddleware, authenticator=authenticator,
                       exempt_paths=["/charges"])])
        async for c in _client(app):
            assert_refused(await c.post("/charges"), 401, bodies.MISSING, bodies.CHALLENGE)
        assert ran == []

    async def test_starlette_own_requires_sees_our_scopes(self, client: httpx.AsyncClient,
                                                          keys: Keys, ran: list[str]) -> None:
        """Starlette's @requires works on request.auth.scopes as the middleware fills it."""
        assert (await client.get("/theirs", headers=bearer(keys.live))).text == "read"
        assert ran == ["theirs"]

    def test_websocket(self, middleware_app: Starlette, keys: Keys, ran: list[str]) -> None:
        """On a WebSocket, a missing scope refuses the handshake with the JSON 403."""
        client = TestClient(middleware_app)
        with pytest.raises(WebSocketDenialResponse) as refused, \
                client.websocket_connect("/ws", headers=bearer(keys.live)):
            pass  # pragma: no cover - never connects
        assert refused.value.status_code == 403
        assert refused.value.content == bodies.FORBIDDEN
        assert refused.value.headers["www-authenticate"] == WRITE_CHALLENGE
        with client.websocket_connect("/ws", headers=bearer(keys.writer)):
            pass
        assert ran == ["stream"]

    async def test_needs_a_connection_argument(self) -> None:
        @requires("x")
        async def odd(value: int) -> int:  # pragma: no cover - refused before
            return value

        with pytest.raises(TypeError, match="Request or a WebSocket"):
            await odd(1)


class TestBackend:
    async def test_success_and_refusals(self, authenticator: Authenticator, keys: Keys,
                                        ran: list[str]) -> None:
        """Under Starlette's AuthenticationMiddleware, with on_error: the contract's answers."""
        backend = APIKeyBackend(authenticator=authenticator, exempt_paths=["/health"])
        async for c in _client(backend_app(backend, ran)):
            assert (await c.get("/whoami", headers=bearer(keys.live))).text == keys.live_id
            assert_refused(await c.get("/whoami"), 401, bodies.MISSING, bodies.CHALLENGE)
            assert_refused(await c.get("/whoami", headers=bearer(keys.revoked)), 401,
                           bodies.REVOKED, bodies.INVALID_CHALLENGE)
            assert_refused(await c.get("/whoami", headers=bearer("sk_live_x")), 401, bodies.INVALID,
                           bodies.INVALID_CHALLENGE)
            assert (await c.get("/health")).text == "anonymous"
            assert_refused(await c.post("/charges", headers=bearer(keys.live)), 403,
                           bodies.FORBIDDEN, WRITE_CHALLENGE)
        assert ran == ["whoami", "whoami"]

    async def test_principal_in_state(self, authenticator: Authenticator, keys: Keys) -> None:
        """The backend leaves the principal where the middleware does."""
        seen: list[Any] = []

        async def endpoint(request: Request) -> PlainTextResponse:
            seen.append(request.state.api_key)
            return PlainTextResponse("ok")

        backend = APIKeyBackend(authenticator=authenticator)
        app = Starlette(routes=[Route("/", endpoint)], middleware=[
            Middleware(AuthenticationMiddleware, backend=backend, on_error=backend.on_error)])
        async for c in _client(app):
            await c.get("/", headers=bearer(keys.live))
        assert [p.id for p in seen] == [keys.live_id]

    async def test_allow_anonymous(self, authenticator: Authenticator, keys: Keys,
                                   ran: list[str]) -> None:
        """allow_anonymous: no key goes on unauthenticated; a bad key is still refused."""
        backend = APIKeyBackend(authenticator=authenticator, allow_anonymous=True)
        async for c in _client(backend_app(backend, ran)):
            assert (await c.get("/whoami")).text == "anonymous"
            assert_refused(await c.post("/charges"), 401, bodies.MISSING, bodies.CHALLENGE)
            assert_refused(await c.get("/whoami", headers=bearer("sk_live_x")), 401, bodies.INVALID,
                           bodies.INVALID_CHALLENGE)
        assert ran == ["whoami"]

    async def test_store_failure(self, cheap_hasher: Any, keys: Keys, ran: list[str]) -> None:
        backend = APIKeyBackend(BrokenStore(), hashers=[cheap_hasher])
        async for c in _client(backend_app(backend, ran)):
            response = await c.get("/whoami", headers=bearer(keys.live))
        assert_refused(response, 503, bodies.UNAVAILABLE, None)
        assert response.headers["retry-after"] == "1"
        assert ran == []
        await backend.aclose()

    def test_on_error_leaves_other_backends_errors_alone(self) -> None:
        conn = HTTPConnection({"type": "http", "headers": []})
        response = APIKeyBackend.on_error(conn, AuthenticationError("nope"))
        assert response.status_code == 400
        assert response.body == b"nope"

    def test_error_carries_no_key(self, keys: Keys) -> None:
        error = APIKeyAuthenticationError(MissingAPIKey(), "api")
        assert str(error) == "missing_api_key"
