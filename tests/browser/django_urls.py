"""The Django browser tests' URLs: the adapter tests' (the admin, the key
console under ``keys-admin/``, ``v1/whoami``) and ``_flush``, which writes
the buffered usage now, as the flush interval would a moment later."""

from __future__ import annotations

from django.http import HttpRequest, JsonResponse
from django.urls import URLPattern, URLResolver, path
from django.views.decorators.csrf import csrf_exempt

from aqnt_auth.adapters.django.settings import runtime
from tests.adapters.django.urls import urlpatterns as adapter_urls


@csrf_exempt
def flush(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"flushed": runtime().authenticator.flush_usage()})


urlpatterns: list[URLPattern | URLResolver] = [*adapter_urls, path("_flush", flush)]
