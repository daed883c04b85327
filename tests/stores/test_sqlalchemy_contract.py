"""The SQL store passes the store contract: PostgreSQL (from a URL, and from
the application's own engines) and SQLite through SQLAlchemy, sync and async."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine
from sqlalchemy.ext.asyncio import create_async_engine

from aqnt_auth import open_store
from aqnt_auth._stores._sqlalchemy import AsyncSQLAlchemyKeyStore, SQLAlchemyKeyStore

from .contract import StoreContract
from .pg_support import PGSchema, pg_schema_fixture


@pytest.fixture(scope="module")
def pg() -> Iterator[PGSchema]:
    yield from pg_schema_fixture()


class TestPostgresFromURL(StoreContract):
    @pytest.fixture
    def store(self, pg: PGSchema) -> Iterator[SQLAlchemyKeyStore]:
        pg.reset()
        store = open_store(pg.url())
        assert isinstance(store, SQLAlchemyKeyStore)
        assert isinstance(store.aio, AsyncSQLAlchemyKeyStore)
        yield store
        store.close()


class TestPostgresUncached(StoreContract):
    @pytest.fixture
    def store(self, pg: PGSchema) -> Iterator[SQLAlchemyKeyStore]:
        pg.reset()
        store = SQLAlchemyKeyStore(pg.url(), cache=False)
        yield store
        store.close()


class TestPostgresFromEngines(StoreContract):
    """The application's engines: their pools are used, their settings kept."""

    @pytest.fixture
    def store(self, pg: PGSchema) -> Iterator[SQLAlchemyKeyStore]:
        pg.reset()
        engine = create_engine(pg.url())
        async_engine = create_async_engine(pg.url())
        store = SQLAlchemyKeyStore(engine, async_engine=async_engine)
        assert store.engine is engine
        assert store.async_engine is async_engine
        yield store
        store.close()
        engine.dispose()
        asyncio.run(async_engine.dispose())


class TestSQLiteThroughSQLAlchemy(StoreContract):
    @pytest.fixture
    def store(self, tmp_path: Path) -> Iterator[SQLAlchemyKeyStore]:
        store = open_store(f"sqlite+pysqlite:///{tmp_path / 'keys.db'}")
        assert isinstance(store, SQLAlchemyKeyStore)
        assert store.aio is None  # to_async() runs it in threads
        assert store.listener is None
        yield store
        store.close()
