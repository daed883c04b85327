"""FastAPI: the APIKey security dependency, its errors and its OpenAPI document.

No ``from __future__ import annotations`` here: FastAPI reads the endpoints'
annotations at run time, and these refer to aliases local to ``build``.
"""

from collections.abc import AsyncIterator
from typing import Annotated, Any

import httpx
import pytest
from fastapi import FastAPI, Request, Security, WebSocket
from starlette.responses import PlainTextResponse, Response
from starlette.testclient import TestClient, WebSocketDenialResponse

from aqnt_auth import AQNTError, Argon2Hasher, Authenticator, Principal
from aqnt_auth.adapters.asgi import APIKeyMiddleware
from aqnt_auth.adapters.fastapi import APIKey, add_error_handlers
from aqnt_auth.adapters.starlette import REFUSALS, error_handler
from tests import bodies

from ._support import BrokenStore, Keys, assert_refused, bearer, declared_scopes

pytestmark = pytest.mark.anyio

WRITE_CHALLENGE = 'Bearer realm="api", error="insufficient_scope", scope="charges:write"'


def build(api_key: APIKey, ran: list[str], *, authenticator: Authenticator | None = None,
          handlers: bool = True) -> FastAPI:
    """An app with open, keyed and scoped operations; behind the middleware if given one."""
    app = FastAPI()
    if authenticator is not None:
        app.add_middleware(APIKeyMiddleware, authenticator=authenticator,
                           exempt_paths=["/health", "/openapi.json", "/docs"])
    if handlers:
        add_error_handlers(app)
    Key = Annotated[Principal, Security(api_key)]  # noqa: N806 - a type alias

    @app.get("/health")
    async def health() -> dict[str, str]:
        ran.append("health")
        return {"status": "ok"}

    @app.get("/whoami")
    async def whoami(key: Key) -> dict[str, Any]:
        ran.append("whoami")
        return {"id": key.id, "livemode": key.livemode}

    @app.post("/charges")
    async def create(
        key: Annotated[Principal, Security(api_key, scopes=["charges:write"])],
    ) -> dict[str, str]:
        ran.append("create")
        return {"by": key.id}

    @app.get("/charges", dependencies=[Security(api_key, scopes=["charges:read"])])
    async def listing() -> list[str]:
        ran.append("listing")
        return []

    @app.websocket("/ws")
    async def stream(websocket: WebSocket, key: Key) -> None:
        ran.append("stream")
        await websocket.accept()
        await websocket.send_text(key.id)
        await websocket.close()

    return app


@pytest.fixture
def ran() -> list[str]:
    return []


async def _client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://testserver") as c:
        yield c


@pytest.fixture(params=["middleware", "standalone"])
def app(request: pytest.FixtureRequest, authenticator: Authenticator, ran: list[str]) -> FastAPI:
    """The same app, with the principal from the middleware or from the dependency itself."""
    if request.param == "middleware":
        return build(APIKey(), ran, authenticator=authenticator)
    return build(APIKey(authenticator=authenticator), ran)


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async for c in _client(app):
        yield c


