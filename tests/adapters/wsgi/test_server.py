"""End to end: the middleware behind werkzeug's real HTTP server on 127.0.0.1, via httpx;
and in front of Django's WSGI handler, in a process of its own."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

import httpx
import pytest

from aqnt_auth import Argon2Hasher, KeyManager, MemoryKeyStore
from aqnt_auth.adapters.wsgi import ENVIRON_KEY, APIKeyMiddleware
from tests import bodies

from ._support import serve

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment


@pytest.fixture
def calls() -> list[str]:
    return []


@pytest.fixture
def base_url(calls: list[str], memory_store: MemoryKeyStore, cheap_hasher: Argon2Hasher
             ) -> Iterator[str]:
    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        calls.append(environ["PATH_INFO"])
        principal = environ[ENVIRON_KEY]
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"public" if principal is None else f"hello {principal.name}".encode()]

    mw = APIKeyMiddleware(app, memory_store, exempt_paths=["/café"], hashers=[cheap_hasher])
    with serve(mw) as url:
        yield url
    mw.close()


def test_valid_key(base_url: str, manager: KeyManager) -> None:
    """A real request with a valid key reaches the app with its principal."""
    key = manager.create("e2e").key
    response = httpx.get(f"{base_url}/v1/charges", headers={"Authorization": f"Bearer {key}"})
    assert response.status_code == 200
    assert response.text == "hello e2e"


def test_missing_key(base_url: str, calls: list[str]) -> None:
    """Over the wire: the exact body, WWW-Authenticate, and the app never ran."""
    response = httpx.get(f"{base_url}/v1/charges")
    assert response.status_code == 401
    assert response.content == bodies.MISSING
    assert response.headers["content-type"] == "application/json"
    assert response.headers["www-authenticate"] == bodies.CHALLENGE
    assert response.headers["content-length"] == str(len(bodies.MISSING))
    assert calls == []


def test_two_authorization_headers(base_url: str, calls: list[str], manager: KeyManager
                                   ) -> None:
    """The server joins repeated Authorization headers with a comma: invalid_api_key."""
    good = manager.create("good").key
    other = manager.create("other").key
    response = httpx.get(
        f"{base_url}/v1/charges",
        headers=[("Authorization", f"Bearer {good}"), ("Authorization", f"Bearer {other}")],
    )
    assert response.status_code == 401
    assert response.content == bodies.INVALID
    assert response.headers["www-authenticate"] == bodies.INVALID_CHALLENGE
    assert calls == []


def test_non_ascii_exempt_path(base_url: str, calls: list[str]) -> None:
    """/café travels as /caf%C3%A9, arrives as latin-1 text, and matches the rule."""
    response = httpx.get(f"{base_url}/café")
    assert response.status_code == 200
    assert response.text == "public"
    assert calls == ["/caf\xc3\xa9"]


DJANGO_PROGRAM = textwrap.dedent(
    """
    import json, sys, types

    import django
    from django.conf import settings
    from django.http import HttpResponse
    from django.urls import path
    from werkzeug.test import Client

    from aqnt_auth import Argon2Hasher, KeyManager, MemoryKeyStore
    from aqnt_auth.adapters.wsgi import APIKeyMiddleware

    seen = []

    def view(request):
        seen.append(request.path_info)
        principal = request.META["aqnt.api_key"]
        return HttpResponse("anonymous" if principal is None else principal.name)

    urls = types.ModuleType("e2e_urls")
    urls.urlpatterns = [path("health", view), path("charges", view)]
    sys.modules["e2e_urls"] = urls
    settings.configure(ROOT_URLCONF="e2e_urls", ALLOWED_HOSTS=["localhost"], DEBUG=False,
                       SECRET_KEY="e2e-only", MIDDLEWARE=[])
    django.setup()
    from django.core.wsgi import get_wsgi_application

    store, hasher = MemoryKeyStore(), Argon2Hasher("cheapest")
    key = KeyManager(store, hasher=hasher).create("django").key
    app = APIKeyMiddleware(get_wsgi_application(), store, exempt_paths=["/health"],
                           hashers=[hasher])
    client = Client(app)
    out = {}
    for name, url, headers in [
        ("health", "/health", {}),
        ("missing", "/charges", {}),
        ("valid", "/charges", {"Authorization": "Bearer " + key}),
    ]:
        r = client.get(url, headers=headers)
        out[name] = [r.status_code, r.get_data(as_text=True)]
    out["seen"] = seen
    print(json.dumps(out))
    """
)


def test_django_wsgi_handler() -> None:
    """Django's WSGIHandler behind the middleware (own process: settings are global)."""
    result = subprocess.run(
        [sys.executable, "-c", DJANGO_PROGRAM], capture_output=True, text=True, timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["health"] == [200, "anonymous"]
    assert out["missing"] == [401, bodies.MISSING.decode()]
    assert out["valid"] == [200, "django"]
    assert out["seen"] == ["/health", "/charges"]
