"""Client addresses over real servers on loopback.

hypercorn (the ASGI middleware) and gunicorn (the Flask extension) bound to
``[::]``, where IPv4 clients arrive IPv4-mapped (``::ffff:127.0.0.1``);
requests come from chosen 127.0.0.0/8 source addresses, so one test plays
several clients.  The apps allow 3 failures a minute per client.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from aqnt_auth import Argon2Hasher, KeyManager, SQLiteKeyStore
from tests import bodies

ROOT = Path(__file__).resolve().parents[2]
APP = "tests.adapters.client_servers_app"
SERVERS = {
    "hypercorn-asgi": ["-m", "hypercorn", "--log-level", "warning", f"{APP}:asgi_app()"],
    "gunicorn-flask": ["-m", "gunicorn", "--workers", "1", "--log-level", "warning",
                       f"{APP}:flask_app()"],
}
BAD_KEY = "sk_live_garbage"
#: Failures allowed per client by the apps, before the 429.
ALLOWED = 3

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket(socket.AF_INET6) as sock:
        sock.bind(("::", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def serve(server: str, store: Path, trusted_proxies: str = "") -> Iterator[int]:
    """*server* bound to ``[::]``; its port once ``/health`` answers."""
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "AQNT_TEST_STORE": str(store),
           "AQNT_TEST_TRUSTED_PROXIES": trusted_proxies}
    command = [sys.executable, *SERVERS[server][:-1], "--bind", f"[::]:{port}",
               SERVERS[server][-1]]
    proc = subprocess.Popen(command, cwd=ROOT, env=env)
    try:
        for _ in range(1500):
            try:
                if request(port, "/health")[0] == 200:
                    break
            except OSError:
                pass
            if proc.poll() is not None:
                pytest.fail(f"{server} exited with {proc.returncode}")
            time.sleep(0.02)
        else:
            pytest.fail(f"{server} never came up on [::]:{port}")
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:  # pragma: no cover - a hung server
            proc.kill()
            proc.wait()


def request(port: int, path: str, key: str | None = None, source: str = "127.0.0.1",
            headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    """One HTTP/1.1 request over IPv4 from *source*; its status and body."""
    lines = [f"GET {path} HTTP/1.1", "Host: t", "Connection: close"]
    if key is not None:
        lines.append(f"Authorization: Bearer {key}")
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    with socket.create_connection(("127.0.0.1", port), timeout=30,
                                  source_address=(source, 0)) as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


@pytest.fixture
def store(tmp_path: Path) -> Path:
    return tmp_path / "keys.db"


@pytest.fixture
def key(store: Path) -> str:
    keys = SQLiteKeyStore(store)
    issued = KeyManager(keys, hasher=Argon2Hasher("cheapest")).create("client").key
    keys.close()
    return issued


def exhaust(port: int, source: str, headers: dict[str, str] | None = None) -> None:
    """Use up the failures of one client, and see its 429."""
    for _ in range(ALLOWED):
        assert request(port, "/v1", BAD_KEY, source, headers) == (401, bodies.INVALID)
    assert request(port, "/v1", BAD_KEY, source, headers) == (429, bodies.RATE_LIMITED)


@pytest.mark.parametrize("server", SERVERS)
def test_ipv4_clients_of_a_dual_stack_server_are_apart(server: str, store: Path,
                                                        key: str) -> None:
    """Bad keys from 127.0.0.1 lock out 127.0.0.1 only: 127.0.0.2 keeps its budget
    and its valid key (both arrive as ::ffff:127.0.0.x, and used to share ::/64)."""
    with serve(server, store) as port:
        exhaust(port, "127.0.0.1")
        assert request(port, "/v1", BAD_KEY, "127.0.0.2") == (401, bodies.INVALID)
        assert request(port, "/v1", key, "127.0.0.2")[0] == 200
        assert request(port, "/v1", BAD_KEY, "127.0.0.1") == (429, bodies.RATE_LIMITED)


@pytest.mark.parametrize("server", SERVERS)
def test_clients_behind_a_trusted_proxy(server: str, store: Path, key: str) -> None:
    """127.0.0.1 is the trusted proxy: the clients it forwards for are told apart by
    X-Forwarded-For, and a spoofed left part changes nothing.  From 127.0.0.2, an
    untrusted peer, the header is ignored: varying it does not escape the limit."""
    with serve(server, store, trusted_proxies="127.0.0.1") as port:
        exhaust(port, "127.0.0.1", {"X-Forwarded-For": "203.0.113.7"})
        spoofed = {"X-Forwarded-For": "198.51.100.1, 203.0.113.7"}
        assert request(port, "/v1", BAD_KEY, "127.0.0.1", spoofed) == (429, bodies.RATE_LIMITED)
        other = {"X-Forwarded-For": "203.0.113.8"}
        assert request(port, "/v1", BAD_KEY, "127.0.0.1", other) == (401, bodies.INVALID)
        assert request(port, "/v1", key, "127.0.0.1", other)[0] == 200
        rfc7239 = {"Forwarded": 'for="[2001:db8::9]:4711"'}
        assert request(port, "/v1", BAD_KEY, "127.0.0.1", rfc7239) == (401, bodies.INVALID)
        for n in range(ALLOWED):
            varied = {"X-Forwarded-For": f"198.51.100.{n + 10}"}
            assert request(port, "/v1", BAD_KEY, "127.0.0.2", varied) == (401, bodies.INVALID)
        varied = {"X-Forwarded-For": "198.51.100.99"}
        assert request(port, "/v1", BAD_KEY, "127.0.0.2", varied) == (429, bodies.RATE_LIMITED)
