"""FastAPI glue: a security dependency that gives endpoints the key.

::

    api_key = APIKey()                    # the principal comes from APIKeyMiddleware
    app = FastAPI()
    app.add_middleware(APIKeyMiddleware, store="sqlite:///aqnt_keys.db", exempt_paths=["/health"])
    add_error_handlers(app)               # errors keep the contract's JSON bodies
    secure_openapi(app)                   # the lock on every route the middleware guards

    @app.post("/charges")
    async def create(key: Principal = Security(api_key, scopes=["charges:write"])): ...

Without the middleware, give the dependency a store (``APIKey("sqlite:///aqnt_keys.db")``)
and it authenticates on its own.  Either way it declares an HTTP bearer
``securitySchemes`` entry, so Swagger UI shows an Authorize button, and
marks each operation that depends on it; :func:`secure_openapi` marks the
operations the middleware alone protects, and documents the error answers.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, Final, cast, get_type_hints

from fastapi import FastAPI, Response
from fastapi.openapi.models import HTTPBearer as HTTPBearerModel
from fastapi.requests import HTTPConnection
from fastapi.security import SecurityScopes
from fastapi.security.base import SecurityBase

from aqnt_auth import (
    AQNTError,
    Authenticator,
    AuthenticatorOptions,
    InvalidAPIKey,
    KeyStore,
    MissingAPIKey,
    PathRules,
    PermissionDenied,
    Principal,
    QuotaExceeded,
    RateLimited,
    RateLimitExceeded,
    RateLimitUnavailable,
    RevokedAPIKey,
    StoreUnavailable,
    make_authenticator,
    require_scopes,
)
from aqnt_auth.adapters.asgi import (
    APIKeyAuth,
    APIKeyMiddleware,
    admit,
    authenticate_scope,
    principal_of,
)
from aqnt_auth.adapters.starlette import REFUSALS, add_error_handlers, error_handler

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = ["ERROR_SCHEMA", "APIKey", "add_error_handlers", "secure_openapi"]

_DESCRIPTION: Final = (
    "Paste the API key alone (`sk_live_...` or `sk_test_...`), without `Bearer `: "
    "it is sent as `Authorization: Bearer <key>`."
)
_BEARER_FORMAT: Final = "sk_live_... / sk_test_..."


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

    Errors are raised as the core's exceptions, which
    :func:`~aqnt_auth.adapters.starlette.add_error_handlers` answers with the
    contract's JSON, not FastAPI's ``{"detail"}`` (which no ``HTTPException``
    can avoid).  If the app has no handler for them, the dependency
    registers that one itself on first use, so forgetting the call never
    turns a refusal into a 500.
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
        self.model = HTTPBearerModel(bearerFormat=_BEARER_FORMAT, description=description)
        self.scheme_name = scheme_name
        self.authenticator: Authenticator | None = (
            None
            if store is None and authenticator is None and not options
            else make_authenticator(store, authenticator, options)
        )
        self._checked_apps: set[int] = set()

    def __repr__(self) -> str:
        return f"APIKey(scheme_name={self.scheme_name!r}, authenticator={self.authenticator!r})"

    async def __call__(self, request: HTTPConnection, security_scopes: SecurityScopes,
                       response: Response) -> Principal:
        scope = request.scope
        app = scope.get("app")
        if app is not None and id(app) not in self._checked_apps:
            self._ensure_handlers(app, scope)
        principal: Principal | None = principal_of(scope)
        if principal is None:
            authenticator = self._authenticator_for(scope)
            # Set before authenticating so a refusal is rendered with this realm.
            scope["auth"] = APIKeyAuth(None, authenticator)
            principal = await authenticate_scope(authenticator, scope)
            admit(scope, principal, authenticator)
            # The RateLimit headers of a limited key (APIKeyMiddleware adds
            # its own): FastAPI copies them into the route's response, unless
            # the route returns a Response object itself.
            for name, value in principal.response_headers:
                response.headers[name] = value
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
            'APIKey("sqlite:///aqnt_keys.db")'
        )

    def _ensure_handlers(self, app: Any, scope: Any) -> None:
        """Make sure the refusals this raises are answered with the contract's
        bytes: register :func:`add_error_handlers`' handler where the app
        has none of its own for them."""
        handlers = getattr(app, "exception_handlers", None)
        if isinstance(handlers, dict):
            _add_missing_handlers(handlers)
        # The app's middleware stack (its ExceptionMiddleware) was built with
        # a copy of the handlers before this first request, and each request
        # carries that copy in its scope, which Starlette's routing reads when
        # an endpoint or dependency raises.
        running = scope.get("starlette.exception_handlers")
        if isinstance(running, tuple) and running and isinstance(running[0], dict):
            _add_missing_handlers(running[0])
        self._checked_apps.add(id(app))



# FastAPI 0.110 reads a dependency instance's __call__ annotations
# without the globals of its module, so these strings (this module's
# `from __future__ import annotations`) would make `request` a required query
# parameter and every request a 422.  Give it the evaluated annotations.
APIKey.__call__.__annotations__ = get_type_hints(APIKey.__call__)


def _add_missing_handlers(handlers: dict[Any, Any]) -> None:
    for cls in REFUSALS:
        # The app's own handler for one of our classes wins; one for
        # Exception does not count (Starlette gives it the 500s).
        if not any(base in handlers for base in cls.__mro__ if issubclass(base, AQNTError)):
            handlers[cls] = error_handler


# -- OpenAPI ----------------------------------------------------------------

#: The JSON schema of every error body (``components/schemas/AQNTAuthError``).
ERROR_SCHEMA: Final[Mapping[str, Any]] = {
    "title": "AQNTAuthError",
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["type", "message", "code"],
            "properties": {
                "type": {"type": "string"},
                "message": {"type": "string"},
                "code": {"type": "string"},
            },
        }
    },
}

_SCHEMA_NAME: Final = "AQNTAuthError"
_HTTP_METHODS: Final = frozenset(
    {"get", "put", "post", "delete", "options", "head", "patch", "trace"}
)


def _response(description: str, errors: Iterable[AQNTError], header: str | None
              ) -> dict[str, Any]:
    # The examples are the core's own bodies, so the document cannot drift
    # from what is sent.
    content = {
        "schema": {"$ref": f"#/components/schemas/{_SCHEMA_NAME}"},
        "examples": {e.code: {"summary": e.message, "value": e.to_dict()} for e in errors},
    }
    response: dict[str, Any] = {"description": description,
                                "content": {"application/json": content}}
    if header is not None:
        response["headers"] = {header: {"schema": {"type": "string"}}}
    return response


def _error_responses() -> dict[str, dict[str, Any]]:
    return {
        "401": _response("No API key, or an invalid, revoked or expired one",
                         (MissingAPIKey(), InvalidAPIKey(), RevokedAPIKey()), "WWW-Authenticate"),
        "403": _response("The key's scopes or restrictions do not allow this request",
                         (PermissionDenied(),), "WWW-Authenticate"),
        "429": _response("Too many failed authentication attempts from this client or "
                         "against this key, or the key's rate limit or usage quota is used up",
                         (RateLimited(), RateLimitExceeded(), QuotaExceeded()), "Retry-After"),
        "503": _response("The key store or the rate limiter cannot answer; retry later",
                         (StoreUnavailable(), RateLimitUnavailable()), "Retry-After"),
    }


def _middleware_exemptions(app: FastAPI) -> PathRules | None:
    """The exemptions of the app's :class:`APIKeyMiddleware` (``None``: it has none)."""
    for middleware in app.user_middleware:
        cls, _, kwargs = middleware
        if isinstance(cls, type) and issubclass(cls, APIKeyMiddleware):
            return PathRules(kwargs.get("exempt_paths", ()))
    return None


