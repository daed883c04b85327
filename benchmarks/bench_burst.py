"""Burst benchmark: 300 abandoned wrong secrets, and what a real client waits.

Run: ``python benchmarks/bench_burst.py [--rounds N] [--burst N] [--before TREE]``.

The issue's attack on a real server: a uvicorn process (one worker) serves a
hello app behind ``APIKeyMiddleware`` on a SQLite key file, every key hashed
with the default (OWASP) argon2id profile, with the middleware's default
options.  Each round sends ``--burst`` (300) requests with random wrong
secrets for one key id, each connection closed as soon as the request is
written, then times one request of each kind a legitimate client sends:

* ``warm``: a key that verified before;
* ``cold``: a valid key never used before (one argon2 verification);
* ``exempt``: ``/health``, which needs no key;

once right after the burst was sent ("during") and once after the server has
gone quiet again ("after": its argon2 count stopped moving).  The kinds run
in an order rotated from round to round.  The table gives medians over
rounds, the statuses the cold key got, and how many argon2 verifications
each burst cost.

``--before TREE`` also runs a server from another checkout of the package
(for instance ``git worktree add /tmp/before <commit>``), interleaved round by
round with this one: the same burst against the code before the bounds.

The numbers depend on the machine's load: they are medians of interleaved
rounds, and the ratios between the two servers mean more than either.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, os.path.dirname(__file__))

ME = os.path.abspath(__file__)
BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
KINDS = ("warm", "cold", "exempt")


# -- the server (a subprocess, possibly on another checkout) ----------------------


def serve(db: str, cold: int) -> None:
    """Subprocess: uvicorn serving the hello app on a new key file *db*, made
    by this checkout's own code; prints its port and the keys as JSON."""
    import uvicorn

    from aqnt_auth import Argon2Hasher, KeyManager, SQLiteKeyStore
    from aqnt_auth.adapters.asgi import APIKeyMiddleware

    store = SQLiteKeyStore(db)
    manager = KeyManager(store, hasher=Argon2Hasher())
    keys = {"target": manager.create("target").key, "warm": manager.create("warm").key,
            "cold": [manager.create(f"cold {i}").key for i in range(cold)]}
    store.close()

    class Counting(Argon2Hasher):
        calls = 0

        def verify(self, stored: str, secret: str) -> bool:
            Counting.calls += 1  # a race may lose a count: informative only
            return super().verify(stored, secret)

    async def hello(scope: Any, receive: Any, send: Any) -> None:
        await _answer(send, b"ok")

    protected = APIKeyMiddleware(hello, store=SQLiteKeyStore(db), hashers=[Counting()],
                                 exempt_paths=["/health"])

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] == "/_stats":
            await _answer(send, json.dumps({"argon2": Counting.calls}).encode())
            return
        await protected(scope, receive, send)

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    print(json.dumps({"port": sock.getsockname()[1], **keys}), flush=True)
    config = uvicorn.Config(app, log_level="error", access_log=False, backlog=4096,
                            lifespan="off")
    uvicorn.Server(config).run(sockets=[sock])


async def _answer(send: Any, body: bytes) -> None:
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


# -- the client -------------------------------------------------------------------


#: The attacker's address, and the legitimate client's: the failure limiter
#: (on by default) tells them apart.
ATTACKER, CLIENT = "127.0.0.1", "127.0.0.2"


def _send(port: int, path: str, key: str | None, source: str = CLIENT) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=120,
                                    source_address=(source, 0))
    auth = f"Authorization: Bearer {key}\r\n" if key else ""
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: b\r\n{auth}Connection: close\r\n\r\n".encode())
    return sock


def timed(port: int, path: str, key: str | None = None) -> tuple[float, int]:
    """Milliseconds for one request on a new connection, and its status."""
    start = time.perf_counter()
    with _send(port, path, key) as sock:
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    return (time.perf_counter() - start) * 1000, int(data.split(b" ", 2)[1])


def wrong_key(key: str) -> str:
    from aqnt_auth import checksum

    head = key[:20] + "".join(secrets.choice(BASE62) for _ in range(32))
    return head + checksum(head)


def argon2_count(port: int) -> int:
    with _send(port, "/_stats", None) as sock:
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    return int(json.loads(data.partition(b"\r\n\r\n")[2])["argon2"])


