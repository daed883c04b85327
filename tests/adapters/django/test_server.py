"""End to end: Django under uvicorn on 127.0.0.1, driven by httpx, keys managed
with ``python -m django aqnt_keys`` against the same database file."""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from aqnt_auth._audit import default_actor
from aqnt_auth._stores._sqlite_watch import QUOTA_COUNTER_COLUMNS, UNWATCHED_COLUMNS
from tests import bodies

ROOT = Path(__file__).resolve().parents[3]
#: The change-log watcher's default lease (see DjangoKeyStore).
LEASE = 0.02

pytestmark = pytest.mark.slow


def _env(database: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    env.update(
        DJANGO_SETTINGS_MODULE="tests.adapters.django.server_settings",
        AQNT_TEST_DATABASE=str(database),
        PYTHONPATH=str(ROOT),
    )
    return env


def manage(env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "django", *args], env=env, cwd=ROOT, capture_output=True,
        text=True, timeout=60, check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, dict[str, str]]]:
    env = _env(tmp_path_factory.mktemp("django-e2e") / "db.sqlite3")
    manage(env, "migrate", "--noinput", "-v", "0")
    # The test binds the socket and hands it over: no port race.
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    port = listener.getsockname()[1]
    process = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "tests.adapters.django.asgi:application",
         "--fd", str(listener.fileno()), "--log-level", "warning", "--lifespan", "off"],
        env=env, cwd=ROOT, pass_fds=[listener.fileno()],
    )
    listener.close()
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(f"{base}/health", timeout=5)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise
                time.sleep(0.1)
        yield base, env
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_keys_over_the_wire(server: tuple[str, dict[str, str]]) -> None:
    """A key made with manage.py works on sync and async views; missing and
    invalid keys get the exact answers; a revocation applies at once."""
    base, env = server
    key = json.loads(manage(env, "aqnt_keys", "create", "--name", "e2e", "--json"))["key"]
    auth = {"Authorization": f"Bearer {key}"}
    with httpx.Client(base_url=base, timeout=10) as client:
        for path in ("/v1/whoami", "/v1/async-whoami"):
            ok = client.get(path, headers=auth)
            assert ok.status_code == 200
            assert ok.json()["api_key"]["name"] == "e2e"

        missing = client.get("/v1/whoami")
        assert missing.status_code == 401
        assert missing.content == bodies.MISSING
        assert missing.headers["content-type"] == "application/json"
        assert missing.headers["www-authenticate"] == bodies.CHALLENGE
        assert missing.headers["content-length"] == str(len(bodies.MISSING))

        health = client.get("/health")
        assert health.json() == {"ok": True, "api_key": None}

        key_id = key[8:20]
        manage(env, "aqnt_keys", "revoke", key_id)
        # Another process's change reaches the server's record cache within
        # the change-log watcher's lease, a hard bound.
        time.sleep(LEASE)
        revoked = client.get("/v1/async-whoami", headers=auth)
        assert revoked.status_code == 401
        assert revoked.content == bodies.REVOKED
        assert revoked.headers["www-authenticate"] == bodies.INVALID_CHALLENGE

    # The server flushes usage counts every 0.2 s: the two good requests.
    deadline = time.monotonic() + 10
    while True:
        listed = json.loads(manage(env, "aqnt_keys", "list", "--all", "--json"))["keys"]
        if listed[0]["usage_count"] == 2 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert listed[0]["usage_count"] == 2
    assert listed[0]["status"] == "revoked"


