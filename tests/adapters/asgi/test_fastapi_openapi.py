"""FastAPI: secure_openapi marks what the middleware protects, and documents
the error answers, in the OpenAPI document Swagger UI and ReDoc read.

No ``from __future__ import annotations``: FastAPI reads the endpoints'
annotations at run time.
"""

import json
from typing import Annotated, Any

import pytest
from fastapi import FastAPI, Security
from fastapi.security import OAuth2PasswordBearer
from starlette.testclient import TestClient

from aqnt_auth import Authenticator, Principal
from aqnt_auth.adapters.asgi import APIKeyMiddleware
from aqnt_auth.adapters.fastapi import APIKey, add_error_handlers, secure_openapi
from tests import bodies

from ._support import Keys, bearer, declared_scopes

#: The quick start's exemptions: the health check, Swagger UI (and its OAuth2
#: redirect page), ReDoc and the document they read.
DOCS: list[str] = ["/health", "/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"]

SCHEME = {
    "type": "http",
    "scheme": "bearer",
    "bearerFormat": "sk_live_... / sk_test_...",
    "description": "Paste the API key alone (`sk_live_...` or `sk_test_...`), without "
                   "`Bearer `: it is sent as `Authorization: Bearer <key>`.",
}
ERROR_SCHEMA = {
    "title": "AQNTAuthError",
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["type", "message", "code"],
            "properties": {"type": {"type": "string"}, "message": {"type": "string"},
                           "code": {"type": "string"}},
        }
    },
}
REF = {"$ref": "#/components/schemas/AQNTAuthError"}


def _examples(*bodies_: bytes) -> dict[str, Any]:
    """The examples of a response: the contract's bodies, by code."""
    documents = [json.loads(body) for body in bodies_]
    return {d["error"]["code"]: {"summary": d["error"]["message"], "value": d}
            for d in documents}


#: The four answers every protected operation documents, built from the
#: contract's literal bodies.
ERROR_RESPONSES = {
    "401": {
        "description": "No API key, or an invalid, revoked or expired one",
        "headers": {"WWW-Authenticate": {"schema": {"type": "string"}}},
        "content": {"application/json": {
            "schema": REF, "examples": _examples(bodies.MISSING, bodies.INVALID, bodies.REVOKED),
        }},
    },
    "403": {
        "description": "The key's scopes or restrictions do not allow this request",
        "headers": {"WWW-Authenticate": {"schema": {"type": "string"}}},
        "content": {"application/json": {"schema": REF,
                                         "examples": _examples(bodies.FORBIDDEN)}},
    },
    "429": {
        "description": "Too many failed authentication attempts from this client or against "
                       "this key, or the key's rate limit or usage quota is used up",
        "headers": {"Retry-After": {"schema": {"type": "string"}}},
        "content": {"application/json": {"schema": REF, "examples": _examples(
            bodies.RATE_LIMITED, bodies.RATE_LIMIT_EXCEEDED, bodies.QUOTA_EXCEEDED)}},
    },
    "503": {
        "description": "The key store or the rate limiter cannot answer; retry later",
        "headers": {"Retry-After": {"schema": {"type": "string"}}},
        "content": {"application/json": {"schema": REF, "examples": _examples(
            bodies.UNAVAILABLE, bodies.RATE_LIMIT_UNAVAILABLE)}},
    },
}


def middleware_app(authenticator: Authenticator, exempt: list[str] | None = None) -> FastAPI:
    """The README's app: every route protected by the middleware alone, but
    the health check and the docs; one route also wants a scope."""
    app = FastAPI()
    app.add_middleware(APIKeyMiddleware, authenticator=authenticator,
                       exempt_paths=DOCS if exempt is None else exempt)
    add_error_handlers(app)
    api_key = APIKey()

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/v1/charges/{charge_id}")
    async def charge(charge_id: str) -> dict[str, str]:
        return {"id": charge_id}

    @app.post("/v1/charges", responses={403: {"description": "Our own words"}})
    async def create(
        key: Annotated[Principal, Security(api_key, scopes=["charges:write"])],
    ) -> dict[str, str]:
        return {"by": key.id}

    @app.get("/public/terms")
    async def terms() -> str:
        return "terms"

    return app


def document(app: FastAPI) -> dict[str, Any]:
    response = TestClient(app).get("/openapi.json")
    assert response.status_code == 200
    result: dict[str, Any] = response.json()
    return result


