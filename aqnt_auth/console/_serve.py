"""``aqnt-auth console``: the console alone, for teams without a web app.

Served by uvicorn when it is installed, else by the standard library's
``wsgiref`` (one request at a time: enough for a handful of admins).  It
binds to the loopback interface: on any other address the session cookie
would travel without TLS, so that takes ``--allow-remote`` (put a TLS
proxy in front).
"""

from __future__ import annotations

import importlib.util
import ipaddress
import logging
import os
import sys
from typing import Any, Final, TextIO

from .._errors import ConfigurationError
from .._hashers import Hasher
from ._app import Console

__all__ = ["SECRET_ENV", "check_host", "is_loopback", "serve"]

#: Where the standalone console reads its secret key (never a flag: shell history).
SECRET_ENV: Final = "AQNT_AUTH_CONSOLE_SECRET_KEY"  # noqa: S105 (a variable's name)


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_host(host: str, allow_remote: bool) -> None:
    """Refuse a non-loopback *host* unless *allow_remote*."""
    if not is_loopback(host) and not allow_remote:
        raise ConfigurationError(
            f"refusing to serve the key console on {host}, which is not a loopback address: "
            "its sign-in cookie would cross the network. Use --host 127.0.0.1 (and an SSH "
            "tunnel), or pass --allow-remote behind a TLS-terminating proxy"
        )


def serve(store: Any, *, host: str = "127.0.0.1", port: int = 8400,
          allow_remote: bool = False, hasher: Hasher | None = None,
          prefixes: tuple[str, ...] = ("sk",), out: TextIO | None = None,
          server: str | None = None) -> None:
    """Serve the console for *store* until interrupted.

    *server* is ``"uvicorn"`` or ``"wsgiref"`` (default: uvicorn if installed).
    """
    check_host(host, allow_remote)
    out = out or sys.stdout
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    console = Console(store, secret_key=os.environ.get(SECRET_ENV) or None, hasher=hasher,
                      prefixes=prefixes)
    if server is None:
        server = "uvicorn" if importlib.util.find_spec("uvicorn") is not None else "wsgiref"
    shown = f"[{host}]" if ":" in host else host
    print(f"aqnt-auth console on http://{shown}:{port}/ ({server}); Ctrl-C stops it",
          file=out, flush=True)
    try:
        if server == "uvicorn":
            import uvicorn

            from ._asgi import ConsoleASGI

            uvicorn.run(ConsoleASGI(console), host=host, port=port, log_level="warning",
                        lifespan="on")
        else:
            from wsgiref.simple_server import WSGIRequestHandler, make_server

            from ._wsgi import ConsoleWSGI

            class Quiet(WSGIRequestHandler):
                def log_message(self, format: str, *args: Any) -> None:
                    pass  # uvicorn logs warnings only; so does this

            with make_server(host, port, ConsoleWSGI(console),
                             handler_class=Quiet) as httpd:
                httpd.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        console.close()