def test_hand_written_sql_reaches_the_cache(server: tuple[str, dict[str, str]]) -> None:
    """On SQLite the server caches records; a change made with plain SQL on
    the file (as the admin or a script would) is seen through the triggers
    of migration 0002, and usage flushes are not taken for changes."""
    base, env = server
    key = json.loads(manage(env, "aqnt_keys", "create", "--name", "sql", "--json"))["key"]
    auth = {"Authorization": f"Bearer {key}"}
    with httpx.Client(base_url=base, timeout=10) as client:
        for _ in range(3):
            assert client.get("/v1/whoami", headers=auth).status_code == 200
        with sqlite3.connect(env["AQNT_TEST_DATABASE"]) as conn:
            deadline = time.monotonic() + 10
            while conn.execute("SELECT usage_count FROM aqnt_auth_apikey WHERE id = ?",
                               (key[8:20],)).fetchone() != (3,):
                assert time.monotonic() < deadline, "usage never flushed"
                time.sleep(0.05)
            logged = conn.execute("SELECT COUNT(*) FROM aqnt_auth_apikey_changes "
                                  "WHERE key_id = ?", (key[8:20],)).fetchone()
            conn.execute("UPDATE aqnt_auth_apikey SET expires_at = '2000-01-01 00:00:00' "
                         "WHERE id = ?", (key[8:20],))
        conn.close()
        assert logged == (1,)  # its creation only: the usage flushes logged nothing
        time.sleep(LEASE)
        expired = client.get("/v1/whoami", headers=auth)
        assert expired.status_code == 401
        assert expired.content == bodies.REVOKED


def test_migration_adds_the_change_log_on_sqlite(tmp_path: Path) -> None:
    """Migration 0002 logs every column but the usage ones, and unapplies."""
    env = _env(tmp_path / "db.sqlite3")
    manage(env, "migrate", "--noinput", "-v", "0")
    with sqlite3.connect(env["AQNT_TEST_DATABASE"]) as conn:
        (sql,) = conn.execute("SELECT sql FROM sqlite_master "
                              "WHERE name = 'aqnt_auth_apikey_changed'").fetchone()
        columns = [row[1] for row in conn.execute("PRAGMA table_info(aqnt_auth_apikey)")]
    conn.close()
    watched = sql.split("UPDATE OF", 1)[1].split(" ON ", 1)[0]
    assert {c.strip() for c in watched.split(",")} == (
        set(columns) - UNWATCHED_COLUMNS - QUOTA_COUNTER_COLUMNS)
    manage(env, "migrate", "aqnt_auth", "0001", "--noinput", "-v", "0")
    with sqlite3.connect(env["AQNT_TEST_DATABASE"]) as conn:
        left = conn.execute("SELECT name FROM sqlite_master WHERE name LIKE "
                            "'aqnt_auth_apikey_c%'").fetchall()
    conn.close()
    assert left == []


def test_migration_0003_adds_the_policies_and_keeps_keys(tmp_path: Path) -> None:
    """From 0002 with a key in the table: 0003 adds the policy columns with
    their defaults, keeps the key, and the rebuilt table's change-log trigger
    watches the new columns; unapplying 0003 keeps the change log."""
    env = _env(tmp_path / "db.sqlite3")
    manage(env, "migrate", "aqnt_auth", "0002", "--noinput", "-v", "0")
    with sqlite3.connect(env["AQNT_TEST_DATABASE"]) as conn:
        conn.execute(
            "INSERT INTO aqnt_auth_apikey (id, name, mode, prefix, hash, hint, created_at, "
            "usage_count, scopes, read_only, allowed_paths, metadata) VALUES ('k1', 'old', "
            "'live', 'sk', 'h', 'sk_live_...abcd', '2026-01-01 00:00:00', 3, '[]', 0, '[]', '{}')")
    conn.close()
    manage(env, "migrate", "--noinput", "-v", "0")
    with sqlite3.connect(env["AQNT_TEST_DATABASE"]) as conn:
        row = conn.execute("SELECT name, usage_count, disabled_at, rate_limits, "
                           "rate_limit_shared, quota_remaining, allowed_ips "
                           "FROM aqnt_auth_apikey WHERE id = 'k1'").fetchone()
        (sql,) = conn.execute("SELECT sql FROM sqlite_master "
                              "WHERE name = 'aqnt_auth_apikey_changed'").fetchone()
        (before,) = conn.execute("SELECT COUNT(*) FROM aqnt_auth_apikey_changes").fetchone()
        conn.execute("UPDATE aqnt_auth_apikey SET disabled_at = '2026-01-02 00:00:00'")
        (after,) = conn.execute("SELECT COUNT(*) FROM aqnt_auth_apikey_changes").fetchone()
    conn.close()
    assert row == ("old", 3, None, "[]", 0, None, "[]")
    assert "disabled_at" in sql
    assert "allowed_ips" in sql
    assert after == before + 1
    manage(env, "migrate", "aqnt_auth", "0002", "--noinput", "-v", "0")
    with sqlite3.connect(env["AQNT_TEST_DATABASE"]) as conn:
        names = {name for (name,) in conn.execute("SELECT name FROM sqlite_master")}
    conn.close()
    assert {"aqnt_auth_apikey_created", "aqnt_auth_apikey_changed",
            "aqnt_auth_apikey_deleted"} <= names


