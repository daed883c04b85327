"""System checks, run by ``manage.py check`` and before every management command.

* ``aqnt_auth.E001``: ``AQNT_AUTH`` is invalid (an unknown key, a wrong
  type, a bad prefix, mode or realm...).
* ``aqnt_auth.E005``: an exempt path does not start with ``/`` (or is
  otherwise not a path rule).
* ``aqnt_auth.E002``: the middleware is listed more than once.
* ``aqnt_auth.E003``: the middleware comes before ``SecurityMiddleware``,
  so HTTPS redirects and security headers would not cover its answers.
* ``aqnt_auth.E004``: the middleware comes after a middleware that answers
  requests itself before any view runs (the cache's ``FetchFromCacheMiddleware``
  and ``CacheMiddleware``), so those answers would skip authentication.
* ``aqnt_auth.W001``: neither the middleware nor the DRF authentication
  class is configured, so no request is authenticated.
* ``aqnt_auth.W002``: ``ALLOW_CORS_PREFLIGHT`` is on, but no
  django-cors-headers middleware after ours answers the preflights it lets
  through, so they would reach views without a key.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

from django.apps import AppConfig
from django.conf import settings
from django.core.checks import CheckMessage, Error, Tags, Warning, register

from aqnt_auth.adapters.django.settings import SETTING, SettingError, load_settings

__all__ = ["check_middleware", "check_settings"]

MIDDLEWARE_PATHS: Final = frozenset({
    "aqnt_auth.adapters.django.APIKeyMiddleware",
    "aqnt_auth.adapters.django.middleware.APIKeyMiddleware",
})
DRF_CLASS: Final = "aqnt_auth.adapters.django.rest_framework.APIKeyAuthentication"
SECURITY_MIDDLEWARE: Final = "django.middleware.security.SecurityMiddleware"
# Middleware that can answer a request without calling what comes after it.
CORS_MIDDLEWARE: Final = "corsheaders.middleware.CorsMiddleware"
ANSWERING_MIDDLEWARE: Final = frozenset({
    "django.middleware.cache.FetchFromCacheMiddleware",
    "django.middleware.cache.CacheMiddleware",
})


@register(Tags.security)
def check_settings(app_configs: Sequence[AppConfig] | None = None, **kwargs: Any
                   ) -> list[CheckMessage]:
    """``AQNT_AUTH`` loads and the core accepts its values."""
    try:
        load_settings()
    except SettingError as exc:
        # Every bad value at once, not one per run of manage.py check.
        return [_setting_error(error) for error in exc.errors]
    return []


def _setting_error(exc: SettingError) -> CheckMessage:
    if exc.key == "EXEMPT_PATHS":
        return Error(str(exc), hint='Exempt paths start with "/": "/health", or "/docs/*" '
                                    "for /docs and everything below it.",
                     obj=SETTING, id="aqnt_auth.E005")
    return Error(str(exc), hint=f"See the keys documented in {__package__}.settings.",
                 obj=SETTING, id="aqnt_auth.E001")


def _drf_class_configured() -> bool:
    rest_framework = getattr(settings, "REST_FRAMEWORK", None) or {}
    classes = rest_framework.get("DEFAULT_AUTHENTICATION_CLASSES", ())
    return any(c == DRF_CLASS or getattr(c, "__name__", None) == "APIKeyAuthentication"
               for c in classes)


@register(Tags.security)
def check_middleware(app_configs: Sequence[AppConfig] | None = None, **kwargs: Any
                     ) -> list[CheckMessage]:
    """The middleware is present once, after SecurityMiddleware, before caches."""
    middleware = list(getattr(settings, "MIDDLEWARE", None) or ())
    ours = [i for i, path in enumerate(middleware) if path in MIDDLEWARE_PATHS]
    if not ours:
        if _drf_class_configured():
            return []
        return [Warning(
            "aqnt_auth is installed but no request is authenticated.",
            hint='Add "aqnt_auth.adapters.django.APIKeyMiddleware" to MIDDLEWARE, or '
                 f'"{DRF_CLASS}" to REST_FRAMEWORK["DEFAULT_AUTHENTICATION_CLASSES"].',
            id="aqnt_auth.W001",
        )]
    errors: list[CheckMessage] = []
    if len(ours) > 1:
        errors.append(Error(
            "APIKeyMiddleware is listed more than once in MIDDLEWARE.",
            hint="Keep one entry.", id="aqnt_auth.E002",
        ))
    first = ours[0]
    if SECURITY_MIDDLEWARE in middleware and middleware.index(SECURITY_MIDDLEWARE) > first:
        errors.append(Error(
            "APIKeyMiddleware comes before SecurityMiddleware in MIDDLEWARE.",
            hint="Move it after django.middleware.security.SecurityMiddleware, so HTTPS "
                 "redirects and security headers apply to its answers too.",
            id="aqnt_auth.E003",
        ))
    for i, path in enumerate(middleware[:first]):
        if path in ANSWERING_MIDDLEWARE:
            errors.append(Error(
                f"APIKeyMiddleware comes after {path} (position {i}), which answers "
                "requests from its cache before any view runs, without a key.",
                hint=f"Move APIKeyMiddleware before {path}.",
                id="aqnt_auth.E004",
            ))
    return errors


@register(Tags.security)
def check_cors_preflight(app_configs: Sequence[AppConfig] | None = None, **kwargs: Any
                         ) -> list[CheckMessage]:
    """``ALLOW_CORS_PREFLIGHT`` only with a CORS middleware after ours to answer."""
    try:
        allowed = load_settings().allow_cors_preflight
    except SettingError:
        return []  # check_settings reports it
    if not allowed:
        return []
    middleware = list(getattr(settings, "MIDDLEWARE", None) or ())
    ours = [i for i, path in enumerate(middleware) if path in MIDDLEWARE_PATHS]
    if not ours or CORS_MIDDLEWARE in middleware[ours[0] + 1:]:
        return []
    return [Warning(
        "AQNT_AUTH['ALLOW_CORS_PREFLIGHT'] is on, but no CORS middleware after "
        "APIKeyMiddleware answers the preflights it lets through: they reach views "
        "without a key.",
        hint=f"Put {CORS_MIDDLEWARE} before APIKeyMiddleware, as high as possible (as "
             "django-cors-headers documents), and turn ALLOW_CORS_PREFLIGHT off.",
        obj=SETTING, id="aqnt_auth.W002",
    )]
