"""ASGI adapter benchmark: what APIKeyMiddleware adds to a Starlette and a
FastAPI app, against the hand-written solution, then under a real server.

Run: ``python benchmarks/bench_asgi.py [--repeats N] [--batch N] [--no-server]``.

1. In process: one route returning "ok", called directly as an ASGI
   callable with a warm key, µs per request: in each round every variant
   runs three times, interleaved, and keeps its fastest pass; the table
   gives medians over rounds, and ratios taken within each round.
   Baselines measured in the same run:
   the bare app, and Starlette's ``AuthenticationMiddleware`` (or FastAPI's
   ``HTTPBearer``) with a hand-written check, a dict lookup plus
   ``hmac.compare_digest``.  Target: what ours adds on the memory store is
   at most 1.0x what the hand-written middleware adds (#12), with the
   failure limiter on, as by default; the same without it shows that a
   warm key pays nothing for it.
2. Real server: uvicorn, one worker, in a subprocess; a bounded load (a
   fixed request count over keep-alive connections) from a second process
   on loopback; rounds interleaved, shares taken within each round; the
   hand-written AuthenticationMiddleware served too, for scale, and the
   server's CPU time per request (steadier than requests/s on a shared
   machine).  Target: ours serves at least 90% of the bare app's requests
   per second.

No ``from __future__ import annotations``: FastAPI reads the endpoints'
annotations at run time, and some refer to names local to a function.
"""

import argparse
import asyncio
import dataclasses
import functools
import hmac
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.applications import Starlette
from starlette.authentication import (
    AuthCredentials,
    AuthenticationBackend,
    AuthenticationError,
    SimpleUser,
)
from starlette.middleware import Middleware
from starlette.middleware.authentication import AuthenticationMiddleware
from starlette.requests import HTTPConnection, Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from aqnt_auth import KeyManager, MemoryKeyStore, Principal, SQLiteKeyStore
from aqnt_auth.adapters.asgi import APIKeyMiddleware
from aqnt_auth.adapters.fastapi import APIKey, add_error_handlers

sys.path.insert(0, os.path.dirname(__file__))
from _util import asgi_batch, paired_samples, print_table

Scope = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Any, Any], Awaitable[None]]
TARGET_ADDED = 1.0
TARGET_RPS = 0.9
KEY_ENV = "AQNT_BENCH_KEY"
WARM_UP = 50  # requests per connection before the timed ones


# -- the apps ------------------------------------------------------------------


async def ok(request: Request) -> PlainTextResponse:
    return PlainTextResponse("ok")


class HandWrittenBackend(AuthenticationBackend):
    """The typical home-made API-key check: a dict lookup and compare_digest."""

    def __init__(self, keys: dict[str, str]) -> None:
        # key id -> (full key); the id is the 12 characters after "sk_live_".
        self.keys = {key[8:20]: key for key in keys}
        self.names = keys

    async def authenticate(self, conn: HTTPConnection) -> tuple[AuthCredentials, SimpleUser]:
        header = conn.headers.get("authorization")
        if not header:
            raise AuthenticationError("No API key provided")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer":
            raise AuthenticationError("No API key provided")
        known = self.keys.get(token[8:20])
        if known is None or not hmac.compare_digest(known.encode(), token.encode()):
            raise AuthenticationError("Invalid API key provided")
        return AuthCredentials(["charges:read"]), SimpleUser(self.names[known])


def starlette_apps(key: str, memory: MemoryKeyStore, sqlite_path: str,
                   limited: MemoryKeyStore) -> dict[str, ASGIApp]:
    routes = [Route("/", ok)]
    return {
        "starlette: bare": Starlette(routes=routes),
        "starlette: AuthenticationMiddleware, hand-written": Starlette(
            routes=routes,
            middleware=[Middleware(AuthenticationMiddleware,
                                   backend=HandWrittenBackend({key: "bench"}))],
        ),
        "starlette: ours, memory store": Starlette(
            routes=routes, middleware=[Middleware(APIKeyMiddleware, store=memory)]
        ),
        # The same key with one rate limit (#13), counted in memory, never
        # reached: its RateLimit headers are added to every response.
        "starlette: ours, memory store, key with one rate limit": Starlette(
            routes=routes, middleware=[Middleware(APIKeyMiddleware, store=limited)]
        ),
        "starlette: ours, memory store, no failure limiter": Starlette(
            routes=routes,
            middleware=[Middleware(APIKeyMiddleware, store=memory, rate_limit=None)],
        ),
        "starlette: ours, SQLite store": Starlette(
            routes=routes,
            middleware=[Middleware(APIKeyMiddleware, store=f"sqlite:///{sqlite_path}")],
        ),
    }