def test_migration_0004_adds_the_lineage_and_keeps_keys(tmp_path: Path) -> None:
    """From 0003 with a key in the table: 0004 adds the nullable lineage
    column, keeps the key, and the change-log triggers still fire."""
    env = _env(tmp_path / "db.sqlite3")
    manage(env, "migrate", "aqnt_auth", "0003", "--noinput", "-v", "0")
    with sqlite3.connect(env["AQNT_TEST_DATABASE"]) as conn:
        conn.execute(
            "INSERT INTO aqnt_auth_apikey (id, name, mode, prefix, hash, hint, created_at, "
            "usage_count, scopes, read_only, allowed_paths, metadata, rate_limits, "
            "rate_limit_shared, allowed_ips) VALUES ('k1', 'old', 'live', 'sk', 'h', "
            "'sk_live_...abcd', '2026-01-01 00:00:00', 3, '[]', 0, '[]', '{}', "
            "'[\"5/minute\"]', 0, '[]')")
    conn.close()
    manage(env, "migrate", "--noinput", "-v", "0")
    with sqlite3.connect(env["AQNT_TEST_DATABASE"]) as conn:
        row = conn.execute("SELECT name, usage_count, rate_limits, lineage_id "
                           "FROM aqnt_auth_apikey WHERE id = 'k1'").fetchone()
        (before,) = conn.execute("SELECT COUNT(*) FROM aqnt_auth_apikey_changes").fetchone()
        conn.execute("UPDATE aqnt_auth_apikey SET disabled_at = '2026-01-02 00:00:00'")
        (after,) = conn.execute("SELECT COUNT(*) FROM aqnt_auth_apikey_changes").fetchone()
    conn.close()
    assert row == ("old", 3, '["5/minute"]', None)
    assert after == before + 1
    manage(env, "migrate", "aqnt_auth", "0003", "--noinput", "-v", "0")
    with sqlite3.connect(env["AQNT_TEST_DATABASE"]) as conn:
        columns = [r[1] for r in conn.execute("PRAGMA table_info(aqnt_auth_apikey)")]
        names = {name for (name,) in conn.execute("SELECT name FROM sqlite_master")}
    conn.close()
    assert "lineage_id" not in columns
    assert {"aqnt_auth_apikey_created", "aqnt_auth_apikey_changed",
            "aqnt_auth_apikey_deleted"} <= names


