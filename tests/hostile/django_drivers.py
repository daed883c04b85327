"""The Django adapters, driven through Django's own WSGI handler with raw environs.

``django``: the project's middleware stack with
:class:`~aqnt_auth.adapters.django.APIKeyMiddleware` (``EXEMPT_PATHS``
``/health``).  ``drf``: the same stack without it, and a DRF view protected
by :class:`~aqnt_auth.adapters.django.rest_framework.APIKeyAuthentication`
alone.  Both are configured through the ``AQNT_AUTH`` setting.

Store reads are the queries on the key table, counted (and failed, for an
outage) with Django's ``execute_wrapper``; queries are logged, as under
``DEBUG``, so the leak checks see Django's SQL log too.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

from django.conf import settings
from django.core.handlers.wsgi import WSGIHandler
from django.core.signals import request_finished, request_started
from django.db import OperationalError, close_old_connections, connections
from django.test.utils import override_settings

from aqnt_auth import KeyManager
from aqnt_auth.adapters.django.models import APIKey
from aqnt_auth.adapters.django.store import DjangoKeyStore
from tests.core._support import CountingHasher

from .cases import ORIGIN
from .django_app import RECORD
from .driver import ALLOWED_MODES, EXEMPT_PATHS, Driver, Outcome, Recorder, Request, Setup
from .keys import KeySet
from .wsgi_drivers import call_wsgi, environ_of

_OURS = "aqnt_auth.adapters.django.APIKeyMiddleware"
_CORS = "corsheaders.middleware.CorsMiddleware"


class DjangoDriver(Driver):
    """A Django project answering raw environs through ``WSGIHandler``."""

    def __init__(self, name: str, hasher: CountingHasher, recorder: Recorder) -> None:
        super().__init__(KeySet(KeyManager(DjangoKeyStore(), hasher=hasher)), hasher)
        self.name = name
        self.recorder = recorder
        self.handler = WSGIHandler()
        self._reads = 0
        self._down = False
        self._table = APIKey._meta.db_table

    def execute(self, execute: Callable[..., Any], sql: str, params: Any, many: bool,
                context: dict[str, Any]) -> Any:
        """``execute_wrapper``: count reads of the key table; fail them when down."""
        if self._table in sql and sql.lstrip().upper().startswith("SELECT"):
            self._reads += 1
            if self._down:
                raise OperationalError("could not connect to server: Connection refused")
        return execute(sql, params, many, context)

    def reads(self) -> int:
        return self._reads

    def _reset_reads(self) -> None:
        self._reads = 0

    def break_store(self) -> None:
        self._down = True

    def repair_store(self) -> None:
        self._down = False

    def send(self, request: Request) -> Outcome:
        if request.method == "LIFESPAN":
            raise AssertionError("Django's WSGI handler has no lifespan")
        environ = environ_of(request)
        status, headers, body, escaped = call_wsgi(self.handler, environ)
        endpoint, principal = self.recorder.take()
        return Outcome(int(status.split()[0]), [(k.lower(), v) for k, v in headers], body,
                       endpoint, principal, errors=environ["wsgi.errors"].getvalue(),
                       escaped=escaped)


def _settings(adapter: str, hasher: CountingHasher, setup: Setup) -> dict[str, Any]:
    rate_limit = setup.rate_limit
    # django-cors-headers documents its middleware as high as possible.
    cors: dict[str, Any] = ({"CORS_ALLOWED_ORIGINS": [ORIGIN]} if setup.cors else {})
    first = [_CORS] if setup.cors else []
    aqnt_auth = {
        "EXEMPT_PATHS": list(EXEMPT_PATHS) if adapter == "django" else [],
        "HASHERS": [hasher],
        "HASHER": hasher,
        "ALLOWED_MODES": list(ALLOWED_MODES),
        "RATE_LIMIT": rate_limit,
        "TRUSTED_PROXIES": list(setup.trusted_proxies),
        "USAGE_FLUSH_INTERVAL": 3600.0,
    }
    if adapter == "django":
        return {"ROOT_URLCONF": "tests.hostile.django_app", "AQNT_AUTH": aqnt_auth,
                "MIDDLEWARE": [*first, *settings.MIDDLEWARE], **cors}
    return {
        "ROOT_URLCONF": "tests.hostile.drf_app",
        "AQNT_AUTH": aqnt_auth,
        "MIDDLEWARE": [*first, *(m for m in settings.MIDDLEWARE if m != _OURS),
                       "aqnt_auth.adapters.django.ResponseHeadersMiddleware"],
        **cors,
        "REST_FRAMEWORK": {
            "DEFAULT_AUTHENTICATION_CLASSES": [
                "aqnt_auth.adapters.django.rest_framework.APIKeyAuthentication",
            ],
            "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
            "UNAUTHENTICATED_USER": None,
            # The core's exact bytes for every refusal.
            "EXCEPTION_HANDLER": "aqnt_auth.adapters.django.rest_framework.exception_handler",
        },
    }


@contextlib.contextmanager
def _requests_keep_the_connection() -> Iterator[None]:
    # As Django's test client does: the handler's request signals would
    # otherwise close the connection that holds the test's transaction.
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    try:
        yield
    finally:
        request_started.connect(close_old_connections)
        request_finished.connect(close_old_connections)


@contextlib.contextmanager
def open_django(adapter: str, hasher: CountingHasher, setup: Setup) -> Iterator[DjangoDriver]:
    recorder = Recorder()
    connection = connections["default"]
    assert settings.MIDDLEWARE.count(_OURS) == 1
    with override_settings(DEBUG=setup.debug, **_settings(adapter, hasher, setup)), \
            _requests_keep_the_connection():
        driver = DjangoDriver(adapter, hasher, recorder)
        RECORD.append(recorder)
        logged = connection.force_debug_cursor
        connection.force_debug_cursor = True
        try:
            with connection.execute_wrapper(driver.execute):
                yield driver
        finally:
            connection.force_debug_cursor = logged
            RECORD.remove(recorder)
