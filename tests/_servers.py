"""Real uvicorn processes on loopback for the multi-process tests: start N
of them for an app factory, wait until each answers as wanted, keep them
busy while recording every request, and stop them."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[1]
#: How long (1500 tries, 20 ms apart) a server may take to become ready.
TRIES = 1500
PAUSE = 0.02


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def uvicorn_servers(factory: str, count: int, env: Mapping[str, str], *,
                    bound_socket: bool = False) -> Iterator[list[int]]:
    """*count* uvicorn processes serving the app *factory* (``module:function``)
    with *env* added to the environment; yield their ports (without waiting
    for them to come up) and stop them afterwards.

    Each listens on its own ``--port`` (TCP_NODELAY on), or, with
    *bound_socket*, on a socket bound here and passed with ``--fd`` (no port
    race, but uvicorn leaves TCP_NODELAY off on it)."""
    full_env = {**os.environ, **env, "PYTHONPATH": str(ROOT)}
    procs: list[subprocess.Popen[bytes]] = []
    ports = []
    try:
        for _ in range(count):
            sock = socket.create_server(("127.0.0.1", 0)) if bound_socket else None
            port = sock.getsockname()[1] if sock is not None else _free_port()
            ports.append(port)
            listen = ["--fd", str(sock.fileno())] if sock is not None else ["--port", str(port)]
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "uvicorn", "--factory", factory, *listen,
                 "--log-level", "warning", "--no-access-log"],
                cwd=ROOT, env=full_env, pass_fds=(sock.fileno(),) if sock is not None else (),
            ))
            if sock is not None:
                sock.close()
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


def poll(ready: Callable[[], bool], what: str) -> None:
    """Call *ready* until it is true (a connection error counts as not yet)."""
    for _ in range(TRIES):
        try:
            if ready():
                return
        except OSError:
            pass
        time.sleep(PAUSE)
    pytest.fail(f"{what} never became ready")


async def until(client: httpx.AsyncClient, url: str, ready: Callable[[httpx.Response], bool],
                *, headers: dict[str, str] | None = None) -> None:
    """GET *url* until *ready* holds for the response (a transport error
    counts as not yet)."""
    for _ in range(TRIES):
        try:
            if ready(await client.get(url, headers=headers)):
                return
        except httpx.TransportError:
            pass
        await asyncio.sleep(PAUSE)
    pytest.fail(f"{url} never became ready")


def ok(response: httpx.Response) -> bool:
    return response.status_code == 200


@dataclass(frozen=True)
class Sample:
    """One request made by :func:`hammer`: which server, when, and its answer."""

    server: int
    started: float
    ended: float
    status: int
    body: bytes


async def hammer(client: httpx.AsyncClient, server: int, url: str, headers: dict[str, str],
                 stop: asyncio.Event, samples: list[Sample]) -> None:
    """GET *url* back to back until *stop* is set, recording every request."""
    while not stop.is_set():
        started = time.monotonic()
        response = await client.get(url, headers=headers)
        samples.append(Sample(server, started, time.monotonic(), response.status_code,
                              response.content))
