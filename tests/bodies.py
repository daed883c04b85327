"""The exact answers of the product's contract, spelled out once for every test.

These are literal bytes, not built from :mod:`aqnt_auth`: a test compares what
the code under test renders against the contract, never against itself.
The challenges are those of the default realm, ``api``.
"""

from __future__ import annotations

from typing import Final

MISSING: Final = (b'{"error": {"type": "authentication_error", "message": "No API key provided", '
                  b'"code": "missing_api_key"}}')
INVALID: Final = (b'{"error": {"type": "authentication_error", "message": '
                  b'"Invalid API key provided", "code": "invalid_api_key"}}')
REVOKED: Final = (b'{"error": {"type": "authentication_error", "message": '
                  b'"API key has been revoked", "code": "key_revoked"}}')
DISABLED: Final = (b'{"error": {"type": "authentication_error", "message": '
                   b'"API key is disabled", "code": "key_disabled"}}')
IP_NOT_ALLOWED: Final = (b'{"error": {"type": "permission_error", "message": "This API key '
                         b'cannot be used from this IP address", "code": "ip_not_allowed"}}')
RATE_LIMIT_EXCEEDED: Final = (b'{"error": {"type": "rate_limit_error", "message": "Rate limit '
                              b'exceeded for this API key", "code": "rate_limit_exceeded"}}')
RATE_LIMIT_UNAVAILABLE: Final = (b'{"error": {"type": "api_error", "message": "Rate limiting is '
                                 b'temporarily unavailable", "code": "rate_limit_unavailable"}}')
FORBIDDEN: Final = (b'{"error": {"type": "permission_error", "message": "This API key does not '
                    b'have the required permissions", "code": "insufficient_scope"}}')
RATE_LIMITED: Final = (b'{"error": {"type": "rate_limit_error", "message": "Too many failed '
                       b'authentication attempts", "code": "rate_limited"}}')
QUOTA_EXCEEDED: Final = (b'{"error": {"type": "rate_limit_error", "message": "API key usage '
                         b'quota exhausted", "code": "quota_exceeded"}}')
UNAVAILABLE: Final = (b'{"error": {"type": "api_error", "message": "Authentication is '
                      b'temporarily unavailable", "code": "auth_unavailable"}}')

CHALLENGE: Final = 'Bearer realm="api"'
INVALID_CHALLENGE: Final = 'Bearer realm="api", error="invalid_token"'
SCOPE_CHALLENGE: Final = 'Bearer realm="api", error="insufficient_scope"'

# error_description (RFC 6750 §3): what the client did wrong, the body unchanged.
BARE_KEY_CHALLENGE: Final = ('Bearer realm="api", error_description="the key needs the Bearer '
                             'scheme: use Authorization: Bearer <key>"')
DOUBLED_CHALLENGE: Final = ('Bearer realm="api", error="invalid_token", error_description="Bearer '
                            'is written twice: use Authorization: Bearer <key>"')
READ_ONLY_CHALLENGE: Final = ('Bearer realm="api", error="insufficient_scope", error_description='
                              '"read-only key: only GET, HEAD and OPTIONS are allowed"')
PATHS_CHALLENGE: Final = ('Bearer realm="api", error="insufficient_scope", error_description='
                          '"this key is limited to other paths"')
