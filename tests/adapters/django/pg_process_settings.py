"""Settings of separate processes on Django's PostgreSQL store: the test
settings, with the default database in a private schema of database ``test``
(``AQNT_TEST_PG_SCHEMA``, made and dropped by the test)."""

from __future__ import annotations

import os

from .settings import *  # noqa: F403
from .settings import DATABASES, PG_HOST, PG_PORT

DATABASES.clear()
DATABASES["default"] = {
    "ENGINE": "django.db.backends.postgresql",
    "HOST": PG_HOST,
    "PORT": PG_PORT,
    "NAME": "test",
    "USER": os.environ["AQNT_TEST_PG_USER"],
    "OPTIONS": {"options": f"-c search_path={os.environ['AQNT_TEST_PG_SCHEMA']}"},
}
