"""Settings of the end-to-end run: the test settings on an SQLite file (or, with
``AQNT_TEST_PG_SCHEMA``, on PostgreSQL in that schema)."""

from __future__ import annotations

import os

from aqnt_auth import Argon2Hasher

from .settings import *  # noqa: F403
from .settings import DATABASES

DATABASES.clear()
if os.environ.get("AQNT_TEST_PG_SCHEMA"):
    # PostgreSQL database "test", in a private schema (the multi-process tests).
    DATABASES["default"] = {
        "ENGINE": "django.db.backends.postgresql",
        "HOST": os.environ.get("AQNT_TEST_PG_HOST", "127.0.0.1"),
        "PORT": os.environ.get("AQNT_TEST_PG_PORT", "5432"),
        "NAME": "test",
        "USER": os.environ.get("AQNT_TEST_PG_USER", "postgres"),
        "OPTIONS": {"options": f"-c search_path={os.environ['AQNT_TEST_PG_SCHEMA']}"},
    }
else:
    DATABASES["default"] = {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ["AQNT_TEST_DATABASE"],
    }
AQNT_AUTH = {
    "EXEMPT_PATHS": ["/health"],
    "HASHER": Argon2Hasher("cheapest"),
    "HASHERS": [Argon2Hasher("cheapest")],
    "USAGE_FLUSH_INTERVAL": 0.2,
}
