"""Usage history adds up exactly across processes (#14): several processes,
each with its own authenticator and store, make real requests of every
outcome and flush concurrently (every 10 ms, and at close); the stored
counts are the exact sums, on an SQLite file, on PostgreSQL (the SQL store,
in a private schema) and on Django's store (an SQLite file, and PostgreSQL)."""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from aqnt_auth import AQNTError, Argon2Hasher, Authenticator, KeyManager
from aqnt_auth._outcomes import NO_KEY
from aqnt_auth._stores._protocol import KeyStore
from tests.forged import unknown_id, wrong_secret

from .pg_support import PGSchema, pg_schema_fixture

PROCESSES = 4
#: Requests per process, by outcome.
PER_PROCESS = {"valid": 60, "invalid_secret": 7, "revoked": 5, "unknown_key": 4,
               "malformed": 3, "missing": 2}


@pytest.fixture(scope="module")
def pg() -> Iterator[PGSchema]:
    yield from pg_schema_fixture()


def _django(database: str) -> None:
    os.environ["DJANGO_SETTINGS_MODULE"] = "tests.adapters.django.server_settings"
    if database.startswith("pg:"):
        os.environ["AQNT_TEST_PG_SCHEMA"] = database[3:]
        os.environ.setdefault("AQNT_TEST_PG_USER", _pg_user())
    else:
        os.environ["AQNT_TEST_DATABASE"] = database
    import django

    django.setup()


def _pg_user() -> str:
    from .pg_support import _working_user

    return _working_user()


def _store(kind: str, target: str) -> KeyStore | str:
    if kind == "django":
        _django(target)
        from aqnt_auth.adapters.django.store import DjangoKeyStore

        return DjangoKeyStore()
    return target  # a store URL


def _create_keys(kind: str, target: str, out: multiprocessing.Queue[tuple[str, ...]]) -> None:
    store = _store(kind, target)
    if kind == "django":
        from django.core.management import call_command

        call_command("migrate", verbosity=0)
    keys = KeyManager(store, hasher=Argon2Hasher("cheapest"))
    good, revoked = keys.create("busy"), keys.create("revoked")
    keys.revoke(revoked.record.id)
    out.put((good.key, good.record.id, revoked.key, revoked.record.id))


def _worker(kind: str, target: str, n: int, good: str, revoked: str, start: Any) -> None:
    headers = {"valid": f"Bearer {good}", "invalid_secret": f"Bearer {wrong_secret(good)}",
               "revoked": f"Bearer {revoked}", "unknown_key": f"Bearer {unknown_id(good)}",
               "malformed": "Bearer sk_live_not-a-key", "missing": None}
    with Authenticator(_store(kind, target), hashers=[Argon2Hasher("cheapest")],
                       rate_limit=None, usage_flush_interval=0.01) as auth:
        start.wait()
        for outcome, count in PER_PROCESS.items():
            for i in range(count):
                try:
                    auth.authenticate(headers[outcome], method="GET", path=f"/p{i % 3}",
                                      client=f"192.0.2.{n}", user_agent=f"worker/{n}")
                except AQNTError:
                    assert outcome != "valid"
                else:
                    assert outcome == "valid"


def _race(kind: str, target: str) -> tuple[str, str]:
    ctx = multiprocessing.get_context("spawn")
    out: multiprocessing.Queue[tuple[str, ...]] = ctx.Queue()
    setup = ctx.Process(target=_create_keys, args=(kind, target, out))
    setup.start()
    good, good_id, revoked, revoked_id = out.get(timeout=120)
    setup.join(60)
    start = ctx.Barrier(PROCESSES)
    procs = [ctx.Process(target=_worker, args=(kind, target, n, good, revoked, start))
             for n in range(PROCESSES)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(120)
        assert proc.exitcode == 0
    return good_id, revoked_id


def _check(store: Any, good_id: str, revoked_id: str) -> None:
    rows = store.usage_rows(since=0, until=2**40)
    totals: dict[str, dict[str, int]] = {}
    for row in rows:
        counts = totals.setdefault(row.key_id, {})
        for outcome, n in row.counts.items():
            counts[outcome] = counts.get(outcome, 0) + n
    p = PROCESSES
    assert totals == {
        good_id: {"valid": p * PER_PROCESS["valid"],
                  "invalid_secret": p * PER_PROCESS["invalid_secret"]},
        revoked_id: {"revoked": p * PER_PROCESS["revoked"]},
        NO_KEY: {"unknown_key": p * PER_PROCESS["unknown_key"],
                 "malformed": p * PER_PROCESS["malformed"],
                 "missing": p * PER_PROCESS["missing"]},
    }
    paths: dict[str, int] = {}
    for row in rows:
        if row.key_id == good_id:
            for path, n in row.paths.items():
                paths[path] = paths.get(path, 0) + n
    assert paths == {"/p0": 80, "/p1": 80, "/p2": 80}
    assert max(row.clients for row in rows if row.key_id == good_id) >= 1
    assert store.get(good_id).usage_count == p * PER_PROCESS["valid"]


def test_sqlite_file(tmp_path: Path) -> None:
    """Processes sharing an SQLite file add up exactly."""
    url = f"sqlite:///{tmp_path / 'keys.db'}"
    good_id, revoked_id = _race("sqlite", url)
    with KeyManager(url) as keys:
        _check(keys.store, good_id, revoked_id)


def test_postgresql(pg: PGSchema) -> None:
    """Processes sharing PostgreSQL tables add up exactly."""
    pg.reset()
    good_id, revoked_id = _race("sql", pg.url())
    with KeyManager(pg.url()) as keys:
        _check(keys.store, good_id, revoked_id)


def _check_django(database: str, good_id: str, revoked_id: str,
                  out: multiprocessing.Queue[str]) -> None:
    _django(database)
    from aqnt_auth.adapters.django.store import DjangoKeyStore

    _check(DjangoKeyStore(), good_id, revoked_id)
    out.put("ok")


def _django_race(database: str) -> None:
    good_id, revoked_id = _race("django", database)
    ctx = multiprocessing.get_context("spawn")
    out: multiprocessing.Queue[str] = ctx.Queue()
    check = ctx.Process(target=_check_django, args=(database, good_id, revoked_id, out))
    check.start()
    check.join(120)
    assert check.exitcode == 0
    assert out.get(timeout=5) == "ok"


def test_django_sqlite_file(tmp_path: Path) -> None:
    """Processes on Django's store, sharing an SQLite file, add up exactly."""
    _django_race(str(tmp_path / "django.db"))


def test_django_postgresql(pg: PGSchema) -> None:
    """Processes on Django's store, sharing PostgreSQL, add up exactly."""
    schema = f"{pg.name}_dj"  # Django's tables, beside the SQL store's
    with psycopg.connect(pg.conninfo, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}".encode())
    try:
        _django_race(f"pg:{schema}")
    finally:
        with psycopg.connect(pg.conninfo, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE".encode())
