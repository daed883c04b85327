"""Real uvicorn processes on loopback, and raw HTTP/1.1 requests from any
127.0.0.0/8 address (so a test can play several clients)."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial

from tests import _servers


@contextmanager
def uvicorn_servers(count: int, env: dict[str, str]) -> Iterator[list[int]]:
    """*count* uvicorn processes serving ``server_app``; yield their ports once
    each answers ``/health``."""
    with _servers.uvicorn_servers("tests.adapters.asgi.server_app:create_app", count, env,
                                  bound_socket=True) as ports:
        for port in ports:
            _servers.poll(partial(_healthy, port), f"the server on port {port}")
        yield ports


def _healthy(port: int) -> bool:
    return request(port, "/health")[0] == 200


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
