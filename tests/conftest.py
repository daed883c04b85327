"""Fixtures shared by every test package.

Tests that are not about the hasher use argon2-cffi's cheapest profile, so
the suite stays fast; the hasher's own tests use the real profiles.
"""

from __future__ import annotations

import gc
import os
import socket
from collections.abc import Iterator

import pytest

from aqnt_auth import Argon2Hasher, Authenticator, KeyManager, MemoryKeyStore

IN_CI = bool(os.environ.get("CI"))


@pytest.fixture(autouse=True, scope="module")
def _frozen_heap() -> None:
    """Keep the collector's full passes short: what earlier modules left
    alive is moved to the permanent generation (``gc.freeze``) before each
    module.  Late in the suite a full pass over everything ever kept took
    about a second on a 2-core CI machine, enough for the SQL store's
    client-side deadline (``statement_timeout``, 1 s by default) to fire in
    the middle of a test that is not about deadlines.  What a test creates
    is collected as usual."""
    gc.collect()
    gc.freeze()


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def cheap_hasher() -> Argon2Hasher:
    return Argon2Hasher("cheapest")


@pytest.fixture
def memory_store() -> MemoryKeyStore:
    return MemoryKeyStore()


@pytest.fixture
def manager(memory_store: MemoryKeyStore, cheap_hasher: Argon2Hasher) -> KeyManager:
    return KeyManager(memory_store, hasher=cheap_hasher)


@pytest.fixture
def authenticator(
    memory_store: MemoryKeyStore, cheap_hasher: Argon2Hasher
) -> Iterator[Authenticator]:
    auth = Authenticator(memory_store, hashers=[cheap_hasher])
    yield auth
    auth.close()


def service_reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def require_service(name: str, host: str, port: int) -> None:
    """Skip the calling test when a server is absent; in CI, fail instead.

    CI runs on a machine that starts PostgreSQL and Redis before the run, so
    a missing server there is a broken environment, never a reason to skip.
    """
    if service_reachable(host, port):
        return
    message = f"{name} is not reachable on {host}:{port}"
    if IN_CI:
        pytest.fail(f"{message}, and CI is set: these tests must run in CI")
    pytest.skip(f"{message} (start it to run these tests)")
