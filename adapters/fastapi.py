"""FastAPI glue: a security dependency that gives endpoints the key.

::

    api_key = APIKey()                    # the principal comes from APIKeyMiddleware
    app = FastAPI()
    app.add_middleware(APIKeyMiddleware, store="sqlite:///keys.db", exempt_paths=["/health"])
    add_error_handlers(app)               # errors keep the contract's JSON bodies

    @app.post("/charges")
    async def create(key: Principal = Security(api_key, scopes=["charges:write"])): ...

Without the middleware, give the dependency a store (``APIKey("sqlite:///keys.db")``)
and it authenticates on its own.  Either way it declares an HTTP bearer
``securitySchemes`` entry, so Swagger UI shows an Authorize button, and
marks each operation that depends on it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fastapi.openapi.models import HTTPBearer as HTTPBearerModel
from fastapi.requests import HTTPConnection
from fastapi.security import SecurityScopes
from fastapi.security.base import SecurityBase

from aqnt_auth import (
    Authenticator,
    AuthenticatorOptions,
    KeyStore,
    Principal,
    make_authenticator,
    require_scopes,
)
from aqnt_auth.adapters.asgi import APIKeyAuth, admit, authenticate_scope, principal_of
from aqnt_auth.adapters.starlette import REFUSALS, add_error_handlers

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = ["APIKey", "add_error_handlers"]

_DESCRIPTION = "An API key: `Authorization: Bearer sk_live_...` (`sk_test_...` in test mode)."


class APIKey(SecurityBase):
    """A FastAPI security dependency returning the request's
    :class:`~aqnt_auth.Principal`.

    Use it as ``Security(api_key, scopes=[...])`` or through an alias such as
    ``Key = Annotated[Principal, Security(api_key)]``.  The scopes are
    required of the key (403 ``insufficient_scope`` otherwise).

    :param store: a store or store URL, to authenticate requests that
        :class:`~aqnt_auth.adapters.asgi.APIKeyMiddleware` has not (none,
        when the middleware is in front of every route).
    :param authenticator: an :class:`~aqnt_auth.Authenticator` instead of *store*.
    :param scheme_name: the name of the OpenAPI security scheme.
    :param description: its description, shown in Swagger UI.
    :param options: passed with *store* to :class:`~aqnt_auth.Authenticator`.

    Errors are raised as the core's exceptions; register
    :func:`~aqnt_auth.adapters.starlette.add_error_handlers` on the app so
    they are answered with the contract's JSON, not FastAPI's ``{"detail"}``.
    The dependency checks that it was, once per app.
    """

    def __init__(
        self,
        store: KeyStore | str | None = None,
        *,
        authenticator: Authenticator | None = None,
        scheme_name: str = "APIKey",
        description: str = _DESCRIPTION,
        **options: Unpack[AuthenticatorOptions],
    ) -> None:
        self.model = HTTPBearerModel(
            bearerFormat="sk_live_... / sk_test_...", description=description
        )
        self.scheme_name = scheme_name
        self.authenticator: Authenticator | None = (
            None
            if store is None and authenticator is None and not options
            else make_authenticator(store, authenticator, options)
        )
        self._checked_apps: set[int] = set()

    def __repr__(self) -> str:
        return f"APIKey(scheme_name={self.scheme_name!r}, authenticator={self.authenticator!r})"

    async def __call__(self, request: HTTPConnection, security_scopes: SecurityScopes) -> Principal:
        scope = request.scope
        app = scope.get("app")
        if app is not None and id(app) not in self._checked_apps:
            self._check_handlers(app)
        principal: Principal | None = principal_of(scope)
        if principal is None:
            authenticator = self._authenticator_for(scope)
            # Set before authenticating so a refusal is rendered with this realm.
            scope["auth"] = APIKeyAuth(None, authenticator)
            principal = await authenticate_scope(authenticator, scope)
            admit(scope, principal, authenticator)
        if security_scopes.scopes:
            require_scopes(principal, security_scopes.scopes)
        return principal

    def _authenticator_for(self, scope: Any) -> Authenticator:
        if self.authenticator is not None:
            return self.authenticator
        auth = scope.get("auth")
        if isinstance(auth, APIKeyAuth):
            # APIKeyMiddleware let this request through (an exempt path): the
            # route still wants a key, so check it the way the middleware would.
            found: Authenticator = auth.authenticator
            return found
        raise RuntimeError(
            "APIKey() has no store and no APIKeyMiddleware ran before it: add the "
            "middleware to the app, or create the dependency with a store, "
            'APIKey("sqlite:///keys.db")'
        )

    def _check_handlers(self, app: Any) -> None:
        handlers = getattr(app, "exception_handlers", {})
        for cls in REFUSALS:
            if not any(base in handlers for base in cls.__mro__):
                raise RuntimeError(
                    f"{cls.__name__} has no exception handler: errors would lose their JSON "
                    "body. Did you forget add_error_handlers(app) "
                    "(from aqnt_auth.adapters.fastapi)?"
                )
        self._checked_apps.add(id(app))