def secure_openapi(app: FastAPI, exempt_paths: Iterable[str] | None = None, *,
                   api_key: APIKey | None = None) -> None:
    """Show in *app*'s OpenAPI document (and Swagger UI) what the API key protects.

    * Every operation :class:`~aqnt_auth.adapters.asgi.APIKeyMiddleware`
      protects is marked with the security scheme, so Swagger UI shows the
      lock and "Try it out" sends ``Authorization: Bearer <key>``.  The
      exemptions are the middleware's own, read from the app, or
      *exempt_paths* when given (for a middleware added some other way).
    * Those operations, and any that depend on :class:`APIKey`, document the
      401, 403, 429 and 503 answers with their JSON schema and examples.

    *api_key* names the scheme (by default that of ``APIKey()``: ``APIKey``,
    HTTP bearer).  Call it once, anywhere after creating the app: the
    document is built on its first request, as FastAPI does.
    """
    scheme = api_key if api_key is not None else APIKey()
    generate: Callable[[], dict[str, Any]] = app.openapi
    done: dict[str, Any] = {}

    def openapi() -> dict[str, Any]:
        if not done:
            rules = PathRules(exempt_paths) if exempt_paths is not None else (
                _middleware_exemptions(app))
            document = generate()
            _secure(document, scheme, rules)
            done["document"] = document
        return cast("dict[str, Any]", done["document"])

    app.openapi = openapi  # type: ignore[method-assign]


def _secure(document: dict[str, Any], api_key: APIKey, rules: PathRules | None) -> None:
    name = api_key.scheme_name
    components = document.setdefault("components", {})
    components.setdefault("securitySchemes", {})[name] = api_key.model.model_dump(
        mode="json", by_alias=True, exclude_none=True
    )
    components.setdefault("schemas", {})[_SCHEMA_NAME] = dict(ERROR_SCHEMA)
    errors = _error_responses()
    for path, item in document.get("paths", {}).items():
        guarded = rules is not None and not rules.is_exempt(path)
        for method, operation in item.items():
            if method not in _HTTP_METHODS:
                continue
            security = operation.get("security")
            if guarded:
                if not security:
                    operation["security"] = [{name: []}]
                else:
                    # Requirements are alternatives: the key is needed in each.
                    for requirement in security:
                        requirement.setdefault(name, [])
            elif not any(name in requirement for requirement in security or ()):
                continue
            responses = operation.setdefault("responses", {})
            for status, response in errors.items():
                responses.setdefault(status, response)
