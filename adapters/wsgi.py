"""WSGI middleware: an API key in front of any WSGI application.

.. code-block:: python

    from aqnt_auth.adapters.wsgi import APIKeyMiddleware

    app = APIKeyMiddleware(app, store="sqlite:///aqnt_keys.db", exempt_paths=["/health"])

Works with any WSGI callable (a plain function, Flask, Django's
``WSGIHandler``).  The :class:`~aqnt_auth.Principal` of the key is put in
``environ["aqnt.api_key"]`` (``None`` on an exempt path or a CORS preflight).

Paths are decided on ``PATH_INFO``, which WSGI already gives relative to
``SCRIPT_NAME``.  PEP 3333 hands it over as the raw request bytes decoded as
latin-1; it is decoded again as UTF-8, as werkzeug and Django do before
routing, so an exempt path written as ``"/café"`` matches
``/caf%C3%A9``.  Bytes that are not UTF-8 become U+FFFD and so match no
rule.  The path is otherwise taken as it is: ``//health`` is not
``/health`` here, even though some routers would collapse it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Final

from werkzeug.wrappers import Response
from werkzeug.wsgi import get_path_info

from aqnt_auth import (
    AQNTError,
    Authenticator,
    AuthenticatorOptions,
    ErrorResponse,
    KeyStore,
    PathRules,
    is_cors_preflight,
    make_authenticator,
)

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment
    from typing_extensions import Unpack

__all__ = ["ENVIRON_KEY", "APIKeyMiddleware", "error_response", "with_headers"]

#: Where the principal goes in the WSGI environ.
ENVIRON_KEY: Final = "aqnt.api_key"


def error_response(error: ErrorResponse) -> Response:
    """A werkzeug :class:`~werkzeug.wrappers.Response` for a rendered error.

    werkzeug sets ``Content-Length`` and sends no body to a ``HEAD`` request.
    """
    return Response(error.body, error.status, list(error.headers))


def with_headers(start_response: StartResponse, headers: tuple[tuple[str, str], ...]
                 ) -> StartResponse:
    """*start_response*, adding *headers* (a principal's ``response_headers``:
    the RateLimit headers of a limited key) to the response."""

    def start_with_headers(status: str, response_headers: list[tuple[str, str]],
                           exc_info: Any = None) -> Any:
        return start_response(status, [*response_headers, *headers], exc_info)

    return start_with_headers


class APIKeyMiddleware:
    """Requires a valid API key on every request to *app*, except exempt ones.

    :param app: the WSGI application to protect.
    :param store: a :class:`~aqnt_auth.KeyStore` or a store URL (default
        ``"sqlite:///aqnt_keys.db"``, the CLI's).
    :param authenticator: an :class:`~aqnt_auth.Authenticator` to use
        instead of *store* (to share one between several apps).
    :param exempt_paths: paths that need no key: exact (``"/health"``) or,
        ending in ``/*``, a prefix on segment boundaries (``"/docs/*"``).
    :param allow_cors_preflight: let CORS preflights (``OPTIONS`` with
        ``Origin`` and ``Access-Control-Request-Method``) through without a
        key, for a CORS layer inside *app* that answers every preflight
        (default ``False``: otherwise a preflight reaches *app*'s views
        unauthenticated).  A CORS middleware wrapped around this one answers
        preflights before they arrive here and needs no such pass.
    :param options: keyword options of :class:`~aqnt_auth.Authenticator`
        (``allowed_modes``, ``realm``, ``cache_size``, ``rate_limit``...), with
        *store* only.  A rate limit counts failures per ``REMOTE_ADDR``, or,
        when it is one of ``trusted_proxies``, per client it forwarded for.

    Errors are answered here, with the core's exact JSON bodies and
    ``WWW-Authenticate``; *app* never sees an unauthenticated request.
    Call :meth:`close` at shutdown, or let the ``atexit`` hook flush usage
    counts.
    """

    def __init__(
        self,
        app: WSGIApplication,
        store: KeyStore | str | None = None,
        *,
        authenticator: Authenticator | None = None,
        exempt_paths: Iterable[str] = (),
        allow_cors_preflight: bool = False,
        **options: Unpack[AuthenticatorOptions],
    ) -> None:
        self.authenticator = make_authenticator(store, authenticator, options)
        self._owns_authenticator = authenticator is None
        self.app = app
        self.exempt = PathRules(exempt_paths)
        self.allow_cors_preflight = allow_cors_preflight
        # Bound once: the warm path is a few attribute loads shorter.
        self._authenticate = self.authenticator.authenticate
        # Past trusted proxies the client is in the forwarded headers.
        self._proxied = bool(self.authenticator.trusted_proxies)

    def __repr__(self) -> str:
        return (
            f"APIKeyMiddleware({self.app!r}, authenticator={self.authenticator!r}, "
            f"exempt={self.exempt!r})"
        )

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        path: str = environ.get("PATH_INFO") or "/"
        if not path.isascii():
            path = get_path_info(environ)
        method: str = environ.get("REQUEST_METHOD", "GET")
        if self.exempt.is_exempt(path) or (
            method == "OPTIONS"
            and self.allow_cors_preflight
            and is_cors_preflight(
                method,
                environ.get("HTTP_ORIGIN"),
                environ.get("HTTP_ACCESS_CONTROL_REQUEST_METHOD"),
            )
        ):
            environ[ENVIRON_KEY] = None
            return self.app(environ, start_response)
        try:
            # WSGI servers join repeated headers with commas; the core's
            # header parser answers such a value with invalid_api_key.
            if self._proxied:
                principal = self._authenticate(
                    environ.get("HTTP_AUTHORIZATION"), method=method, path=path,
                    client=environ.get("REMOTE_ADDR"), forwarded=environ.get("HTTP_FORWARDED"),
                    user_agent=environ.get("HTTP_USER_AGENT"),
                    x_forwarded_for=environ.get("HTTP_X_FORWARDED_FOR"),
                )
            else:
                principal = self._authenticate(
                    environ.get("HTTP_AUTHORIZATION"), method=method, path=path,
                    client=environ.get("REMOTE_ADDR"),
                    user_agent=environ.get("HTTP_USER_AGENT"),
                )
        except AQNTError as exc:
            response = error_response(self.authenticator.render_error(exc))
            return response(environ, start_response)
        environ[ENVIRON_KEY] = principal
        if principal.response_headers:  # a key with rate limits: their headers
            return self.app(environ, with_headers(start_response, principal.response_headers))
        return self.app(environ, start_response)

    def close(self) -> None:
        """Flush usage counts; close the authenticator if this middleware built it."""
        if self._owns_authenticator:
            self.authenticator.close()
        else:
            self.authenticator.flush_usage()
