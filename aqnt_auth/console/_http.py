"""The console's own request and response: plain data, no framework.

The console is written once against these two types (the sans-IO model of
the core): the ASGI, WSGI and Django mounts only translate their server's
request into a :class:`Request` and send the :class:`Response` back.
"""

from __future__ import annotations

import dataclasses
import urllib.parse
from collections.abc import Mapping
from http.cookies import CookieError, SimpleCookie
from typing import Any

__all__ = ["Request", "Response"]


@dataclasses.dataclass(frozen=True)
class Request:
    """One request to the console, as a mount hands it over.

    *path* is relative to the mount point and starts with ``/``;
    *root_path* is the mount prefix (``""`` or ``/keys-admin``), for links.
    Header names are lower-case; a repeated header keeps its last value.
    *client* is the peer address as the server gives it (the core's
    trusted-proxy setting resolves forwarded addresses from *headers*).
    *native* is the server's own request (the ASGI scope, the WSGI environ,
    Django's ``HttpRequest``, Flask's ``request``), for an ``authorize`` hook
    that asks the host app who is signed in; the console never reads it.
    """

    method: str
    path: str
    query_string: str = ""
    headers: Mapping[str, str] = dataclasses.field(default_factory=dict)
    body: bytes = b""
    client: str | None = None
    scheme: str = "http"
    root_path: str = ""
    native: Any = dataclasses.field(default=None, repr=False, compare=False)

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())

    @property
    def query(self) -> dict[str, list[str]]:
        return urllib.parse.parse_qs(self.query_string, keep_blank_values=True)

    def query_value(self, name: str, default: str = "") -> str:
        values = self.query.get(name)
        return values[-1] if values else default

    @property
    def form(self) -> dict[str, list[str]]:
        """The body as ``application/x-www-form-urlencoded`` fields (empty
        for any other content type)."""
        ctype = (self.header("content-type") or "").split(";", 1)[0].strip().lower()
        if ctype != "application/x-www-form-urlencoded":
            return {}
        try:
            text = self.body.decode("utf-8")
        except UnicodeDecodeError:
            return {}
        return urllib.parse.parse_qs(text, keep_blank_values=True)

    @property
    def cookies(self) -> dict[str, str]:
        raw = self.header("cookie")
        if not raw:
            return {}
        jar: SimpleCookie = SimpleCookie()
        try:
            jar.load(raw)
        except CookieError:
            return {}
        return {name: morsel.value for name, morsel in jar.items()}


@dataclasses.dataclass
class Response:
    """What the console answers: a status, headers in order (a name may
    repeat, as ``Set-Cookie`` does) and the whole body."""

    status: int
    headers: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    body: bytes = b""

    def header(self, name: str) -> str | None:
        lower = name.lower()
        for key, value in reversed(self.headers):
            if key.lower() == lower:
                return value
        return None
