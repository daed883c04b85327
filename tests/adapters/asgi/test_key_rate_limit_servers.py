"""Per-key rate limits on Redis: N real uvicorn processes together admit at
most the limit (#13).

Four workers share one SQLite key file and one Redis (a key prefix of its
own per run) for keys' rate limits.  Sixty concurrent requests with a key
limited to 20 an hour, spread over the four: exactly 20 are admitted, each
with a distinct remaining count (19 down to 0: one counter, incremented
atomically), and the other 40 get the exact 429 with Retry-After and the
RateLimit headers.  Two keys of one owner sharing their limit draw on one
budget across the workers too.  Counts only, no timing: the hour-long
window cannot end during the test.
"""

from __future__ import annotations

import http.client
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from aqnt_auth import Argon2Hasher, KeyManager, SQLiteKeyStore
from tests import bodies

from ...conftest import require_service
from ._servers import uvicorn_servers

REDIS = "redis://127.0.0.1:6379"
POLICY = '"20/hour";q=20;w=3600'

pytestmark = pytest.mark.slow


def _get(port: int, key: str) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("GET", "/v1/charges", headers={"Authorization": f"Bearer {key}"})
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


def _remaining(headers: dict[str, str]) -> int:
    name, r, t = headers["ratelimit"].split(";")
    assert name == '"20/hour"'
    assert 3500 <= int(t.removeprefix("t=")) <= 3600
    return int(r.removeprefix("r="))


def test_servers_on_redis_admit_the_limit_together(tmp_path: Path) -> None:
    require_service("Redis", "127.0.0.1", 6379)
    path = tmp_path / "keys.db"
    store = SQLiteKeyStore(path)
    keys = KeyManager(store, hasher=Argon2Hasher("cheapest"))
    key = keys.create("metered", rate_limits=["20/hour"]).key
    shared = [keys.create(f"acme {n}", owner="acme", rate_limits=["20/hour"],
                          shared_limit=True).key for n in range(2)]
    store.close()
    env = {"AQNT_TEST_STORE": str(path), "AQNT_TEST_RATE_LIMIT": "off",
           "AQNT_TEST_KEY_RATE_LIMIT": REDIS,
           "AQNT_TEST_REDIS_PREFIX": f"aqnt-test-{uuid.uuid4().hex}"}
    with uvicorn_servers(4, env) as ports, ThreadPoolExecutor(12) as pool:
        answers = list(pool.map(lambda n: _get(ports[n % 4], key), range(60)))
        admitted = [headers for status, headers, _ in answers if status == 200]
        refused = [(headers, body) for status, headers, body in answers if status == 429]
        assert (len(admitted), len(refused)) == (20, 40)
        assert sorted(_remaining(h) for h in admitted) == list(range(20))
        for headers, body in refused:
            assert body == bodies.RATE_LIMIT_EXCEEDED
            assert headers["ratelimit-policy"] == POLICY
            assert _remaining(headers) == 0
            assert headers["retry-after"] == headers["ratelimit"].rpartition("t=")[2]
        # Two keys sharing their owner's budget, spread over the workers.
        answers = list(pool.map(lambda n: _get(ports[n % 4], shared[n % 2]), range(30)))
        assert sorted(status for status, _, _ in answers) == [200] * 20 + [429] * 10
        assert all(h["ratelimit-policy"] == POLICY for _, h, _ in answers)
