"""Usage history through the ASGI adapters (#14): a run of real requests of
every outcome through the middleware and Starlette's backend (FastAPI's
dependency: test_fastapi_usage_history.py) is counted exactly once each (by
the core), with the client and user agent of the valid ones."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.authentication import AuthenticationMiddleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from aqnt_auth import Argon2Hasher, Authenticator, MemoryKeyStore
from aqnt_auth.adapters.asgi import APIKeyMiddleware
from aqnt_auth.adapters.starlette import APIKeyBackend, requires
from tests.usage_scenario import check, headers, make_run

from ._support import Recorder


async def _ok(request: Request) -> PlainTextResponse:
    return PlainTextResponse("ok")


def _middleware(auth: Authenticator) -> Any:
    return APIKeyMiddleware(Recorder(), authenticator=auth)


def _starlette(auth: Authenticator) -> Any:
    backend = APIKeyBackend(authenticator=auth)
    return Starlette(routes=[Route("/v1/charges", requires()(_ok)),
                             Route("/v2/other", requires()(_ok)),
                             Route("/v1/scoped", requires("charges:write")(_ok))],
                     middleware=[Middleware(AuthenticationMiddleware, backend=backend,
                                            on_error=backend.on_error)])


@pytest.mark.anyio
@pytest.mark.parametrize(("build", "scoped"), [(_middleware, None), (_starlette, "/v1/scoped")],
                         ids=["middleware", "starlette"])
async def test_every_outcome_counted_once(build: Callable[[Authenticator], Any],
                                          scoped: str | None) -> None:
    """Route-level scope refusals (Starlette's requires) count as forbidden,
    not valid."""
    await counted_once(build, scoped)


async def counted_once(build: Callable[[Authenticator], Any], scoped: str | None) -> None:
    """The run of every outcome through the app *build* makes, counted once
    each; *scoped* is its route that requires a scope the key lacks."""
    store = MemoryKeyStore()
    run = make_run(store, "/v1/charges", "/v2/other", scoped)
    auth = Authenticator(store, rate_limit=None, usage_flush_interval=3600,
                         hashers=[Argon2Hasher("cheapest")])
    transport = httpx.ASGITransport(app=build(auth), client=("203.0.113.9", 4711))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        statuses = [(await client.get(r.path, headers=headers(r))).status_code
                    for r in run.requests]
    assert statuses == [r.status for r in run.requests]
    assert auth.flush_usage()
    rows = store.usage_rows(since=0, until=2**40)
    check(run, rows, "/v1/charges")
    assert {r.last_client for r in rows if r.key_id == run.good_id} == {"203.0.113.9"}
    auth.close()


@pytest.mark.anyio
async def test_several_authorization_headers_are_counted() -> None:
    """Two Authorization headers: refused by the core (401), and counted
    there as malformed, like any other refusal."""
    store = MemoryKeyStore()
    run = make_run(store, "/v1/charges", "/v2/other")
    key = run.requests[0].authorization
    assert key is not None
    auth = Authenticator(store, rate_limit=None, usage_flush_interval=3600,
                         hashers=[Argon2Hasher("cheapest")])
    app = _middleware(auth)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        response = await client.get("/v1/charges", headers=[("Authorization", key),
                                                             ("Authorization", key)])
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_api_key"
    assert auth.flush_usage()
    assert [dict(r.counts) for r in store.usage_rows(since=0, until=2**40)] == [
        {"malformed": 1}]
    auth.close()