def test_migration_0006_adds_the_audit_log(tmp_path: Path) -> None:
    """From 0005 with a key in the table: 0006 adds the audit table, the key
    is kept, and a change made with the command is audited in it, with the
    OS user and host as actor; unapplying 0006 drops the table, not the key."""
    env = _env(tmp_path / "db.sqlite3")
    manage(env, "migrate", "aqnt_auth", "0005", "--noinput", "-v", "0")
    with sqlite3.connect(env["AQNT_TEST_DATABASE"]) as conn:
        conn.execute(
            "INSERT INTO aqnt_auth_apikey (id, name, mode, prefix, hash, hint, created_at, "
            "usage_count, scopes, read_only, allowed_paths, metadata, rate_limits, "
            "rate_limit_shared, allowed_ips) VALUES ('k1', 'old', 'live', 'sk', 'h', "
            "'sk_live_...abcd', '2026-01-01 00:00:00', 3, '[]', 0, '[]', '{}', '[]', 0, '[]')")
    conn.close()
    manage(env, "migrate", "--noinput", "-v", "0")
    manage(env, "aqnt_keys", "revoke", "k1")
    with sqlite3.connect(env["AQNT_TEST_DATABASE"]) as conn:
        rows = conn.execute("SELECT event, key_id, actor, old, new "
                            "FROM aqnt_auth_apikeyaudit").fetchall()
        (revoked,) = conn.execute("SELECT revoked_at FROM aqnt_auth_apikey").fetchone()
    conn.close()
    assert revoked is not None
    ((event, key_id, actor, old, new),) = rows
    assert (event, key_id) == ("revoked", "k1")
    assert actor == default_actor()
    assert json.loads(old) == {"revoked_at": None}
    assert "revoked_at" in json.loads(new)
    manage(env, "migrate", "aqnt_auth", "0005", "--noinput", "-v", "0")
    with sqlite3.connect(env["AQNT_TEST_DATABASE"]) as conn:
        names = {name for (name,) in conn.execute("SELECT name FROM sqlite_master")}
        (kept,) = conn.execute("SELECT COUNT(*) FROM aqnt_auth_apikey").fetchone()
    conn.close()
    assert "aqnt_auth_apikeyaudit" not in names
    assert kept == 1


def test_migration_0007_stops_logging_the_quota_counter(tmp_path: Path) -> None:
    """From 0006 with a key: 0007 keeps it; a quota's counter is no longer
    logged, setting or removing a quota still is; unapplied, the counter is
    logged again."""
    env = _env(tmp_path / "db.sqlite3")
    manage(env, "migrate", "aqnt_auth", "0006", "--noinput", "-v", "0")
    with sqlite3.connect(env["AQNT_TEST_DATABASE"]) as conn:
        conn.execute(
            "INSERT INTO aqnt_auth_apikey (id, name, mode, prefix, hash, hint, created_at, "
            "usage_count, scopes, read_only, allowed_paths, metadata, rate_limits, "
            "rate_limit_shared, allowed_ips, quota_remaining) VALUES ('k1', 'old', 'live', "
            "'sk', 'h', 'sk_live_...abcd', '2026-01-01 00:00:00', 3, '[]', 0, '[]', '{}', "
            "'[]', 0, '[]', 5)")
    conn.close()

    def logged(statement: str) -> int:
        with sqlite3.connect(env["AQNT_TEST_DATABASE"]) as conn:
            (before,) = conn.execute("SELECT COUNT(*) FROM aqnt_auth_apikey_changes").fetchone()
            conn.execute(statement)
            (after,) = conn.execute("SELECT COUNT(*) FROM aqnt_auth_apikey_changes").fetchone()
        conn.close()
        return int(after - before)

    take = "UPDATE aqnt_auth_apikey SET quota_remaining = quota_remaining - 1"
    assert logged(take) == 1
    manage(env, "migrate", "--noinput", "-v", "0")
    assert logged(take) == 0
    assert logged("UPDATE aqnt_auth_apikey SET quota_refilled_at = '2026-01-02 00:00:00'") == 0
    assert logged("UPDATE aqnt_auth_apikey SET quota_remaining = NULL") == 1
    assert logged("UPDATE aqnt_auth_apikey SET quota_remaining = 7") == 1
    assert logged("UPDATE aqnt_auth_apikey SET quota_refill = '7/day'") == 1
    with sqlite3.connect(env["AQNT_TEST_DATABASE"]) as conn:
        assert conn.execute("SELECT name, usage_count, quota_remaining FROM aqnt_auth_apikey "
                            "WHERE id = 'k1'").fetchone() == ("old", 3, 7)
    conn.close()
    manage(env, "migrate", "aqnt_auth", "0006", "--noinput", "-v", "0")
    assert logged(take) == 1
