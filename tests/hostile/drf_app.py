"""URLs and views of the DRF driver: an open ``/health`` and a protected catch-all.

The DRF driver runs without the middleware: the authentication class alone
protects the catch-all view, whose handlers cover every method.
"""

from __future__ import annotations

from typing import Any

from django.urls import URLPattern, path, re_path
from rest_framework.permissions import AllowAny, IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from aqnt_auth.adapters.django.rest_framework import APIKeyAuthentication

from .django_app import RECORD
from .driver import BOOM


class Health(APIView):
    authentication_classes = ()
    permission_classes = (AllowAny,)

    def get(self, request: Request) -> Response:
        RECORD[-1]("health", request.auth)
        return Response("ok")


class Boom(APIView):
    authentication_classes = (APIKeyAuthentication,)
    permission_classes = (IsAuthenticated,)

    def get(self, request: Request) -> Response:
        RECORD[-1]("boom", request.auth)
        raise RuntimeError(BOOM)


class Protected(APIView):
    authentication_classes = (APIKeyAuthentication,)
    permission_classes = (IsAuthenticated,)

    def handle(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        RECORD[-1]("protected", request.auth)
        return Response({"ok": True})

    get = post = put = patch = delete = options = trace = handle


urlpatterns: list[URLPattern] = [
    path("health", Health.as_view()),
    path("boom", Boom.as_view()),
    re_path(r"(?s)^.*$", Protected.as_view()),
]
