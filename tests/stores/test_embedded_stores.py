"""The embedded stores pass the store contract."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from aqnt_auth import MemoryKeyStore, SQLiteKeyStore

from .contract import StoreContract


class TestMemoryKeyStore(StoreContract):
    @pytest.fixture
    def store(self) -> MemoryKeyStore:
        return MemoryKeyStore()


class TestSQLiteFileStore(StoreContract):
    @pytest.fixture
    def store(self, tmp_path: Path) -> Iterator[SQLiteKeyStore]:
        store = SQLiteKeyStore(tmp_path / "keys.db")
        yield store
        store.close()


class TestSQLiteMemoryStore(StoreContract):
    @pytest.fixture
    def store(self) -> Iterator[SQLiteKeyStore]:
        store = SQLiteKeyStore(":memory:")
        yield store
        store.close()
