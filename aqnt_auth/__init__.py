"""aqnt-auth: API-key authentication in front of any Python web app.

The core is framework-free and does no I/O of its own beyond the store
calls: parsing, format and checksum checks, the verification decision and
the error objects are pure code.  Adapters for ASGI, WSGI/Flask and Django
live in :mod:`aqnt_auth.adapters`.
"""

from __future__ import annotations

from ._access import (
    SAFE_METHODS,
    PathRules,
    check_access,
    is_cors_preflight,
    path_within,
    relative_path,
    require_scopes,
)
from ._audit import AUDIT_EVENTS, AuditEntry, AuditEvent, AuditEventName, AuditLog
from ._authenticator import Authenticator, AuthenticatorOptions, ClientFacts, make_authenticator
from ._cache import VerificationCache
from ._client import TrustedProxies, forwarded_headers, normalise_address
from ._durations import parse_duration
from ._errors import (
    AQNTError,
    AuthError,
    ClientDisconnected,
    ConfigurationError,
    DisabledAPIKey,
    InvalidAPIKey,
    InvalidRequest,
    InvalidStoredHash,
    IPNotAllowed,
    KeyNotFound,
    KeyStateError,
    MethodNotAllowed,
    MissingAPIKey,
    NotAKeyId,
    Overloaded,
    PermissionDenied,
    QuotaExceeded,
    RateLimited,
    RateLimitExceeded,
    RateLimitUnavailable,
    RevokedAPIKey,
    RouteNotFound,
    StoreNotFound,
    StoreOpenError,
    StoreUnavailable,
    UnsupportedMediaType,
)
from ._format import KeyFormat, Mode, ParsedKey, checksum
from ._hashers import ARGON2_PROFILES, Argon2Hasher, Hasher, HMACHasher
from ._header import (
    MAX_AUTHORIZATION_LENGTH,
    authorization_and_agent,
    bearer_token,
    single_authorization,
)
from ._manager import Hygiene, IssuedKey, KeyManager
from ._outcomes import KEY_OUTCOMES, KEYLESS_OUTCOMES, OUTCOMES, Outcome
from ._policies import KeyRateLimiter, budget_id
from ._quota import QuotaUse
from ._ratelimit import FailureLimiter
from ._records import KeyRecord, KeyStatus, Principal, UsageDelta
from ._response import ErrorResponse, render_error
from ._scan import LeakFinding, LeakRevocation, find_keys, revoke_leaked
from ._stores._async import ThreadedAsyncStore, to_async
from ._stores._memory import MemoryKeyStore
from ._stores._open import DEFAULT_STORE_URL, open_store, register_store_scheme
from ._stores._protocol import AsyncKeyStore, KeyStore, RotationPlan, UsageHistoryStore
from ._stores._rows import KEY_COLUMNS, record_from_row, row_from_record
from ._stores._sqlite import SQLiteKeyStore
from ._usage_history import KeyUsage, UsageBucket, UsageRow, UsageSeries, UsageSummary

__version__ = "0.1.0"

__all__ = [
    "ARGON2_PROFILES",
    "AUDIT_EVENTS",
    "DEFAULT_STORE_URL",
    "KEYLESS_OUTCOMES",
    "KEY_COLUMNS",
    "KEY_OUTCOMES",
    "MAX_AUTHORIZATION_LENGTH",
    "OUTCOMES",
    "SAFE_METHODS",
    "AQNTError",
    "Argon2Hasher",
    "AsyncKeyStore",
    "AuditEntry",
    "AuditEvent",
    "AuditEventName",
    "AuditLog",
    "AuthError",
    "Authenticator",
    "AuthenticatorOptions",
    "ClientDisconnected",
    "ClientFacts",
    "ConfigurationError",
    "DisabledAPIKey",
    "ErrorResponse",
    "FailureLimiter",
    "HMACHasher",
    "Hasher",
    "Hygiene",
    "IPNotAllowed",
    "InvalidAPIKey",
    "InvalidRequest",
    "InvalidStoredHash",
    "IssuedKey",
    "KeyFormat",
    "KeyManager",
    "KeyNotFound",
    "KeyRateLimiter",
    "KeyRecord",
    "KeyStateError",
    "KeyStatus",
    "KeyStore",
    "KeyUsage",
    "LeakFinding",
    "LeakRevocation",
    "MemoryKeyStore",
    "MethodNotAllowed",
    "MissingAPIKey",
    "Mode",
    "NotAKeyId",
    "Outcome",
    "Overloaded",
    "ParsedKey",
    "PathRules",
    "PermissionDenied",
    "Principal",
    "QuotaExceeded",
    "QuotaUse",
    "RateLimitExceeded",
    "RateLimitUnavailable",
    "RateLimited",
    "RevokedAPIKey",
    "RotationPlan",
    "RouteNotFound",
    "SQLiteKeyStore",
    "StoreNotFound",
    "StoreOpenError",
    "StoreUnavailable",
    "ThreadedAsyncStore",
    "TrustedProxies",
    "UnsupportedMediaType",
    "UsageBucket",
    "UsageDelta",
    "UsageHistoryStore",
    "UsageRow",
    "UsageSeries",
    "UsageSummary",
    "VerificationCache",
    "__version__",
    "authorization_and_agent",
    "bearer_token",
    "budget_id",
    "check_access",
    "checksum",
    "find_keys",
    "forwarded_headers",
    "is_cors_preflight",
    "make_authenticator",
    "normalise_address",
    "open_store",
    "parse_duration",
    "path_within",
    "record_from_row",
    "register_store_scheme",
    "relative_path",
    "render_error",
    "require_scopes",
    "revoke_leaked",
    "row_from_record",
    "single_authorization",
    "to_async",
]
