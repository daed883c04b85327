"""A web server in a child process on 127.0.0.1, for the browser tests."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    """A port nothing listens on now (the server binds it a moment later)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@contextmanager
def serve(command: Callable[[int], Sequence[str]], env: dict[str, str], ready_path: str,
          attempts: int = 3) -> Iterator[str]:
    """Run ``command(port)`` until ``GET ready_path`` answers; yield its base
    URL; stop it at the end.  A server that exits at once (its port taken
    meanwhile) is started again on another port."""
    for attempt in range(attempts):
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        process = subprocess.Popen(list(command(port)), env=env, cwd=ROOT,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            deadline = time.monotonic() + 30
            while process.poll() is None and time.monotonic() < deadline:
                try:
                    httpx.get(base + ready_path, timeout=5)
                    break
                except httpx.TransportError:
                    time.sleep(0.1)
            if process.poll() is None:
                if time.monotonic() >= deadline:
                    raise RuntimeError(f"{command(port)[0]} did not answer on {base}")
                yield base
                return
            error = process.stderr.read().decode(errors="replace") if process.stderr else ""
            if attempt == attempts - 1:
                raise RuntimeError(f"the server exited: {error}")
        finally:
            if process.poll() is None:
                process.terminate()
                process.wait(timeout=10)
            if process.stderr:
                process.stderr.close()
