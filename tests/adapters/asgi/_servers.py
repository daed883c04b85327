"""Real uvicorn processes on loopback, and raw HTTP/1.1 requests from any
127.0.0.0/8 address (so a test can play several clients)."""

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

ROOT = Path(__file__).resolve().parents[3]


@contextmanager
def uvicorn_servers(count: int, env: dict[str, str]) -> Iterator[list[int]]:
    """*count* uvicorn processes serving ``server_app``; yield their ports once
    each answers ``/health``."""
    full_env = {**os.environ, **env, "PYTHONPATH": str(ROOT)}
    procs: list[subprocess.Popen[bytes]] = []
    ports = []
    try:
        for _ in range(count):
            sock = socket.create_server(("127.0.0.1", 0))
            ports.append(sock.getsockname()[1])
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "uvicorn", "--factory",
                 "tests.adapters.asgi.server_app:create_app", "--fd", str(sock.fileno()),
                 "--log-level", "warning", "--no-access-log"],
                cwd=ROOT, env=full_env, pass_fds=(sock.fileno(),),
            ))
            sock.close()
        for port in ports:
            _until_up(port)
        yield ports
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:  # pragma: no cover - a hung server
                proc.kill()
                proc.wait()


def _until_up(port: int) -> None:
    for _ in range(1500):
        try:
            if request(port, "/health")[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.02)
    pytest.fail(f"the server on port {port} never came up")


def send_only(port: int, path: str, key: str | None = None, source: str = "127.0.0.1"
              ) -> socket.socket:
    """Open a connection from *source*, send one request, and return the socket."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=30,
                                    source_address=(source, 0))
    auth = f"Authorization: Bearer {key}\r\n" if key is not None else ""
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: t\r\n{auth}Connection: close\r\n\r\n".encode())
    return sock


def request(port: int, path: str, key: str | None = None, source: str = "127.0.0.1"
            ) -> tuple[int, bytes]:
    """One request; its status and body."""
    with send_only(port, path, key, source) as sock:
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body
