"""The console's session cookie and its CSRF tokens.

A session is a small signed cookie, not a server-side table: any worker
holding the same ``secret_key`` reads it, and nothing is kept per browser
on the server.  It holds who signed in (the *actor*, e.g. ``key:AbC123...``),
whether they may change keys, when the session began and was last used,
and a random CSRF secret.  Never an API key, nor its hash.

The cookie is ``<payload>.<signature>``: the payload is base64url JSON, the
signature HMAC-SHA256 over it with a key derived from ``secret_key``, and
a cookie whose signature does not match, or that is too old, is ignored as
if absent.  It is signed, not encrypted: its contents are nothing secret
from the browser that holds it (the CSRF secret only defends against
*other* sites, which cannot read it).

A browser that has not signed in gets an anonymous session (no actor), so
the sign-in form carries a CSRF token too: a cross-site page cannot sign a
victim in to an attacker's session ("login CSRF").  Signing in starts a
new session with a new CSRF secret, so a planted cookie is worth nothing.

CSRF tokens are per form: ``HMAC(key, csrf_secret + form action)``, so a
token taken from one form does not authorise another.  They are compared in
constant time.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
import hmac
import ipaddress
import json
import secrets
import time
from collections.abc import Callable
from typing import Any, Final

from .._client import normalise_address
from ._http import Request

__all__ = [
    "ABSOLUTE_TIMEOUT",
    "COOKIE_NAME",
    "IDLE_TIMEOUT",
    "Session",
    "Sessions",
    "is_loopback_request",
]

#: Seconds a session lasts without a request before it must sign in again.
IDLE_TIMEOUT: Final = 15 * 60
#: Seconds a session lasts at most, however busy.
ABSOLUTE_TIMEOUT: Final = 8 * 3600
COOKIE_NAME: Final = "aqnt_console"
#: Form nonces a session remembers (a reloaded creation form is refused).
_NONCES_KEPT: Final = 8
#: A cookie issued this far in the future (clock skew between workers) is refused.
_SKEW: Final = 60.0
_MAX_COOKIE: Final = 4096


@dataclasses.dataclass(frozen=True)
class Session:
    """What the cookie says.  :attr:`actor` is ``None`` before signing in."""

    actor: str | None
    can_write: bool
    issued_at: float
    last_seen: float
    csrf_secret: str
    #: Nonces of one-time forms already handled (key creation, rotation),
    #: newest last: a resubmitted form is recognised and not acted on twice.
    used_nonces: tuple[str, ...] = ()

    @property
    def signed_in(self) -> bool:
        return self.actor is not None

    def with_nonce(self, nonce: str) -> Session:
        kept = (*(n for n in self.used_nonces if n != nonce), nonce)[-_NONCES_KEPT:]
        return dataclasses.replace(self, used_nonces=kept)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _derive(secret_key: bytes, purpose: bytes) -> bytes:
    return hmac.new(secret_key, b"aqnt-auth console " + purpose, hashlib.sha256).digest()


def _loopback_host(host: str) -> bool:
    host = host.strip().lower()
    if host.startswith("["):  # [::1]:8000
        host = host[1:].split("]", 1)[0]
    elif host.count(":") == 1:  # 127.0.0.1:8000, localhost:8000
        host = host.split(":", 1)[0]
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def is_loopback_request(request: Request) -> bool:
    """Whether *request* came over loopback: the ``Host`` it was sent to
    names this machine (``localhost``, ``127.0.0.0/8``, ``[::1]``) and the
    peer, when the server gives one, is a loopback address too.

    A browser reached a loopback host without leaving the machine, so a
    cookie without ``Secure`` cannot be sniffed on the way; anywhere else
    (a public host name, or a proxy on this machine forwarding outside
    traffic to a public name) the cookie is ``Secure``.
    """
    host = request.header("host")
    if not host or not _loopback_host(host):
        return False
    if request.client is None:
        return True
    client = normalise_address(request.client)  # ::ffff:127.0.0.1 is 127.0.0.1
    try:
        return ipaddress.ip_address(client or "").is_loopback
    except ValueError:
        return False


class Sessions:
    """Issues and reads the console's session cookie.

    :param secret_key: signs the cookies (at least 16 bytes); every worker
        serving one console needs the same.
    :param idle_timeout: seconds without a request after which a session
        ends (default 15 minutes).
    :param absolute_timeout: seconds after sign-in after which it ends
        however busy (default 8 hours).
    :param secure: ``True`` always marks the cookie ``Secure``, ``False``
        never; ``None`` (the default) marks it unless the request came over
        loopback (:func:`is_loopback_request`).
    :param clock: seconds since the epoch (tests pass a fake).
    """

    def __init__(
        self,
        secret_key: bytes | str,
        *,
        idle_timeout: float = IDLE_TIMEOUT,
        absolute_timeout: float = ABSOLUTE_TIMEOUT,
        secure: bool | None = None,
        cookie_name: str = COOKIE_NAME,
        clock: Callable[[], float] = time.time,
    ) -> None:
        key = secret_key.encode() if isinstance(secret_key, str) else bytes(secret_key)
        if len(key) < 16:
            raise ValueError("the console's secret_key must be at least 16 bytes")
        if idle_timeout <= 0 or absolute_timeout <= 0:
            raise ValueError("session timeouts must be positive")
        self._sign_key = _derive(key, b"session")
        self._csrf_key = _derive(key, b"csrf")
        self.idle_timeout = float(idle_timeout)
        self.absolute_timeout = float(absolute_timeout)
        self.secure = secure
        self.cookie_name = cookie_name
        self.clock = clock

    def __repr__(self) -> str:
        return (f"Sessions(idle_timeout={self.idle_timeout}, "
                f"absolute_timeout={self.absolute_timeout})")

    # -- making sessions ----------------------------------------------------

    def anonymous(self) -> Session:
        """A session for a browser that has not signed in: a CSRF secret only."""
        now = self.clock()
        return Session(None, False, now, now, _b64(secrets.token_bytes(32)))

    def sign_in(self, actor: str, *, can_write: bool) -> Session:
        """A new session for *actor*: new times, new CSRF secret."""
        now = self.clock()
        return Session(actor, bool(can_write), now, now, _b64(secrets.token_bytes(32)))

    def touch(self, session: Session) -> Session:
        """*session*, seen now (the idle timeout starts again)."""
        return dataclasses.replace(session, last_seen=max(self.clock(), session.last_seen))

    # -- the cookie ---------------------------------------------------------

    def encode(self, session: Session) -> str:
        payload = json.dumps(
            {"a": session.actor, "w": session.can_write, "i": session.issued_at,
             "s": session.last_seen, "c": session.csrf_secret, "n": list(session.used_nonces)},
            separators=(",", ":"),
        ).encode()
        body = _b64(payload)
        return f"{body}.{self._signature(body)}"

    def _signature(self, body: str) -> str:
        return _b64(hmac.new(self._sign_key, body.encode("ascii"), hashlib.sha256).digest())

    def decode(self, value: str) -> Session | None:
        """The session in a cookie value, or ``None`` if it is not one this
        console signed, or has expired."""
        if len(value) > _MAX_COOKIE or value.count(".") != 1:
            return None
        body, signature = value.split(".")
        try:
            expected = self._signature(body)
        except UnicodeEncodeError:
            return None
        if not hmac.compare_digest(expected.encode(), signature.encode("utf-8", "replace")):
            return None
        try:
            data: Any = json.loads(_unb64(body))
            session = Session(
                actor=_optional_str(data["a"]),
                can_write=data["w"] is True,
                issued_at=float(data["i"]),
                last_seen=float(data["s"]),
                csrf_secret=str(data["c"]),
                used_nonces=tuple(str(n) for n in data["n"]),
            )
        except (ValueError, TypeError, KeyError, binascii.Error):
            return None
        return session if self.alive(session) else None

    def alive(self, session: Session) -> bool:
        """Whether *session* is within its idle and absolute timeouts."""
        now = self.clock()
        return (session.issued_at <= now + _SKEW
                and now - session.last_seen <= self.idle_timeout
                and now - session.issued_at <= self.absolute_timeout)

    def load(self, request: Request) -> Session | None:
        """The live session of *request*'s cookie, or ``None``."""
        value = request.cookies.get(self.cookie_name)
        return self.decode(value) if value else None

    def cookie_path(self, request: Request) -> str:
        return request.root_path.rstrip("/") or "/"

    def is_secure(self, request: Request) -> bool:
        if self.secure is not None:
            return self.secure
        return request.scheme == "https" or not is_loopback_request(request)

    def set_cookie(self, request: Request, session: Session) -> str:
        """The ``Set-Cookie`` value that stores *session*.  The cookie has no
        ``Max-Age``: it ends with the browser, and the timeouts inside it
        end it sooner."""
        return self._cookie(request, self.encode(session), "")

    def clear_cookie(self, request: Request) -> str:
        """The ``Set-Cookie`` value that removes the session cookie."""
        return self._cookie(request, "", "; Max-Age=0")

    def _cookie(self, request: Request, value: str, extra: str) -> str:
        secure = "; Secure" if self.is_secure(request) else ""
        return (f"{self.cookie_name}={value}; Path={self.cookie_path(request)}; HttpOnly; "
                f"SameSite=Strict{secure}{extra}")

    # -- CSRF ---------------------------------------------------------------

    def csrf_token(self, session: Session, action: str) -> str:
        """The token of the form posting to *action* (a path relative to
        the mount) in *session*."""
        message = f"{session.csrf_secret}\0{action}".encode()
        return _b64(hmac.new(self._csrf_key, message, hashlib.sha256).digest())

    def csrf_valid(self, session: Session | None, action: str, token: str | None) -> bool:
        """Whether *token* is *session*'s token for *action* (constant time)."""
        if session is None or not token:
            return False
        expected = self.csrf_token(session, action).encode()
        return hmac.compare_digest(expected, token.encode("utf-8", "replace"))


def _optional_str(value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise TypeError("actor must be text")
    return value
