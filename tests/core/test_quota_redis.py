"""Quota counters in Redis (#13, ``quota_storage="redis://..."``): exact across
processes, seeded from the key's record, not reset by a restart or a stale
record, reset by a new quota, shared by a key and its successor.  Each test
uses its own key prefix and deletes its keys."""

from __future__ import annotations

import asyncio
import datetime as dt
import multiprocessing
import secrets
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from aqnt_auth import (
    Argon2Hasher,
    Authenticator,
    KeyManager,
    MemoryKeyStore,
    Principal,
    QuotaExceeded,
    QuotaUse,
    SQLiteKeyStore,
)
from tests.conftest import require_service

REDIS = "redis://127.0.0.1:6379/0"
UTC = dt.timezone.utc
T0 = dt.datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
HASHER = Argon2Hasher("cheapest")


@pytest.fixture
def prefix() -> Iterator[str]:
    require_service("Redis", "127.0.0.1", 6379)
    import redis

    name = f"aqnt:test:{secrets.token_hex(6)}:"
    yield name
    client = redis.Redis.from_url(REDIS)
    for key in client.scan_iter(f"{name}*"):
        client.delete(key)
    client.close()


def _auth(store: Any, prefix: str, **options: Any) -> Authenticator:
    auth = Authenticator(store, hashers=[HASHER], quota_storage=REDIS, **options)
    assert auth.quota_counter is not None
    auth.quota_counter.prefix = prefix
    return auth


def _outcomes(auth: Authenticator, key: str, n: int) -> list[str]:
    out = []
    for _ in range(n):
        try:
            auth.authenticate(f"Bearer {key}")
        except QuotaExceeded as exc:
            out.append(exc.code)
        else:
            out.append("ok")
    return out


def test_counts_in_redis_not_in_the_store(prefix: str) -> None:
    """The quota is taken in Redis: the store's row keeps the quota as set;
    a restarted server (a new authenticator) and a stale record reset nothing."""
    store = MemoryKeyStore()
    keys = KeyManager(store, hasher=HASHER)
    issued = keys.create("metered", quota=3)
    with _auth(store, prefix) as auth:
        assert _outcomes(auth, issued.key, 2) == ["ok", "ok"]
    assert keys.get(issued.record.id).quota_remaining == 3  # no store write
    with _auth(store, prefix) as restarted:
        assert _outcomes(restarted, issued.key, 2) == ["ok", "quota_exceeded"]
        # A record of the same generation (as a stale cache holds it) seeds nothing.
        assert restarted.quota_counter is not None
        assert restarted.quota_counter.consume_quota(issued.record.id, T0) == QuotaUse(
            False, 0, None)


def test_a_new_quota_is_a_new_generation(prefix: str) -> None:
    """update(quota=...) (a new quota_refilled_at) replaces the counter;
    clear_quota admits everything."""
    clock = [T0]
    store = MemoryKeyStore()
    keys = KeyManager(store, hasher=HASHER, clock=lambda: clock[0])
    issued = keys.create("metered", quota=1)
    with _auth(store, prefix) as auth:
        assert _outcomes(auth, issued.key, 2) == ["ok", "quota_exceeded"]
        clock[0] = T0 + dt.timedelta(seconds=1)
        keys.update(issued.record.id, quota=2)
        assert _outcomes(auth, issued.key, 3) == ["ok", "ok", "quota_exceeded"]
        keys.update(issued.record.id, clear_quota=True)
        assert _outcomes(auth, issued.key, 3) == ["ok"] * 3


def test_refill_in_redis(prefix: str) -> None:
    """The refill is applied in the Lua script, on the period boundary."""
    clock = [T0]
    store = MemoryKeyStore()
    issued = KeyManager(store, hasher=HASHER, clock=lambda: clock[0]).create(
        "metered", quota=1, quota_refill="2/hour")
    with _auth(store, prefix, clock=lambda: clock[0].timestamp()) as auth:
        assert _outcomes(auth, issued.key, 1) == ["ok"]
        clock[0] = T0 + dt.timedelta(minutes=50)
        with pytest.raises(QuotaExceeded) as refused:
            auth.authenticate(f"Bearer {issued.key}")
        assert refused.value.retry_after == 600
        clock[0] = T0 + dt.timedelta(hours=3, minutes=1)
        assert _outcomes(auth, issued.key, 3) == ["ok", "ok", "quota_exceeded"]
        with pytest.raises(QuotaExceeded) as refused:
            auth.authenticate(f"Bearer {issued.key}")
        assert refused.value.retry_after == 59 * 60


def test_rotation_shares_the_counter(prefix: str) -> None:
    """The old key and its successor spend one counter during the grace
    period, before and after a new quota set on the successor."""
    store = MemoryKeyStore()
    keys = KeyManager(store, hasher=HASHER)
    old = keys.create("metered", quota=3)
    with _auth(store, prefix) as auth:
        assert _outcomes(auth, old.key, 1) == ["ok"]
        new = keys.rotate(old.record.id, grace=dt.timedelta(hours=1))
        assert _outcomes(auth, old.key, 1) == ["ok"]
        assert _outcomes(auth, new.key, 2) == ["ok", "quota_exceeded"]
        assert _outcomes(auth, old.key, 1) == ["quota_exceeded"]
        keys.update(new.record.id, quota=1)
        assert _outcomes(auth, old.key, 1) == ["ok"]
        assert _outcomes(auth, new.key, 1) == ["quota_exceeded"]


