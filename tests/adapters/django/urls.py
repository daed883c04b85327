"""URLs of the adapter's tests."""

from __future__ import annotations

from django.contrib import admin
from django.urls import URLPattern, URLResolver, include, path

from . import views

urlpatterns: list[URLPattern | URLResolver] = [
    path("admin/", admin.site.urls),
    path("keys-admin/", include("aqnt_auth.adapters.django.console")),
    path("health", views.health),
    path("v1/whoami", views.whoami),
    path("v1/async-whoami", views.async_whoami),
    path("v1/charges", views.charges),
    path("v1/charges/<str:charge_id>", views.charges),
    path("v1/boom", views.boom),
    path("v1/drf/whoami", views.DRFWhoAmI.as_view()),
    path("drf/whoami", views.DRFWhoAmI.as_view()),
    path("drf/charges", views.DRFCharges.as_view()),
    path("drf/refunds", views.DRFRefunds.as_view()),
    path("drf/open", views.DRFOpen.as_view()),
]
