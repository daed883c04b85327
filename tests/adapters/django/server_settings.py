"""Settings of the end-to-end run: the test settings on an SQLite file."""

from __future__ import annotations

import os

from aqnt_auth import Argon2Hasher

from .settings import *  # noqa: F403
from .settings import DATABASES

DATABASES.clear()
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
