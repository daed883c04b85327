"""The key console in a Django project::

    # urls.py
    path("keys-admin/", include("aqnt_auth.adapters.django.console")),

    # settings.py: the console signs its admins in itself
    AQNT_AUTH = {..., "EXEMPT_PATHS": ["/keys-admin/*"]}

One view translates Django's request into the console's :class:`Request`
and its :class:`Response` back.  Admins are Django staff users with the
key model's permissions (``aqnt_auth.change_apikey`` may change keys,
``aqnt_auth.view_apikey`` may look), through the console's ``authorize``
hook, and admin keys (``aqnt:admin`` / ``aqnt:read``).  The console shares
the middleware's authenticator and store, and Django's ``SECRET_KEY`` signs
its sessions.  It checks CSRF itself (its own tokens, not Django's).

``AQNT_AUTH_CONSOLE`` (optional) overrides: ``{"ADMIN_SCOPE": ...,
"READ_SCOPE": ..., "SECRET_KEY": ..., "AUTHORIZE": <callable or dotted path>,
"SESSION_IDLE_TIMEOUT": 900, "SESSION_ABSOLUTE_TIMEOUT": 28800, "SECURE_COOKIES": None}``
(seconds; ``SECURE_COOKIES``: ``True``/``False`` forces the cookie's ``Secure``
flag, ``None`` sets it unless the request came over loopback).
"""

from __future__ import annotations

import threading
from typing import Any

from django.conf import settings
from django.core.signals import setting_changed
from django.http import HttpRequest, HttpResponse
from django.urls import re_path
from django.utils.module_loading import import_string
from django.views.decorators.csrf import csrf_exempt

from aqnt_auth import Argon2Hasher, Authenticator, ConfigurationError, KeyManager
from aqnt_auth.console import Admin, Console, Request
from aqnt_auth.console._session import ABSOLUTE_TIMEOUT, IDLE_TIMEOUT

from .settings import get_settings, runtime

__all__ = ["console", "console_view", "staff_admin", "urlpatterns"]

app_name = "aqnt_auth_console"

_lock = threading.Lock()
_built: tuple[Authenticator, Console] | None = None
_KNOWN = frozenset({"ADMIN_SCOPE", "READ_SCOPE", "SECRET_KEY", "AUTHORIZE",
                    "SESSION_IDLE_TIMEOUT", "SESSION_ABSOLUTE_TIMEOUT", "SECURE_COOKIES"})


def staff_admin(request: Request) -> Admin | None:
    """The default ``authorize`` hook: an active staff user with
    ``aqnt_auth.change_apikey`` may change keys, one with only
    ``aqnt_auth.view_apikey`` may look."""
    django_request = request.native
    user = getattr(django_request, "user", None)
    if user is None or not user.is_active or not user.is_staff:
        return None
    actor = f"user:{user.get_username()}"
    if user.has_perm("aqnt_auth.change_apikey"):
        return Admin(actor, True, "hook")
    if user.has_perm("aqnt_auth.view_apikey"):
        return Admin(actor, False, "hook")
    return None


def console() -> Console:
    """The project's console, over the middleware's authenticator (rebuilt
    when the settings change, as the authenticator is)."""
    global _built
    authenticator = runtime().authenticator
    current = _built
    if current is not None and current[0] is authenticator:
        return current[1]
    with _lock:
        if _built is None or _built[0] is not authenticator:
            raw: dict[str, Any] = dict(getattr(settings, "AQNT_AUTH_CONSOLE", None) or {})
            unknown = sorted(set(raw) - _KNOWN)
            if unknown:
                raise ConfigurationError(f"AQNT_AUTH_CONSOLE: unknown keys {unknown}; "
                                         f"known: {sorted(_KNOWN)}")
            authorize = raw.get("AUTHORIZE", staff_admin)
            if isinstance(authorize, str):
                authorize = import_string(authorize)
            conf = get_settings()
            manager = KeyManager(authenticator.store, hasher=conf.hasher or Argon2Hasher(),
                                 prefixes=conf.prefixes,
                                 max_hash_memory_mib=authenticator.max_hash_memory_mib)
            _built = (authenticator, Console(
                authenticator,
                secret_key=raw.get("SECRET_KEY") or settings.SECRET_KEY,
                admin_scope=raw.get("ADMIN_SCOPE", "aqnt:admin"),
                read_scope=raw.get("READ_SCOPE", "aqnt:read"),
                authorize=authorize,
                manager=manager,
                session_idle_timeout=raw.get("SESSION_IDLE_TIMEOUT", IDLE_TIMEOUT),
                session_absolute_timeout=raw.get("SESSION_ABSOLUTE_TIMEOUT", ABSOLUTE_TIMEOUT),
                secure_cookies=raw.get("SECURE_COOKIES"),
            ))
        return _built[1]


@csrf_exempt
def console_view(request: HttpRequest, rest: str = "") -> HttpResponse:
    """Every console route: translate, answer, translate back."""
    headers = {name.lower(): value for name, value in request.headers.items()}
    # The console's path is what the include matched; before it, the prefix
    # (with SCRIPT_NAME).  Django's DATA_UPLOAD_MAX_MEMORY_SIZE bounds the body.
    inner = "/" + rest
    path = request.path
    root = path[: len(path) - len(inner)] if path.endswith(inner) else path.rstrip("/")
    answer = console().handle(Request(
        method=(request.method or "GET").upper(),
        path=inner,
        query_string=request.META.get("QUERY_STRING", ""),
        headers=headers,
        body=request.body,
        client=request.META.get("REMOTE_ADDR"),
        scheme=request.scheme or "http",
        root_path=root,
        native=request,
    ))
    response = HttpResponse(answer.body, status=answer.status)
    for name, value in answer.headers:
        if name.lower() == "set-cookie":
            # HttpResponse keeps one value per header name; cookies go raw.
            response.cookies.load(value)
        else:
            response.headers[name] = value
    return response


def _on_setting_changed(*, setting: str, **kwargs: Any) -> None:
    global _built
    if setting in ("AQNT_AUTH_CONSOLE", "SECRET_KEY"):
        with _lock:
            _built = None


setting_changed.connect(_on_setting_changed, dispatch_uid="aqnt_auth.adapters.django.console")

urlpatterns = [re_path(r"^(?P<rest>.*)$", console_view, name="console")]