class TestDependency:
    async def test_returns_the_principal(self, client: httpx.AsyncClient, keys: Keys,
                                         ran: list[str]) -> None:
        response = await client.get("/whoami", headers=bearer(keys.live))
        assert response.json() == {"id": keys.live_id, "livemode": True}
        assert ran == ["whoami"]

    async def test_scopes(self, client: httpx.AsyncClient, keys: Keys, ran: list[str]) -> None:
        """Security(..., scopes=[...]): present passes; missing gets the JSON 403."""
        assert (await client.post("/charges", headers=bearer(keys.writer))).status_code == 200
        assert (await client.get("/charges", headers=bearer(keys.live))).status_code == 200
        response = await client.post("/charges", headers=bearer(keys.live))
        assert_refused(response, 403, bodies.FORBIDDEN, WRITE_CHALLENGE)
        assert ran == ["create", "listing"]

    @pytest.mark.parametrize(
        ("key_attr", "status", "body", "challenge"),
        [
            (None, 401, bodies.MISSING, bodies.CHALLENGE),
            ("revoked", 401, bodies.REVOKED, bodies.INVALID_CHALLENGE),
            ("bogus", 401, bodies.INVALID, bodies.INVALID_CHALLENGE),
        ],
    )
    async def test_refusals_keep_the_contract_body(
        self, client: httpx.AsyncClient, keys: Keys, ran: list[str], key_attr: str | None,
        status: int, body: bytes, challenge: str,
    ) -> None:
        """Errors are the contract's JSON, never FastAPI's {"detail": ...}."""
        key = {"revoked": keys.revoked, "bogus": "sk_live_bogus"}.get(key_attr or "")
        response = await client.get("/whoami", headers=bearer(key) if key else {})
        assert_refused(response, status, body, challenge)
        assert b"detail" not in response.content
        assert ran == []

    async def test_open_route(self, client: httpx.AsyncClient, ran: list[str]) -> None:
        assert (await client.get("/health")).json() == {"status": "ok"}
        assert ran == ["health"]

    def test_websocket(self, app: FastAPI, keys: Keys, ran: list[str]) -> None:
        """WebSocket routes get the principal; without a key the handshake gets the 401."""
        client = TestClient(app)
        with client.websocket_connect("/ws", headers=bearer(keys.live)) as ws:
            assert ws.receive_text() == keys.live_id
        with pytest.raises(WebSocketDenialResponse) as refused, \
                client.websocket_connect("/ws"):
            pass  # pragma: no cover - never connects
        assert refused.value.status_code == 401
        assert refused.value.content == bodies.MISSING
        assert ran == ["stream"]


class TestOpenAPI:
    async def test_security_scheme_and_operations(self, client: httpx.AsyncClient) -> None:
        """An http/bearer scheme (Swagger's Authorize button) marks each keyed operation."""
        document = (await client.get("/openapi.json")).json()
        assert document["components"]["securitySchemes"] == {
            "APIKey": {
                "type": "http",
                "scheme": "bearer",
                "bearerFormat": "sk_live_... / sk_test_...",
                "description": "Paste the API key alone (`sk_live_...` or `sk_test_...`), "
                               "without `Bearer `: it is sent as `Authorization: Bearer <key>`.",
            }
        }
        paths = document["paths"]
        assert paths["/whoami"]["get"]["security"] == [{"APIKey": []}]
        write, read = declared_scopes("charges:write"), declared_scopes("charges:read")
        assert paths["/charges"]["post"]["security"] == [{"APIKey": write}]
        assert paths["/charges"]["get"]["security"] == [{"APIKey": read}]
        assert "security" not in paths["/health"]["get"]
        # The principal is injected, not a request parameter.
        assert "parameters" not in paths["/whoami"]["get"]

    async def test_scheme_name(self, authenticator: Authenticator, ran: list[str]) -> None:
        app = build(APIKey(authenticator=authenticator, scheme_name="Bearer"), ran)
        async for c in _client(app):
            document = (await c.get("/openapi.json")).json()
        assert list(document["components"]["securitySchemes"]) == ["Bearer"]

    async def test_swagger_ui(self, client: httpx.AsyncClient) -> None:
        assert (await client.get("/docs")).status_code == 200


