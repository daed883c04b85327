"""The ``Authorization`` header, by RFC 6750 §2.1 and RFC 9110 §11.

Pure functions: a header value (or the several values a server received)
in, a token out, or an :class:`~aqnt_auth.AuthError`.  Nothing else is ever
raised, whatever bytes arrive.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

from ._errors import InvalidAPIKey, MissingAPIKey, described
from ._format import MODES

__all__ = [
    "BARE_KEY",
    "DOUBLED_SCHEME",
    "MAX_AUTHORIZATION_LENGTH",
    "authorization_and_agent",
    "bearer_token",
    "malformed_token",
    "single_authorization",
]

#: The ``error_description`` of a key sent without the ``Bearer`` scheme
#: (bare, glued to ``Bearer``, or after another scheme).
BARE_KEY: Final = "the key needs the Bearer scheme: use Authorization: Bearer <key>"
#: The ``error_description`` of ``Bearer Bearer <key>``.
DOUBLED_SCHEME: Final = "Bearer is written twice: use Authorization: Bearer <key>"

#: The detail (for logs) of a Bearer token that is not a well-formed key.
MALFORMED_KEY: Final = "malformed key or bad checksum"

# What every key of ours holds, whatever its prefix: "_live_" or "_test_".
_MODE_MARKS: Final = tuple(f"_{mode}_" for mode in MODES)

# A Bearer header with one of our keys is under 100 characters.  Anything far
# longer is refused before it is decoded, scanned or matched, so an 8 KB or
# 1 MB header costs one len() call.
MAX_AUTHORIZATION_LENGTH: Final = 1024


def bearer_token(value: str | bytes | None) -> str:
    """Return the credential of a ``Bearer`` Authorization header value.

    * No header, an empty or blank value, ``Bearer`` alone, or another scheme
      (``Basic``, ``Token``, a bare key): :class:`MissingAPIKey`.  The client
      did not try to present one of our keys.
    * Non-ASCII, NUL or control characters, an over-long value, several
      credentials joined by commas, or anything after the token:
      :class:`InvalidAPIKey`.

    The scheme is case-insensitive and may be followed by one or more spaces.
    The returned token is not checked further: see :meth:`KeyFormat.parse`.
    """
    if type(value) is str and len(value) <= MAX_AUTHORIZATION_LENGTH:
        # The usual header, "Bearer " and a token with no space or tab at
        # either end: what _parsed_bearer_token() returns for it, without
        # its steps.  Authenticator.authenticate() inlines the same test.
        scheme, _, token = value.partition(" ")
        if scheme == "Bearer" and token and token[0] != " " and token[-1] not in " \t":
            return token
    return _parsed_bearer_token(value)


def _parsed_bearer_token(value: str | bytes | None) -> str:
    """:func:`bearer_token`, step by step, for any value (the reference the
    fast path of the usual header agrees with)."""
    if value is None:
        raise MissingAPIKey()
    if len(value) > MAX_AUTHORIZATION_LENGTH:
        raise InvalidAPIKey("authorization header too long")
    if not isinstance(value, str):
        try:
            text: str | None = bytes(value).decode("ascii")
        except (UnicodeDecodeError, TypeError):
            text = None
        if text is None:
            # Raised outside the except clause: even with "from None", the
            # UnicodeDecodeError would stay reachable as our __context__, and
            # it holds the whole header, key included.
            raise InvalidAPIKey("authorization header is not ASCII")
        value = text
    # Servers strip optional whitespace around field values (RFC 9110 §5.5);
    # do the same so a framework that does not cannot change the outcome.
    value = value.strip(" \t")
    scheme, _, token = value.partition(" ")
    if scheme == "Bearer" or scheme.lower() == "bearer":
        token = token.lstrip(" ")
        if not token:
            raise MissingAPIKey()
        # Control and non-ASCII characters in the token are left to the key
        # parser, which accepts nothing but the key alphabet.
        return token
    if not value:
        raise MissingAPIKey()
    if not (value.isascii() and value.isprintable()):
        raise InvalidAPIKey("authorization header has control or non-ASCII characters")
    if "," in value and _names_bearer(value):
        # Two headers joined by a server ("Basic x, Bearer y"): never
        # "any one matches".
        raise InvalidAPIKey("several credentials")
    if any(mark in value for mark in _MODE_MARKS):
        # Still "no key" (no Bearer credential was presented), but the
        # likeliest newcomer mistake gets its fix named.
        raise described(MissingAPIKey("key without the Bearer scheme"), BARE_KEY)
    raise MissingAPIKey()


def malformed_token(token: str) -> InvalidAPIKey:
    """The error for a Bearer token that is not a well-formed key.

    Called on that failure alone (the accepted path never pays for it): a
    token that starts with the scheme again (``Bearer Bearer sk_...``, a
    header built as ``"Bearer " + "Bearer " + key``) is told so.
    """
    if " " in token and token.partition(" ")[0].lower() == "bearer":
        return described(InvalidAPIKey("Bearer written twice"), DOUBLED_SCHEME)
    return InvalidAPIKey(MALFORMED_KEY)


def _names_bearer(value: str) -> bool:
    return any(part.strip(" ").partition(" ")[0].lower() == "bearer" for part in value.split(","))


def single_authorization(headers: Iterable[tuple[bytes, bytes]]) -> bytes | None:
    """Return the one ``authorization`` value of raw (ASGI-style) headers.

    Header names must be lower-case, as ASGI gives them.  Several
    Authorization headers raise :class:`InvalidAPIKey`: which one a server
    or proxy would have picked is exactly what an attacker would exploit.
    """
    found: bytes | None = None
    for name, value in headers:
        if name == b"authorization":
            if found is not None:
                raise InvalidAPIKey("several authorization headers")
            found = value
    return found


def authorization_and_agent(headers: Iterable[tuple[bytes, bytes]]
                            ) -> tuple[bytes | None, bytes | None]:
    """The ``authorization`` value and the ``user-agent`` one (the last, for
    usage history), in one pass over raw (ASGI-style) headers.

    Several Authorization headers come back joined with ``", "``, as WSGI
    servers join them, for :func:`bearer_token` to refuse (never "any one
    matches"): the authenticator then counts the refusal like any other.
    """
    found: bytes | None = None
    agent: bytes | None = None
    for name, value in headers:
        if name == b"authorization":
            found = value if found is None else found + b", " + value
        elif name == b"user-agent":
            agent = value
    return found, agent
