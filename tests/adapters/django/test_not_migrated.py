"""A forgotten ``manage.py migrate``: the key table does not exist.

The command says "run manage.py migrate"; the middleware answers 503 as for
any database failure, and logs why once, not on every request.  The table is
made missing by pointing the model at a table no migration created, so the
database driver raises its own real error.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import DatabaseError, OperationalError
from django.test import Client

from aqnt_auth import KeyFormat
from aqnt_auth.adapters.django import store as django_store
from aqnt_auth.adapters.django.models import APIKey
from aqnt_auth.adapters.django.settings import reload
from tests import bodies

from ._support import assert_error, auth_settings, bearer, on_databases

MISSING = "aqnt_never_migrated"
FIX = f"the table {MISSING} does not exist: run manage.py migrate"


@pytest.fixture
def unmigrated(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(APIKey._meta, "db_table", MISSING)
    monkeypatch.setattr(django_store, "_missing_logged", set())
    reload()  # a new store, whose reads name the table anew
    yield
    monkeypatch.undo()
    reload()


@pytest.mark.parametrize("alias", on_databases(transaction=True))
def test_middleware_answers_503_and_logs_once(alias: str, unmigrated: None,
                                              caplog: pytest.LogCaptureFixture,
                                              settings: object) -> None:
    setattr(settings, "AQNT_AUTH", auth_settings(DATABASE=alias))  # noqa: B010
    caplog.set_level(logging.INFO)
    key = KeyFormat().generate("live").raw
    client = Client()
    for _ in range(3):
        assert_error(client.get("/v1/charges", headers=bearer(key)), 503, bodies.UNAVAILABLE)
    said = [r.getMessage() for r in caplog.records if r.name.startswith("aqnt_auth")]
    assert said == [f"{FIX}; until then every request that needs a key is answered 503"]


@pytest.mark.parametrize("args", [["list"], ["show", "3tHq0kR9xA2b"],
                                  ["create", "--name", "billing", "--hasher", "hmac"]])
@pytest.mark.django_db
def test_command_says_run_migrate(args: list[str], unmigrated: None,
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AQNT_AUTH_PEPPER", "p" * 32)
    with pytest.raises(CommandError) as info:
        call_command("aqnt_keys", *args)
    assert str(info.value) == FIX


@pytest.mark.parametrize("error", [OperationalError("database is locked"),
                                   DatabaseError("connection reset")])
def test_other_failures_are_not_mistaken_for_it(error: DatabaseError,
                                                caplog: pytest.LogCaptureFixture) -> None:
    """Any other database error keeps its own message, logged each time."""
    for _ in range(2):
        refusal = django_store._unavailable(error)
        assert "migrate" not in str(refusal)
    assert len([r for r in caplog.records if "unavailable" in r.getMessage()]) == 2
