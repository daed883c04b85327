"""Django settings for the adapter's tests (and for mypy's django-stubs plugin).

``default`` is SQLite; ``postgres`` is the real server on 127.0.0.1:5432
(trust auth), added only where it answers.  Where it does not, the tests on
it skip, or fail when ``CI`` is set (``tests.conftest.require_service``).
Django creates its own test database on it, named per process, so
concurrent runs do not collide.
"""

from __future__ import annotations

import os
import socket

from aqnt_auth import Argon2Hasher


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


PG_HOST = "127.0.0.1"
PG_PORT = int(os.environ.get("AQNT_TEST_PG_PORT", "5432"))
PG_AVAILABLE = _reachable(PG_HOST, PG_PORT)

SECRET_KEY = "tests-only-not-a-secret"
DEBUG = False
ALLOWED_HOSTS = ["testserver", "127.0.0.1", "localhost"]
USE_TZ = True
TIME_ZONE = "UTC"
ROOT_URLCONF = "tests.adapters.django.urls"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "rest_framework",
    "aqnt_auth.adapters.django",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "aqnt_auth.adapters.django.APIKeyMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES: dict[str, dict[str, object]] = {
    "default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"},
}
if PG_AVAILABLE:
    DATABASES["postgres"] = {
        "ENGINE": "django.db.backends.postgresql",
        "HOST": PG_HOST,
        "PORT": PG_PORT,
        "NAME": "test",
        "USER": os.environ.get("AQNT_TEST_PG_USER", "postgres"),
        "TEST": {"NAME": f"test_aqnt_django_{os.getpid()}"},
    }

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

AQNT_AUTH = {
    # The key console signs its admins in itself (README, "Key console").
    "EXEMPT_PATHS": ["/health", "/admin/*", "/drf/*", "/keys-admin/*"],
    "HASHERS": [Argon2Hasher("cheapest")],
    "HASHER": Argon2Hasher("cheapest"),
    # Counts are flushed by the tests themselves, on the test's connection.
    "USAGE_FLUSH_INTERVAL": 3600.0,
}

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "aqnt_auth.adapters.django.rest_framework.APIKeyAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "UNAUTHENTICATED_USER": None,
}
