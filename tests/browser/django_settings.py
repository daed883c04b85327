"""The Django end-to-end settings (an SQLite file), with the admin's static
files served, so the browser shows the admin as users see it."""

from __future__ import annotations

from tests.adapters.django.server_settings import *  # noqa: F403
from tests.adapters.django.server_settings import AQNT_AUTH, INSTALLED_APPS

INSTALLED_APPS = [*INSTALLED_APPS, "django.contrib.staticfiles"]
STATIC_URL = "/static/"
# The key console (keys-admin/) signs its admins in itself; _flush is the tests'.
AQNT_AUTH = {**AQNT_AUTH, "EXEMPT_PATHS": ["/health", "/admin/*", "/static/*", "/keys-admin/*",
                                           "/_flush"]}
ROOT_URLCONF = "tests.browser.django_urls"