class TestWithoutErrorHandlers:
    """Forgetting add_error_handlers(app): the dependency registers the
    handler itself, so refusals keep their exact bytes, never a 500."""

    @pytest.fixture(params=["middleware-exempt", "standalone"])
    def bare(self, request: pytest.FixtureRequest, authenticator: Authenticator,
             ran: list[str]) -> FastAPI:
        if request.param == "standalone":
            return build(APIKey(authenticator=authenticator), ran, handlers=False)
        # Behind the middleware, a refusal from the dependency happens on
        # a path the middleware exempts and on a missing scope.
        app = build(APIKey(), ran, authenticator=authenticator, handlers=False)
        app.user_middleware[0].kwargs["exempt_paths"] = ["/whoami", "/openapi.json"]
        return app

    async def test_refusals_keep_the_contract_bytes(self, bare: FastAPI, keys: Keys,
                                                    ran: list[str]) -> None:
        async for c in _client(bare):
            assert_refused(await c.get("/whoami"), 401, bodies.MISSING, bodies.CHALLENGE)
            assert_refused(await c.get("/whoami", headers=bearer("sk_live_nope")), 401,
                           bodies.INVALID, bodies.INVALID_CHALLENGE)
            assert_refused(await c.post("/charges", headers=bearer(keys.live)), 403,
                           bodies.FORBIDDEN, WRITE_CHALLENGE)
            response = await c.get("/whoami", headers=bearer(keys.live))
            assert response.json() == {"id": keys.live_id, "livemode": True}
        assert ran == ["whoami"]

    async def test_store_down_is_503(self, keys: Keys, ran: list[str],
                                     cheap_hasher: Argon2Hasher) -> None:
        app = build(APIKey(BrokenStore(), hashers=[cheap_hasher]), ran, handlers=False)
        async for c in _client(app):
            response = await c.get("/whoami", headers=bearer(keys.live))
        assert_refused(response, 503, bodies.UNAVAILABLE, None)
        assert response.headers["retry-after"] == "1"
        assert ran == []

    def test_websocket(self, authenticator: Authenticator, ran: list[str]) -> None:
        app = build(APIKey(authenticator=authenticator), ran, handlers=False)
        with pytest.raises(WebSocketDenialResponse) as refused, \
                TestClient(app).websocket_connect("/ws"):
            pass  # pragma: no cover - never connects
        assert (refused.value.status_code, refused.value.content) == (401, bodies.MISSING)

    async def test_registered_on_the_app(self, authenticator: Authenticator,
                                         ran: list[str]) -> None:
        """After the first request the app holds the handlers, as if
        add_error_handlers had been called (a rebuilt stack keeps them)."""
        app = build(APIKey(authenticator=authenticator), ran, handlers=False)
        async for c in _client(app):
            await c.get("/whoami")
        assert all(app.exception_handlers[cls] is error_handler for cls in REFUSALS)

    async def test_the_apps_own_handler_wins(self, authenticator: Authenticator,
                                             ran: list[str]) -> None:
        """A handler the app registered for our errors is kept; one for
        Exception is not ours to defer to (Starlette makes it the 500 page)."""
        app = build(APIKey(authenticator=authenticator), ran, handlers=False)

        async def teapot(request: Request, exc: Exception) -> Response:
            return PlainTextResponse("mine", status_code=418)

        async def crash(request: Request, exc: Exception) -> Response:
            raise AssertionError("not for refusals")  # pragma: no cover

        app.add_exception_handler(AQNTError, teapot)
        app.add_exception_handler(Exception, crash)
        async for c in _client(app):
            response = await c.get("/whoami")
        assert (response.status_code, response.text) == (418, "mine")


class TestMisconfiguration:
    async def test_no_store_and_no_middleware(self, keys: Keys, ran: list[str]) -> None:
        app = build(APIKey(), ran)
        async for c in _client(app):
            with pytest.raises(RuntimeError, match="no store and no APIKeyMiddleware"):
                await c.get("/whoami", headers=bearer(keys.live))
        assert ran == []

    async def test_exempt_route_with_the_dependency(self, authenticator: Authenticator,
                                                    keys: Keys, ran: list[str]) -> None:
        """An exempt path whose route still wants a key: checked with the middleware's."""
        app = FastAPI()
        app.add_middleware(APIKeyMiddleware, authenticator=authenticator,
                           exempt_paths=["/whoami"])
        add_error_handlers(app)
        api_key = APIKey()

        @app.get("/whoami")
        async def whoami(key: Annotated[Principal, Security(api_key)]) -> str:
            ran.append("whoami")
            return key.id

        async for c in _client(app):
            assert (await c.get("/whoami", headers=bearer(keys.live))).json() == keys.live_id
            assert_refused(await c.get("/whoami"), 401, bodies.MISSING, bodies.CHALLENGE)
        assert ran == ["whoami"]

    def test_repr(self, authenticator: Authenticator) -> None:
        assert "scheme_name='APIKey'" in repr(APIKey(authenticator=authenticator))
