"""What became of a request, as usage history counts it: one home for the names.

Every request that reaches the authenticator ends in exactly one outcome,
recorded once where :meth:`~aqnt_auth.Authenticator.authenticate` (or its
async and nowait twins) returns or raises.  Errors carry the outcome they
stand for (:attr:`AQNTError.outcome <aqnt_auth.AQNTError.outcome>`) and the
key id it is counted under (:attr:`AQNTError.key_id`), so the mapping costs
nothing.

Outcomes of a key (counted per key and per hour):

``valid``, ``invalid_secret`` (a wrong secret for an existing id),
``revoked``, ``expired``, ``disabled``, ``rate_limited`` (the key's own rate
limit), ``quota_exceeded``, ``ip_not_allowed``, ``forbidden`` (a scope, a
read-only key writing, a path outside the key's paths, or a mode not
accepted here).

Outcomes without a key (counted per hour across all keys):

``unknown_key`` (a well-formed key whose id no store holds), ``malformed``
(a Bearer credential that is not a well-formed key), ``missing`` (no Bearer
credential), and ``throttled``: refused by the failure limiter before it was
checked (code ``rate_limited``).  A request the failure limiter turns away
*after* it was checked is counted as what it was (``invalid_secret``...).

Not counted at all: a store or limiter outage (503 ``auth_unavailable``, also
an argon2 queue that is full), and a client that went away while waiting.
Those say nothing about a key; the logs have them.
"""

from __future__ import annotations

from typing import Final, Literal

__all__ = [
    "DISABLED",
    "EXPIRED",
    "FAILURE_OUTCOMES",
    "FORBIDDEN",
    "INVALID_SECRET",
    "IP_NOT_ALLOWED",
    "KEYLESS_OUTCOMES",
    "KEY_OUTCOMES",
    "MALFORMED",
    "MISSING",
    "NO_KEY",
    "OUTCOMES",
    "OUTCOME_BY_CODE",
    "QUOTA_EXCEEDED",
    "RATE_LIMITED",
    "REVOKED",
    "THROTTLED",
    "UNKNOWN_KEY",
    "VALID",
    "Outcome",
]

VALID: Final = "valid"
INVALID_SECRET: Final = "invalid_secret"  # noqa: S105 - an outcome name
REVOKED: Final = "revoked"
EXPIRED: Final = "expired"
DISABLED: Final = "disabled"
RATE_LIMITED: Final = "rate_limited"
QUOTA_EXCEEDED: Final = "quota_exceeded"
IP_NOT_ALLOWED: Final = "ip_not_allowed"
FORBIDDEN: Final = "forbidden"
UNKNOWN_KEY: Final = "unknown_key"
MALFORMED: Final = "malformed"
MISSING: Final = "missing"
THROTTLED: Final = "throttled"

Outcome = Literal[
    "valid", "invalid_secret", "revoked", "expired", "disabled", "rate_limited",
    "quota_exceeded", "ip_not_allowed", "forbidden", "unknown_key", "malformed", "missing",
    "throttled",
]

#: The outcomes counted per key, in display order.
KEY_OUTCOMES: Final = (VALID, INVALID_SECRET, REVOKED, EXPIRED, DISABLED, RATE_LIMITED,
                       QUOTA_EXCEEDED, IP_NOT_ALLOWED, FORBIDDEN)
#: Every key outcome but ``valid``.
FAILURE_OUTCOMES: Final = KEY_OUTCOMES[1:]
#: The outcomes counted without a key, across all keys.
KEYLESS_OUTCOMES: Final = (UNKNOWN_KEY, MALFORMED, MISSING, THROTTLED)
#: Every outcome; also the names of the usage tables' count columns.
OUTCOMES: Final = KEY_OUTCOMES + KEYLESS_OUTCOMES

#: The key id that usage rows of key-less outcomes are stored under.
NO_KEY: Final = ""

#: Outcomes of errors that do not name theirs, by error code: the per-key
#: rate limit and quota errors are counted by code until they carry one.
OUTCOME_BY_CODE: Final[dict[str, str]] = {
    "rate_limit_exceeded": RATE_LIMITED,
    "quota_exceeded": QUOTA_EXCEEDED,
    "ip_not_allowed": IP_NOT_ALLOWED,
}
