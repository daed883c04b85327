"""What an error looks like on the wire: status, headers and body.

Pure data, so every adapter answers byte-for-byte the same and none of them
formats JSON or builds ``WWW-Authenticate`` on its own.
"""

from __future__ import annotations

from typing import NamedTuple

from ._errors import (
    AQNTError,
    AuthError,
    ConfigurationError,
    InvalidRequest,
    PermissionDenied,
    QuotaExceeded,
    RateLimited,
    RateLimitExceeded,
    StoreUnavailable,
)

__all__ = ["ErrorResponse", "render_error", "validate_realm"]


class ErrorResponse(NamedTuple):
    """An HTTP answer to a failed authentication, ready to send."""

    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes

    @property
    def raw_headers(self) -> list[tuple[bytes, bytes]]:
        """Headers as raw ASGI wants them: lower-case latin-1 bytes, with
        ``content-length`` (frameworks add that one themselves, so
        :attr:`headers` leaves it out)."""
        raw = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in self.headers]
        raw.append((b"content-length", str(len(self.body)).encode("latin-1")))
        return raw


def validate_realm(realm: str) -> str:
    """Return *realm* if it can be quoted in ``WWW-Authenticate``, else raise."""
    if not isinstance(realm, str) or not realm.isascii() or not realm.isprintable():
        raise ConfigurationError("realm must be printable ASCII")
    if '"' in realm or "\\" in realm:
        raise ConfigurationError("realm must not contain quotes or backslashes")
    return realm


def render_error(error: AQNTError, realm: str = "api") -> ErrorResponse:
    """Return the full HTTP answer for *error*.

    401s carry ``WWW-Authenticate: Bearer realm="..."`` (RFC 6750 §3), with
    ``error="invalid_token"`` unless no credential was sent at all; 403s name
    the missing scopes; 429s and 503s carry ``Retry-After``; an error's
    :attr:`~aqnt_auth.AQNTError.response_headers` (the RateLimit headers of a
    limited key) follow.  An error with
    a :attr:`~aqnt_auth.AQNTError.description` adds it to the challenge as
    ``error_description``; the body is the contract's, whatever the cause.
    """
    if isinstance(error, (RateLimited, RateLimitExceeded, StoreUnavailable)):
        return _build(error, (("Retry-After", str(error.retry_after)),))
    if isinstance(error, InvalidRequest):
        # Its message is the instance's own: never cached per class.
        return _build(error, ())
    if isinstance(error, QuotaExceeded):
        # Retry-After only when a refill is due: a used-up quota that never
        # refills needs a person, not a retry.
        retry = () if error.retry_after is None else (("Retry-After", str(error.retry_after)),)
        return _build(error, retry)
    if error.description is not None or error.response_headers or (
        isinstance(error, PermissionDenied) and error.required_scopes
    ):
        challenge = _challenge(error, realm)
        return _build(error, (("WWW-Authenticate", challenge),) if challenge else ())
    cached = _STATIC.get((type(error), realm))
    if cached is None:
        # Such errors carry no per-instance data, so the rendered answer is
        # computed once per class and realm and shared.
        cached = _STATIC[(type(error), realm)] = _static(type(error), realm)
    return cached


_STATIC: dict[tuple[type[AQNTError], str], ErrorResponse] = {}


def _challenge(error: AQNTError, realm: str) -> str | None:
    """The ``WWW-Authenticate`` value for *error*, or ``None`` (not a 401 or 403)."""
    if isinstance(error, AuthError):
        challenge = f'Bearer realm="{realm}"'
        if error.invalid_token:
            challenge += ', error="invalid_token"'
    elif isinstance(error, PermissionDenied):
        if error.challenge_error is None:
            return None
        challenge = f'Bearer realm="{realm}", error="{error.challenge_error}"'
        if error.required_scopes:
            challenge += f', scope="{" ".join(error.required_scopes)}"'
    else:
        return None
    if error.description is not None:
        # Fixed sentences of the core, which hold no quote or backslash.
        challenge += f', error_description="{error.description}"'
    return challenge


def _static(cls: type[AQNTError], realm: str) -> ErrorResponse:
    error = cls()
    challenge = _challenge(error, realm)
    return _build(error, (("WWW-Authenticate", challenge),) if challenge else ())


def _build(error: AQNTError, extra: tuple[tuple[str, str], ...]) -> ErrorResponse:
    body = error.to_json()
    return ErrorResponse(error.status_code,
                         (("Content-Type", "application/json"), *extra, *error.response_headers),
                         body)
