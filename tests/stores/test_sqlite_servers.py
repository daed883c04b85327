"""Three app servers share one SQLite file; a key revoked from a fourth
process stops working on all of them within the cache's lease.

Each server is a real ``uvicorn`` process (``--port``, so TCP_NODELAY is on)
running the hello app behind :class:`~aqnt_auth.adapters.asgi.APIKeyMiddleware`
on the SQLite store with its record cache, flushing usage every 50 ms.  The
test keeps them busy with one key, checks that the usage flushes invalidated
nothing, revokes the key with ``aqnt-auth keys revoke``, and checks every
request against the moment the revocation committed.  The lease is a hard
bound (past it a server reads the file), so the check does not depend on
the machine's load.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from aqnt_auth import Argon2Hasher, KeyManager, SQLiteKeyStore
from tests import bodies
from tests._servers import Sample, hammer, ok, until, uvicorn_servers

from .pg_asgi_app import BODY
from .sqlite_asgi_app import PATH_ENV

CLI = Path(sys.executable).with_name("aqnt-auth")
SERVERS = 3
CLIENTS_PER_SERVER = 3
#: The store's default lease: the bound on how late another process sees a change.
LEASE = 0.02


@pytest.fixture
def database(tmp_path: Path) -> Path:
    return tmp_path / "keys.db"


@pytest.fixture
def servers(database: Path) -> Iterator[list[str]]:
    SQLiteKeyStore(database).close()  # the schema, before three servers race for it
    with uvicorn_servers("tests.stores.sqlite_asgi_app:create_app", SERVERS,
                         {PATH_ENV: str(database)}) as ports:
        yield [f"http://127.0.0.1:{port}" for port in ports]


async def _run(urls: list[str], key: str, key_id: str, store_url: str
               ) -> tuple[list[Sample], float, float, list[int]]:
    headers = {"Authorization": f"Bearer {key}"}
    limits = httpx.Limits(max_connections=CLIENTS_PER_SERVER * SERVERS)
    async with httpx.AsyncClient(timeout=10, limits=limits) as client:
        for url in urls:
            await until(client, f"{url}/health", ok)
            await until(client, f"{url}/", ok, headers=headers)
            await until(client, f"{url}/_cache",
                        lambda response: bool(response.json()["listening"]))
        stop = asyncio.Event()
        samples: list[Sample] = []
        loops = [
            asyncio.create_task(hammer(client, n, f"{url}/", headers, stop, samples))
            for n, url in enumerate(urls) for _ in range(CLIENTS_PER_SERVER)
        ]
        await asyncio.sleep(0.5)  # ten usage flushes per server
        changes = [(await client.get(f"{url}/_cache")).json()["changes_seen"] for url in urls]
        cli_started = time.monotonic()
        revoke = await asyncio.create_subprocess_exec(
            str(CLI), "keys", "revoke", key_id, "--store", store_url,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )
        out, err = await revoke.communicate()
        committed_by = time.monotonic()
        assert revoke.returncode == 0, err.decode()
        assert f"Revoked key {key_id}" in out.decode()
        await asyncio.sleep(LEASE + 0.5)
        stop.set()
        await asyncio.gather(*loops)
    return samples, cli_started, committed_by, changes


@pytest.mark.slow
def test_revocation_reaches_every_server_within_the_lease(
    database: Path, servers: list[str], cheap_hasher: Argon2Hasher
) -> None:
    """Before the revoke every request passes; from LEASE after it has
    committed every request on every server gets 401 key_revoked; usage
    flushes from three servers invalidated no cache."""
    store_url = f"sqlite:///{database}"
    keys = KeyManager(SQLiteKeyStore(database), hasher=cheap_hasher)
    issued = keys.create("shared")

    samples, cli_started, committed_by, changes = asyncio.run(
        _run(servers, issued.key, issued.record.id, store_url))
    record = keys.get(issued.record.id)
    keys.close()
    assert record.revoked_at is not None
    assert record.usage_count > 0  # the servers did flush usage
    assert changes == [0] * SERVERS  # ... and no flush was taken for a change
    revoked = record.revoked_at.timestamp() - (time.time() - time.monotonic())
    assert cli_started < revoked < committed_by

    assert {s.status for s in samples} <= {200, 401}  # never a 503 or a 500
    for server in range(SERVERS):
        mine = [s for s in samples if s.server == server]
        before = [s for s in mine if s.ended < revoked]
        late = [s for s in mine if s.started > committed_by + LEASE]
        assert len(before) >= 10
        assert len(late) >= 10
        assert all(s.status == 200 and s.body == BODY for s in before)
        assert all(s.status == 401 for s in late)
        for sample in late[:3] + late[-3:]:
            assert sample.body == bodies.REVOKED
        # How fast it actually was (informative; the bound is asserted above).
        last_ok = max(s.started for s in mine if s.status == 200) - revoked
        first_no = min(s.started for s in mine if s.status == 401) - revoked
        print(f"\nserver {server}: {len(mine)} requests; relative to the revocation, the "
              f"last accepted one started at {last_ok * 1000:+.1f} ms, the first rejected "
              f"at {first_no * 1000:+.1f} ms")
