"""The console as a WSGI app, and mounted in a Flask app.

``wsgi_app(...)`` serves any WSGI stack (werkzeug's ``DispatcherMiddleware``
gives it its prefix in ``SCRIPT_NAME``); ``init_app(flask_app, url_prefix=...)``
adds it to a Flask app as routes under the prefix, so Flask's request context
(and with it the app's own sign-in, for an ``authorize`` hook) is there.
Both only translate to and from :class:`Request` and :class:`Response`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, Final, cast

from .._errors import ConfigurationError, InvalidRequest
from .._hashers import Hasher
from ._app import Console
from ._http import Request, Response

if TYPE_CHECKING:
    from flask import Flask
    from typing_extensions import Unpack

    from ._app import ConsoleOptions

__all__ = ["ConsoleWSGI", "init_app", "wsgi_app"]

StartResponse = Callable[..., Any]
MAX_BODY: Final = 1024 * 1024
#: Where init_app keeps the console in ``app.extensions``.
EXTENSION_KEY: Final = "aqnt_auth_console"
_STATUS_TEXT: Final = {
    200: "OK", 201: "Created", 204: "No Content", 303: "See Other", 302: "Found",
    308: "Permanent Redirect", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden",
    404: "Not Found", 405: "Method Not Allowed", 409: "Conflict", 413: "Payload Too Large",
    415: "Unsupported Media Type", 429: "Too Many Requests", 500: "Internal Server Error",
    503: "Service Unavailable",
}


def _text(value: str) -> str:
    # PEP 3333: the server decoded the raw path bytes as latin-1.
    try:
        return value.encode("latin-1").decode("utf-8")
    except UnicodeError:
        return value


def request_from_environ(environ: Mapping[str, Any], native: Any = None,
                         body: bytes | None = None) -> Request | InvalidRequest:
    headers: dict[str, str] = {}
    for name, value in environ.items():
        if name.startswith("HTTP_"):
            headers[name[5:].replace("_", "-").lower()] = value
    for name in ("CONTENT_TYPE", "CONTENT_LENGTH"):
        if environ.get(name):
            headers[name.replace("_", "-").lower()] = environ[name]
    if body is None:
        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = 0
        if length > MAX_BODY:
            return InvalidRequest(f"The request body must be at most {MAX_BODY} bytes")
        body = environ["wsgi.input"].read(length) if length > 0 else b""
    return Request(
        method=environ.get("REQUEST_METHOD", "GET").upper(),
        path=_text(environ.get("PATH_INFO", "")),
        query_string=environ.get("QUERY_STRING", ""),
        headers=headers,
        body=body,
        client=environ.get("REMOTE_ADDR"),
        scheme=environ.get("wsgi.url_scheme", "http"),
        root_path=_text(environ.get("SCRIPT_NAME", "")),
        native=native if native is not None else environ,
    )


def _start(response: Response, start_response: StartResponse) -> Iterable[bytes]:
    reason = _STATUS_TEXT.get(response.status, "Unknown")
    headers = [*response.headers, ("Content-Length", str(len(response.body)))]
    start_response(f"{response.status} {reason}", headers)
    return [response.body]


class ConsoleWSGI:
    """A WSGI app serving a :class:`Console` (its prefix is ``SCRIPT_NAME``)."""

    def __init__(self, console: Console) -> None:
        self.console = console

    def __repr__(self) -> str:
        return f"ConsoleWSGI({self.console!r})"

    def __call__(self, environ: dict[str, Any], start_response: StartResponse
                 ) -> Iterable[bytes]:
        request = request_from_environ(environ)
        if isinstance(request, InvalidRequest):
            bare = request_from_environ(environ, body=b"")
            assert isinstance(bare, Request)
            response = self.console.finish(bare, self.console.error_response(bare, request))
        else:
            response = self.console.handle(request)
        return _start(response, start_response)


def _build(store: Any, console: Console | None, options: Mapping[str, Any]) -> Console:
    if console is None:
        return Console(store, **options)
    if store is not None or options:
        raise ConfigurationError("pass either console= or the console's options, not both")
    return console


def wsgi_app(store: Any = None, *, console: Console | None = None,
             **options: Unpack[ConsoleOptions]) -> ConsoleWSGI:
    """The key console as a WSGI app, e.g. under werkzeug's
    ``DispatcherMiddleware(app, {"/keys-admin": wsgi_app(store=...)})``.

    Takes what :class:`Console` takes, or a ready *console*.
    """
    return ConsoleWSGI(_build(store, console, options))


def init_app(app: Flask, url_prefix: str = "/keys-admin", store: Any = None, *,
             console: Console | None = None, **options: Unpack[ConsoleOptions]) -> Console:
    """Serve the key console in the Flask *app* under *url_prefix*.

    With no store and no ``authenticator=``, the console shares the
    authenticator of the app's :class:`~aqnt_auth.adapters.flask.AQNTAuth`
    if it has one (else the store of ``AQNT_AUTH_STORE``, or the default
    store).  With no ``secret_key=``, the app's ``SECRET_KEY`` signs the
    console's sessions.  The console's views are exempt from ``AQNTAuth``
    (the console has its own sign-in), and an ``authorize`` hook runs inside
    Flask's request context, so it can ask the app's own login
    (``flask_login.current_user``).  Refuses a second registration.
    """
    from flask import request as flask_request

    if not url_prefix.startswith("/") or url_prefix.endswith("/") or "<" in url_prefix:
        raise ConfigurationError("url_prefix must start with '/' and not end with one")
    if EXTENSION_KEY in app.extensions:
        raise ConfigurationError("the key console is already registered on this Flask app")
    if console is None and store is None and options.get("authenticator") is None:
        auth_ext = app.extensions.get("aqnt_auth")
        state = getattr(auth_ext, "_state", None)
        if state is not None:
            options["authenticator"] = state(app).authenticator
        else:
            store = app.config.get("AQNT_AUTH_STORE")
    configured = app.config.get("AQNT_AUTH_HASHER")
    if console is None and "hasher" not in options and isinstance(configured, Hasher):
        options["hasher"] = configured
    if console is None and "secret_key" not in options and app.secret_key:
        options["secret_key"] = app.secret_key
    built = _build(store, console, options)

    def console_view(rest: str = "") -> Any:
        environ = flask_request.environ
        native = cast(Any, flask_request)._get_current_object()
        request = request_from_environ(environ, native,
                                       body=flask_request.get_data(cache=False))
        assert isinstance(request, Request)
        # The route's own prefix, whatever Flask's mount point (SCRIPT_NAME).
        root = request.root_path + url_prefix
        request = Request(request.method, "/" + rest if rest or flask_request.path.endswith("/")
                          else "", request.query_string, request.headers, request.body,
                          request.client, request.scheme, root, request.native)
        response = built.handle(request)
        return app.response_class(response.body, status=response.status,
                                  headers=response.headers)

    # The console signs its admins in itself: AQNTAuth must not ask for a key.
    console_view._aqnt_auth_exempt = True  # type: ignore[attr-defined]
    methods = ["GET", "HEAD", "POST", "PATCH", "PUT", "DELETE", "OPTIONS"]
    endpoint = "aqnt_auth_console"
    app.add_url_rule(url_prefix, endpoint, console_view, methods=methods,
                     strict_slashes=False, provide_automatic_options=False)
    app.add_url_rule(url_prefix + "/<path:rest>", endpoint, console_view, methods=methods,
                     provide_automatic_options=False)
    app.extensions[EXTENSION_KEY] = built
    return built
