"""Django on the tests' settings, for the test directories that need it.

Each such directory's conftest calls :func:`setup` when pytest first
collects it, rather than the pytest configuration naming
``DJANGO_SETTINGS_MODULE``: the rest of the suite must not pay for (or be
changed by) Django.  pytest-django then sees configured settings and
provides its database fixtures and marks.
"""

from __future__ import annotations

import os
from typing import Final

import django
from django.conf import settings

SETTINGS_MODULE: Final = "tests.adapters.django.settings"


def setup() -> None:
    """Configure Django with :data:`SETTINGS_MODULE` unless it already is, and set it up."""
    if not settings.configured:
        os.environ["DJANGO_SETTINGS_MODULE"] = SETTINGS_MODULE
    django.setup()
