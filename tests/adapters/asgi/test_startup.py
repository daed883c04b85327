"""A store URL that is malformed or cannot be opened: the ASGI middleware
fails the lifespan start-up with the message, and without one answers every
request 503 (exempt paths included) and logs the reason once; never a 500.

The last tests run real uvicorn processes with ``--lifespan on``, ``auto``
and ``off``.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from starlette.testclient import TestClient, WebSocketDenialResponse

from aqnt_auth import ConfigurationError, StoreOpenError
from aqnt_auth.adapters.asgi import APIKeyMiddleware
from tests import bodies

from ._support import Message, Recorder, Scope, assert_refused, bearer

ROOT = Path(__file__).resolve().parents[3]
EXEMPT = ["/health"]


@pytest.fixture
def bad_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/nodir/keys.db"


def reason(tmp_path: Path) -> str:
    return (f"cannot open the key store sqlite:///{tmp_path}/nodir/keys.db: the directory "
            f"'{tmp_path}/nodir' does not exist: create it, or fix the path")


async def lifespan_startup(app: Any) -> list[Message]:
    sent: list[Message] = []
    incoming = [{"type": "lifespan.startup"}]

    async def receive() -> Message:
        return incoming.pop(0)

    async def send(message: Message) -> None:
        sent.append(message)

    scope: Scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}
    with pytest.raises(StoreOpenError):
        await app(scope, receive, send)
    return sent


class TestMiddleware:
    @pytest.mark.anyio
    async def test_lifespan_startup_fails_with_the_message(self, bad_url: str,
                                                           tmp_path: Path) -> None:
        recorder = Recorder()
        app = APIKeyMiddleware(recorder, store=bad_url, exempt_paths=EXEMPT)
        assert isinstance(app.startup_error, StoreOpenError)
        sent = await lifespan_startup(app)
        assert sent == [{"type": "lifespan.startup.failed",
                         "message": f"aqnt-auth: {reason(tmp_path)}"}]
        assert recorder.lifespan == []  # the app's own start-up never ran

    @pytest.mark.anyio
    @pytest.mark.parametrize("url", ["keys.db", "redis://cache", "sqlite://keys.db"])
    async def test_malformed_urls_too(self, url: str) -> None:
        app = APIKeyMiddleware(Recorder(), store=url)
        sent = await lifespan_startup(app)
        assert sent[0]["type"] == "lifespan.startup.failed"
        assert sent[0]["message"].startswith(f"aqnt-auth: cannot open the key store {url}: ")

    @pytest.mark.anyio
    async def test_every_request_is_503_and_logged_once(
        self, bad_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture,
    ) -> None:
        """Exempt or not, with a key or without: the exact 503, the app never
        runs, and one log line says what is wrong."""
        caplog.set_level(logging.DEBUG)
        recorder = Recorder()
        app = APIKeyMiddleware(recorder, store=bad_url, exempt_paths=EXEMPT)
        key = "sk_live_" + "A" * 50
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                     base_url="http://testserver") as client:
            for request in (client.get("/health"), client.post("/health"),
                            client.get("/v1/charges"),
                            client.get("/v1/charges", headers=bearer(key)),
                            client.get("/v1/charges", headers={"Authorization": key}),
                            client.options("/v1/charges", headers={
                                "Origin": "https://a.example",
                                "Access-Control-Request-Method": "POST"})):
                response = await request
                assert_refused(response, 503, bodies.UNAVAILABLE, None)
                assert response.headers["retry-after"] == "1"
        assert not recorder.ran
        lines = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
        assert lines == [f"aqnt-auth: {reason(tmp_path)}; every request is answered 503 "
                         "auth_unavailable until this is fixed and the app restarted"]

    def test_websocket_refused_with_the_503(self, bad_url: str) -> None:
        async def ok(request: Request) -> PlainTextResponse:
            return PlainTextResponse("ok")  # pragma: no cover - never reached

        app = Starlette(routes=[Route("/health", ok)])
        app.add_middleware(APIKeyMiddleware, store=bad_url, exempt_paths=EXEMPT)
        with pytest.raises(WebSocketDenialResponse) as refused, \
                TestClient(app).websocket_connect("/health"):
            pass  # pragma: no cover - never connects
        assert (refused.value.status_code, refused.value.content) == (503, bodies.UNAVAILABLE)

    def test_starlette_builds_it_on_the_first_request(self, bad_url: str) -> None:
        """Starlette constructs its middleware on the first call: a request
        without lifespan gets the 503, not Starlette's 500."""
        ran: list[str] = []

        async def ok(request: Request) -> PlainTextResponse:
            ran.append(request.url.path)  # pragma: no cover - never reached
            return PlainTextResponse("ok")  # pragma: no cover

        app = Starlette(routes=[Route("/health", ok), Route("/v1/x", ok)])
        app.add_middleware(APIKeyMiddleware, store=bad_url, exempt_paths=EXEMPT)
        client = TestClient(app, raise_server_exceptions=True)  # no `with`: no lifespan
        for path in ("/health", "/v1/x"):
            response = client.get(path)
            assert (response.status_code, response.content) == (503, bodies.UNAVAILABLE)
        assert ran == []

    def test_lifespan_through_starlette(self, bad_url: str, tmp_path: Path) -> None:
        """Starlette's own lifespan handling hands the failure to the server."""
        app = Starlette()
        app.add_middleware(APIKeyMiddleware, store=bad_url)
        with pytest.raises(StoreOpenError) as info, TestClient(app):
            pass  # pragma: no cover - start-up fails
        assert str(info.value) == reason(tmp_path)

    def test_other_configuration_errors_still_raise(self) -> None:
        """Only the store is deferred: options are checked where they are given."""
        with pytest.raises(ConfigurationError, match="allowed_modes"):
            APIKeyMiddleware(Recorder(), store="memory://", allowed_modes=["prod"])  # type: ignore[list-item]


