"""``APIKeyMiddleware``: every request needs a valid API key.

.. code-block:: python

    MIDDLEWARE = [
        "django.middleware.security.SecurityMiddleware",
        "aqnt_auth.adapters.django.APIKeyMiddleware",
        ...
    ]

Sync and async capable: under ASGI it runs as a coroutine and never makes
Django switch modes.  The decision is made on ``request.path_info`` (the
path the URL resolver sees) by the core; the principal is put on
``request.api_key`` (``None`` on an exempt path or a CORS preflight).

This module imports no model, so the package can re-export the middleware
while Django is still loading apps.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, Final

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.apps import apps
from django.core.exceptions import ImproperlyConfigured
from django.http import HttpRequest, HttpResponse, HttpResponseBase
from django.views.debug import SafeExceptionReporterFilter, get_default_exception_reporter_filter
from django.views.decorators.debug import sensitive_variables

from aqnt_auth import (
    AQNTError,
    Authenticator,
    ClientFacts,
    ErrorResponse,
    Principal,
    is_cors_preflight,
)
from aqnt_auth.adapters.django.settings import AuthSettings, runtime

__all__ = [
    "APIKeyMiddleware",
    "ResponseHeadersMiddleware",
    "add_headers",
    "authenticate_request",
    "authenticate_request_async",
    "error_response",
]

log = logging.getLogger("aqnt_auth.django")

GetResponse = Callable[[HttpRequest], HttpResponseBase]
AsyncGetResponse = Callable[[HttpRequest], Awaitable[HttpResponseBase]]

_AUTHORIZATION: Final = "HTTP_AUTHORIZATION"
#: The Django app the middleware needs in ``INSTALLED_APPS``.
APP: Final = "aqnt_auth.adapters.django"


def error_response(error: ErrorResponse) -> HttpResponse:
    """A Django response for an error the core rendered: its status, exact JSON
    body and headers (``WWW-Authenticate``, ``Retry-After``), with
    ``Content-Length``, which Django's ASGI handler would not add (the
    middleware usually sits outside ``CommonMiddleware``, which does)."""
    response = HttpResponse(error.body, status=error.status, headers=dict(error.headers))
    response["Content-Length"] = str(len(error.body))
    return response


def add_headers(response: HttpResponseBase, headers: tuple[tuple[str, str], ...]
                ) -> HttpResponseBase:
    """*response* with *headers* (a principal's ``response_headers``: the
    RateLimit headers of a limited key) set."""
    for name, value in headers:
        response[name] = value
    return response


class ResponseHeadersMiddleware:
    """Adds the authenticated key's response headers (the RateLimit headers
    of a key with rate limits) to the response, for projects that check
    keys with DRF's :class:`~aqnt_auth.adapters.django.rest_framework.APIKeyAuthentication`
    alone (an authentication class cannot touch the response).
    :class:`APIKeyMiddleware` adds them itself.  Anywhere in ``MIDDLEWARE``.
    """

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: GetResponse | AsyncGetResponse) -> None:
        self.get_response = get_response
        self._async = iscoroutinefunction(get_response)
        if self._async:
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> Any:
        if self._async:
            return self.__acall__(request)
        return self._add(request, self.get_response(request))

    async def __acall__(self, request: HttpRequest) -> Any:
        return self._add(request, await self.get_response(request))  # type: ignore[misc]

    @staticmethod
    def _add(request: HttpRequest, response: Any) -> Any:
        principal = getattr(request, "api_key", None)
        headers = getattr(principal, "response_headers", ())
        if headers and not response.has_header("RateLimit"):
            add_headers(response, headers)
        return response


# Every local of these frames, and of the core's frames below them, is
# hidden from Django's error reports (the mails to ADMINS, and any reporter
# that uses its filter): they hold the presented key.  DEBUG pages ignore
# this marking, hence the frames dropped on an unexpected error below.
@sensitive_variables()
def authenticate_request(authenticator: Authenticator, request: HttpRequest) -> Principal:
    """The principal of *request*'s key; raises the core's errors."""
    try:
        # No local holds META or the header: this frame stays in the
        # traceback of an unexpected error, and DEBUG pages print locals.
        return authenticator.authenticate(
            request.META.get(_AUTHORIZATION), method=request.method, path=request.path_info,
            **_client_facts(authenticator, request),
        )
    except AQNTError:
        raise
    except Exception as exc:
        raise _without_frames(exc) from None


@sensitive_variables()
async def authenticate_request_async(authenticator: Authenticator, request: HttpRequest
                                     ) -> Principal:
    """:func:`authenticate_request`, without blocking the event loop."""
    try:
        return await authenticator.authenticate_async(
            request.META.get(_AUTHORIZATION), method=request.method, path=request.path_info,
            **_client_facts(authenticator, request),
        )
    except AQNTError:
        raise
    except Exception as exc:
        raise _without_frames(exc) from None


def _client_facts(authenticator: Authenticator, request: HttpRequest) -> ClientFacts:
    """The peer address, the user agent (for usage history) and, when
    proxies are trusted, the raw forwarded headers: the core decides which is
    the client."""
    meta = request.META
    if authenticator.trusted_proxies:
        return {"client": meta.get("REMOTE_ADDR"), "forwarded": meta.get("HTTP_FORWARDED"),
                "x_forwarded_for": meta.get("HTTP_X_FORWARDED_FOR"),
                "user_agent": meta.get("HTTP_USER_AGENT")}
    return {"client": meta.get("REMOTE_ADDR"), "user_agent": meta.get("HTTP_USER_AGENT")}


def _without_frames(exc: Exception) -> Exception:
    # Anything but the core's own errors is a bug below us, and the frames it
    # passed through hold the presented key in their locals, which Django's
    # DEBUG page prints whatever sensitive_variables says (the filter is off
    # when DEBUG is on).  Keep the error and its message, drop those frames.
    log.error("authentication failed unexpectedly: %s: %s", type(exc).__name__, exc)
    return exc.with_traceback(None)


def _exempt(conf: AuthSettings, request: HttpRequest) -> bool:
    if conf.exempt_paths.is_exempt(request.path_info):
        return True
    # The method first: the headers are looked up for OPTIONS requests only.
    if request.method != "OPTIONS" or not conf.allow_cors_preflight:
        return False
    meta = request.META
    return is_cors_preflight(
        "OPTIONS", meta.get("HTTP_ORIGIN"), meta.get("HTTP_ACCESS_CONTROL_REQUEST_METHOD")
    )


def _masking_filter() -> SafeExceptionReporterFilter | None:
    """An exception-reporter filter that hides ``HTTP_AUTHORIZATION``, if the
    project's default one does not already (Django's own has hidden any META
    name containing ``AUTH`` only since 5.x; a custom one may not).

    Decided by asking the filter, not by reading Django's version.
    """
    default = get_default_exception_reporter_filter()
    probe = HttpRequest()
    probe.META[_AUTHORIZATION] = "probe"
    if default.get_safe_request_meta(probe).get(_AUTHORIZATION) != "probe":
        return None
    base: type[Any] = type(default)

    def get_safe_request_meta(self: Any, request: HttpRequest) -> dict[str, Any]:
        meta: dict[str, Any] = base.get_safe_request_meta(self, request)
        if _AUTHORIZATION in meta:
            meta[_AUTHORIZATION] = getattr(self, "cleansed_substitute", "********************")
        return meta

    cls = type(f"{base.__name__}HidingAuthorization", (base,),
               {"get_safe_request_meta": get_safe_request_meta})
    return cls()  # type: ignore[no-any-return]


class APIKeyMiddleware:
    """Requires a valid API key on every request, except exempt ones.

    Configured by the ``AQNT_AUTH`` setting (see
    :mod:`aqnt_auth.adapters.django.settings`), read on each request from a
    cache that ``setting_changed`` clears, so ``override_settings`` applies.

    Errors are answered here with the core's exact JSON bodies and
    ``WWW-Authenticate``; a key's restrictions give 403; a database failure
    gives 503 ``auth_unavailable``.  The view never sees an unauthenticated
    request.  A request authenticated by a key is not subject to CSRF
    checks: its credential is a header a browser never adds on its own, as
    with DRF's ``TokenAuthentication``.
    """

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: GetResponse | AsyncGetResponse) -> None:
        if not apps.is_installed(APP):
            # Django runs only installed apps' checks, so manage.py check
            # cannot see this; the server's start (which loads middleware)
            # is the first place that can, rather than a 500 per request.
            raise ImproperlyConfigured(
                f'APIKeyMiddleware is in MIDDLEWARE but "{APP}" is not in INSTALLED_APPS: '
                "add it there (its key table, admin and checks live in it), then run "
                "manage.py migrate"
            )
        self.get_response = get_response
        self._async = iscoroutinefunction(get_response)
        if self._async:
            markcoroutinefunction(self)
        # Only when the project's filter would show the header in a debug
        # page or an error report.
        self._report_filter = _masking_filter()

    def __repr__(self) -> str:
        return f"APIKeyMiddleware(async={self._async})"

    def __call__(self, request: HttpRequest) -> Any:
        if self._async:
            return self.__acall__(request)
        if self._report_filter is not None:
            request.exception_reporter_filter = self._report_filter
        conf, authenticator = runtime()
        if _exempt(conf, request):
            request.api_key = None  # type: ignore[attr-defined]
            return self.get_response(request)
        try:
            principal = authenticate_request(authenticator, request)
        except AQNTError as exc:
            return error_response(authenticator.render_error(exc))
        request.api_key = principal  # type: ignore[attr-defined]
        request._dont_enforce_csrf_checks = True  # type: ignore[attr-defined]
        if principal.response_headers:  # a key with rate limits: their headers
            return add_headers(self.get_response(request),  # type: ignore[arg-type]
                               principal.response_headers)
        return self.get_response(request)

    async def __acall__(self, request: HttpRequest) -> HttpResponseBase:
        if self._report_filter is not None:
            request.exception_reporter_filter = self._report_filter
        conf, authenticator = runtime()
        if _exempt(conf, request):
            request.api_key = None  # type: ignore[attr-defined]
            return await self.get_response(request)  # type: ignore[misc, no-any-return]
        try:
            principal = await authenticate_request_async(authenticator, request)
        except AQNTError as exc:
            return error_response(authenticator.render_error(exc))
        request.api_key = principal  # type: ignore[attr-defined]
        request._dont_enforce_csrf_checks = True  # type: ignore[attr-defined]
        response: HttpResponseBase = await self.get_response(request)  # type: ignore[misc]
        if principal.response_headers:  # a key with rate limits: their headers
            add_headers(response, principal.response_headers)
        return response
