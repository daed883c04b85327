"""``aqnt-auth store init``: create and check the store's schema, or print its DDL."""

from __future__ import annotations

import io
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from aqnt_auth._cli import main
from aqnt_auth._stores._sql_ddl import SCHEMA, SCHEMA_VERSION

from .pg_support import PGSchema, pg_schema_fixture
from .test_sqlalchemy_store import _downgrade_to_v1


@pytest.fixture(scope="module")
def pg() -> Iterator[PGSchema]:
    yield from pg_schema_fixture()


def _run(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    status = main(list(argv), out)
    return status, out.getvalue()


def test_sql_prints_the_documented_ddl() -> None:
    """--sql prints SCHEMA and touches no database."""
    assert _run("store", "init", "--sql") == (0, SCHEMA)


def test_init_creates_the_tables_once(pg: PGSchema) -> None:
    """On an empty schema the tables appear; running it again changes nothing."""
    assert pg.execute("SELECT to_regclass('aqnt_api_keys')") == [(None,)]
    status, out = _run("store", "init", "--store", pg.url())
    assert status == 0
    assert out.startswith("Store SQLAlchemyKeyStore('postgresql+psycopg://")
    assert out.endswith(f"is ready: schema version {SCHEMA_VERSION}.\n")
    assert pg.execute("SELECT version FROM aqnt_auth_schema") == [(SCHEMA_VERSION,)]
    assert _run("store", "init", "--store", pg.url())[0] == 0
    assert pg.execute("SELECT count(*) FROM aqnt_auth_schema") == [(1,)]


def test_init_upgrades_a_version_1_table(pg: PGSchema) -> None:
    """`store init` is the upgrade the refusal of an older table names."""
    assert _run("store", "init", "--store", pg.url())[0] == 0
    _downgrade_to_v1(pg.execute, "aqnt_api_keys")
    status, out = _run("store", "init", "--store", pg.url())
    assert status == 0
    assert out.endswith(f"is ready: schema version {SCHEMA_VERSION}.\n")
    columns = pg.execute("SELECT column_name FROM information_schema.columns "
                         "WHERE table_name = 'aqnt_api_keys' AND table_schema = %s", (pg.name,))
    assert ("allowed_ips",) in columns


def test_init_json(pg: PGSchema) -> None:
    status, out = _run("store", "init", "--store", pg.url(), "--json")
    assert status == 0
    assert f'"schema_version": {SCHEMA_VERSION}' in out


def test_init_on_an_embedded_store(tmp_path: Path) -> None:
    status, out = _run("store", "init", "--store", f"sqlite:///{tmp_path / 'keys.db'}")
    assert status == 0
    assert out == f"Store SQLiteKeyStore('{tmp_path / 'keys.db'}') is ready.\n"


def test_unreachable_database_is_one_line_on_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    """No traceback, no password, exit status 1."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    status, out = _run("store", "init", "--store",
                       f"postgresql://aqnt:hunter2@127.0.0.1:{port}/test")
    assert status == 1
    assert out == ""
    err = capsys.readouterr().err
    assert err.startswith("aqnt-auth: error: SQL store unavailable: ")
    assert err.count("\n") == 1
    assert "hunter2" not in err
