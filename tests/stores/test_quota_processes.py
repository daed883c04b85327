"""Quotas are exact across processes (#13): several processes, each with its
own authenticator and store, race real requests on one key, and together
admit exactly its quota, on an SQLite file, on PostgreSQL (the SQL store,
in a private schema) and on Django's store (an SQLite file, and PostgreSQL
in a private schema)."""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from aqnt_auth import Argon2Hasher, Authenticator, KeyManager, QuotaExceeded
from aqnt_auth._stores._protocol import KeyStore

from .pg_support import PGSchema, pg_schema_fixture

PROCESSES = 4
QUOTA = 60
#: Requests per process: together twice the quota.
REQUESTS = 2 * QUOTA // PROCESSES


@pytest.fixture(scope="module")
def pg() -> Iterator[PGSchema]:
    yield from pg_schema_fixture()


def _django(database: str) -> None:
    """Django set up on *database*: an SQLite file, or ``pg:<user>:<schema>``."""
    if database.startswith("pg:"):
        _, user, schema = database.split(":")
        os.environ["DJANGO_SETTINGS_MODULE"] = "tests.adapters.django.pg_process_settings"
        os.environ["AQNT_TEST_PG_USER"] = user
        os.environ["AQNT_TEST_PG_SCHEMA"] = schema
    else:
        os.environ["DJANGO_SETTINGS_MODULE"] = "tests.adapters.django.server_settings"
        os.environ["AQNT_TEST_DATABASE"] = database
    import django

    django.setup()


def _store(kind: str, target: str) -> KeyStore | str:
    if kind == "django":
        _django(target)
        from aqnt_auth.adapters.django.store import DjangoKeyStore

        return DjangoKeyStore()
    return target  # a store URL


def _create_django_key(database: str, out: multiprocessing.Queue[str]) -> None:
    _django(database)
    from django.core.management import call_command

    from aqnt_auth.adapters.django.store import DjangoKeyStore

    call_command("migrate", verbosity=0)
    keys = KeyManager(DjangoKeyStore(), hasher=Argon2Hasher("cheapest"))
    out.put(keys.create("shared", quota=QUOTA).key)


def _worker(kind: str, target: str, key: str, start: Any,
            out: multiprocessing.Queue[tuple[int, int]]) -> None:
    admitted = refused = 0
    with Authenticator(_store(kind, target), hashers=[Argon2Hasher("cheapest")],
                       rate_limit=None) as auth:
        auth.authenticate(f"Bearer {key}", method="HEAD")  # argon2 once, off the count
        admitted += 1
        start.wait()
        for _ in range(REQUESTS - 1):
            try:
                auth.authenticate(f"Bearer {key}")
            except QuotaExceeded:
                refused += 1
            else:
                admitted += 1
    out.put((admitted, refused))


def _race(kind: str, target: str, key: str) -> tuple[int, int]:
    ctx = multiprocessing.get_context("spawn")
    out: multiprocessing.Queue[tuple[int, int]] = ctx.Queue()
    start = ctx.Barrier(PROCESSES)
    procs = [ctx.Process(target=_worker, args=(kind, target, key, start, out))
             for _ in range(PROCESSES)]
    for proc in procs:
        proc.start()
    results = [out.get(timeout=120) for _ in procs]
    for proc in procs:
        proc.join(60)
        assert proc.exitcode == 0
    return sum(r[0] for r in results), sum(r[1] for r in results)


def test_sqlite_file(tmp_path: Path) -> None:
    """Processes sharing an SQLite file admit exactly the quota."""
    url = f"sqlite:///{tmp_path / 'keys.db'}"
    with KeyManager(url, hasher=Argon2Hasher("cheapest")) as keys:
        issued = keys.create("shared", quota=QUOTA)
        assert _race("sqlite", url, issued.key) == (QUOTA, PROCESSES * REQUESTS - QUOTA)
        assert keys.get(issued.record.id).quota_remaining == 0


def test_postgresql(pg: PGSchema) -> None:
    """Processes sharing a PostgreSQL table admit exactly the quota."""
    with KeyManager(pg.url(), hasher=Argon2Hasher("cheapest")) as keys:
        issued = keys.create("shared", quota=QUOTA, quota_refill=f"{QUOTA}/month")
        assert _race("sql", pg.url(), issued.key) == (QUOTA, PROCESSES * REQUESTS - QUOTA)
        assert keys.get(issued.record.id).quota_remaining == 0


def test_django_sqlite_file(tmp_path: Path) -> None:
    """Processes on Django's store, sharing an SQLite file, admit exactly the quota."""
    _django_race(str(tmp_path / "django.db"))


def test_django_postgresql(pg: PGSchema) -> None:
    """Processes on Django's store, sharing a PostgreSQL schema (migrated by
    the first), admit exactly the quota."""
    _django_race(f"pg:{pg.user}:{pg.name}")


def _django_race(database: str) -> None:
    ctx = multiprocessing.get_context("spawn")
    out: multiprocessing.Queue[str] = ctx.Queue()
    setup = ctx.Process(target=_create_django_key, args=(database, out))
    setup.start()
    key = out.get(timeout=120)
    setup.join(60)
    assert _race("django", database, key) == (QUOTA, PROCESSES * REQUESTS - QUOTA)
