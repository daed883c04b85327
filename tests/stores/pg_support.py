"""PostgreSQL for the SQL store's tests: a private schema per test run.

Every run works in its own schema ``aqnt_test_<random>`` (selected through
the URL's ``options=-csearch_path=...``, so subprocesses and the CLI see the
same tables) and its own NOTIFY channel, and drops the schema at the end:
runs, and other suites using database ``test``, never see each other's keys.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from urllib.parse import quote

import psycopg
import pytest

from tests.conftest import require_service

PG_HOST = "127.0.0.1"
PG_PORT = 5432
PG_DATABASE = "test"
PG_USERS = ("postgres", "root")


@dataclass(frozen=True)
class PGSchema:
    """A private schema in database ``test``, and how to reach it."""

    user: str
    name: str
    host: str = PG_HOST
    port: int = PG_PORT

    @property
    def conninfo(self) -> str:
        return f"host={self.host} port={self.port} dbname={PG_DATABASE} user={self.user}"

    def url(self, host: str | None = None, port: int | None = None) -> str:
        """A store URL whose connections use this schema (optionally via a proxy)."""
        options = quote(f"-csearch_path={self.name}", safe="")
        return (f"postgresql+psycopg://{self.user}@{host or self.host}:{port or self.port}/"
                f"{PG_DATABASE}?options={options}")

    def execute(self, statement: str, params: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
        """Run one statement in autocommit, inside the schema; the rows, if any."""
        with psycopg.connect(self.conninfo, autocommit=True,
                             options=f"-csearch_path={self.name}") as conn:
            cur = conn.execute(statement.encode(), params)
            return cur.fetchall() if cur.description else []

    def reset(self) -> None:
        """Empty the key table, its audit log and its usage history (if the
        store has created them)."""
        self.execute("DO $$ BEGIN IF to_regclass('aqnt_api_keys') IS NOT NULL THEN "
                     "TRUNCATE aqnt_api_keys; END IF; "
                     "IF to_regclass('aqnt_api_keys_audit') IS NOT NULL THEN "
                     "TRUNCATE aqnt_api_keys_audit; END IF; "
                     "IF to_regclass('aqnt_api_keys_usage') IS NOT NULL THEN "
                     "TRUNCATE aqnt_api_keys_usage; END IF; END $$")


def _working_user() -> str:
    errors = []
    for user in PG_USERS:
        try:
            with psycopg.connect(f"host={PG_HOST} port={PG_PORT} dbname={PG_DATABASE} "
                                 f"user={user} connect_timeout=3"):
                return user
        except psycopg.Error as exc:
            errors.append(f"{user}: {exc}")
    pytest.fail(f"cannot log in to PostgreSQL database {PG_DATABASE!r}: {errors}")


def pg_schema_fixture() -> Iterator[PGSchema]:
    """Body of the session fixture: create the schema, drop it at the end."""
    require_service("PostgreSQL", PG_HOST, PG_PORT)
    schema = PGSchema(_working_user(), f"aqnt_test_{secrets.token_hex(4)}")
    with psycopg.connect(schema.conninfo, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema.name}".encode())
    try:
        yield schema
    finally:
        with psycopg.connect(schema.conninfo, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema.name} CASCADE".encode())


def wait_until(condition: Callable[[], bool], timeout: float = 10.0,
               what: str = "condition") -> None:
    """Poll *condition* until it holds; fail the test after *timeout* seconds.

    The timeout only keeps a broken run from hanging: the tests assert
    outcomes, never durations.
    """
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.01)