def fastapi_apps(key: str, memory: MemoryKeyStore) -> dict[str, ASGIApp]:
    bare = FastAPI()
    bare.get("/")(_fastapi_ok)

    known = {key[8:20]: key}
    bearer = HTTPBearer()

    async def check(
        credentials: Annotated[HTTPAuthorizationCredentials, Depends(bearer)],
    ) -> str:
        token = credentials.credentials
        stored = known.get(token[8:20])
        if stored is None or not hmac.compare_digest(stored.encode(), token.encode()):
            raise HTTPException(status_code=401, detail="Invalid API key provided")
        return "bench"

    hand = FastAPI()

    @hand.get("/")
    async def hand_ok(user: Annotated[str, Depends(check)]) -> PlainTextResponse:
        return PlainTextResponse("ok")

    api_key = APIKey(memory)
    ours = FastAPI()
    add_error_handlers(ours)

    @ours.get("/")
    async def ours_ok(key: Annotated[Principal, Security(api_key)]) -> PlainTextResponse:
        return PlainTextResponse("ok")

    middleware = FastAPI()
    middleware.add_middleware(APIKeyMiddleware, store=memory)
    middleware.get("/")(_fastapi_ok)
    return {
        "fastapi: bare": bare,
        "fastapi: HTTPBearer, hand-written": hand,
        "fastapi: ours, APIKey dependency, memory": ours,
        "fastapi: ours, middleware, memory": middleware,
    }


async def _fastapi_ok() -> PlainTextResponse:
    return PlainTextResponse("ok")


# -- in process ----------------------------------------------------------------


def _scope(key: str) -> Scope:
    return {
        "type": "http", "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1", "method": "GET", "scheme": "http", "path": "/",
        "raw_path": b"/", "root_path": "", "query_string": b"",
        "server": ("127.0.0.1", 8000), "client": ("127.0.0.1", 50000), "state": {},
        "headers": [(b"host", b"127.0.0.1:8000"), (b"user-agent", b"bench/1"),
                    (b"accept", b"*/*"), (b"authorization", f"Bearer {key}".encode())],
    }


def in_process(key: str, memory: MemoryKeyStore, sqlite_path: str, rounds: int, batch: int,
               limited: MemoryKeyStore) -> dict[str, list[float]]:
    """µs per request of every variant, one sample per round (see paired_samples)."""
    loop = asyncio.new_event_loop()
    try:
        groups = [starlette_apps(key, memory, sqlite_path, limited), fastapi_apps(key, memory)]
        calls = {name: asgi_batch(loop, app, functools.partial(_scope, key), batch)
                 for group in groups for name, app in group.items()}
        samples = paired_samples(calls, rounds, 1)
    finally:
        loop.close()
    # Each call is a whole batch: per request, then.
    return {name: [value / batch for value in values] for name, values in samples.items()}


def report_in_process(samples: dict[str, list[float]]) -> dict[str, float]:
    """Print the tables; return each of our variants' median ratio of added time."""
    ratios: dict[str, float] = {}
    for framework, baseline in (("starlette", "AuthenticationMiddleware, hand-written"),
                                ("fastapi", "HTTPBearer, hand-written")):
        bare = samples[f"{framework}: bare"]
        hand = samples[f"{framework}: {baseline}"]
        rows = [("variant", "µs/request", "added µs", "added / hand-written added")]
        for name, values in samples.items():
            if not name.startswith(framework + ":"):
                continue
            if values is bare:
                rows.append((name, f"{statistics.median(values):.2f}", "-", "-"))
                continue
            added = [v - b for v, b in zip(values, bare, strict=True)]
            # Ratio within each round, then the median: drift between rounds cancels.
            ratio = statistics.median(
                a / (h - b) for a, h, b in zip(added, hand, bare, strict=True) if h > b
            )
            rows.append((name, f"{statistics.median(values):.2f}",
                         f"{statistics.median(added):.2f}", f"{ratio:.2f}"))
            if "ours" in name:
                ratios[name] = ratio
        print_table(f"In process, {framework}: median of {len(bare)} rounds, each the "
                    "fastest of 3 interleaved passes", rows)
    return ratios


