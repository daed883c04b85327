"""Django REST framework: an authentication class and a scope permission.

.. code-block:: python

    REST_FRAMEWORK = {
        "DEFAULT_AUTHENTICATION_CLASSES": [
            "aqnt_auth.adapters.django.rest_framework.APIKeyAuthentication",
        ],
        "DEFAULT_PERMISSION_CLASSES": [
            "aqnt_auth.adapters.django.rest_framework.HasScopes",
        ],
        # Optional: byte-for-byte the core's error bodies (see exception_handler).
        "EXCEPTION_HANDLER": "aqnt_auth.adapters.django.rest_framework.exception_handler",
    }

    class Charges(APIView):
        required_scopes = ["charges:read"]

``request.user`` is an :class:`APIKeyUser` and ``request.auth`` the
:class:`~aqnt_auth.Principal`.  Errors keep the core's JSON bodies (not
DRF's ``{"detail": ...}``), status codes and ``WWW-Authenticate``.  With
:class:`APIKeyMiddleware` also installed, the key it checked is reused:
one lookup per request, whichever runs.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, ClassVar

from django.http import HttpResponse
from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication
from rest_framework.permissions import BasePermission
from rest_framework.request import Request

from aqnt_auth import AQNTError, MissingAPIKey, PermissionDenied, Principal, require_scopes
from aqnt_auth.adapters.django.middleware import authenticate_request, error_response
from aqnt_auth.adapters.django.settings import runtime

if TYPE_CHECKING:
    # rest_framework.views imports the configured authentication classes,
    # this module among them: importing it here at run time would be circular.
    from rest_framework.views import APIView

__all__ = [
    "APIKeyAuthentication",
    "APIKeyError",
    "APIKeyUser",
    "HasScopes",
    "exception_handler",
]


class APIKeyUser:
    """``request.user`` for a request authenticated by an API key.

    Not a Django user: it has no permissions and is never staff.  Its
    :attr:`pk` is the key id, so DRF's per-user throttles count per key.
    """

    __slots__ = ("principal",)

    is_authenticated: ClassVar[bool] = True
    is_anonymous: ClassVar[bool] = False
    is_active: ClassVar[bool] = True
    is_staff: ClassVar[bool] = False
    is_superuser: ClassVar[bool] = False

    def __init__(self, principal: Principal) -> None:
        self.principal = principal

    def __repr__(self) -> str:
        return f"APIKeyUser({self.principal!r})"

    def __str__(self) -> str:
        return f"API key {self.principal.id} ({self.principal.name})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, APIKeyUser) and other.principal == self.principal

    def __hash__(self) -> int:
        return hash(self.principal)

    @property
    def pk(self) -> str:
        return self.principal.id

    id = pk

    @property
    def username(self) -> str:
        return self.principal.id

    def get_username(self) -> str:
        return self.principal.id

    def has_perm(self, perm: str, obj: object = None) -> bool:
        return False

    def has_perms(self, perm_list: Iterable[str], obj: object = None) -> bool:
        return False

    def has_module_perms(self, app_label: str) -> bool:
        return False


class APIKeyError(exceptions.APIException):
    """A core error inside DRF: the core's status, JSON body and headers.

    Deliberately not an ``AuthenticationFailed``: DRF would replace its
    ``WWW-Authenticate`` with the bare challenge of the first authentication
    class, dropping ``error="invalid_token"``.
    """

    def __init__(self, error: AQNTError) -> None:
        self.error = error
        self.rendered = runtime().authenticator.render_error(error)
        self.status_code = self.rendered.status
        super().__init__(detail=error.to_dict(), code=error.code)
        headers = dict(self.rendered.headers)
        # DRF's exception handler turns these two attributes into headers.
        self.auth_header = headers.get("WWW-Authenticate")
        retry_after = headers.get("Retry-After")
        self.wait = int(retry_after) if retry_after is not None else None


def _missing(request: Request | None) -> MissingAPIKey:
    """The request's "no key" error, with what it was told in
    ``error_description`` if it sent a key without ``Bearer``."""
    found = getattr(getattr(request, "_request", None), "_aqnt_auth_missing", None)
    return found if isinstance(found, MissingAPIKey) else MissingAPIKey()


def _missing_challenge(request: Request) -> str:
    headers = dict(runtime().authenticator.render_error(_missing(request)).headers)
    return headers["WWW-Authenticate"]


def _principal_of(request: Request) -> Principal | None:
    # Set by APIKeyMiddleware, or by APIKeyAuthentication on this request.
    principal = getattr(request._request, "api_key", None)
    return principal if isinstance(principal, Principal) else None


class APIKeyAuthentication(BaseAuthentication):
    """Authenticates ``Authorization: Bearer sk_...``.

    Returns ``(APIKeyUser, Principal)``.  A request without a Bearer
    credential is left to the next authentication class (DRF's convention);
    with none left, DRF answers 401 with this class's challenge, since
    :meth:`authenticate_header` gives one.  Every other failure raises
    :class:`APIKeyError`.
    """

    def authenticate(self, request: Request) -> tuple[APIKeyUser, Principal] | None:
        principal = _principal_of(request)
        if principal is None:
            authenticator = runtime().authenticator
            try:
                principal = authenticate_request(authenticator, request._request)
            except MissingAPIKey as exc:
                if exc.description is not None:
                    # Kept for the 401's challenge (a bare key: use Bearer).
                    request._request._aqnt_auth_missing = exc  # type: ignore[attr-defined]
                return None
            except AQNTError as exc:
                raise APIKeyError(exc) from None
            request._request.api_key = principal  # type: ignore[attr-defined]
        return APIKeyUser(principal), principal

    def authenticate_header(self, request: Request) -> str:
        return _missing_challenge(request)


class HasScopes(BasePermission):
    """Requires an API key carrying every scope the view lists.

    The scopes are the view's ``required_scopes`` attribute plus this
    class's :attr:`scopes` (see :meth:`of`).  No key: 401
    ``missing_api_key``; a key without the scopes: 403
    ``insufficient_scope`` naming them in ``WWW-Authenticate``.
    """

    scopes: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def of(cls, *scopes: str) -> type[HasScopes]:
        """A subclass requiring *scopes*: ``permission_classes = [HasScopes.of("a:b")]``."""
        return type(f"HasScopes{scopes!r}", (cls,), {"scopes": cls.scopes + scopes})

    def has_permission(self, request: Request, view: APIView) -> bool:
        principal = request.auth if isinstance(request.auth, Principal) else None
        if principal is None:
            principal = _principal_of(request)
        if principal is None:
            raise APIKeyError(MissingAPIKey())
        required = (*self.scopes, *getattr(view, "required_scopes", ()))
        try:
            require_scopes(principal, required)
        except PermissionDenied as exc:
            raise APIKeyError(exc) from None
        return True


def exception_handler(exc: Exception, context: dict[str, Any]) -> HttpResponse | Any:
    """DRF's exception handler, except that the core's errors get the core's
    exact bytes (DRF's JSON renderer would re-serialise them compactly), and
    DRF's own "not authenticated" gets ``missing_api_key`` when this
    package's authentication class is in use."""
    from rest_framework.views import exception_handler as drf_exception_handler
    from rest_framework.views import set_rollback

    if isinstance(exc, APIKeyError):
        set_rollback()
        return error_response(exc.rendered)
    if isinstance(exc, exceptions.NotAuthenticated):
        request = context.get("request")
        authenticators = getattr(request, "authenticators", ()) or ()
        if any(isinstance(a, APIKeyAuthentication) for a in authenticators):
            return error_response(runtime().authenticator.render_error(_missing(request)))
    return drf_exception_handler(exc, context)
