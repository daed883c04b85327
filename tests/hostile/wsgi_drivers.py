"""The WSGI adapters, driven with raw environs.

:class:`~aqnt_auth.adapters.wsgi.APIKeyMiddleware` in front of a bare WSGI
router, and a Flask app protected by
:class:`~aqnt_auth.adapters.flask.AQNTAuth` (configured through
``app.config``).  Both route ``/health`` to an open endpoint and everything
else to a protected one.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

from flask import Flask, g
from flask.views import MethodView
from flask_cors import CORS
from werkzeug.debug import DebuggedApplication
from werkzeug.wsgi import get_path_info

from aqnt_auth.adapters.flask import AQNTAuth
from aqnt_auth.adapters.wsgi import ENVIRON_KEY, APIKeyMiddleware
from tests.core._support import CountingHasher, InstrumentedStore

from .cases import CORS_PATH, INHERITED_PATH, ORIGIN
from .driver import (
    ALLOWED_MODES,
    BOOM,
    EXEMPT_PATHS,
    HOST,
    METHODS,
    Driver,
    MemoryDriver,
    Outcome,
    Recorder,
    Request,
    Setup,
)

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment


def environ_of(request: Request) -> dict[str, Any]:
    """The environ a PEP 3333 server builds from *request*.

    Repeated headers are joined with ", "; every byte arrives latin-1 decoded.
    A WebSocket handshake is the GET it is on the wire.
    """
    script_name, path_info = request.wsgi_paths()
    environ: dict[str, Any] = {
        "REQUEST_METHOD": "GET" if request.method == "WEBSOCKET" else request.method,
        "SCRIPT_NAME": script_name,
        "PATH_INFO": path_info,
        "QUERY_STRING": request.query.decode("latin-1"),
        "RAW_URI": request.path + ("?" + request.query.decode("latin-1") if request.query
                                   else ""),
        "SERVER_NAME": HOST,
        "SERVER_PORT": "80",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": request.peer,
        "HTTP_HOST": HOST,
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(b""),
        "wsgi.errors": io.StringIO(),
        "wsgi.multithread": False,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
    }
    for name, value in request.headers:
        key = name.decode("latin-1").upper().replace("-", "_")
        if key not in ("CONTENT_TYPE", "CONTENT_LENGTH"):
            key = "HTTP_" + key
        text = value.decode("latin-1")
        environ[key] = environ[key] + ", " + text if key in environ else text
    return environ


def call_wsgi(app: WSGIApplication | Callable[..., Any], environ: dict[str, Any]
              ) -> tuple[str, list[tuple[str, str]], bytes, BaseException | None]:
    """Run *app* as a server would: status line, headers, body, escaped error."""
    started: list[Any] = []

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None
                       ) -> Callable[[bytes], object]:
        started[:] = [status, headers]
        return lambda data: None

    try:
        result: Iterable[bytes] = app(environ, start_response)
        try:
            body = b"".join(result)
        finally:
            close = getattr(result, "close", None)
            if close is not None:
                close()
    except Exception as exc:  # the server would log it and answer 500
        return "500 Internal Server Error", [], b"", exc
    return started[0], list(started[1]), body, None


class WSGIDriver(MemoryDriver):
    """A WSGI app driven with raw environs."""

    def __init__(self, name: str, app: WSGIApplication, store: InstrumentedStore,
                 hasher: CountingHasher, recorder: Recorder) -> None:
        super().__init__(store, hasher)
        self.name = name
        self.app = app
        self.recorder = recorder

    def send(self, request: Request) -> Outcome:
        if request.method == "LIFESPAN":
            raise AssertionError("WSGI has no lifespan")
        environ = environ_of(request)
        status, headers, body, escaped = call_wsgi(self.app, environ)
        endpoint, principal = self.recorder.take()
        return Outcome(int(status.split()[0]), [(k.lower(), v) for k, v in headers], body,
                       endpoint, principal, errors=environ["wsgi.errors"].getvalue(),
                       escaped=escaped)


def bare_router(record: Recorder) -> WSGIApplication:
    """A minimal WSGI app routing on PATH_INFO, as a micro-framework would."""

    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        path = get_path_info(environ)
        name = {"/health": "health", "/boom": "boom"}.get(path, "protected")
        record(name, environ.get(ENVIRON_KEY))
        if name == "boom":
            raise RuntimeError(BOOM)
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [name.encode()]

    return app


def flask_app(record: Recorder, **config: Any) -> Flask:
    """``/health``, ``/boom`` (raises) and a catch-all for every method
    (OPTIONS too: Flask's automatic OPTIONS answer would otherwise hide
    whether the endpoint ran)."""
    app = Flask("hostile")
    app.config.update(config)

    @app.route("/health")
    def health() -> str:
        record("health", g.api_key)
        return "ok"

    @app.route("/boom")
    def boom() -> str:
        record("boom", g.api_key)
        raise RuntimeError(BOOM)

    def protected(rest: str) -> dict[str, bool]:
        record("protected", g.api_key)
        return {"ok": True}

    @app.route(CORS_PATH, methods=["GET", "POST"])
    def widgets() -> dict[str, bool]:
        record("protected", g.api_key)
        return {"ok": True}

    @AQNTAuth.exempt
    class Open(MethodView):
        def get(self) -> str:
            record("health", g.api_key)
            return "ok"

    class Inherits(Open):  # never marked: it needs a key
        def get(self) -> str:
            record("protected", g.api_key)
            return "ok"

    app.add_url_rule(INHERITED_PATH, view_func=Inherits.as_view("inherits"))

    for rule in ("/", "/<path:rest>"):
        app.add_url_rule(rule, "protected", protected, methods=list(METHODS),
                         defaults={"rest": ""} if rule == "/" else None,
                         provide_automatic_options=False)
    return app


@contextlib.contextmanager
def open_wsgi(adapter: str, store: InstrumentedStore, hasher: CountingHasher, setup: Setup
              ) -> Iterator[Driver]:
    """With *debug*, errors reach werkzeug's debugger, which renders its
    traceback page (without the interactive console)."""
    recorder = Recorder()
    debug, rate_limit = setup.debug, setup.rate_limit
    if setup.cors and adapter == "wsgi":
        raise AssertionError("bare WSGI has no standard CORS layer")
    if adapter == "wsgi":
        middleware = APIKeyMiddleware(bare_router(recorder), store, exempt_paths=EXEMPT_PATHS,
                                      hashers=[hasher], allowed_modes=ALLOWED_MODES,
                                      rate_limit=rate_limit,
                                      trusted_proxies=setup.trusted_proxies)
        served: WSGIApplication = (DebuggedApplication(middleware, evalex=False) if debug
                                   else middleware)
        try:
            yield WSGIDriver(adapter, served, store, hasher, recorder)
        finally:
            middleware.close()
        return
    app = flask_app(recorder, AQNT_AUTH_STORE=store, AQNT_AUTH_HASHERS=[hasher],
                    AQNT_AUTH_EXEMPT_PATHS=list(EXEMPT_PATHS),
                    AQNT_AUTH_ALLOWED_MODES=list(ALLOWED_MODES),
                    AQNT_AUTH_RATE_LIMIT=rate_limit, DEBUG=debug, PROPAGATE_EXCEPTIONS=debug,
                    AQNT_AUTH_TRUSTED_PROXIES=list(setup.trusted_proxies),
                    # flask-cors adds headers to the OPTIONS answers Flask gives itself.
                    AQNT_AUTH_ALLOW_CORS_PREFLIGHT=setup.cors)
    if setup.cors:
        CORS(app, origins=[ORIGIN])
    auth = AQNTAuth(app)
    served = DebuggedApplication(app, evalex=False) if debug else app
    try:
        yield WSGIDriver(adapter, served, store, hasher, recorder)
    finally:
        auth.close(app)