def until_quiet(port: int) -> None:
    """Until the server's argon2 count has not moved for 0.3 s."""
    last, since = argon2_count(port), time.monotonic()
    while time.monotonic() - since < 0.3:
        time.sleep(0.05)
        now = argon2_count(port)
        if now != last:
            last, since = now, time.monotonic()


class Server:
    def __init__(self, name: str, db: str, tree: str | None, cold: int) -> None:
        self.name = name
        env = dict(os.environ)
        if tree is not None:
            env["PYTHONPATH"] = tree
        self.proc = subprocess.Popen([sys.executable, ME, "--serve", db, "--cold", str(cold)],
                                     env=env, stdout=subprocess.PIPE, cwd=tree or os.getcwd())
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            self.proc.wait()
            raise SystemExit(f"the {name} server did not start")
        started = json.loads(line)
        self.port: int = started["port"]
        self.keys: tuple[str, str, list[str]] = (started["target"], started["warm"],
                                                 started["cold"])
        for _ in range(500):
            try:
                timed(self.port, "/health")
                break
            except OSError:
                time.sleep(0.02)
        self.samples: dict[tuple[str, str], list[float]] = {}
        self.cold_statuses: dict[str, list[int]] = {"during": [], "after": []}
        self.burst_hashes: list[int] = []

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)

    def round(self, n: int, burst: int, target: str, warm: str, cold: list[str]) -> None:
        before = argon2_count(self.port)
        sockets = [_send(self.port, "/v1", wrong_key(target), ATTACKER) for _ in range(burst)]
        for sock in sockets:
            sock.close()
        for phase in ("during", "after"):
            if phase == "after":
                until_quiet(self.port)
            order = KINDS[n % 3:] + KINDS[:n % 3]
            for kind in order:
                if kind == "warm":
                    ms, _ = timed(self.port, "/v1", warm)
                elif kind == "exempt":
                    ms, _ = timed(self.port, "/health")
                else:
                    ms, status = timed(self.port, "/v1", cold.pop())
                    self.cold_statuses[phase].append(status)
                self.samples.setdefault((phase, kind), []).append(ms)
        self.burst_hashes.append(argon2_count(self.port) - before - self.cold_statuses[
            "during"][-1:].count(200) - 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--burst", type=int, default=300)
    parser.add_argument("--before", metavar="TREE",
                        help="a checkout of the code to compare with (run interleaved)")
    parser.add_argument("--serve", metavar="DB", help=argparse.SUPPRESS)
    parser.add_argument("--cold", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.cold)
        return

    servers_spec: list[tuple[str, str | None]] = [("bounded (this tree)", None)]
    if args.before:
        servers_spec.append(("before", str(Path(args.before).resolve())))
    with tempfile.TemporaryDirectory() as tmp:
        servers: list[Server] = []
        try:
            for name, tree in servers_spec:
                db = os.path.join(tmp, f"{len(servers)}.db")
                servers.append(Server(name, db, tree, 2 * args.rounds))
            for server in servers:
                timed(server.port, "/v1", server.keys[1])  # the warm key, verified
                until_quiet(server.port)
            for n in range(args.rounds):
                for server in servers[n % 2:] + servers[:n % 2]:
                    target, warm, cold = server.keys
                    server.round(n, args.burst, target, warm, cold)
                    until_quiet(server.port)
        finally:
            for server in servers:
                server.stop()

    rows: list[tuple[str, ...]] = [
        ("server", "phase", "warm ms", "cold ms", "exempt ms", "cold statuses")]
    for server in servers:
        for phase in ("during", "after"):
            medians = [statistics.median(server.samples[(phase, k)]) for k in KINDS]
            statuses = server.cold_statuses[phase]
            summary = ", ".join(f"{s}: {statuses.count(s)}" for s in sorted(set(statuses)))
            rows.append((server.name, phase, *(f"{m:.1f}" for m in medians), summary))
    print_table(f"{args.burst} abandoned wrong secrets per round, {args.rounds} rounds "
                "(medians; uvicorn, SQLite store, argon2id OWASP, default options)", rows)
    for server in servers:
        print(f"  {server.name}: argon2 runs per burst (median) "
              f"{statistics.median(server.burst_hashes):.0f} of {args.burst}")


def print_table(title: str, rows: list[tuple[str, ...]]) -> None:
    from _util import print_table as table

    table(title, rows)


if __name__ == "__main__":
    main()
