"""A loopback TCP proxy the tests can cut, black-hole and restore.

The real database server is shared with other tests and cannot be stopped;
a store pointed at this proxy sees the same outages a network or a crashed
server would cause:

* :meth:`TCPProxy.cut`: every connection is closed and new ones are closed
  on arrival (a server that is down);
* :meth:`TCPProxy.blackhole`: bytes stop flowing both ways and new
  connections hang unanswered (a network that silently drops packets);
* :meth:`TCPProxy.restore`: back to forwarding (connections that were
  black-holed are closed: their state is unknown).
"""

from __future__ import annotations

import contextlib
import socket
import threading
from types import TracebackType


def _close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        sock.close()


class TCPProxy:
    """Forwards 127.0.0.1:<port> to *target*, one thread per direction."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self._server = socket.create_server(("127.0.0.1", 0), backlog=128)
        self.port: int = self._server.getsockname()[1]
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self._flowing = threading.Event()
        self._flowing.set()
        self._mode = "open"
        self._closed = False
        self._thread = threading.Thread(target=self._accept, name="tcp-proxy", daemon=True)
        self._thread.start()

    def __enter__(self) -> TCPProxy:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    @property
    def mode(self) -> str:
        return self._mode

    def cut(self) -> None:
        """The server is gone: close everything, refuse what comes."""
        with self._lock:
            self._mode = "cut"
            self._flowing.set()
            self._drop_all()

    def blackhole(self) -> None:
        """The network swallows everything: nothing answers, nothing closes."""
        with self._lock:
            self._mode = "blackhole"
            self._flowing.clear()

    def restore(self) -> None:
        """Forward again; connections caught in a black hole are closed."""
        with self._lock:
            if self._mode == "blackhole":
                self._drop_all()
            self._mode = "open"
            self._flowing.set()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._flowing.set()
            self._drop_all()
        _close(self._server)

    def _drop_all(self) -> None:
        for sock in self._sockets:
            _close(sock)
        self._sockets.clear()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            with self._lock:
                if self._closed:
                    _close(client)
                    return
                mode = self._mode
                if mode == "cut":
                    _close(client)
                    continue
                self._sockets.add(client)
                if mode == "blackhole":
                    continue  # held open, never answered
            try:
                upstream = socket.create_connection(self.target, timeout=5)
                upstream.settimeout(None)
            except OSError:
                with self._lock:
                    self._sockets.discard(client)
                _close(client)
                continue
            with self._lock:
                self._sockets.add(upstream)
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                # A black hole holds what it got; whatever was held is
                # dropped with the connection at restore().
                self._flowing.wait()
                if self._mode != "open":
                    break
                dst.sendall(data)
        except OSError:
            pass
        finally:
            with self._lock:
                self._sockets.discard(src)
                self._sockets.discard(dst)
            _close(src)
            _close(dst)
