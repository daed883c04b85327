"""The SQL store when the database is down, unreachable or too slow.

The store reaches PostgreSQL through a loopback proxy the tests cut and
restore (the real server is shared and stays up).  Requests must get 503
``auth_unavailable`` (never 401, never 200) once the outage is noticed, and
200 again once the database is back, with the same store: no restart.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import secrets
import threading
from collections.abc import AsyncIterator, Iterator

import httpx
import psycopg
import pytest
from sqlalchemy import create_engine

from aqnt_auth import (
    Argon2Hasher,
    Authenticator,
    KeyFormat,
    KeyManager,
    StoreUnavailable,
)
from aqnt_auth._stores._sqlalchemy import SQLAlchemyKeyStore
from tests import bodies

from .pg_asgi_app import BODY, protect
from .pg_support import PGSchema, pg_schema_fixture
from .tcp_proxy import TCPProxy


@pytest.fixture(scope="module")
def pg() -> Iterator[PGSchema]:
    yield from pg_schema_fixture()


@pytest.fixture
def proxy(pg: PGSchema) -> Iterator[TCPProxy]:
    with TCPProxy(pg.host, pg.port) as proxy:
        yield proxy


def _store(pg: PGSchema, proxy: TCPProxy, **options: object) -> SQLAlchemyKeyStore:
    options.setdefault("connect_timeout", 0.5)
    options.setdefault("statement_timeout", 0.5)
    return SQLAlchemyKeyStore(
        pg.url(port=proxy.port), channel=pg.name,
        listener_name=f"aqnt-test-{secrets.token_hex(4)}", **options,  # type: ignore[arg-type]
    )


@pytest.fixture
def issued_key(pg: PGSchema, cheap_hasher: Argon2Hasher) -> str:
    store = SQLAlchemyKeyStore(pg.url(), channel=pg.name, cache=False)
    try:
        return KeyManager(store, hasher=cheap_hasher).create("faults").key
    finally:
        store.close()


@pytest.fixture
async def client(pg: PGSchema, proxy: TCPProxy, cheap_hasher: Argon2Hasher
                 ) -> AsyncIterator[tuple[httpx.AsyncClient, SQLAlchemyKeyStore]]:
    store = _store(pg, proxy)
    auth = Authenticator(store, hashers=[cheap_hasher], track_usage=False)
    transport = httpx.ASGITransport(app=protect(auth))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        yield client, store
    assert store.aio is not None
    await store.aio.close()


async def _wait_listening(store: SQLAlchemyKeyStore, client: httpx.AsyncClient, key: str
                          ) -> None:
    for _ in range(1000):
        if store.cache.listening:
            return
        await client.get("/", headers={"Authorization": f"Bearer {key}"})
        await asyncio.sleep(0.01)
    pytest.fail("the listener never started")


async def _wait_deaf(store: SQLAlchemyKeyStore) -> None:
    for _ in range(1000):
        if not store.cache.listening:
            return
        await asyncio.sleep(0.01)
    pytest.fail("the cache kept answering although its listener lost the database")


def _assert_unavailable(response: httpx.Response) -> None:
    assert response.status_code == 503
    assert response.content == bodies.UNAVAILABLE
    assert response.headers["retry-after"] == "1"
    assert response.headers["content-type"] == "application/json"
    assert "www-authenticate" not in response.headers
    assert response.content != BODY


async def _wait_ok(client: httpx.AsyncClient, key: str) -> httpx.Response:
    for _ in range(500):
        response = await client.get("/", headers={"Authorization": f"Bearer {key}"})
        if response.status_code != 503:
            return response
        await asyncio.sleep(0.02)
    pytest.fail("the service did not recover after the database came back")


@pytest.mark.anyio
@pytest.mark.parametrize("outage", ["cut", "blackhole"])
async def test_database_outage_gives_503_then_recovers(
    client: tuple[httpx.AsyncClient, SQLAlchemyKeyStore], proxy: TCPProxy, issued_key: str,
    outage: str,
) -> None:
    """Down (connections refused) or unreachable (packets swallowed): 503 with
    the exact body, never 401 or 200, then 200 again when it returns."""
    http, store = client
    headers = {"Authorization": f"Bearer {issued_key}"}
    assert (await http.get("/", headers=headers)).content == BODY
    await _wait_listening(store, http, issued_key)
    assert (await http.get("/", headers=headers)).status_code == 200

    getattr(proxy, outage)()
    # A cut is noticed at once; a black hole when the heartbeat goes
    # unanswered.  Either way the warm key stops being served from the cache.
    await _wait_deaf(store)
    for _ in range(3):
        _assert_unavailable(await http.get("/", headers=headers))
    # A well-formed unknown key is not "invalid" while the store cannot tell.
    unknown = KeyFormat(("sk",)).generate("live", None).raw
    _assert_unavailable(await http.get("/", headers={"Authorization": f"Bearer {unknown}"}))

    proxy.restore()
    response = await _wait_ok(http, issued_key)
    assert response.status_code == 200
    assert response.content == BODY
    await _wait_listening(store, http, issued_key)
    assert (await http.get("/", headers=headers)).status_code == 200


def test_database_down_at_startup_then_up(pg: PGSchema, proxy: TCPProxy, issued_key: str,
                                          cheap_hasher: Argon2Hasher) -> None:
    """A store opened while the database is down starts anyway (503s), and
    serves once the database is there: no restart."""
    proxy.cut()
    store = _store(pg, proxy)
    try:
        auth = Authenticator(store, hashers=[cheap_hasher], track_usage=False)
        with pytest.raises(StoreUnavailable) as caught:
            auth.authenticate(f"Bearer {issued_key}")
        answer = auth.render_error(caught.value)
        assert answer.status == 503
        assert answer.body == bodies.UNAVAILABLE
        proxy.restore()
        assert auth.authenticate(f"Bearer {issued_key}").name == "faults"
    finally:
        store.close()


def test_unreachable_host_times_out_as_unavailable(pg: PGSchema, proxy: TCPProxy) -> None:
    """A connection attempt that is never answered ends after connect_timeout
    (below libpq's 2 s minimum) as StoreUnavailable."""
    store = _store(pg, proxy, cache=False)
    try:
        proxy.blackhole()
        store.engine.dispose()
        with pytest.raises(StoreUnavailable, match="timed out"):
            store.get("nosuchkey123")
    finally:
        store.close()


def _hold_table_lock(pg: PGSchema, table: str, locked: threading.Event,
                     release: threading.Event) -> None:
    with psycopg.connect(pg.conninfo, options=f"-csearch_path={pg.name}") as conn:
        conn.execute(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE".encode())
        locked.set()
        release.wait(30)
        conn.rollback()


@pytest.mark.parametrize("engine_owner", ["store", "application"])
def test_too_slow_database_is_unavailable(pg: PGSchema, engine_owner: str) -> None:
    """A database that does not answer within statement_timeout (here: a
    table lock held elsewhere) gives StoreUnavailable for reads and writes,
    whether the store made its engine (server-side timeout) or was given
    the application's (client-side deadline, SET LOCAL for writes)."""
    table = f"slow_{secrets.token_hex(3)}"
    if engine_owner == "store":
        store = SQLAlchemyKeyStore(pg.url(), table=table, channel=pg.name, cache=False,
                                   statement_timeout=0.3)
    else:
        store = SQLAlchemyKeyStore(create_engine(pg.url()), table=table, channel=pg.name,
                                   cache=False, statement_timeout=0.3)
    locked, release = threading.Event(), threading.Event()
    holder = threading.Thread(target=_hold_table_lock, args=(pg, table, locked, release))
    holder.start()
    try:
        assert locked.wait(10)
        with pytest.raises(StoreUnavailable):
            store.get("nosuchkey123")
        with pytest.raises(StoreUnavailable):
            store.revoke("nosuchkey123", dt.datetime.now(dt.timezone.utc))
    finally:
        release.set()
        holder.join()
    assert store.get("nosuchkey123") is None
    store.close()
    if engine_owner == "application":
        store.engine.dispose()
