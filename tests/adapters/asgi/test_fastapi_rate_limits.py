"""FastAPI: the RateLimit headers of a limited key on a route that returns
data (FastAPI copies the dependency's headers into the response it builds),
once whether the dependency or the middleware authenticated, and its 429.

No ``from __future__ import annotations``: FastAPI reads the annotations.
"""

from typing import Annotated

import pytest
from fastapi import FastAPI, Security
from starlette.testclient import TestClient

from aqnt_auth import Argon2Hasher, Authenticator, KeyManager, MemoryKeyStore, Principal
from aqnt_auth.adapters.asgi import APIKeyMiddleware
from aqnt_auth.adapters.fastapi import APIKey, add_error_handlers
from tests import bodies

POLICY = '"2/minute";q=2;w=60'


def build(api_key: APIKey, authenticator: Authenticator | None = None) -> FastAPI:
    app = FastAPI()
    if authenticator is not None:
        app.add_middleware(APIKeyMiddleware, authenticator=authenticator)
    add_error_handlers(app)
    Key = Annotated[Principal, Security(api_key)]  # noqa: N806 - a type alias

    @app.get("/whoami")
    async def whoami(key: Key) -> dict[str, str]:
        return {"id": key.id}

    return app


@pytest.mark.parametrize("behind_middleware", [False, True])
def test_headers_then_429(behind_middleware: bool) -> None:
    store = MemoryKeyStore()
    hasher = Argon2Hasher("cheapest")
    issued = KeyManager(store, hasher=hasher).create("k", rate_limits=["2/minute"])
    plain = KeyManager(store, hasher=hasher).create("plain")
    with Authenticator(store, hashers=[hasher], track_usage=False) as auth:
        api_key = APIKey() if behind_middleware else APIKey(authenticator=auth)
        app = build(api_key, auth if behind_middleware else None)
        with TestClient(app) as client:
            headers = {"Authorization": f"Bearer {issued.key}"}
            for remaining in (1, 0):
                response = client.get("/whoami", headers=headers)
                assert response.status_code == 200
                assert response.json() == {"id": issued.record.id}
                assert response.headers.get_list("ratelimit-policy") == [POLICY]
                [value] = response.headers.get_list("ratelimit")
                assert value.startswith(f'"2/minute";r={remaining};t=')
                assert 30 <= int(value.rpartition("=")[2]) <= 60
            refused = client.get("/whoami", headers=headers)
            assert refused.status_code == 429
            assert refused.content == bodies.RATE_LIMIT_EXCEEDED
            assert refused.headers["ratelimit-policy"] == POLICY
            assert refused.headers["ratelimit"] == (
                f'"2/minute";r=0;t={refused.headers["retry-after"]}')
            other = client.get("/whoami", headers={"Authorization": f"Bearer {plain.key}"})
            assert other.status_code == 200
            assert "ratelimit" not in other.headers
