"""Django benchmark: what the Django adapter adds to a request, against
djangorestframework-api-key and django-rest-knox.

Run: ``python benchmarks/bench_django.py [--repeats N] [--number N]``.

One DRF ``APIView`` returning ``{"ok": true}``, called through Django's
``WSGIHandler`` with a prebuilt environ (no server, no socket), on an SQLite
file with persistent connections (``CONN_MAX_AGE``), in these versions:

* ``AllowAny``, no authentication: the baseline;
* djangorestframework-api-key's ``HasAPIKey`` permission;
* django-rest-knox's ``TokenAuthentication`` with ``IsAuthenticated``;
* ours as the DRF class (``APIKeyAuthentication`` with ``IsAuthenticated``);
* ours as middleware (``APIKeyMiddleware``) in front of the ``AllowAny`` view.

Every key is warm: each variant runs once before timing, so argon2 runs once
and every timed request takes the verification cache (the database row is
still read on every request, as for the others).  Each figure is the median
µs per request over interleaved rounds in this one run; "added" is the
median over rounds of a variant's time less the baseline's in the same round.
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import sys
import tempfile
import types
from collections.abc import Callable
from typing import Any

import django
from django.conf import settings

sys.path.insert(0, os.path.dirname(__file__))
from _util import paired_samples, print_table

BASELINE = "AllowAny (no authentication)"
THEIRS = "djangorestframework-api-key HasAPIKey"
KNOX = "django-rest-knox TokenAuthentication"
OURS_DRF = "ours: APIKeyAuthentication (DRF)"
OURS_MIDDLEWARE = "ours: APIKeyMiddleware"
TARGET = 0.25


def configure(database: str) -> None:
    urls = types.ModuleType("bench_django_urls")
    sys.modules[urls.__name__] = urls
    settings.configure(
        DEBUG=False,
        SECRET_KEY="benchmark-only",
        ALLOWED_HOSTS=["testserver"],
        ROOT_URLCONF=urls.__name__,
        USE_TZ=True,
        INSTALLED_APPS=[
            "django.contrib.contenttypes",
            "django.contrib.auth",
            "rest_framework",
            "rest_framework_api_key",
            "knox",
            "aqnt_auth.adapters.django",
        ],
        MIDDLEWARE=[],
        DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": database,
                               "CONN_MAX_AGE": None}},
        DEFAULT_AUTO_FIELD="django.db.models.BigAutoField",
        REST_FRAMEWORK={
            "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
            "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
            "UNAUTHENTICATED_USER": None,
        },
        # Usage counts are written every 10 s by a background thread, as in
        # production; a long interval keeps that write out of the timed loop.
        AQNT_AUTH={"USAGE_FLUSH_INTERVAL": 3600.0},
    )
    django.setup()

    from knox.auth import TokenAuthentication  # type: ignore[import-untyped]
    from rest_framework.permissions import AllowAny, IsAuthenticated
    from rest_framework.request import Request
    from rest_framework.response import Response
    from rest_framework.views import APIView
    from rest_framework_api_key.permissions import HasAPIKey

    from aqnt_auth.adapters.django.rest_framework import APIKeyAuthentication

    def view(authentication: list[Any], permission: list[Any]) -> Any:
        class OK(APIView):
            authentication_classes = authentication
            permission_classes = permission

            def get(self, request: Request) -> Response:
                return Response({"ok": True})

        return OK.as_view()

    from django.urls import path

    urls.urlpatterns = [  # type: ignore[attr-defined]
        path("allow-any", view([], [AllowAny])),
        path("api-key", view([], [HasAPIKey])),
        path("knox", view([TokenAuthentication], [IsAuthenticated])),
        path("ours", view([APIKeyAuthentication], [IsAuthenticated])),
    ]


def handler(middleware: list[str]) -> Any:
    from django.core.handlers.wsgi import WSGIHandler
    from django.test.utils import override_settings

    # The middleware chain is built once, when the handler is created.
    with override_settings(MIDDLEWARE=middleware):
        return WSGIHandler()


def request(app: Any, path: str, authorization: str) -> Callable[[], object]:
    """One full request through the handler, closed as a server would."""
    environ = {
        "REQUEST_METHOD": "GET",
        "PATH_INFO": path,
        "SCRIPT_NAME": "",
        "QUERY_STRING": "",
        "SERVER_NAME": "testserver",
        "SERVER_PORT": "80",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "HTTP_HOST": "testserver",
        "HTTP_AUTHORIZATION": authorization,
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(),
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": False,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
        "wsgi.version": (1, 0),
    }

    def start_response(status: str, headers: list[tuple[str, str]], *exc: Any) -> None:
        if not status.startswith("200"):
            raise AssertionError(f"{path}: {status}")

    def call() -> object:
        response = app(dict(environ), start_response)
        b"".join(response)
        response.close()  # request_finished: what Django does at the end of a request
        return response

    return call


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--repeats", type=int, default=21, help="interleaved rounds")
    parser.add_argument("--number", type=int, default=300, help="requests per timed pass")
    args = parser.parse_args()

    configure(os.path.join(tempfile.mkdtemp(), "bench.sqlite3"))
    from django.contrib.auth.models import User
    from django.core.management import call_command
    from knox.models import AuthToken  # type: ignore[import-untyped]
    from rest_framework_api_key.models import APIKey as TheirAPIKey

    from aqnt_auth import KeyManager
    from aqnt_auth.adapters.django import get_authenticator

    call_command("migrate", verbosity=0)
    _, their_key = TheirAPIKey.objects.create_key(name="bench")
    _, knox_token = AuthToken.objects.create(User.objects.create_user("bench"))
    # The adapter's own store and the default hasher (argon2id, OWASP profile).
    our_key = KeyManager(get_authenticator().store).create("bench").key

    plain = handler([])
    guarded = handler(["aqnt_auth.adapters.django.APIKeyMiddleware"])
    calls = {
        BASELINE: request(plain, "/allow-any", f"Bearer {our_key}"),
        THEIRS: request(plain, "/api-key", f"Api-Key {their_key}"),
        KNOX: request(plain, "/knox", f"Token {knox_token}"),
        OURS_DRF: request(plain, "/ours", f"Bearer {our_key}"),
        OURS_MIDDLEWARE: request(guarded, "/allow-any", f"Bearer {our_key}"),
    }
    for call in calls.values():
        call()  # warm: argon2 runs here, once
    samples = paired_samples(calls, args.repeats, args.number)
    get_authenticator().close()

    base = samples[BASELINE]
    added = {name: statistics.median(a - b for a, b in zip(values, base, strict=True))
             for name, values in samples.items()}
    rows = [("case", "median µs", "added µs", "added / api-key's")]
    for name, values in samples.items():
        extra = ("-", "-") if name == BASELINE else (
            f"{added[name]:.1f}", f"{added[name] / added[THEIRS]:.2f}")
        rows.append((name, f"{statistics.median(values):.1f}", *extra))
    print_table(
        f"DRF APIView through WSGIHandler, SQLite, warm keys; median of {args.repeats} "
        f"interleaved rounds (each the best of 3 passes of {args.number} requests)",
        rows,
    )
    for name in (OURS_DRF, OURS_MIDDLEWARE):
        ratio = added[name] / added[THEIRS]
        print(f"  target {name}: added <= {TARGET} x api-key's added: {ratio:.2f} "
              f"{'MET' if ratio <= TARGET else 'MISSED'}")


if __name__ == "__main__":
    main()
