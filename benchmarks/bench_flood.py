"""Flood benchmark: argon2 pressure and memory under hostile traffic.

Run: ``python benchmarks/bench_flood.py [--rounds N] [--keys N] [--no-server] [--no-memory]``.

1. Wrong-secret flood on a real server (uvicorn, one worker, loopback):
   a Starlette app behind ``APIKeyMiddleware`` with one key hashed with
   the default (OWASP) argon2id profile.  A second process keeps
   ``--connections`` (200) keep-alive connections each sending a new wrong
   secret for that key id as soon as the last one is refused; every one
   costs a real argon2 verification.  Meanwhile this process times
   ``--probes`` sequential requests to the exempt ``/health``.  Each round
   probes the idle server, then the flooded one (interleaved, per server);
   the table gives medians over rounds of p50/p99 and of the per-round
   ratio flood p99 / idle p99.  Targets: the peak number of argon2
   verifications running at once (counted inside the hasher) never exceeds
   ``max_concurrent_hashes``; the exempt endpoint's p99 stays within 2x of
   its idle p99.  Two servers: the default bound (CPU count) and a bound
   of one.
2. Memory under 10^6 distinct bogus keys, each variant in a fresh process:
   RSS and tracemalloc's traced memory after a warm-up of 10^4 keys and
   after ``--keys`` more, through ``Authenticator.authenticate`` and through
   the ASGI middleware, with and without a failure limiter (defaults:
   60 failures a minute per client).  Target: no per-key growth (bytes per
   key ~ 0), RSS after / before ~ 1.  Two more rows send every key from a
   new client address, which is what a limiter's memory storage keeps.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextlib
import gc
import json
import os
import secrets
import socket
import statistics
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Iterator, MutableMapping
from typing import Any

from aqnt_auth import (
    AQNTError,
    Argon2Hasher,
    Authenticator,
    FailureLimiter,
    KeyManager,
    MemoryKeyStore,
    checksum,
)
from aqnt_auth.adapters.asgi import APIKeyMiddleware

sys.path.insert(0, os.path.dirname(__file__))
from _util import CountingHasher, print_table

ME = os.path.abspath(__file__)
BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


# -- 1. the flood on a real server ------------------------------------------------


def serve(bound: int) -> None:
    """Subprocess: uvicorn serving the protected app; prints "port key_id"."""
    import uvicorn
    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from starlette.requests import Request
    from starlette.responses import JSONResponse, PlainTextResponse, Response
    from starlette.routing import Route

    hasher = CountingHasher()
    store = MemoryKeyStore()
    key_id = KeyManager(store, hasher=hasher).create("flood target").record.id

    async def health(request: Request) -> Response:
        return PlainTextResponse("ok")

    async def stats(request: Request) -> Response:
        return JSONResponse({"peak": hasher.peak, "calls": hasher.calls})

    async def protected(request: Request) -> Response:
        return PlainTextResponse("protected")

    app = Starlette(
        routes=[Route("/health", health), Route("/stats", stats),
                Route("/{rest:path}", protected)],
        middleware=[Middleware(APIKeyMiddleware, store=store, hashers=[hasher],
                               exempt_paths=["/health", "/stats"],
                               max_concurrent_hashes=bound)],
    )
    # IPPROTO_TCP explicitly: asyncio sets TCP_NODELAY only on sockets that say so.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    print(sock.getsockname()[1], key_id, flush=True)
    config = uvicorn.Config(app, log_level="warning", access_log=False, backlog=4096)
    uvicorn.Server(config).run(sockets=[sock])


def _wrong_key(key_id: str) -> bytes:
    head = "sk_live_" + key_id + "".join(secrets.choice(BASE62) for _ in range(32))
    return (head + checksum(head)).encode()


async def _read_response(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    start = head.lower().index(b"content-length:") + 15
    await reader.readexactly(int(head[start:head.index(b"\r\n", start)]))
    return head[9:12]


async def _flooder(port: int, key_id: str, stop: asyncio.Event, ready: asyncio.Event,
                   counts: dict[bytes, int], opened: list[int], total: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    opened.append(1)
    if len(opened) == total:
        ready.set()
    try:
        while not stop.is_set():
            writer.write(b"GET /v1/charges HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer "
                         + _wrong_key(key_id) + b"\r\n\r\n")
            status = await _read_response(reader)
            counts[status] = counts.get(status, 0) + 1
    finally:
        writer.close()


async def _flood(port: int, key_id: str, connections: int) -> dict[str, int]:
    stop, ready = asyncio.Event(), asyncio.Event()
    counts: dict[bytes, int] = {}
    opened: list[int] = []
    tasks = [asyncio.create_task(_flooder(port, key_id, stop, ready, counts, opened,
                                          connections)) for _ in range(connections)]
    await ready.wait()
    print("ready", flush=True)
    # Flood until the parent closes our stdin (bounded by --flood-seconds anyway).
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.read)
    stop.set()
    await asyncio.gather(*tasks)
    return {k.decode(): v for k, v in counts.items()}


def flood(port: int, key_id: str, connections: int) -> None:
    """Subprocess: *connections* flooding connections; prints the statuses they got."""
    print(json.dumps(asyncio.run(_flood(port, key_id, connections))), flush=True)


def probe(port: int, count: int) -> list[float]:
    """Milliseconds of *count* sequential GET /health on one keep-alive connection."""
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    stream = sock.makefile("rb")
    request = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    times: list[float] = []
    try:
        for _ in range(count):
            start = time.perf_counter()
            sock.sendall(request)
            length = 0
            status = stream.readline()
            while (line := stream.readline()) not in (b"\r\n", b""):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            stream.read(length)
            times.append((time.perf_counter() - start) * 1000)
            if not status.startswith(b"HTTP/1.1 200"):
                raise RuntimeError(f"/health answered {status!r}")
    finally:
        stream.close()
        sock.close()
    return times


def p99(values: list[float]) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[98]


def _stats(port: int) -> dict[str, int]:
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(b"GET /stats HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    return json.loads(data.split(b"\r\n\r\n", 1)[1])  # type: ignore[no-any-return]


def flood_round(port: int, key_id: str, probes: int, connections: int
                ) -> tuple[list[float], list[float], dict[str, int]]:
    """Idle probes, then probes under a flood: (idle ms, flood ms, flood statuses)."""
    idle = probe(port, probes)
    flooder = subprocess.Popen(
        [sys.executable, ME, "--flood", "--port", str(port), "--key-id", key_id,
         "--connections", str(connections)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    assert flooder.stdin is not None
    assert flooder.stdout is not None
    try:
        if flooder.stdout.readline().strip() != "ready":
            raise RuntimeError("the flooder did not start")
        time.sleep(0.5)  # every connection has a request waiting for argon2
        flooded = probe(port, probes)
        flooder.stdin.close()
        statuses = json.loads(flooder.stdout.readline())
    finally:
        flooder.wait(timeout=120)
    return idle, flooded, statuses


def real_server(rounds: int, probes: int, connections: int) -> None:
    cpus = os.cpu_count() or 1
    bounds = sorted({cpus, 1}, reverse=True)
    servers: dict[int, subprocess.Popen[str]] = {}
    where: dict[int, tuple[int, str]] = {}
    samples: dict[int, list[tuple[list[float], list[float]]]] = {b: [] for b in bounds}
    statuses: dict[int, dict[str, int]] = {b: {} for b in bounds}
    try:
        for bound in bounds:
            proc = subprocess.Popen([sys.executable, ME, "--serve", "--bound", str(bound)],
                                    stdout=subprocess.PIPE, text=True)
            servers[bound] = proc
            assert proc.stdout is not None
            announced = proc.stdout.readline().split()
            where[bound] = (int(announced[0]), announced[1])
        for i in range(rounds):
            order = bounds[i % len(bounds):] + bounds[:i % len(bounds)]
            for bound in order:
                idle, flooded, got = flood_round(*where[bound], probes, connections)
                samples[bound].append((idle, flooded))
                for status, n in got.items():
                    statuses[bound][status] = statuses[bound].get(status, 0) + n
        peaks = {bound: _stats(where[bound][0]) for bound in bounds}
    finally:
        for proc in servers.values():
            proc.terminate()
            proc.wait(timeout=30)
    rows = [("max_concurrent_hashes", "argon2 peak", "verifications", "flood answers",
             "idle p50 ms", "idle p99 ms", "flood p50 ms", "flood p99 ms", "p99 ratio")]
    for bound in bounds:
        runs = samples[bound]
        ratio = statistics.median(p99(f) / p99(i) for i, f in runs)
        rows.append((
            f"{bound}{' (CPU count, default)' if bound == cpus else ''}",
            f"{peaks[bound]['peak']} (<= {bound}: "
            f"{'yes' if peaks[bound]['peak'] <= bound else 'NO'})",
            str(peaks[bound]["calls"]),
            ", ".join(f"{n} x {s}" for s, n in sorted(statuses[bound].items())),
            f"{statistics.median(statistics.median(i) for i, _ in runs):.3f}",
            f"{statistics.median(p99(i) for i, _ in runs):.3f}",
            f"{statistics.median(statistics.median(f) for _, f in runs):.3f}",
            f"{statistics.median(p99(f) for _, f in runs):.3f}",
            f"{ratio:.2f}x ({'within' if ratio <= 2 else 'OVER'} 2x)",
        ))
    print_table(f"uvicorn, one worker, argon2id OWASP profile: {connections} connections "
                f"flooding wrong secrets; {probes} sequential GET /health probes per phase; "
                f"medians of {rounds} rounds (the ratio: median of per-round ratios)", rows)


# -- 2. memory under distinct bogus keys -------------------------------------------


def bogus_keys(kind: str, count: int, start: int = 0) -> Iterator[str]:
    """*count* distinct keys: "malformed" (bad checksum) or "unknown" (well
    formed, valid checksum, an id no store holds)."""
    secret = "S" * 32
    for i in range(start, start + count):
        head = f"sk_live_{i:012d}{secret}"
        yield head + ("AAAAAA" if kind == "malformed" else checksum(head))


def _rss() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _authenticator(limiter_strategy: str | None) -> Authenticator:
    store = MemoryKeyStore()
    hasher = Argon2Hasher("cheapest")
    KeyManager(store, hasher=hasher).create("the one real key")
    limiter = FailureLimiter(strategy=limiter_strategy) if limiter_strategy else None
    return Authenticator(store, hashers=[hasher], rate_limit=limiter)


def _client(i: int, rotating: bool) -> str:
    # A new IPv6 /64 per request (addresses inside one /64 count as one
    # client): the worst case for the limiter's memory, a botnet's worth.
    return f"2001:db8:{i >> 16:x}:{i & 0xFFFF:x}::1" if rotating else "203.0.113.7"


def _through_authenticator(auth: Authenticator, keys: Iterator[str], rotating: bool) -> None:
    authenticate = auth.authenticate
    for i, key in enumerate(keys):
        with contextlib.suppress(AQNTError):
            authenticate("Bearer " + key, client=_client(i, rotating))


def _through_middleware(app: APIKeyMiddleware, loop: asyncio.AbstractEventLoop,
                        keys: Iterator[str], rotating: bool, batch: int = 2000) -> None:
    statuses: list[int] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: MutableMapping[str, Any]) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    async def run(chunk: list[tuple[int, str]]) -> None:
        for i, key in chunk:
            scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
                     "method": "GET", "scheme": "http", "path": "/v1/charges",
                     "raw_path": b"/v1/charges", "query_string": b"", "root_path": "",
                     "headers": [(b"host", b"bench"), (b"authorization", b"Bearer "
                                                       + key.encode())],
                     "client": (_client(i, rotating), 40000), "server": ("bench", 80)}
            await app(scope, receive, send)

    chunk: list[tuple[int, str]] = []
    for item in enumerate(keys):
        chunk.append(item)
        if len(chunk) == batch:
            loop.run_until_complete(run(chunk))
            chunk = []
    if chunk:
        loop.run_until_complete(run(chunk))
    if not set(statuses) <= {401, 429}:
        raise RuntimeError(f"unexpected statuses {set(statuses)}")


def memory_variant(variant: str, count: int) -> None:
    """Subprocess: one memory variant; prints its figures as JSON."""
    path, kind, limited = variant.split(":")
    strategy = {"none": None, "limiter": "fixed-window", "rotating": "fixed-window",
                "rotating-moving": "moving-window"}[limited]
    auth = _authenticator(strategy)
    rotating = limited.startswith("rotating")
    loop = asyncio.new_event_loop()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        raise RuntimeError("a bogus key reached the app")

    middleware = APIKeyMiddleware(app, authenticator=auth)

    def push(keys: Iterator[str]) -> None:
        if path == "authenticator":
            _through_authenticator(auth, keys, rotating)
        else:
            _through_middleware(middleware, loop, keys, rotating)

    tracemalloc.start()
    push(bogus_keys(kind, 10_000))  # warm-up: every lazy structure exists
    gc.collect()
    rss_before, traced_before = _rss(), tracemalloc.get_traced_memory()[0]
    started = time.perf_counter()
    push(bogus_keys(kind, count, start=10_000))
    seconds = time.perf_counter() - started
    gc.collect()
    rss_after, traced_after = _rss(), tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    loop.close()
    auth.close()
    print(json.dumps({"rss": [rss_before, rss_after], "traced": [traced_before, traced_after],
                      "seconds": seconds}), flush=True)


MEMORY_VARIANTS = (
    ("authenticator:malformed:none", "Authenticator", "bad checksum"),
    ("authenticator:unknown:none", "Authenticator", "unknown id"),
    ("authenticator:unknown:limiter", "Authenticator + FailureLimiter", "unknown id"),
    ("asgi:malformed:none", "ASGI middleware", "bad checksum"),
    ("asgi:unknown:none", "ASGI middleware", "unknown id"),
    ("asgi:unknown:limiter", "ASGI middleware + FailureLimiter", "unknown id"),
    # Not bogus keys but bogus clients, a new /64 per request: what
    # the limiter's memory storage keeps per address, with the default fixed
    # windows (which expire) and with moving windows (which limits keeps).
    ("asgi:unknown:rotating", "ASGI middleware + FailureLimiter", "unknown id, new client each"),
    ("asgi:unknown:rotating-moving", "ASGI + FailureLimiter(moving-window)",
     "unknown id, new client each"),
)


def _memory_run(variant: str, count: int) -> dict[str, Any]:
    out = subprocess.run([sys.executable, ME, "--memory", variant, "--keys", str(count)],
                         capture_output=True, text=True, check=True, timeout=3600)
    return json.loads(out.stdout)  # type: ignore[no-any-return]


def memory(count: int) -> None:
    rows = [("through", "bogus keys", "RSS before MiB", "RSS after MiB", "RSS after/before",
             "traced before KiB", "traced after KiB", "traced growth B/key", "µs/key")]
    # Two variants at a time: each is one single-threaded process.
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda v: _memory_run(v[0], count), MEMORY_VARIANTS))
    for (_variant, through, kind), figures in zip(MEMORY_VARIANTS, results, strict=True):
        (rss0, rss1), (tr0, tr1) = figures["rss"], figures["traced"]
        rows.append((through, kind, f"{rss0 / 2**20:.1f}", f"{rss1 / 2**20:.1f}",
                     f"{rss1 / rss0:.3f}", f"{tr0 / 1024:.0f}", f"{tr1 / 1024:.0f}",
                     f"{(tr1 - tr0) / count:.4f}", f"{figures['seconds'] / count * 1e6:.1f}"))
    print_table(f"Memory: {count:,} distinct bogus keys after a 10,000-key warm-up, each "
                "variant in a fresh process (tracemalloc on; µs/key include its overhead)",
                rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--probes", type=int, default=1000)
    parser.add_argument("--connections", type=int, default=200)
    parser.add_argument("--keys", type=int, default=1_000_000)
    parser.add_argument("--no-server", action="store_true")
    parser.add_argument("--no-memory", action="store_true")
    # Subprocess roles.
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--bound", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--flood", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--key-id", help=argparse.SUPPRESS)
    parser.add_argument("--memory", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.bound)
    elif args.flood:
        flood(args.port, args.key_id, args.connections)
    elif args.memory:
        memory_variant(args.memory, args.keys)
    else:
        if not args.no_server:
            real_server(args.rounds, args.probes, args.connections)
        if not args.no_memory:
            memory(args.keys)


if __name__ == "__main__":
    main()