class TestMiddlewareRoutes:
    def test_every_protected_operation_is_marked(self, authenticator: Authenticator) -> None:
        """The one line marks each operation the middleware guards with the
        scheme (Swagger's lock, and "Try it out" sends the header), read
        from the middleware's own exemptions."""
        app = middleware_app(authenticator)
        secure_openapi(app)
        doc = document(app)
        assert doc["components"]["securitySchemes"] == {"APIKey": SCHEME}
        assert doc["components"]["schemas"]["AQNTAuthError"] == ERROR_SCHEMA
        paths = doc["paths"]
        assert paths["/v1/charges/{charge_id}"]["get"]["security"] == [{"APIKey": []}]
        assert paths["/public/terms"]["get"]["security"] == [{"APIKey": []}]
        # The dependency's scopes stay as it declared them.
        write = declared_scopes("charges:write")
        assert paths["/v1/charges"]["post"]["security"] == [{"APIKey": write}]
        assert "security" not in paths["/health"]["get"]

    def test_error_answers_are_documented(self, authenticator: Authenticator) -> None:
        """401, 403, 429 and 503, with the error schema and the contract's
        bodies as examples; an answer the route documents itself is kept."""
        app = middleware_app(authenticator)
        secure_openapi(app)
        paths = document(app)["paths"]
        get = paths["/v1/charges/{charge_id}"]["get"]["responses"]
        assert {k: get[k] for k in ERROR_RESPONSES} == ERROR_RESPONSES
        assert set(get) == {"200", "422", *ERROR_RESPONSES}
        post = paths["/v1/charges"]["post"]["responses"]
        assert post["403"] == {"description": "Our own words"}
        assert {k: post[k] for k in ("401", "429", "503")} == {
            k: ERROR_RESPONSES[k] for k in ("401", "429", "503")}
        assert set(paths["/health"]["get"]["responses"]) == {"200"}

    def test_explicit_exemptions(self, authenticator: Authenticator) -> None:
        """exempt_paths= replaces the middleware's, prefixes included."""
        app = middleware_app(authenticator)
        secure_openapi(app, exempt_paths=["/health", "/public/*"])
        paths = document(app)["paths"]
        assert "security" not in paths["/public/terms"]["get"]
        assert "401" not in paths["/public/terms"]["get"]["responses"]
        assert paths["/v1/charges/{charge_id}"]["get"]["security"] == [{"APIKey": []}]

    def test_nothing_exempt(self, authenticator: Authenticator) -> None:
        """A middleware without exemptions guards the health check too."""
        app = middleware_app(authenticator, exempt=[])
        secure_openapi(app)
        assert app.openapi()["paths"]["/health"]["get"]["security"] == [{"APIKey": []}]

    def test_key_needed_besides_another_scheme(self, authenticator: Authenticator) -> None:
        """Security requirements are alternatives: the key joins each one."""
        app = middleware_app(authenticator)
        oauth = OAuth2PasswordBearer(tokenUrl="/token")

        @app.get("/me")
        async def me(token: Annotated[str, Security(oauth)]) -> str:
            return token

        secure_openapi(app)
        assert document(app)["paths"]["/me"]["get"]["security"] == [
            {"OAuth2PasswordBearer": [], "APIKey": []}]

    def test_document_built_once(self, authenticator: Authenticator) -> None:
        app = middleware_app(authenticator)
        secure_openapi(app)
        first = app.openapi()
        assert app.openapi() is first
        assert first["paths"]["/public/terms"]["get"]["security"] == [{"APIKey": []}]

    def test_docs_pages_are_served_without_a_key(self, authenticator: Authenticator,
                                                  keys: Keys) -> None:
        """The quick start's exemptions open Swagger UI, its OAuth2 redirect
        page, ReDoc and the document; everything else needs the key."""
        app = middleware_app(authenticator)
        secure_openapi(app)
        client = TestClient(app)
        for path in DOCS:
            assert client.get(path).status_code == 200, path
        refused = client.get("/v1/charges/ch_1")
        assert (refused.status_code, refused.content) == (401, bodies.MISSING)
        ok = client.get("/v1/charges/ch_1", headers=bearer(keys.live))
        assert ok.json() == {"id": "ch_1"}


class TestDependencyRoutes:
    def test_without_middleware(self, authenticator: Authenticator) -> None:
        """No middleware: operations that depend on APIKey get the error
        answers; the others are left alone."""
        app = FastAPI()
        api_key = APIKey(authenticator=authenticator, scheme_name="Key")
        add_error_handlers(app)

        @app.get("/open")
        async def open_() -> str:
            return "open"

        @app.get("/mine")
        async def mine(key: Annotated[Principal, Security(api_key)]) -> str:
            return key.id

        secure_openapi(app, api_key=api_key)
        doc = document(app)
        assert list(doc["components"]["securitySchemes"]) == ["Key"]
        assert doc["paths"]["/mine"]["get"]["security"] == [{"Key": []}]
        responses = doc["paths"]["/mine"]["get"]["responses"]
        assert {k: responses[k] for k in ERROR_RESPONSES} == ERROR_RESPONSES
        assert "security" not in doc["paths"]["/open"]["get"]
        assert set(doc["paths"]["/open"]["get"]["responses"]) == {"200"}


@pytest.mark.parametrize("path", ["/docs", "/redoc"])
def test_docs_pages_point_at_the_document(authenticator: Authenticator, path: str) -> None:
    """Swagger UI and ReDoc load /openapi.json, which the quick start exempts."""
    app = middleware_app(authenticator)
    secure_openapi(app)
    assert "/openapi.json" in TestClient(app).get(path).text
