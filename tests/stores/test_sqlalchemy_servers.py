"""Two app servers share one PostgreSQL; a key revoked from a third process
stops working on both within a second.

Each server is a real ``uvicorn`` process running the hello app behind
:class:`~aqnt_auth.adapters.asgi.APIKeyMiddleware` on the SQL store with its
record cache.  The test keeps both busy with requests using one key, revokes
the key with ``aqnt-auth keys revoke`` in a separate process, and checks
every request against the moment the revocation committed.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from aqnt_auth import Argon2Hasher, KeyManager
from aqnt_auth._stores._sqlalchemy import SQLAlchemyKeyStore
from tests import bodies
from tests._servers import Sample, hammer, ok, until, uvicorn_servers

from .pg_asgi_app import BODY, STORE_URL_ENV
from .pg_support import PGSchema, pg_schema_fixture

CLI = Path(sys.executable).with_name("aqnt-auth")
#: The issue's bound: a revocation is enforced everywhere within this.
PROPAGATION = 1.0
CLIENTS_PER_SERVER = 4


@pytest.fixture(scope="module")
def pg() -> Iterator[PGSchema]:
    yield from pg_schema_fixture()


@pytest.fixture
def servers(pg: PGSchema) -> Iterator[list[str]]:
    """Two uvicorn processes on loopback, each on its own pre-bound socket."""
    with uvicorn_servers("tests.stores.pg_asgi_app:create_app", 2, {STORE_URL_ENV: pg.url()},
                         bound_socket=True) as ports:
        yield [f"http://127.0.0.1:{port}" for port in ports]


async def _run(urls: list[str], key: str, key_id: str, store_url: str
               ) -> tuple[list[Sample], float, float]:
    headers = {"Authorization": f"Bearer {key}"}
    limits = httpx.Limits(max_connections=CLIENTS_PER_SERVER * 2)
    async with httpx.AsyncClient(timeout=10, limits=limits) as client:
        for url in urls:
            await until(client, f"{url}/health", ok)
            await until(client, f"{url}/", ok, headers=headers)
            await until(client, f"{url}/_cache",
                        lambda response: bool(response.json() == {"listening": True}))
        stop = asyncio.Event()
        samples: list[Sample] = []
        loops = [
            asyncio.create_task(hammer(client, n, f"{url}/", headers, stop, samples))
            for n, url in enumerate(urls) for _ in range(CLIENTS_PER_SERVER)
        ]
        await asyncio.sleep(0.5)
        cli_started = time.monotonic()
        revoke = await asyncio.create_subprocess_exec(
            str(CLI), "keys", "revoke", key_id, "--store", store_url,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )
        out, err = await revoke.communicate()
        committed_by = time.monotonic()
        assert revoke.returncode == 0, err.decode()
        assert f"Revoked key {key_id}" in out.decode()
        await asyncio.sleep(PROPAGATION + 1.0)
        stop.set()
        await asyncio.gather(*loops)
    return samples, cli_started, committed_by


@pytest.mark.slow
def test_revocation_reaches_both_servers_within_a_second(
    pg: PGSchema, servers: list[str], cheap_hasher: Argon2Hasher
) -> None:
    """Before the revoke every request passes; from one second after it has
    committed every request on both servers gets 401 key_revoked."""
    store = SQLAlchemyKeyStore(pg.url(), cache=False)
    try:
        issued = KeyManager(store, hasher=cheap_hasher).create("shared")
    finally:
        store.close()

    samples, cli_started, cli_ended = asyncio.run(
        _run(servers, issued.key, issued.record.id, pg.url()))
    store = SQLAlchemyKeyStore(pg.url(), cache=False)
    try:
        record = store.get(issued.record.id)
    finally:
        store.close()
    assert record is not None
    assert record.revoked_at is not None
    # The CLI stamps revoked_at just before its UPDATE, which commits a few
    # round trips later: counting from the stamp is (slightly) stricter
    # than counting from the commit.
    revoked = record.revoked_at.timestamp() - (time.time() - time.monotonic())
    assert cli_started < revoked < cli_ended

    assert {s.status for s in samples} <= {200, 401}  # never a 503 or a 500
    for server in range(len(servers)):
        mine = [s for s in samples if s.server == server]
        before = [s for s in mine if s.ended < revoked]
        late = [s for s in mine if s.started > revoked + PROPAGATION]
        # Enough traffic on each side of the revoke for the test to mean something.
        assert len(before) >= 10
        assert len(late) >= 10
        assert all(s.status == 200 and s.body == BODY for s in before)
        assert all(s.status == 401 for s in late)
        for sample in late[:3] + late[-3:]:
            assert sample.body == bodies.REVOKED
        # Report how fast it actually was (informative; the bound is asserted above).
        last_ok = max(s.started for s in mine if s.status == 200) - revoked
        first_no = min(s.started for s in mine if s.status == 401) - revoked
        print(f"\nserver {server}: {len(mine)} requests; relative to the revocation, the "
              f"last accepted one started at {last_ok * 1000:+.1f} ms, the first "
              f"rejected at {first_no * 1000:+.1f} ms")
