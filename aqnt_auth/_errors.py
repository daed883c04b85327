"""The exception tree.

Every error the package raises on purpose derives from :class:`AQNTError`,
which is never raised itself.  Errors that end a request carry the HTTP
status, the machine-readable ``code`` and the JSON body of the product's
contract, so that adapters translate them without a lookup table of their
own (h11's ``ProtocolError`` carries its suggested status the same way).

No error message ever contains a presented key, a secret or a stored hash.
"""

from __future__ import annotations

import json
from typing import Any, ClassVar, TypeVar

__all__ = [
    "AQNTError",
    "AuthError",
    "ClientDisconnected",
    "ConfigurationError",
    "DisabledAPIKey",
    "IPNotAllowed",
    "InvalidAPIKey",
    "InvalidRequest",
    "InvalidStoredHash",
    "KeyNotFound",
    "KeyStateError",
    "MethodNotAllowed",
    "MissingAPIKey",
    "NotAKeyId",
    "Overloaded",
    "PermissionDenied",
    "QuotaExceeded",
    "RateLimitExceeded",
    "RateLimitUnavailable",
    "RateLimited",
    "RevokedAPIKey",
    "RouteNotFound",
    "StoreNotFound",
    "StoreOpenError",
    "StoreUnavailable",
    "UnsupportedMediaType",
    "described",
]


class AQNTError(Exception):
    """Root of every error raised by aqnt-auth.  Never raised directly.

    Subclasses that answer an HTTP request set :attr:`status_code`,
    :attr:`error_type`, :attr:`code` and :attr:`message`; :meth:`to_dict`
    gives the exact JSON body of the contract.
    """

    status_code: ClassVar[int] = 500
    error_type: ClassVar[str] = "api_error"
    code: ClassVar[str] = "internal_error"
    message: ClassVar[str] = "Internal error"
    #: What the client did wrong, for the ``error_description`` of
    #: ``WWW-Authenticate`` (RFC 6750 §3): a fixed sentence naming the fix,
    #: never anything taken from the request.  ``None`` for most errors; the
    #: JSON body never changes.
    description: str | None = None
    #: Headers the answer carries besides the error's own (``Retry-After``,
    #: ``WWW-Authenticate``): the RateLimit headers of a limited key.  Set
    #: per instance; :func:`~aqnt_auth.render_error` adds them.
    response_headers: tuple[tuple[str, str], ...] = ()
    #: The usage outcome this error stands for (:mod:`aqnt_auth._outcomes`),
    #: counted once per request by the authenticator; ``None``: not counted
    #: (an outage, a client that went away).  A class default, set on the
    #: instance where one class stands for several (an expired key is a
    #: :class:`RevokedAPIKey` counted as ``expired``).
    outcome: str | None = None
    #: The key id the request is counted under, when the key exists (a wrong
    #: secret, a revoked key, a forbidden path...); ``None`` otherwise.
    #: Never shown to the client.  On :class:`InvalidAPIKey` it is also what
    #: the failure limiter's per-id limit counts.
    key_id: str | None = None

    # No __init__ of our own: these are raised on every rejected request, and
    # Exception's C constructor is several times cheaper than a Python one.
    # The optional argument is a detail for logs and operators; it never
    # contains a key.  The public message is fixed per class.

    def __str__(self) -> str:
        return str(self.args[0]) if self.args and self.args[0] else self.message

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON body of this error, exactly as the contract gives it."""
        return {"error": {"type": self.error_type, "message": self.message, "code": self.code}}

    def to_json(self) -> bytes:
        """Return :meth:`to_dict` serialised as compact-but-spaced UTF-8 JSON."""
        return json.dumps(self.to_dict()).encode()


_E = TypeVar("_E", bound=AQNTError)


def described(error: _E, description: str) -> _E:
    """*error*, with an ``error_description`` for ``WWW-Authenticate``.

    Errors raised on every rejected request take no keyword of their own
    (see :class:`AQNTError`); the rare ones that explain themselves get
    their sentence here.
    """
    error.description = description
    return error


class AuthError(AQNTError):
    """The request did not prove a valid API key (HTTP 401)."""

    status_code = 401
    error_type = "authentication_error"
    # Whether RFC 6750's ``error="invalid_token"`` goes into WWW-Authenticate.
    invalid_token: ClassVar[bool] = True


class MissingAPIKey(AuthError):
    """No Bearer credential was presented."""

    code = "missing_api_key"
    message = "No API key provided"
    invalid_token = False
    outcome = "missing"


class InvalidAPIKey(AuthError):
    """The Bearer credential is malformed, unknown, wrong or not allowed here."""

    code = "invalid_api_key"
    message = "Invalid API key provided"
    #: Malformed unless set otherwise where raised: ``unknown_key`` (no such
    #: id), ``invalid_secret`` (with :attr:`key_id`: what the per-id
    #: brute-force limit counts), ``forbidden`` (a mode not accepted here).
    outcome = "malformed"


class RevokedAPIKey(AuthError):
    """The key verified but has been revoked or has expired."""

    code = "key_revoked"
    message = "API key has been revoked"
    #: ``expired`` on the instance for an expired key.
    outcome = "revoked"


class DisabledAPIKey(AuthError):
    """The key verified but is disabled (reversibly: enabling it restores it)."""

    code = "key_disabled"
    message = "API key is disabled"
    outcome = "disabled"


class PermissionDenied(AQNTError):
    """The key is valid but its restrictions or scopes forbid this request (HTTP 403)."""

    status_code = 403
    error_type = "permission_error"
    code = "insufficient_scope"
    message = "This API key does not have the required permissions"
    outcome = "forbidden"
    #: The RFC 6750 ``error`` of the 403's ``WWW-Authenticate``; ``None``:
    #: the refusal is not about the token's scope, so no challenge.
    challenge_error: ClassVar[str | None] = "insufficient_scope"

    def __init__(self, detail: str | None = None, *, required_scopes: tuple[str, ...] = (),
                 description: str | None = None) -> None:
        super().__init__(detail)
        self.required_scopes = required_scopes
        self.description = description


class IPNotAllowed(PermissionDenied):
    """The key verified, but its IP allowlist does not hold the client's address."""

    code = "ip_not_allowed"
    message = "This API key cannot be used from this IP address"
    outcome = "ip_not_allowed"
    challenge_error = None


