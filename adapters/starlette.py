"""Starlette glue: a backend for Starlette's own ``AuthenticationMiddleware``,
``requires`` that answers with the contract's JSON errors, and an exception
handler for the same errors raised in endpoints.

For most apps :class:`~aqnt_auth.adapters.asgi.APIKeyMiddleware` is all that
is needed; this module is for teams that already run
``AuthenticationMiddleware``, and for route-level scope requirements.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Final, TypeVar, cast

from starlette.applications import Starlette
from starlette.authentication import (
    AuthCredentials,
    AuthenticationBackend,
    AuthenticationError,
    BaseUser,
)
from starlette.requests import HTTPConnection
from starlette.responses import PlainTextResponse, Response
from starlette.types import ExceptionHandler
from starlette.websockets import WebSocket

from aqnt_auth import (
    AQNTError,
    Authenticator,
    AuthenticatorOptions,
    AuthError,
    KeyStore,
    MissingAPIKey,
    PermissionDenied,
    QuotaExceeded,
    RateLimited,
    RateLimitExceeded,
    StoreUnavailable,
    make_authenticator,
    render_error,
    require_scopes,
)
from aqnt_auth.adapters.asgi import (
    APIKeyAuth,
    Exemptions,
    ResponseHeadersMiddleware,
    admit,
    authenticate_scope,
    principal_of,
    route_path,
)

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = [
    "REFUSALS",
    "APIKeyAuthenticationError",
    "APIKeyBackend",
    "ResponseHeadersMiddleware",
    "add_error_handlers",
    "error_handler",
    "error_response",
    "refuse",
    "requires",
]

F = TypeVar("F", bound=Callable[..., Any])

#: The errors that end a request; :func:`add_error_handlers` registers these.
REFUSALS: Final[tuple[type[AQNTError], ...]] = (
    AuthError, PermissionDenied, StoreUnavailable, RateLimited, RateLimitExceeded, QuotaExceeded,
)

_DEFAULT_REALM: Final = "api"


def error_response(error: AQNTError, realm: str = _DEFAULT_REALM) -> Response:
    """The contract's response for *error*, as a Starlette :class:`Response`."""
    answer = render_error(error, realm)
    return Response(answer.body, status_code=answer.status, headers=dict(answer.headers))


def _realm(conn: HTTPConnection) -> str:
    auth = conn.scope.get("auth")
    return auth.realm if isinstance(auth, APIKeyAuth) else _DEFAULT_REALM


async def refuse(conn: HTTPConnection, error: AQNTError) -> Response | None:
    """Answer *conn* with *error*: return the HTTP response to send, or, for
    a WebSocket, refuse the handshake (with the JSON response where the
    server supports it, else a close with code 1008) and return ``None``."""
    response = error_response(error, _realm(conn))
    if not isinstance(conn, WebSocket):
        return response
    if "websocket.http.response" in (conn.scope.get("extensions") or {}):
        await conn.send_denial_response(response)
    else:
        await conn.close(1008, reason=error.code)
    return None


async def error_handler(conn: HTTPConnection, exc: Exception) -> Response | None:
    """An exception handler for :data:`REFUSALS` raised in endpoints and
    dependencies (the FastAPI dependency, :func:`~aqnt_auth.require_scopes`)."""
    if not isinstance(exc, AQNTError):  # pragma: no cover - registered for AQNTErrors only
        raise exc
    return await refuse(conn, exc)


def add_error_handlers(app: Starlette) -> None:
    """Register :func:`error_handler` on a Starlette or FastAPI *app*, so the
    contract's errors raised in endpoints keep their exact JSON bodies."""
    # One handler for both kinds of connection: Starlette types them apart.
    handler = cast("ExceptionHandler", error_handler)
    for cls in REFUSALS:
        app.add_exception_handler(cls, handler)


def _find_connection(args: tuple[Any, ...], kwargs: dict[str, Any]) -> HTTPConnection:
    for value in (*args, *kwargs.values()):
        if isinstance(value, HTTPConnection):
            return value
    raise TypeError("@requires needs an endpoint that takes a Request or a WebSocket")


def _refusal(conn: HTTPConnection, scopes: tuple[str, ...]) -> AQNTError | None:
    principal = principal_of(conn.scope)
    if principal is None:
        return MissingAPIKey()
    try:
        require_scopes(principal, scopes)
    except PermissionDenied as exc:
        return exc
    return None


