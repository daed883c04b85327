"""Fixtures of the core tests: a counting hasher, an instrumented store, and
a manager and an authenticator over them (a test module may override ``auth``)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from aqnt_auth import Authenticator, KeyManager

from ._support import CountingHasher, InstrumentedStore


@pytest.fixture
def hasher() -> CountingHasher:
    return CountingHasher()


@pytest.fixture
def store() -> InstrumentedStore:
    return InstrumentedStore()


@pytest.fixture
def keys(store: InstrumentedStore, hasher: CountingHasher) -> KeyManager:
    return KeyManager(store, hasher=hasher)


@pytest.fixture
def auth(store: InstrumentedStore, hasher: CountingHasher) -> Iterator[Authenticator]:
    """Usage is counted but not flushed on a timer during a test."""
    with Authenticator(store, hashers=[hasher], usage_flush_interval=3600) as a:
        yield a
