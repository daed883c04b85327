"""The headers every console response carries, pages and API alike."""

from __future__ import annotations

from typing import Final

from ._http import Response

__all__ = ["CONTENT_SECURITY_POLICY", "SECURITY_HEADERS", "add_security_headers"]

#: Nothing from anywhere but the console itself: no inline script or style
#: (the pages use neither), no frames, forms that post only to the console.
CONTENT_SECURITY_POLICY: Final = (
    "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self' data:; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)

SECURITY_HEADERS: Final = (
    ("Content-Security-Policy", CONTENT_SECURITY_POLICY),
    ("X-Frame-Options", "DENY"),
    # A page may show a key once (creation, rotation): no cache may keep it,
    # and Back or a reload asks the server again.
    ("Cache-Control", "no-store"),
    ("Referrer-Policy", "no-referrer"),
    ("X-Content-Type-Options", "nosniff"),
)

_NAMES: Final = frozenset(name.lower() for name, _ in SECURITY_HEADERS)


def add_security_headers(response: Response) -> Response:
    """*response* with :data:`SECURITY_HEADERS`, replacing any of the same name."""
    response.headers[:] = [(k, v) for k, v in response.headers if k.lower() not in _NAMES]
    response.headers.extend(SECURITY_HEADERS)
    return response
