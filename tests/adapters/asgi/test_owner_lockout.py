"""An attacker who knows only a key id cannot lock its owner out.

Two real uvicorn workers share one SQLite key file and one Redis failure
limiter (a key prefix of its own per run).  Eleven wrong secrets for the key
id, from eleven loopback addresses, go to the first worker: past the default
ten failures a minute, had they been counted per id.  The owner's valid key
must then work on both workers, including the first one, where its cache
entry has expired (``cache_ttl=0``: every request of the owner is cold
there), and on the second, which never saw it.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from aqnt_auth import Argon2Hasher, KeyManager, SQLiteKeyStore, checksum
from tests import bodies

from ...conftest import require_service
from ._servers import request, uvicorn_servers

REDIS = "redis://127.0.0.1:6379"

pytestmark = pytest.mark.slow


def test_wrong_secrets_from_many_addresses_never_lock_the_owner_out(tmp_path: Path) -> None:
    require_service("Redis", "127.0.0.1", 6379)
    path = tmp_path / "keys.db"
    store = SQLiteKeyStore(path)
    key = KeyManager(store, hasher=Argon2Hasher("cheapest")).create("owner").key
    store.close()
    env = {"AQNT_TEST_STORE": str(path), "AQNT_TEST_RATE_LIMIT": REDIS,
           "AQNT_TEST_REDIS_PREFIX": f"aqnt-test-{uuid.uuid4().hex}", "AQNT_TEST_CACHE_TTL": "0"}
    with uvicorn_servers(2, env) as (first, second):
        assert request(first, "/v1", key, source="127.0.0.2")[0] == 200
        for n in range(11):
            head = key[:20] + f"{n:032d}"
            answer = request(first, "/v1", head + checksum(head), source=f"127.0.1.{n + 1}")
            assert answer == (401, bodies.INVALID)
        # The same address keeps its own budget for the id: shared through Redis.
        for n in range(10):
            head = key[:20] + f"{n:031d}x"
            request(second, "/v1", head + checksum(head), source="127.0.2.1")
        head = key[:20] + "y" * 32
        assert request(first, "/v1", head + checksum(head), source="127.0.2.1") == (
            429, bodies.RATE_LIMITED)
        for port in (first, second, first):
            for source in ("127.0.0.2", "127.0.0.3"):
                assert request(port, "/v1", key, source=source)[0] == 200
