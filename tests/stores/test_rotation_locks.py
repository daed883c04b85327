"""A rotation holds off revocations while it decides and writes.

``KeyStore.rotate`` calls its plan inside the transaction: at that moment a
revocation from another connection must not be able to commit, or the old
key could be revoked between the check and the insert and still get an
active successor.  Each test tries that revocation from inside the plan, on
a connection of its own that refuses to wait, and expects it to be refused.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import psycopg
import pytest

from aqnt_auth import (
    KeyRecord,
    KeyStore,
    MemoryKeyStore,
    RotationPlan,
    SQLiteKeyStore,
    open_store,
)
from aqnt_auth._stores._sqlalchemy import SQLAlchemyKeyStore

from .contract import T0, make_record
from .pg_support import PGSchema, pg_schema_fixture


@pytest.fixture(scope="module")
def pg() -> Iterator[PGSchema]:
    yield from pg_schema_fixture()


Rotate = Callable[[str, RotationPlan], "KeyRecord | None"]


def rotate_while(store: KeyStore, revoke_elsewhere: Callable[[str], None],
                 rotate: Rotate | None = None) -> None:
    """Rotate a key (by *store*'s rotate, or *rotate*); from inside the plan,
    try *revoke_elsewhere* (which must be refused); then the rotation
    completes and the key is not revoked."""
    old = make_record(expires_at=None)
    store.add(old)
    tried: list[str] = []

    def plan(current: KeyRecord, successors: Sequence[KeyRecord]
             ) -> tuple[KeyRecord, dt.datetime | None]:
        revoke_elsewhere(current.id)
        tried.append(current.id)
        return make_record(rotated_from=current.id), T0

    updated = (rotate or store.rotate)(old.id, plan)
    assert tried == [old.id]
    assert updated is not None
    assert (updated.revoked_at, updated.expires_at) == (None, T0)


def sqlite_revoke_refused(path: str) -> Callable[[str], None]:
    def revoke(key_id: str) -> None:
        other = sqlite3.connect(path, timeout=0, isolation_level=None)
        try:
            with pytest.raises(sqlite3.OperationalError, match="locked"):
                other.execute("UPDATE aqnt_api_keys SET revoked_at = 1 WHERE id = ?", (key_id,))
        finally:
            other.close()

    return revoke


def test_memory_store() -> None:
    store = MemoryKeyStore()

    def revoke(key_id: str) -> None:
        assert store._lock.acquire(blocking=False) is False

    rotate_while(store, revoke)


def test_sqlite_store(tmp_path: Path) -> None:
    store = SQLiteKeyStore(tmp_path / "keys.db")
    try:
        rotate_while(store, sqlite_revoke_refused(str(tmp_path / "keys.db")))
    finally:
        store.close()


def test_sqlite_through_sqlalchemy(tmp_path: Path) -> None:
    store = open_store(f"sqlite+pysqlite:///{tmp_path / 'keys.db'}")
    try:
        rotate_while(store, sqlite_revoke_refused(str(tmp_path / "keys.db")))
    finally:
        store.close()


def pg_revoke_refused(pg: PGSchema) -> Callable[[str], None]:
    def revoke(key_id: str) -> None:
        # The row lock an UPDATE (a revocation) needs, without waiting.
        with psycopg.connect(pg.conninfo, autocommit=True,
                             options=f"-csearch_path={pg.name}") as other, \
                pytest.raises(psycopg.errors.LockNotAvailable):
            other.execute(b"SELECT 1 FROM aqnt_api_keys WHERE id = %s "
                          b"FOR NO KEY UPDATE NOWAIT", (key_id,))

    return revoke


@pytest.mark.parametrize("cache", [True, False])
def test_postgres(pg: PGSchema, cache: bool) -> None:
    pg.reset()
    store = SQLAlchemyKeyStore(pg.url(), cache=cache)
    try:
        rotate_while(store, pg_revoke_refused(pg))
    finally:
        store.close()


def test_postgres_async(pg: PGSchema) -> None:
    """The async twin runs the same operation through the async engine."""
    pg.reset()
    store = SQLAlchemyKeyStore(pg.url())
    aio = store.aio
    assert aio is not None

    async def rotate(key_id: str, plan: RotationPlan) -> KeyRecord | None:
        try:
            return await aio.rotate(key_id, plan)
        finally:
            await aio.close()

    try:
        rotate_while(store, pg_revoke_refused(pg), lambda k, p: asyncio.run(rotate(k, p)))
    finally:
        store.close()
