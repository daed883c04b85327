"""Usage history through FastAPI's dependency (#14): the run of every outcome
in test_usage_history.py, counted exactly once each by the core; FastAPI's
route scopes move a refusal from valid to forbidden.  A module of its own so
the Starlette-only nox sessions, which have no FastAPI, leave it out."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi import FastAPI, Security

from aqnt_auth import Authenticator, Principal
from aqnt_auth.adapters.fastapi import APIKey, add_error_handlers

from .test_usage_history import counted_once


def _fastapi(auth: Authenticator) -> Any:
    app = FastAPI()
    add_error_handlers(app)
    api_key = APIKey(authenticator=auth)

    @app.get("/v1/charges")
    @app.get("/v2/other")
    # A default, not Annotated: the dependency is local to this function.
    async def charges(key: Principal = Security(api_key)) -> str:  # noqa: B008
        return "ok"

    @app.get("/v1/scoped")
    async def scoped(key: Principal = Security(api_key, scopes=["charges:write"])  # noqa: B008
                     ) -> str:
        return "ok"

    return app


@pytest.mark.anyio
async def test_every_outcome_counted_once() -> None:
    """FastAPI's Security scopes refuse /v1/scoped: counted as forbidden."""
    await counted_once(_fastapi, "/v1/scoped")