# -- real server ---------------------------------------------------------------


def serve(variant: str, db_path: str) -> None:
    """Subprocess: serve one variant with uvicorn (one worker) on a free port."""
    import uvicorn  # only the server subprocess needs it

    routes = [Route("/", ok)]
    if variant == "bare":
        app: ASGIApp = Starlette(routes=routes)
    elif variant == "hand-written":
        backend = HandWrittenBackend({os.environ[KEY_ENV]: "bench"})
        app = Starlette(routes=routes,
                        middleware=[Middleware(AuthenticationMiddleware, backend=backend)])
    elif variant == "ours-memory":
        store = MemoryKeyStore(SQLiteKeyStore(db_path).list())
        app = Starlette(routes=routes, middleware=[Middleware(APIKeyMiddleware, store=store)])
    elif variant == "ours-sqlite":
        app = Starlette(routes=routes, middleware=[
            Middleware(APIKeyMiddleware, store=f"sqlite:///{db_path}")])
    else:
        raise SystemExit(f"unknown variant {variant!r}")
    # IPPROTO_TCP explicitly: asyncio sets TCP_NODELAY only on sockets that say so,
    # and without it every small response waits out a delayed ACK (~40 ms).
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    print(sock.getsockname()[1], flush=True)
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on")
    uvicorn.Server(config).run(sockets=[sock])


