"""Django for the hostile suite (its Django and DRF drivers), set up as the
Django adapter's own tests do: configured when pytest first collects this
directory, on the same test settings."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests import django_setup

django_setup.setup()


@pytest.fixture(scope="session", autouse=True)
def _block_database(django_db_blocker: object) -> Iterator[None]:
    # Only the Django drivers' tests, marked django_db, may use the database.
    with django_db_blocker.block():  # type: ignore[attr-defined]
        yield
