"""Helpers of the Django adapter's tests."""

from __future__ import annotations

import asyncio
from typing import Any, Final

import pytest
from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import connections
from django.http import HttpResponseBase

from aqnt_auth import Argon2Hasher, IssuedKey, KeyManager, checksum
from aqnt_auth.adapters.django.store import DjangoKeyStore
from tests.conftest import require_service

from .settings import PG_HOST, PG_PORT

CHECKSUM_LENGTH: Final = 6

def require_postgres() -> None:
    """Skip the calling test where PostgreSQL is absent (in CI the alias is
    always configured, so a missing server fails the database setup instead)."""
    require_service("PostgreSQL", PG_HOST, PG_PORT)


#: Only the key table is emptied after a transactional test: flushing every
#: installed app's tables costs PostgreSQL a few hundred milliseconds a test.
STORE_ONLY: Final = ["aqnt_auth.adapters.django"]


def _postgres_db(transaction: bool, available_apps: list[str] | None
                 ) -> pytest.MarkDecorator:
    return pytest.mark.django_db(transaction=transaction, databases=["default", "postgres"],
                                 available_apps=available_apps)


def postgres_mark(*, transaction: bool = False, available_apps: list[str] | None = None
                  ) -> pytest.MarkDecorator:
    """The mark of a test class or function on the ``postgres`` alias: its
    database, or ``require_postgres`` where the server is absent."""
    if "postgres" in settings.DATABASES:
        return _postgres_db(transaction, available_apps)
    return pytest.mark.usefixtures("_require_postgres")


def on_databases(*, transaction: bool = False, available_apps: list[str] | None = None
                 ) -> list[Any]:
    """``parametrize("alias", ...)`` values: SQLite, and PostgreSQL (which the
    conftest skips, or fails in CI, where the server is absent)."""
    postgres = ((_postgres_db(transaction, available_apps),)
                if "postgres" in settings.DATABASES else ())
    return [
        pytest.param("default", marks=pytest.mark.django_db(
            transaction=transaction, available_apps=available_apps), id="sqlite"),
        pytest.param("postgres", marks=postgres, id="postgres"),
    ]


def auth_settings(**changes: Any) -> dict[str, Any]:
    """The tests' ``AQNT_AUTH`` with *changes*, for ``override_settings``."""
    return {**settings.AQNT_AUTH, **changes}


def issue(alias: str = "default", name: str = "Test key", **options: object) -> IssuedKey:
    """A new key in database *alias*, hashed with the cheapest argon2 profile."""
    keys = KeyManager(DjangoKeyStore(using=alias), hasher=Argon2Hasher("cheapest"))
    return keys.create(name, **options)  # type: ignore[arg-type]


def wrong_secret(key: str) -> str:
    """*key* with another secret but a valid checksum: right id, wrong key."""
    head = key[:-CHECKSUM_LENGTH]
    flipped = head[:-1] + ("A" if head[-1] != "A" else "B")
    return flipped + checksum(flipped)


def bearer(key: str) -> dict[str, str]:
    """Request headers sending *key* as a Bearer credential."""
    return {"Authorization": f"Bearer {key}"}


def assert_error(response: HttpResponseBase, status: int, body: bytes,
                 challenge: str | None = None) -> None:
    """*response* is the core's error: status, exact body, JSON type, challenge."""
    assert response.status_code == status
    assert response.content == body  # type: ignore[attr-defined]
    assert response["Content-Type"] == "application/json"
    if challenge is None:
        assert "WWW-Authenticate" not in response
    else:
        assert response["WWW-Authenticate"] == challenge


def close_thread_connections() -> None:
    """Close the connections of asgiref's thread-sensitive worker thread, which
    ``sync_to_async`` runs on when called from a plain event loop; left open,
    they would keep PostgreSQL from dropping the test database."""
    asyncio.run(sync_to_async(connections.close_all, thread_sensitive=True)())