# -- real uvicorn processes ---------------------------------------------------------

APP_SOURCE = textwrap.dedent('''
    import os

    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    from aqnt_auth.adapters.asgi import APIKeyMiddleware


    async def hello(request):
        return PlainTextResponse("hello")

    app = Starlette(routes=[Route("/health", hello), Route("/v1/hello", hello)])
    app.add_middleware(APIKeyMiddleware, store=os.environ["STARTUP_TEST_STORE"],
                       exempt_paths=["/health"])
''')


def start_uvicorn(tmp_path: Path, url: str, lifespan: str) -> tuple[subprocess.Popen[bytes], int]:
    (tmp_path / "startup_app.py").write_text(APP_SOURCE)
    sock = socket.create_server(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    env = {**os.environ, "STARTUP_TEST_STORE": url, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "startup_app:app", "--app-dir", str(tmp_path),
         "--fd", str(sock.fileno()), "--lifespan", lifespan, "--log-level", "info",
         "--no-access-log"],
        cwd=tmp_path, env=env, pass_fds=(sock.fileno(),),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    sock.close()
    return proc, port


@pytest.mark.parametrize("lifespan", ["on", "auto"])
def test_uvicorn_fails_at_startup(tmp_path: Path, lifespan: str) -> None:
    """With a lifespan start-up (uvicorn's --lifespan on, and its default,
    auto), the server stops at start-up and prints the message."""
    url = f"sqlite:///{tmp_path}/nodir/keys.db"
    proc, _ = start_uvicorn(tmp_path, url, lifespan)
    try:
        output, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:  # pragma: no cover - a server that did not stop
            proc.kill()
            proc.wait()
    text = output.decode()
    assert proc.returncode != 0
    assert f"aqnt-auth: {reason(tmp_path)}" in text
    assert "Application startup failed. Exiting." in text
    assert "Traceback" not in text


def test_uvicorn_without_lifespan_answers_503(tmp_path: Path) -> None:
    """--lifespan off: the server runs; every request, /health included, gets
    the exact 503, and the log says what is wrong exactly once."""
    url = f"sqlite:///{tmp_path}/nodir/keys.db"
    proc, port = start_uvicorn(tmp_path, url, "off")
    try:
        base = f"http://127.0.0.1:{port}"
        for _ in range(1500):
            try:
                httpx.get(f"{base}/health", timeout=5)
                break
            except httpx.TransportError:
                time.sleep(0.02)
        key = "sk_live_" + "A" * 50
        with httpx.Client(base_url=base, timeout=10) as client:
            for _ in range(3):
                for response in (client.get("/health"), client.get("/v1/hello"),
                                 client.get("/v1/hello", headers=bearer(key)),
                                 client.post("/health")):
                    assert_refused(response, 503, bodies.UNAVAILABLE, None)
    finally:
        proc.terminate()
        output, _ = proc.communicate(timeout=30)
    text = output.decode()
    assert text.count(reason(tmp_path)) == 1, text
    assert "Traceback" not in text
