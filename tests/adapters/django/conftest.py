"""Django for this directory only (see :mod:`tests.django_setup`)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from django.conf import settings

from tests import django_setup

django_setup.setup()

from aqnt_auth.adapters.django.settings import reload  # noqa: E402

from ._support import require_postgres  # noqa: E402
from .views import CALLS  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def _block_database(django_db_blocker: object) -> Iterator[None]:
    # pytest-django blocks database access outside marked tests only when it
    # set Django up itself; do the same, so a forgotten mark fails loudly
    # instead of touching a real database.
    with django_db_blocker.block():  # type: ignore[attr-defined]
        yield


@pytest.fixture(autouse=True)
def _fresh_state() -> Iterator[None]:
    """Each test starts with no authenticator and no recorded view calls;
    closing the authenticator after it writes its usage counts while the
    test's database still exists."""
    reload()
    CALLS.clear()
    yield
    reload()


@pytest.fixture
def _require_postgres() -> None:
    require_postgres()


@pytest.fixture(autouse=True)
def _postgres_parameter(request: pytest.FixtureRequest) -> None:
    # A test parametrized on alias "postgres" carries no database mark where
    # the server is absent (see _support.on_databases): skip it, or fail in CI.
    callspec = getattr(request.node, "callspec", None)
    if callspec is not None and callspec.params.get("alias") == "postgres" and (
            "postgres" not in settings.DATABASES):
        require_postgres()