def requires(*scopes: str) -> Callable[[F], F]:
    """Require the request's key to carry every one of *scopes*.

    Like Starlette's ``requires``, for ``async`` and plain endpoints taking a
    ``request`` or a ``websocket``, but a key without a scope gets the
    contract's 403 ``insufficient_scope`` (naming the scopes in
    ``WWW-Authenticate``), and a request without a key a 401, instead of
    Starlette's plain-text 403.
    """
    needed = tuple(scopes)

    def decorator(func: F) -> F:
        if inspect.iscoroutinefunction(func):

            @functools.wraps(func)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                conn = _find_connection(args, kwargs)
                error = _refusal(conn, needed)
                if error is not None:
                    return await refuse(conn, error)
                return await func(*args, **kwargs)

            return async_wrapper  # type: ignore[return-value]

        @functools.wraps(func)
        def sync_wrapper(*args: Any, **kwargs: Any) -> Any:
            conn = _find_connection(args, kwargs)
            error = _refusal(conn, needed)
            if error is not None:
                # Plain endpoints answer HTTP requests only; no WebSocket here.
                return error_response(error, _realm(conn))
            return func(*args, **kwargs)

        return sync_wrapper  # type: ignore[return-value]

    return decorator


class APIKeyAuthenticationError(AuthenticationError):
    """Carries a core error through ``AuthenticationMiddleware`` to
    :meth:`APIKeyBackend.on_error`."""

    def __init__(self, error: AQNTError, realm: str) -> None:
        super().__init__(error.code)
        self.error = error
        self.realm = realm


def _pair(auth: APIKeyAuth) -> tuple[AuthCredentials, BaseUser]:
    # APIKeyAuth has the shape of both AuthCredentials and BaseUser without
    # deriving from them: the ASGI module it comes from imports no framework.
    return cast("tuple[AuthCredentials, BaseUser]", (auth, auth))


class APIKeyBackend(AuthenticationBackend):
    """An ``AuthenticationBackend`` checking API keys, for Starlette's
    ``AuthenticationMiddleware``::

        backend = APIKeyBackend("sqlite:///aqnt_keys.db", exempt_paths=["/health"])
        Middleware(ResponseHeadersMiddleware),  # the RateLimit headers of limited keys
        Middleware(AuthenticationMiddleware, backend=backend, on_error=backend.on_error)

    Options are those of :class:`~aqnt_auth.adapters.asgi.APIKeyMiddleware`.
    A request without a key is refused like one with a bad key, unless
    *allow_anonymous*: then it goes on unauthenticated, as exempt requests
    do, and routes decide with :func:`requires`.  Pass
    :meth:`on_error`, or rejected requests get Starlette's plain-text 400.
    Starlette's middleware closes a refused WebSocket itself (code 1000).
    """

    def __init__(
        self,
        store: KeyStore | str | None = None,
        *,
        authenticator: Authenticator | None = None,
        exempt_paths: Iterable[str] = (),
        allow_cors_preflight: bool = False,
        allow_anonymous: bool = False,
        **options: Unpack[AuthenticatorOptions],
    ) -> None:
        self.authenticator = make_authenticator(store, authenticator, options)
        self.exemptions = Exemptions(exempt_paths, allow_cors_preflight)
        self.allow_anonymous = allow_anonymous
        # Our own "unauthenticated" pair, not Starlette's, so that requires()
        # answers with this backend's realm.
        anonymous = APIKeyAuth(None, self.authenticator)
        self._anonymous = _pair(anonymous)

    async def authenticate(self, conn: HTTPConnection) -> tuple[AuthCredentials, BaseUser]:
        scope = conn.scope
        if self.exemptions(scope, scope.get("method", "GET"), route_path(scope)):
            return self._anonymous
        try:
            principal = await authenticate_scope(self.authenticator, scope)
        except MissingAPIKey as exc:
            if self.allow_anonymous:
                return self._anonymous
            raise APIKeyAuthenticationError(exc, self.authenticator.realm) from None
        except AQNTError as exc:
            raise APIKeyAuthenticationError(exc, self.authenticator.realm) from None
        return _pair(admit(scope, principal, self.authenticator))

    @staticmethod
    def on_error(conn: HTTPConnection, exc: AuthenticationError) -> Response:
        """``on_error`` for ``AuthenticationMiddleware``: the contract's response."""
        if isinstance(exc, APIKeyAuthenticationError):
            return error_response(exc.error, exc.realm)
        # Another backend's error: Starlette's own default answer.
        return PlainTextResponse(str(exc), status_code=400)

    async def aclose(self) -> None:
        """Flush usage counts and close the authenticator (call it at shutdown)."""
        await self.authenticator.aclose()