class RateLimited(AQNTError):
    """Too many failed attempts from this client or against this key id (HTTP 429)."""

    status_code = 429
    error_type = "rate_limit_error"
    code = "rate_limited"
    message = "Too many failed authentication attempts"
    #: Refused before it was checked: counted without a key.  A request
    #: refused after its check failed is counted as that failure instead.
    outcome = "throttled"

    def __init__(self, detail: str | None = None, *, retry_after: int = 1) -> None:
        super().__init__(detail)
        self.retry_after = max(1, int(retry_after))


class RateLimitExceeded(AQNTError):
    """The key verified, but it has used up one of its rate limits (HTTP 429).

    :attr:`response_headers` holds its ``RateLimit-Policy`` and ``RateLimit``
    headers; :attr:`retry_after` the seconds until the limit admits again.
    """

    status_code = 429
    error_type = "rate_limit_error"
    code = "rate_limit_exceeded"
    message = "Rate limit exceeded for this API key"
    outcome = "rate_limited"

    def __init__(self, detail: str | None = None, *, retry_after: int = 1) -> None:
        super().__init__(detail)
        self.retry_after = max(1, int(retry_after))


class QuotaExceeded(AQNTError):
    """The key verified, but its usage quota is used up (HTTP 429).

    :attr:`retry_after` is the seconds until the quota refills, or ``None``
    when it does not refill (then no ``Retry-After`` is sent: only a new
    quota set on the key helps).
    """

    status_code = 429
    error_type = "rate_limit_error"
    code = "quota_exceeded"
    message = "API key usage quota exhausted"
    outcome = "quota_exceeded"

    def __init__(self, detail: str | None = None, *, retry_after: int | None = None) -> None:
        super().__init__(detail)
        self.retry_after = None if retry_after is None else max(1, int(retry_after))


class StoreUnavailable(AQNTError):
    """The key store could not answer (HTTP 503).

    Deliberately not an :class:`AuthError`: a store outage must never be
    answered as "invalid key" (clients would discard good keys) nor let a
    request through.
    """

    status_code = 503
    error_type = "api_error"
    code = "auth_unavailable"
    message = "Authentication is temporarily unavailable"

    def __init__(self, detail: str | None = None, *, retry_after: int = 1) -> None:
        super().__init__(detail)
        self.retry_after = max(1, int(retry_after))


class Overloaded(StoreUnavailable):
    """Too many verifications are waiting for argon2 (HTTP 503, the same
    ``auth_unavailable`` answer with ``Retry-After``).

    Raised instead of queueing a cold verification past the authenticator's
    bounds (``max_hash_wait``, ``max_queued_hashes``), so that a flood of
    wrong secrets cannot build a backlog that delays everyone's first
    request.  Warm keys never reach the queue.
    """

    # key_id: the key id whose verification was refused (for the failure limiter).


