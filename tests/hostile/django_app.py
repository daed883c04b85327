"""URLs and views of the Django middleware's driver: ``/health`` and a catch-all."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import URLPattern, path, re_path

from .driver import BOOM, Recorder

#: Set by the driver for the duration of a test.
RECORD: list[Recorder] = []


def health(request: HttpRequest) -> HttpResponse:
    RECORD[-1]("health", request.api_key)  # type: ignore[attr-defined]
    return HttpResponse("ok", content_type="text/plain")


def boom(request: HttpRequest) -> HttpResponse:
    RECORD[-1]("boom", request.api_key)  # type: ignore[attr-defined]
    raise RuntimeError(BOOM)


def protected(request: HttpRequest) -> HttpResponse:
    RECORD[-1]("protected", request.api_key)  # type: ignore[attr-defined]
    return JsonResponse({"ok": True})


urlpatterns: list[URLPattern] = [
    path("health", health),
    path("boom", boom),
    # (?s): even a path with a newline reaches the protected view.
    re_path(r"(?s)^.*$", protected),
]
