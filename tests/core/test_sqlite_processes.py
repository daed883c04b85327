"""The SQLite store shared by several processes."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

from aqnt_auth import Argon2Hasher, Authenticator, KeyManager, RevokedAPIKey, SQLiteKeyStore
from aqnt_auth._stores._sqlite import SCHEMA_VERSION


def _worker(path: str, key: str, n: int) -> None:
    with Authenticator(SQLiteKeyStore(path), hashers=[Argon2Hasher("cheapest")],
                       usage_flush_interval=0.01) as auth:
        for _ in range(n):
            auth.authenticate(f"Bearer {key}")


def _check_revoked(path: str, key: str, out: multiprocessing.Queue[str]) -> None:
    with Authenticator(SQLiteKeyStore(path), hashers=[Argon2Hasher("cheapest")]) as auth:
        try:
            auth.authenticate(f"Bearer {key}")
        except RevokedAPIKey as exc:
            out.put(exc.code)
        else:
            out.put("accepted")


def test_two_processes_count_exactly_and_see_revocations(tmp_path: Path) -> None:
    """Usage from two processes adds up; a revocation in one is seen by another."""
    path = str(tmp_path / "keys.db")
    keys = KeyManager(SQLiteKeyStore(path), hasher=Argon2Hasher("cheapest"))
    issued = keys.create("shared")
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_worker, args=(path, issued.key, 300)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    assert keys.get(issued.record.id).usage_count == 600

    keys.revoke(issued.record.id)
    queue: multiprocessing.Queue[str] = ctx.Queue()
    proc = ctx.Process(target=_check_revoked, args=(path, issued.key, queue))
    proc.start()
    proc.join(60)
    assert queue.get(timeout=5) == "key_revoked"
    keys.close()


def test_schema_is_versioned(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "keys.db"
    SQLiteKeyStore(path).close()
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
    assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    conn.execute("PRAGMA user_version = 99")
    conn.commit()
    conn.close()
    import pytest

    from aqnt_auth import ConfigurationError

    with pytest.raises(ConfigurationError, match="newer"):
        SQLiteKeyStore(path)


def test_unreadable_store_is_unavailable(tmp_path: Path) -> None:
    import pytest

    from aqnt_auth import StoreUnavailable

    with pytest.raises(StoreUnavailable):
        SQLiteKeyStore(tmp_path / "missing-dir" / "keys.db")
    corrupt = tmp_path / "corrupt.db"
    corrupt.write_bytes(b"this is not a database" * 100)
    with pytest.raises(StoreUnavailable):
        SQLiteKeyStore(corrupt)