async def _connection(port: int, request: bytes, count: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        for _ in range(count):
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            if not head.startswith(b"HTTP/1.1 200"):
                raise RuntimeError(f"unexpected response {head[:40]!r}")
            start = head.lower().index(b"content-length:") + 15
            length = int(head[start:head.index(b"\r\n", start)])
            await reader.readexactly(length)
    finally:
        writer.close()


async def _load(port: int, requests: int, connections: int) -> float:
    key = os.environ.get(KEY_ENV, "")
    request = (b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer "
               + key.encode() + b"\r\n\r\n")
    # Warm-up: connections, the key's first (argon2) verification.
    await asyncio.gather(*(_connection(port, request, WARM_UP) for _ in range(connections)))
    each = requests // connections
    started = time.perf_counter()
    await asyncio.gather(*(_connection(port, request, each) for _ in range(connections)))
    return each * connections / (time.perf_counter() - started)


def load(port: int, requests: int, connections: int) -> None:
    """Subprocess: a bounded load on loopback; print requests per second."""
    print(json.dumps({"rps": asyncio.run(_load(port, requests, connections))}), flush=True)


def _cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of process *pid* (Linux), else ``None``."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


SERVER_VARIANTS = ("bare", "hand-written", "ours-memory", "ours-sqlite")


def real_server(key: str, db_path: str, rounds: int, requests: int, connections: int
                ) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Requests per second of each variant, one sample per round, and the
    server's CPU µs per request (where /proc tells)."""
    me = os.path.abspath(__file__)
    variants = list(SERVER_VARIANTS)
    servers: dict[str, subprocess.Popen[str]] = {}
    ports: dict[str, int] = {}
    env = {**os.environ, KEY_ENV: key}
    rps: dict[str, list[float]] = {v: [] for v in variants}
    cpu: dict[str, list[float]] = {v: [] for v in variants}
    try:
        for variant in variants:
            proc = subprocess.Popen([sys.executable, me, "--serve", variant, "--db", db_path],
                                    stdout=subprocess.PIPE, text=True, env=env)
            servers[variant] = proc
            assert proc.stdout is not None
            ports[variant] = int(proc.stdout.readline())
        for i in range(rounds):
            # Interleaved, in an order rotated each round: drift hits every variant alike.
            shift = i % len(variants)
            for variant in variants[shift:] + variants[:shift]:
                before = _cpu_seconds(servers[variant].pid)
                out = subprocess.run(
                    [sys.executable, me, "--load", "--port", str(ports[variant]),
                     "--requests", str(requests), "--connections", str(connections)],
                    env=env, capture_output=True, text=True, check=True, timeout=600,
                )
                after = _cpu_seconds(servers[variant].pid)
                rps[variant].append(json.loads(out.stdout)["rps"])
                if before is not None and after is not None:
                    served = requests + WARM_UP * connections
                    cpu[variant].append((after - before) / served * 1e6)
    finally:
        for proc in servers.values():
            proc.terminate()
            proc.wait(timeout=30)
    return rps, cpu


def report_server(rps: dict[str, list[float]], cpu: dict[str, list[float]], requests: int,
                  connections: int) -> dict[str, float]:
    """Print the table; return each variant's median share of the bare rate."""
    bare = rps["bare"]
    shares = {v: statistics.median(r / b for r, b in zip(rates, bare, strict=True))
              for v, rates in rps.items()}
    rows = [("variant", "requests/s", "of bare (median of per-round ratios)",
             "server CPU µs/request")]
    rows += [(v, f"{statistics.median(r):.0f}", f"{shares[v]:.1%}",
              f"{statistics.median(cpu[v]):.0f}" if cpu[v] else "-")
             for v, r in rps.items()]
    print_table(f"uvicorn, one worker, {requests} requests over {connections} keep-alive "
                f"connections from a second process, median of {len(bare)} rounds", rows)
    return shares


# -- main ----------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15, help="in-process rounds")
    parser.add_argument("--batch", type=int, default=2000, help="requests per timing")
    parser.add_argument("--no-server", action="store_true", help="skip the uvicorn run")
    parser.add_argument("--rounds", type=int, default=7, help="uvicorn rounds per variant")
    parser.add_argument("--requests", type=int, default=10_000, help="requests per round")
    parser.add_argument("--connections", type=int, default=8)
    # Internal: the server and load-generator subprocesses.
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    parser.add_argument("--db", help=argparse.SUPPRESS)
    parser.add_argument("--load", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.db)
        return
    if args.load:
        load(args.port, args.requests, args.connections)
        return

    with tempfile.TemporaryDirectory() as tmp:
        db_path = os.path.join(tmp, "keys.db")
        # The real argon2 profile: only each process's first request pays for it.
        issued = KeyManager(SQLiteKeyStore(db_path)).create("bench", scopes=["charges:read"])
        memory = MemoryKeyStore([issued.record])
        limited = MemoryKeyStore([dataclasses.replace(issued.record,
                                                      rate_limits=(f"{10**9}/hour",))])

        samples = in_process(issued.key, memory, db_path, args.repeats, args.batch, limited)
        ratios = report_in_process(samples)
        memory_ratio = ratios["starlette: ours, memory store"]
        verdict = "meets" if memory_ratio <= TARGET_ADDED else "MISSES"
        print(f"\nours added / hand-written added (Starlette, memory store): "
              f"{memory_ratio:.2f}, {verdict} the target of {TARGET_ADDED}x")
        print(f"ours added / hand-written added (FastAPI dependency, memory store): "
              f"{ratios['fastapi: ours, APIKey dependency, memory']:.2f}")
        limit_cost = statistics.median(
            a - b for a, b in zip(samples["starlette: ours, memory store, key with one rate limit"],
                                  samples["starlette: ours, memory store"], strict=True))
        print(f"a key with one rate limit (memory) adds {limit_cost:+.2f} µs per request over "
              f"the same key without policies (median of per-round differences; target +2 µs)")

        if not args.no_server:
            rps, cpu = real_server(issued.key, db_path, args.rounds, args.requests,
                                   args.connections)
            shares = report_server(rps, cpu, args.requests, args.connections)
            share = shares["ours-memory"]
            verdict = "meets" if share >= TARGET_RPS else "MISSES"
            print(f"\nours (memory store) serves {share:.1%} of bare requests/s, "
                  f"{verdict} the target of {TARGET_RPS:.0%} (the hand-written "
                  f"AuthenticationMiddleware: {shares['hand-written']:.1%})")


if __name__ == "__main__":
    main()
