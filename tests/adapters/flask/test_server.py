"""End to end: a protected Flask app behind werkzeug's real server on 127.0.0.1, via httpx."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from flask import Flask

from aqnt_auth import KeyManager
from tests import bodies

from ..wsgi._support import BrokenStore, serve
from .conftest import AppFactory


@pytest.fixture
def base_url(app: Flask) -> Iterator[str]:
    with serve(app) as url:
        yield url


def assert_wire_refusal(response: httpx.Response, status: int, body: bytes,
                        challenge: str | None) -> None:
    assert response.status_code == status
    assert response.content == body
    assert response.headers["content-type"] == "application/json"
    assert response.headers.get("www-authenticate") == challenge
    assert response.headers["content-length"] == str(len(body))


def test_valid_key(base_url: str, manager: KeyManager, calls: list[str]) -> None:
    issued = manager.create("e2e")
    response = httpx.get(f"{base_url}/v1/charges",
                         headers={"Authorization": f"Bearer {issued.key}"})
    assert response.status_code == 200
    assert response.json() == {"key": issued.record.id}
    assert calls == ["charges"]


@pytest.mark.parametrize("path", ["/", "/v1/charges", "/no/such/route", "/static/logo.txt"])
def test_missing_key(base_url: str, calls: list[str], path: str) -> None:
    assert_wire_refusal(httpx.get(f"{base_url}{path}"), 401, bodies.MISSING, bodies.CHALLENGE)
    assert calls == []


def test_revoked_key(base_url: str, manager: KeyManager, calls: list[str]) -> None:
    issued = manager.create("revoked over the wire")
    manager.revoke(issued.record.id)
    response = httpx.get(base_url, headers={"Authorization": f"Bearer {issued.key}"})
    assert_wire_refusal(response, 401, bodies.REVOKED, bodies.INVALID_CHALLENGE)
    assert calls == []


def test_two_authorization_headers(base_url: str, manager: KeyManager, calls: list[str]
                                   ) -> None:
    """Repeated headers arrive joined with a comma: invalid_api_key, never either one."""
    good = manager.create("good").key
    response = httpx.get(base_url, headers=[("Authorization", f"Bearer {good}"),
                                            ("Authorization", f"Bearer {good}")])
    assert_wire_refusal(response, 401, bodies.INVALID, bodies.INVALID_CHALLENGE)
    assert calls == []


def test_insufficient_scope(base_url: str, manager: KeyManager, calls: list[str]) -> None:
    key = manager.create("unscoped").key
    response = httpx.post(f"{base_url}/refunds", headers={"Authorization": f"Bearer {key}"})
    assert_wire_refusal(response, 403, bodies.FORBIDDEN,
                        'Bearer realm="api", error="insufficient_scope", scope="refunds:write"')
    assert calls == []


def test_store_down(make_app: AppFactory, manager: KeyManager, calls: list[str]) -> None:
    key = manager.create("stranded").key
    with serve(make_app(AQNT_AUTH_STORE=BrokenStore())) as url:
        response = httpx.get(url, headers={"Authorization": f"Bearer {key}"})
    assert_wire_refusal(response, 503, bodies.UNAVAILABLE, None)
    assert response.headers["retry-after"] == "1"
    assert calls == []