def test_async_counts_off_the_loop(prefix: str) -> None:
    """On an event loop the Redis call runs in a worker thread, even for a
    store that does no I/O; the no-wait path answers None."""
    store = MemoryKeyStore()
    issued = KeyManager(store, hasher=HASHER).create("metered", quota=1)
    threads: set[int] = set()

    async def run(auth: Authenticator) -> tuple[object, list[str], int]:
        assert auth.quota_counter is not None
        consume = auth.quota_counter.consume_quota

        def spy(key_id: str, now: dt.datetime) -> QuotaUse | None:
            threads.add(threading.get_ident())
            return consume(key_id, now)

        auth.quota_counter.consume_quota = spy  # type: ignore[method-assign]
        auth._consume_quota = spy
        nowait = auth.authenticate_nowait(f"Bearer {issued.key}")
        out = []
        for _ in range(2):
            try:
                await auth.authenticate_async(f"Bearer {issued.key}")
                out.append("ok")
            except QuotaExceeded as exc:
                out.append(exc.code)
        return nowait, out, threading.get_ident()

    with _auth(store, prefix) as auth:
        nowait, out, loop_thread = asyncio.run(run(auth))
    assert (nowait, out) == (None, ["ok", "quota_exceeded"])
    assert threads
    assert loop_thread not in threads



def test_keys_without_a_quota_stay_on_the_loop(prefix: str) -> None:
    """Redis counters make a quota unit network I/O, not the memory store's
    reads: a warm key without a quota is still answered by the no-wait path
    (on the loop, no coroutine), and a warm key with one runs the flow,
    charged in a worker thread."""
    store = MemoryKeyStore()
    manager = KeyManager(store, hasher=HASHER)
    plain = manager.create("plain")
    metered = manager.create("metered", quota=5)

    async def run(auth: Authenticator) -> tuple[object, object, list[str]]:
        for issued in (plain, metered):  # cold verifications, then warm
            await auth.authenticate_async(f"Bearer {issued.key}")
        warm_plain = auth.authenticate_nowait(f"Bearer {plain.key}")
        warm_metered = auth.authenticate_nowait(f"Bearer {metered.key}")
        principal = await auth.authenticate_async(f"Bearer {metered.key}")
        return warm_plain, warm_metered, [principal.id]

    with _auth(store, prefix) as auth:
        warm_plain, warm_metered, ids = asyncio.run(run(auth))
        assert auth.quota_counter is not None
        remaining = auth.quota_counter.consume_quota(metered.record.id, dt.datetime.now(
            dt.timezone.utc))
    assert isinstance(warm_plain, Principal)
    assert warm_plain.id == plain.record.id
    assert warm_metered is None
    assert ids == [metered.record.id]
    assert remaining is not None
    assert remaining.remaining == 2  # 5, less the two admitted and this one

QUOTA = 60
PROCESSES = 4
REQUESTS = 2 * QUOTA // PROCESSES


def _worker(path: str, prefix: str, key: str, start: Any,
            out: multiprocessing.Queue[tuple[int, int]]) -> None:
    admitted = refused = 0
    with _auth(SQLiteKeyStore(path), prefix, rate_limit=None) as auth:
        start.wait()
        for _ in range(REQUESTS):
            try:
                auth.authenticate(f"Bearer {key}")
            except QuotaExceeded:
                refused += 1
            else:
                admitted += 1
    out.put((admitted, refused))


def test_processes_admit_exactly_the_quota(prefix: str, tmp_path: Path) -> None:
    """Four processes (as four servers: each its own authenticator) race on
    one key's Redis counter: exactly the quota is admitted, and the store's
    row is never written."""
    path = str(tmp_path / "keys.db")
    with KeyManager(SQLiteKeyStore(path), hasher=HASHER) as keys:
        issued = keys.create("shared", quota=QUOTA, quota_refill=f"{QUOTA}/month")
        ctx = multiprocessing.get_context("spawn")
        out: multiprocessing.Queue[tuple[int, int]] = ctx.Queue()
        start = ctx.Barrier(PROCESSES)
        procs = [ctx.Process(target=_worker, args=(path, prefix, issued.key, start, out))
                 for _ in range(PROCESSES)]
        for proc in procs:
            proc.start()
        results = [out.get(timeout=120) for _ in procs]
        for proc in procs:
            proc.join(60)
            assert proc.exitcode == 0
        assert sum(r[0] for r in results) == QUOTA
        assert sum(r[1] for r in results) == PROCESSES * REQUESTS - QUOTA
        assert keys.get(issued.record.id).quota_remaining == QUOTA


def test_redis_down_fails_closed_for_quota_keys_only() -> None:
    """An unreachable Redis: 503 auth_unavailable for a key with a quota
    (never a free pass), nothing for a key without one; a non-Redis URL is
    refused at construction."""
    from aqnt_auth import ConfigurationError, StoreUnavailable

    store = MemoryKeyStore()
    keys = KeyManager(store, hasher=HASHER)
    metered, plain = keys.create("metered", quota=5), keys.create("plain")
    with Authenticator(store, hashers=[HASHER], quota_storage="redis://127.0.0.1:1/0") as auth:
        with pytest.raises(StoreUnavailable):
            auth.authenticate(f"Bearer {metered.key}")
        assert auth.authenticate(f"Bearer {plain.key}").id == plain.record.id
    with pytest.raises(ConfigurationError, match="redis:// URL"):
        Authenticator(store, quota_storage="memory://")