class RateLimitUnavailable(StoreUnavailable):
    """The storage of the keys' rate-limit counters failed, and the limiter
    fails closed (HTTP 503 with ``Retry-After``): a key's limit cannot be
    checked, so its request is not admitted."""

    code = "rate_limit_unavailable"
    message = "Rate limiting is temporarily unavailable"


class ClientDisconnected(AQNTError):
    """The client went away while its key waited for argon2.

    The verification was abandoned (it does not run if no other request
    waits for it); there is nobody to answer.  Adapters end the request
    without a response.
    """

    status_code = 499
    code = "client_disconnected"
    message = "The client closed the request"


class KeyNotFound(AQNTError, LookupError):
    """Key management was asked about a key id the store does not hold."""

    status_code = 404
    error_type = "invalid_request_error"
    code = "key_not_found"
    message = "No such API key"


class NotAKeyId(KeyNotFound):
    """A whole API key was given where a key id belongs.

    Its message names the key's id, never the key.  Command-line front ends
    answer it as a usage error (exit status 2): the key is now in the shell
    history, and nothing was done with it.
    """

    code = "not_a_key_id"


class KeyStateError(AQNTError):
    """A management operation does not apply to the key in its current state.

    For example rotating a revoked key: revocation is final.
    """

    status_code = 409
    error_type = "invalid_request_error"
    code = "invalid_key_state"
    message = "The API key cannot be changed in its current state"


class InvalidRequest(AQNTError):
    """A management request (the console's JSON API) is malformed: a body
    that is not JSON, an unknown or mistyped field, a value the key manager
    refuses (HTTP 400).

    Unlike the authentication errors its ``message`` says what was wrong
    ("Field 'name' must be a non-empty string"): the console builds it from
    field names and fixed sentences, never from a presented key.
    """

    status_code = 400
    error_type = "invalid_request_error"
    code = "invalid_request"
    message = "The request is invalid"

    def to_dict(self) -> dict[str, Any]:
        return {"error": {"type": self.error_type, "message": str(self), "code": self.code}}


class UnsupportedMediaType(InvalidRequest):
    """A management request with a body (or a browser's credentials) that is
    not ``Content-Type: application/json`` (HTTP 415).  A cross-site form
    cannot send that type, which is what keeps cookie-authenticated API calls
    safe from cross-site requests."""

    status_code = 415
    code = "unsupported_media_type"
    message = "The request body must be JSON (Content-Type: application/json)"


class RouteNotFound(AQNTError, LookupError):
    """The console has no page or API route at the path (HTTP 404)."""

    status_code = 404
    error_type = "invalid_request_error"
    code = "not_found"
    message = "No such page or API route"


class MethodNotAllowed(AQNTError):
    """The console's route exists but does not take the method (HTTP 405);
    :attr:`allowed` lists the methods it takes, for the ``Allow`` header."""

    status_code = 405
    error_type = "invalid_request_error"
    code = "method_not_allowed"
    message = "Method not allowed for this route"

    def __init__(self, detail: str | None = None, *, allowed: tuple[str, ...] = ()) -> None:
        super().__init__(detail)
        self.allowed = allowed


class ConfigurationError(AQNTError, ValueError):
    """aqnt-auth was set up with an invalid option.  Raised at construction."""

    code = "configuration_error"
    message = "aqnt-auth is misconfigured"


class StoreNotFound(ConfigurationError):
    """A store was opened for reading (``create=False``) where there is none:
    no SQLite file at the path, or no aqnt-auth tables in the database.

    Only the commands that create keys or stores (``keys create``, ``store
    init``) may create one; the others must not leave an empty store behind
    a typo in a path.
    """

    code = "store_not_found"
    message = "No key store at this location"


class StoreOpenError(ConfigurationError):
    """The store URL an app was configured with is malformed, or names a
    store that cannot be opened (a SQLite file in a missing directory, an
    extra that is not installed).  The message names the URL, password
    redacted, and what is wrong.

    Raised where the app starts: ``Authenticator(url)``, Flask's
    ``init_app``, the ASGI middleware's lifespan start-up.  A database that
    is merely down is not this: it is :class:`StoreUnavailable`, per request.
    """

    code = "store_open_error"
    message = "The key store cannot be opened"


class InvalidStoredHash(AQNTError, ValueError):
    """A stored hash is corrupt or was made by no configured hasher.

    Like argon2-cffi's ``InvalidHashError`` this is *not* a verification
    failure: it means the store holds bad data, which operators must hear
    about, so it is caught and logged on its own.
    """

    code = "invalid_stored_hash"
    message = "Stored key hash is invalid"
