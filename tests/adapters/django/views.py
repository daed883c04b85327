"""Views the adapter's tests call; each records that it ran in ``CALLS``."""

from __future__ import annotations

from typing import Any, ClassVar

from django.http import HttpRequest, JsonResponse
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from aqnt_auth import Principal
from aqnt_auth.adapters.django.rest_framework import HasScopes

#: Names of the views that ran, in order: error tests assert the view did not.
CALLS: list[str] = []


def _who(principal: Principal | None) -> dict[str, Any]:
    if principal is None:
        return {"api_key": None}
    return {"api_key": {"id": principal.id, "name": principal.name, "mode": principal.mode}}


def health(request: HttpRequest) -> JsonResponse:
    CALLS.append("health")
    return JsonResponse({"ok": True, **_who(request.api_key)})  # type: ignore[attr-defined]


def whoami(request: HttpRequest) -> JsonResponse:
    CALLS.append("whoami")
    return JsonResponse(_who(request.api_key))  # type: ignore[attr-defined]


async def async_whoami(request: HttpRequest) -> JsonResponse:
    CALLS.append("async_whoami")
    return JsonResponse(_who(request.api_key))  # type: ignore[attr-defined]


def charges(request: HttpRequest, charge_id: str | None = None) -> JsonResponse:
    CALLS.append(f"charges {request.method}")
    return JsonResponse({"created": request.method == "POST"}, status=201)


def boom(request: HttpRequest) -> JsonResponse:
    CALLS.append("boom")
    raise RuntimeError("the view failed")


class DRFWhoAmI(APIView):
    def get(self, request: Request) -> Response:
        CALLS.append("drf_whoami")
        principal = request.auth if isinstance(request.auth, Principal) else None
        return Response({"user": str(request.user), **_who(principal)})

    def post(self, request: Request) -> Response:
        CALLS.append("drf_whoami POST")
        return Response({"created": True}, status=201)


class DRFCharges(APIView):
    permission_classes = [HasScopes]  # noqa: RUF012 - DRF declares it per instance
    required_scopes: ClassVar[list[str]] = ["charges:write"]

    def get(self, request: Request) -> Response:
        CALLS.append("drf_charges")
        return Response({"ok": True})


class DRFRefunds(APIView):
    permission_classes = [HasScopes.of("refunds:write")]  # noqa: RUF012

    def get(self, request: Request) -> Response:
        CALLS.append("drf_refunds")
        return Response({"ok": True})


class DRFOpen(APIView):
    permission_classes = [AllowAny]  # noqa: RUF012

    def get(self, request: Request) -> Response:
        CALLS.append("drf_open")
        return Response({"authenticated": request.auth is not None})
