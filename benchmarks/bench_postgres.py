"""PostgreSQL store benchmark: per-request µs of a hello ASGI app behind the
API-key middleware, with a warm key, on the memory store and on the SQL
store with and without its record cache.

Run: ``python benchmarks/bench_postgres.py [--repeats N] [--url URL]``
(default URL: PostgreSQL on 127.0.0.1:5432, database ``test``, user
``postgres`` or ``root``).  It works in a private schema it drops at the end.

Every figure is the median of interleaved repetitions in this one run; the
target is the cached SQL store within 1.2x of the memory store.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import sys
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import quote

import psycopg

from aqnt_auth import Argon2Hasher, Authenticator, KeyManager, MemoryKeyStore
from aqnt_auth._stores._sqlalchemy import SQLAlchemyKeyStore
from aqnt_auth.adapters.asgi import APIKeyMiddleware

sys.path.insert(0, os.path.dirname(__file__))
from _util import interleaved_medians, print_table

Scope = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Any, Any], Awaitable[None]]
TARGET = 1.2
BODY = b'{"hello": "world"}'
HELLO_START = {"type": "http.response.start", "status": 200,
               "headers": [(b"content-type", b"application/json"),
                           (b"content-length", str(len(BODY)).encode())]}
HELLO_BODY = {"type": "http.response.body", "body": BODY}


async def hello(scope: Scope, receive: Any, send: Any) -> None:
    await send(HELLO_START)
    await send(HELLO_BODY)


async def _receive() -> dict[str, Any]:
    return {"type": "http.request", "body": b"", "more_body": False}


def _scope(key: str) -> Scope:
    return {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
        "method": "GET", "scheme": "http", "path": "/v1/hello", "raw_path": b"/v1/hello",
        "root_path": "", "query_string": b"", "server": ("127.0.0.1", 8000),
        "client": ("127.0.0.1", 50000),
        "headers": [(b"host", b"127.0.0.1:8000"), (b"authorization", f"Bearer {key}".encode()),
                    (b"accept", b"*/*")],
    }


def _requests(loop: asyncio.AbstractEventLoop, app: ASGIApp, key: str, batch: int
              ) -> Callable[[], object]:
    """A callable serving *batch* requests through *app* on *loop*."""
    statuses: list[int] = []

    async def send(message: MutableMapping[str, Any]) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    async def run() -> None:
        for _ in range(batch):
            # A fresh scope per request, as a server makes one.
            await app(_scope(key), _receive, send)
        if set(statuses) != {200}:
            raise RuntimeError(f"unexpected statuses {set(statuses)}")
        statuses.clear()

    return lambda: loop.run_until_complete(run())


def _direct(loop: asyncio.AbstractEventLoop, auth: Authenticator, key: str, batch: int
            ) -> Callable[[], object]:
    header = f"Bearer {key}"

    async def run() -> None:
        for _ in range(batch):
            await auth.authenticate_async(header, method="GET", path="/v1/hello")

    return lambda: loop.run_until_complete(run())


def _default_url(schema: str) -> str:
    for user in ("postgres", "root"):
        try:
            with psycopg.connect(f"host=127.0.0.1 port=5432 dbname=test user={user} "
                                 "connect_timeout=3"):
                break
        except psycopg.Error:
            continue
    else:
        raise SystemExit("PostgreSQL is not reachable on 127.0.0.1:5432 (database test)")
    options = quote(f"-csearch_path={schema}", safe="")
    return f"postgresql+psycopg://{user}@127.0.0.1:5432/test?options={options}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--url", help="PostgreSQL URL (default: a private schema in 'test')")
    args = parser.parse_args()

    schema = f"aqnt_bench_{secrets.token_hex(4)}"
    url = args.url or _default_url(schema)
    conninfo = url.replace("postgresql+psycopg://", "postgresql://").split("?")[0]
    if not args.url:
        with psycopg.connect(conninfo, autocommit=True) as conn:
            conn.execute(f"CREATE SCHEMA {schema}".encode())
    try:
        run(url, args.repeats)
    finally:
        if not args.url:
            with psycopg.connect(conninfo, autocommit=True) as conn:
                conn.execute(f"DROP SCHEMA {schema} CASCADE".encode())


def run(url: str, repeats: int) -> None:
    hasher = Argon2Hasher("cheapest")
    memory = MemoryKeyStore()
    cached = SQLAlchemyKeyStore(url)
    uncached = SQLAlchemyKeyStore(url, cache=False)
    mem_key = KeyManager(memory, hasher=hasher).create("bench").key
    pg_key = KeyManager(uncached, hasher=hasher).create("bench").key
    # A key with a quota (#13): one conditional UPDATE per request, by design;
    # or, with quota_storage, one Lua call to Redis instead.
    quota_key = KeyManager(uncached, hasher=hasher).create("bench quota", quota=10**12).key

    # The same authenticator options everywhere (usage counting included).
    auths = {
        "memory": Authenticator(memory, hashers=[hasher]),
        "cached": Authenticator(cached, hashers=[hasher]),
        "uncached": Authenticator(uncached, hashers=[hasher]),
    }
    redis_prefix = f"aqnt:bench:{secrets.token_hex(4)}:"
    if _redis_reachable():
        auths["redis quota"] = Authenticator(cached, hashers=[hasher],
                                             quota_storage="redis://127.0.0.1:6379/0")
        assert auths["redis quota"].quota_counter is not None
        auths["redis quota"].quota_counter.prefix = redis_prefix
    keys = {"memory": mem_key, "cached": pg_key, "uncached": pg_key, "redis quota": quota_key}
    apps = {name: APIKeyMiddleware(hello, authenticator=auth) for name, auth in auths.items()}

    loop = asyncio.new_event_loop()
    for name, app in apps.items():  # warm every key (argon2 once, cache filled)
        _requests(loop, app, keys[name], 10)()
    _requests(loop, apps["cached"], quota_key, 10)()
    deadline = time.monotonic() + 10
    while not cached.cache.listening:
        if time.monotonic() > deadline:
            raise SystemExit("the record cache listener did not start")
        _requests(loop, apps["cached"], pg_key, 1)()
        time.sleep(0.01)

    fast, slow = 2000, 100
    variants: list[tuple[str, Callable[[], object], int, int]] = [
        ("hello app alone (no auth)", _requests(loop, hello, mem_key, fast), 1, fast),
        ("ASGI, memory store", _requests(loop, apps["memory"], mem_key, fast), 1, fast),
        ("ASGI, PostgreSQL + record cache", _requests(loop, apps["cached"], pg_key, fast),
         1, fast),
        ("ASGI, PostgreSQL, no cache", _requests(loop, apps["uncached"], pg_key, slow), 1, slow),
        ("authenticate_async, memory store", _direct(loop, auths["memory"], mem_key, fast),
         1, fast),
        ("authenticate_async, PostgreSQL + cache", _direct(loop, auths["cached"], pg_key, fast),
         1, fast),
        ("authenticate_async, PostgreSQL, no cache",
         _direct(loop, auths["uncached"], pg_key, slow), 1, slow),
        ("ASGI, PostgreSQL + cache, key with a quota",
         _requests(loop, apps["cached"], quota_key, slow), 1, slow),
    ]
    if "redis quota" in apps:
        variants.append(("ASGI, PostgreSQL + cache, key with a quota counted in Redis",
                         _requests(loop, apps["redis quota"], quota_key, slow), 1, slow))
    medians = interleaved_medians([(n, f, number) for n, f, number, _ in variants], repeats)
    per_request = {name: medians[name] / batch for name, _, _, batch in variants}

    base = per_request["ASGI, memory store"]
    rows = [("case", "median µs/request", "ratio to memory store (ASGI)")]
    for name, value in per_request.items():
        rows.append((name, f"{value:.2f}", f"{value / base:.2f}x"))
    print_table(f"hello ASGI app, warm key, {repeats} interleaved repeats", rows)

    asgi_ratio = per_request["ASGI, PostgreSQL + record cache"] / base
    direct_ratio = (per_request["authenticate_async, PostgreSQL + cache"]
                    / per_request["authenticate_async, memory store"])
    print(f"\n  target: PostgreSQL + record cache within {TARGET}x of memory (ASGI): "
          f"{asgi_ratio:.2f}x {'MET' if asgi_ratio <= TARGET else 'MISSED'}")
    print(f"  same, authenticate_async alone: {direct_ratio:.2f}x")
    saved = (per_request["ASGI, PostgreSQL, no cache"]
             - per_request["ASGI, PostgreSQL + record cache"])
    print(f"  the record cache saves {saved:.0f} µs per request (a database round trip)")

    for auth in auths.values():
        loop.run_until_complete(auth.aclose())
    loop.close()
    if "redis quota" in auths:
        import redis

        client = redis.Redis.from_url("redis://127.0.0.1:6379/0")
        for name in client.scan_iter(f"{redis_prefix}*"):
            client.delete(name)
        client.close()


def _redis_reachable() -> bool:
    import socket

    try:
        socket.create_connection(("127.0.0.1", 6379), timeout=0.5).close()
    except OSError:
        return False
    return True


if __name__ == "__main__":
    main()
