"""The hostile-request table: one list of requests, run against every adapter.

Each :class:`Case` is a raw request (method, path as sent on the wire,
headers as raw ``(name, value)`` bytes that may repeat and hold any byte,
query string, mount point) and the one answer every adapter must give:
status, exact body (``None``: the request reaches :attr:`Case.endpoint`),
exact ``WWW-Authenticate``, and what it may cost (store reads, argon2
verifications).  Where an adapter legitimately answers otherwise, the case
says so in :attr:`Case.differs`, with the reason; the shared assertion is
never loosened.

Header values, paths and query strings are templates: ``{live}`` and the
other names of :class:`~tests.hostile.keys.KeySet` become keys at run time.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Mapping
from typing import Any, Final

from tests import bodies

ADAPTERS: Final = ("asgi", "starlette", "fastapi", "wsgi", "flask", "django", "drf")
ASGI_FAMILY: Final = ("asgi", "starlette", "fastapi")
WSGI_FAMILY: Final = ("wsgi", "flask", "django", "drf")
#: Where werkzeug answers the request: it drops the body of a HEAD answer itself.
WERKZEUG: Final = ("wsgi", "flask")


#: A cold, valid key: one store read and one argon2 verification.
VERIFIED: Final = (1, 1)
#: A well-formed key whose id the store does not hold as such: a read, no argon2.
LOOKED_UP: Final = (1, 0)

Headers = tuple[tuple[bytes, bytes], ...]


@dataclasses.dataclass(frozen=True)
class Difference:
    """How an adapter's answer to a case differs, and why.

    *changes* are :class:`Case` fields to replace; ``None`` means the case
    does not apply to the adapter at all.
    """

    reason: str
    changes: Mapping[str, Any] | None


@dataclasses.dataclass(frozen=True)
class Case:
    """One hostile request and the answer every adapter must give."""

    name: str
    #: HTTP status; 101 for an accepted WebSocket; ``None`` when no HTTP
    #: answer is expected (a lifespan, a WebSocket closed without one).
    status: int | None
    #: The exact body of a refusal; ``None``: the request reaches :attr:`endpoint`.
    body: bytes | None
    #: The exact ``WWW-Authenticate`` of a refusal (``None``: absent).
    challenge: str | None = None
    #: ``GET``, ``HEAD``..., or ``WEBSOCKET`` (a handshake) or ``LIFESPAN``.
    method: str = "GET"
    #: The path as sent on the wire (percent-encoded), mount point included.
    path: str = "/v1/charges"
    headers: Headers = ()
    query: bytes = b""
    #: The mount point: ASGI ``root_path``, WSGI ``SCRIPT_NAME``.
    root: str = ""
    #: The endpoint a passing request reaches: "protected", "health" or "lifespan".
    endpoint: str | None = None
    #: The key whose principal the endpoint must see (a KeySet name).
    principal: str | None = None
    #: (store reads, argon2 verifications) of the request (the last one, with attempts).
    cost: tuple[int, int] = (0, 0)
    #: The WebSocket close code of a handshake refused without an HTTP answer.
    close_code: int | None = None
    #: The body arrives empty (a HEAD answer) though Content-Length counts it.
    stripped: bool = False
    #: The same request is sent this many times; all but the last get invalid_api_key.
    attempts: int = 1
    #: The adapter is configured with a failure limiter (2 failures a minute per client).
    rate_limit: bool = False
    #: The key store fails every read.
    store_down: bool = False
    #: The server offers the ``websocket.http.response`` extension (ASGI).
    ws_extension: bool = True
    #: The app runs its framework's standard CORS layer in its documented place
    #: (allowing :data:`ORIGIN`); every answer then carries its
    #: ``Access-Control-Allow-Origin``.
    cors: bool = False
    #: The peer address the server gives (of the last request, with attempts).
    peer: str = "127.0.0.1"
    #: The peer and headers of the earlier attempts, where they differ.
    earlier_peer: str | None = None
    earlier_headers: Headers | None = None
    #: The adapter trusts these proxies' forwarded headers.
    trusted_proxies: tuple[str, ...] = ()
    #: A 429 or 503 carries Retry-After (a used-up quota that never refills does not).
    retry_after: bool = True
    #: The same request is first sent this many times, each answered 200.
    warmups: int = 0
    #: The answer's ``RateLimit-Policy`` value and the ``r`` of its
    #: ``RateLimit`` (``None``: neither header is sent).
    ratelimit: tuple[str, int] | None = None
    differs: Mapping[str, Difference] = dataclasses.field(default_factory=dict)

    def __str__(self) -> str:
        return self.name

    def for_adapter(self, adapter: str) -> Case | None:
        """The case as *adapter* must answer it; ``None`` if it does not apply."""
        difference = self.differs.get(adapter)
        if difference is None:
            return self
        if difference.changes is None:
            return None
        return dataclasses.replace(self, **difference.changes, differs={})

    def reason(self, adapter: str) -> str:
        difference = self.differs.get(adapter)
        return difference.reason if difference is not None else ""


def auth(*values: bytes) -> Headers:
    """One ``Authorization`` header per value."""
    return tuple((b"authorization", value) for value in values)


def differs(reason: str, adapters: tuple[str, ...], **changes: Any) -> dict[str, Difference]:
    return dict.fromkeys(adapters, Difference(reason, changes))


def not_for(reason: str, adapters: tuple[str, ...]) -> dict[str, Difference]:
    return dict.fromkeys(adapters, Difference(reason, None))


def missing(name: str, **fields: Any) -> Case:
    return Case(name, 401, bodies.MISSING, fields.pop("challenge", bodies.CHALLENGE), **fields)


def invalid(name: str, **fields: Any) -> Case:
    return Case(name, 401, bodies.INVALID, fields.pop("challenge", bodies.INVALID_CHALLENGE),
                **fields)


def passes(name: str, endpoint: str | None = "protected", **fields: Any) -> Case:
    return Case(name, fields.pop("status", 200), None, None, endpoint=endpoint, **fields)


def valid(name: str, **fields: Any) -> Case:
    """A request carrying the live key in some accepted form."""
    fields.setdefault("headers", auth(b"Bearer {live}"))
    fields.setdefault("principal", "live")
    return passes(name, cost=VERIFIED, **fields)


# -- the reasons adapters differ ------------------------------------------------

_WERKZEUG_HEAD = differs(
    "werkzeug drops the body of a HEAD answer itself (ASGI and Django leave it to the server)",
    WERKZEUG, stripped=True,
)
_FLASK_SLASHES = differs(
    "werkzeug strips leading slashes from PATH_INFO for request.path and for routing alike: "
    "Flask's router serves /health here too", ("flask",),
    status=200, body=None, challenge=None, endpoint="health",
)
_NO_CORS_PACKAGE = not_for(
    "bare WSGI has no standard CORS layer; the WSGI middleware's own tests pass preflights to "
    "flask-cors inside a wrapped Flask app", ("wsgi",),
)
_STARLETTE_WS_CLOSE = (
    "Starlette's AuthenticationMiddleware closes a refused WebSocket itself, code 1000, "
    "without an HTTP answer"
)
_WS_REFUSAL_CLOSED = differs(_STARLETTE_WS_CLOSE, ("starlette",),
                             status=None, body=b"", challenge=None, close_code=1000)
_WS_UPGRADE_IS_GET = {
    **differs("WSGI cannot upgrade: the handshake reaches the endpoint as a plain GET",
              ("wsgi", "django", "drf"), status=200),
    **differs("the key passes; then werkzeug's router answers a WebSocket handshake to an "
              "HTTP route 400 (WebsocketMismatch), so no endpoint runs",
              ("flask",), status=400, endpoint=None, principal=None),
}

_WS_HEADERS: Final = (
    (b"upgrade", b"websocket"), (b"connection", b"Upgrade"),
    (b"sec-websocket-key", b"dGhlIHNhbXBsZSBub25jZQ=="), (b"sec-websocket-version", b"13"),
)
#: The origin the CORS layers allow.
ORIGIN: Final = "https://app.example"
_PREFLIGHT: Final = ((b"origin", ORIGIN.encode()), (b"access-control-request-method", b"POST"))
#: A path every test app routes to its protected endpoint for GET and POST only, so
#: that each framework (and each CORS layer) answers OPTIONS there itself.
CORS_PATH: Final = "/v1/widgets"
_MEGABYTE: Final = 1024 * 1024
_FULLWIDTH_BEARER: Final = "\uff22\uff45\uff41\uff52\uff45\uff52".encode()


def _casings() -> list[Case]:
    """Every upper/lower-case spelling of the scheme, all accepted."""
    pairs = zip("bearer", "BEARER", strict=True)
    spellings = ("".join(letters) for letters in itertools.product(*pairs))
    return [valid(f"scheme_{s}", headers=auth(s.encode() + b" {live}")) for s in spellings]


HEADER_CASES: Final = [
    missing("no_header"),
    missing("empty_value", headers=auth(b"")),
    missing("blank_value", headers=auth(b"   ")),
    missing("tab_value", headers=auth(b"\t")),
    missing("bearer_alone", headers=auth(b"Bearer")),
    missing("bearer_and_spaces", headers=auth(b"Bearer   ")),
    invalid("tab_after_bearer", headers=auth(b"Bearer\t{live}")),
    invalid("space_tab_after_bearer", headers=auth(b"Bearer \t{live}")),
    valid("blanks_around_the_value", headers=auth(b" \tBearer {live}\t ")),
    valid("several_spaces_after_bearer", headers=auth(b"Bearer    {live}")),
    *_casings(),
    # Other schemes: the client did not try to present one of our keys.
    missing("basic_scheme", headers=auth(b"Basic dXNlcjpwYXNzd29yZA==")),
    # ... but a key of ours sent without Bearer is told how to send it.
    missing("token_scheme_with_key", headers=auth(b"Token {live}"),
            challenge=bodies.BARE_KEY_CHALLENGE),
    missing("apikey_scheme_with_key", headers=auth(b"ApiKey {live}"),
            challenge=bodies.BARE_KEY_CHALLENGE),
    missing("digest_scheme", headers=auth(b'Digest username="u", realm="api", nonce="n"')),
    missing("bare_key", headers=auth(b"{live}"), challenge=bodies.BARE_KEY_CHALLENGE),
    missing("bearer_glued_to_key", headers=auth(b"Bearer{live}"),
            challenge=bodies.BARE_KEY_CHALLENGE),
    invalid("bearer_twice", headers=auth(b"Bearer Bearer {live}"),
            challenge=bodies.DOUBLED_CHALLENGE),
    invalid("bearer_twice_lower_case", headers=auth(b"bearer  bearer {live}"),
            challenge=bodies.DOUBLED_CHALLENGE),
    # Anything after the key.
    invalid("junk_after_key", headers=auth(b"Bearer {live} x")),
    invalid("key_twice_in_one_value", headers=auth(b"Bearer {live} {live}")),
    invalid("comma_after_key", headers=auth(b"Bearer {live},")),
    invalid("semicolon_after_key", headers=auth(b"Bearer {live};")),
    invalid("quoted_key", headers=auth(b'Bearer "{live}"')),
    invalid("key_as_auth_param", headers=auth(b'Bearer token="{live}"')),
    # Two Authorization headers (WSGI servers join them with ", ").
    invalid("two_headers_valid_first", headers=auth(b"Bearer {live}", b"Bearer {wrong_secret}")),
    invalid("two_headers_valid_last", headers=auth(b"Bearer {wrong_secret}", b"Bearer {live}")),
    invalid("two_identical_headers", headers=auth(b"Bearer {live}", b"Bearer {live}")),
    invalid("basic_then_bearer", headers=auth(b"Basic dXNlcjpwYXNz", b"Bearer {live}")),
    invalid("bearer_then_basic", headers=auth(b"Bearer {live}", b"Basic dXNlcjpwYXNz")),
    invalid("empty_then_bearer", headers=auth(b"", b"Bearer {live}")),
    invalid("names_in_other_cases",
            headers=((b"Authorization", b"Bearer {live}"), (b"AUTHORIZATION", b"Bearer {live}"))),
    invalid("comma_joined_bearers", headers=auth(b"Bearer {live}, Bearer {wrong_secret}")),
    invalid("comma_joined_basic_first", headers=auth(b"Basic dXNlcjpwYXNz, Bearer {live}")),
    # Size: refused before any store read or hash.
    invalid("header_8kb", headers=auth(b"Bearer " + b"A" * 8 * 1024)),
    invalid("header_64kb", headers=auth(b"Bearer " + b"A" * 64 * 1024)),
    invalid("header_1mb", headers=auth(b"Bearer " + b"A" * _MEGABYTE)),
    invalid("valid_key_then_1mb_of_blanks", headers=auth(b"Bearer {live}" + b" " * _MEGABYTE)),
    missing("1mb_other_header", headers=((b"x-filler", b"A" * _MEGABYTE),)),
    # NUL, control and non-ASCII bytes.
    invalid("nul_after_key", headers=auth(b"Bearer {live}\x00")),
    invalid("nul_before_key", headers=auth(b"Bearer \x00{live}")),
    invalid("nul_alone", headers=auth(b"\x00")),
    invalid("escape_before_scheme", headers=auth(b"\x1bBearer {live}")),
    invalid("delete_after_key", headers=auth(b"Bearer {live}\x7f")),
    invalid("crlf_injection", headers=auth(b"Bearer {live}\r\nX-Admin: 1")),
    invalid("vertical_tab_separator", headers=auth(b"Bearer\x0b{live}")),
    invalid("latin1_byte_after_key", headers=auth(b"Bearer {live}\xe9")),
    invalid("zero_width_space_after_key", headers=auth(b"Bearer {live}\xe2\x80\x8b")),
    invalid("latin1_nbsp_separator", headers=auth(b"Bearer\xa0{live}")),
    invalid("utf8_nbsp_separator", headers=auth(b"Bearer\xc2\xa0{live}")),
    invalid("invalid_utf8", headers=auth(b"\xff\xfe")),
    invalid("fullwidth_scheme", headers=auth(_FULLWIDTH_BEARER + b" {live}")),
    valid("non_ascii_in_another_header",
          headers=(*auth(b"Bearer {live}"), (b"x-name", b"\xff\xe9\x00"))),
]

KEY_CASES: Final = [
    valid("valid_live_key"),
    valid("read_only_key_reads", headers=auth(b"Bearer {read_only}"), principal="read_only"),
    invalid("test_key_where_only_live_is_allowed", headers=auth(b"Bearer {test}"),
            cost=VERIFIED),
    invalid("wrong_mode", headers=auth(b"Bearer {mode_swapped}"), cost=LOOKED_UP),
    invalid("wrong_secret", headers=auth(b"Bearer {wrong_secret}"), cost=VERIFIED),
    invalid("unknown_id", headers=auth(b"Bearer {unknown}"), cost=LOOKED_UP),
    invalid("bad_checksum", headers=auth(b"Bearer {bad_checksum}")),
    invalid("wrong_prefix", headers=auth(b"Bearer {wrong_prefix}")),
    invalid("one_char_short", headers=auth(b"Bearer {short}")),
    invalid("one_char_long", headers=auth(b"Bearer {long}")),
    invalid("truncated", headers=auth(b"Bearer {truncated}")),
    invalid("upper_cased_key", headers=auth(b"Bearer {upper}")),
    Case("revoked", 401, bodies.REVOKED, bodies.INVALID_CHALLENGE,
         headers=auth(b"Bearer {revoked}"), cost=VERIFIED),
    Case("expired", 401, bodies.REVOKED, bodies.INVALID_CHALLENGE,
         headers=auth(b"Bearer {expired}"), cost=VERIFIED),
    Case("disabled", 401, bodies.DISABLED, bodies.INVALID_CHALLENGE,
         headers=auth(b"Bearer {disabled}"), cost=VERIFIED),
    Case("read_only_key_writes", 403, bodies.FORBIDDEN, bodies.READ_ONLY_CHALLENGE, method="POST",
         headers=auth(b"Bearer {read_only}"), cost=VERIFIED),
    Case("path_restricted_key_elsewhere", 403, bodies.FORBIDDEN, bodies.PATHS_CHALLENGE,
         path="/v1/refunds", headers=auth(b"Bearer {charges_only}"), cost=VERIFIED),
    # Keys anywhere but the Authorization header are not looked at.
    missing("key_in_query_string", query=b"api_key={live}"),
    missing("access_token_in_query_string", query=b"access_token={live}"),
    missing("key_in_x_api_key_header", headers=((b"x-api-key", b"{live}"),)),
    missing("key_in_cookie", headers=((b"cookie", b"api_key={live}"),)),
    missing("key_in_proxy_authorization", headers=((b"proxy-authorization", b"Bearer {live}"),)),
]

PATH_CASES: Final = [
    passes("exempt_path", "health", path="/health"),
    passes("exempt_path_with_query", "health", path="/health", query=b"full=1"),
    passes("exempt_path_percent_encoded", "health", path="/%68ealth"),
    missing("healthz", path="/healthz"),
    missing("health_dash_x", path="/health-x"),
    missing("trailing_slash", path="/health/"),
    missing("double_leading_slash", path="//health", differs=_FLASK_SLASHES),
    missing("encoded_leading_slash", path="/%2Fhealth", differs=_FLASK_SLASHES),
    missing("dot_dot_after_exempt", path="/health/../admin"),
    missing("encoded_dot_dot_after_exempt", path="/health/%2E%2E/admin"),
    missing("dot_segment_before", path="/./health"),
    missing("dot_segment_after", path="/health/."),
    missing("upper_case", path="/HEALTH"),
    missing("mixed_case", path="/Health"),
    missing("semicolon_parameter", path="/health;x=1"),
    missing("bare_semicolon", path="/health;"),
    missing("encoded_nul", path="/health%00"),
    missing("encoded_space", path="/health%20"),
    missing("encoded_slash_suffix", path="/health%2Fadmin"),
    missing("backslash", path="/health%5C"),
    passes("mounted_exempt_path", "health", root="/api", path="/api/health"),
    missing("mounted_protected_path", root="/api", path="/api/v1/charges"),
    valid("mounted_valid_key", root="/api", path="/api/v1/charges"),
    missing("mount_look_alike", root="/api", path="/api-v2/health"),
    missing("mounted_double_slash", root="/api", path="/api//health", differs=_FLASK_SLASHES),
    missing("unmounted_prefix", path="/api/health"),
]

METHOD_CASES: Final = [
    passes("head_exempt_path", "health", method="HEAD", path="/health"),
    missing("head_without_key", method="HEAD", differs=_WERKZEUG_HEAD),
    valid("head_with_key", method="HEAD"),
    missing("post_without_key", method="POST"),
    missing("options_without_cors_headers", method="OPTIONS"),
    # With no CORS layer to answer it, a preflight must not reach the endpoint keyless.
    missing("cors_preflight", method="OPTIONS", headers=_PREFLIGHT),
    missing("cors_preflight_empty_values", method="OPTIONS",
            headers=((b"origin", b""), (b"access-control-request-method", b""))),
    missing("cors_preflight_to_get_post_route", method="OPTIONS", path=CORS_PATH,
            headers=_PREFLIGHT),
    # With the framework's CORS layer where it documents it, the layer answers.
    passes("cors_layer_answers_preflight", None, method="OPTIONS", path=CORS_PATH,
           headers=_PREFLIGHT, cors=True, differs=_NO_CORS_PACKAGE),
    missing("cors_layer_request_without_key", method="POST", path=CORS_PATH,
            headers=_PREFLIGHT[:1], cors=True, differs=_NO_CORS_PACKAGE),
    valid("cors_layer_request_with_key", method="POST", path=CORS_PATH,
          headers=(*auth(b"Bearer {live}"), _PREFLIGHT[0]), cors=True,
          differs=_NO_CORS_PACKAGE),
    missing("options_with_origin_only", method="OPTIONS", headers=_PREFLIGHT[:1]),
    missing("options_with_request_method_only", method="OPTIONS", headers=_PREFLIGHT[1:]),
    missing("get_with_preflight_headers", headers=_PREFLIGHT),
    missing("trace_without_key", method="TRACE"),
    missing("unknown_method_without_key", method="PROPFIND"),
    missing("websocket_without_key", method="WEBSOCKET", headers=_WS_HEADERS,
            differs=_WS_REFUSAL_CLOSED),
    Case("websocket_without_key_or_extension", None, b"", method="WEBSOCKET",
         headers=_WS_HEADERS, ws_extension=False, close_code=1008,
         differs={**not_for("the handshake is a plain GET there; there is no extension to "
                            "lack", WSGI_FAMILY),
                  **differs(_STARLETTE_WS_CLOSE, ("starlette",), close_code=1000)}),
    invalid("websocket_wrong_secret", method="WEBSOCKET",
            headers=(*_WS_HEADERS, *auth(b"Bearer {wrong_secret}")), cost=VERIFIED,
            differs=_WS_REFUSAL_CLOSED),
    valid("websocket_with_key", method="WEBSOCKET", status=101,
          headers=(*_WS_HEADERS, *auth(b"Bearer {live}")), differs=_WS_UPGRADE_IS_GET),
    passes("lifespan", "lifespan", status=None, method="LIFESPAN",
           differs=not_for("WSGI has no lifespan protocol", WSGI_FAMILY)),
]

LIMIT_CASES: Final = [
    Case("rate_limited", 429, bodies.RATE_LIMITED, None, headers=auth(b"Bearer {wrong_secret}"),
         attempts=3, rate_limit=True),
    Case("store_down", 503, bodies.UNAVAILABLE, None, headers=auth(b"Bearer {live}"),
         store_down=True, cost=LOOKED_UP),
    passes("store_down_exempt_path", "health", path="/health", store_down=True),
    invalid("store_down_malformed_key", headers=auth(b"Bearer {bad_checksum}"),
            store_down=True),
]

def _forwarded(name: bytes, value: bytes) -> Headers:
    return (*auth(b"Bearer {wrong_secret}"), (name, value))


def _limited(name: str, **fields: Any) -> Case:
    """Two wrong secrets (from *earlier_peer* with *earlier_headers*), then a
    third request (from *peer* with *headers*): a 429 when all three count
    against one client (2 failures a minute per client)."""
    return Case(name, 429, bodies.RATE_LIMITED, None, attempts=3, rate_limit=True, **fields)


def _apart(name: str, **fields: Any) -> Case:
    """As :func:`_limited`, but the third request is another client's: its own 401."""
    return invalid(name, cost=VERIFIED, attempts=3, rate_limit=True, **fields)


_PROXY: Final = ("127.0.0.1",)
_ELSEWHERE: Final = ("10.0.0.0/8",)

CLIENT_CASES: Final = [
    # A server bound to [::] sees IPv4 clients IPv4-mapped: each is its own client.
    _apart("ipv4_mapped_clients_apart", earlier_peer="::ffff:127.0.0.2", peer="::ffff:127.0.0.3",
           headers=auth(b"Bearer {wrong_secret}")),
    _limited("ipv4_mapped_client_limited", peer="::ffff:127.0.0.2",
             headers=auth(b"Bearer {wrong_secret}")),
    _apart("ipv6_loopback_apart_from_ipv4", earlier_peer="::ffff:127.0.0.2", peer="::1",
           headers=auth(b"Bearer {wrong_secret}")),
    # Behind a trusted proxy, the forwarded client is the client...
    _apart("forwarded_for_clients_apart", trusted_proxies=_PROXY,
           earlier_headers=_forwarded(b"x-forwarded-for", b"203.0.113.7"),
           headers=_forwarded(b"x-forwarded-for", b"203.0.113.8")),
    _limited("forwarded_for_same_client", trusted_proxies=_PROXY,
             earlier_headers=_forwarded(b"x-forwarded-for", b"198.51.100.1, 203.0.113.7"),
             headers=_forwarded(b"x-forwarded-for", b"198.51.100.2, 203.0.113.7")),
    _apart("rfc7239_forwarded_clients_apart", trusted_proxies=_PROXY,
           earlier_headers=_forwarded(b"forwarded", b"for=203.0.113.7;proto=https"),
           headers=_forwarded(b"forwarded", b'for="[2001:db8::8]:4711"')),
    _apart("forwarded_for_from_a_mapped_trusted_peer", trusted_proxies=_PROXY,
           peer="::ffff:127.0.0.1", earlier_peer="::ffff:127.0.0.1",
           earlier_headers=_forwarded(b"x-forwarded-for", b"203.0.113.7"),
           headers=_forwarded(b"x-forwarded-for", b"203.0.113.8")),
    # ...an unreadable hop counts as the proxy...
    _limited("unreadable_forwarded_for_is_the_proxy", trusted_proxies=_PROXY,
             earlier_headers=_forwarded(b"x-forwarded-for", b"unknown"),
             headers=_forwarded(b"x-forwarded-for", b"_hidden")),
    # ...and from an untrusted peer the headers are ignored.
    _limited("forwarded_for_from_untrusted_peer", trusted_proxies=_ELSEWHERE,
             earlier_headers=_forwarded(b"x-forwarded-for", b"203.0.113.7"),
             headers=_forwarded(b"x-forwarded-for", b"203.0.113.8")),
    _limited("forwarded_without_trusted_proxies",
             earlier_headers=_forwarded(b"forwarded", b"for=203.0.113.7"),
             headers=_forwarded(b"forwarded", b"for=203.0.113.8")),
]

def _from(value: bytes) -> Headers:
    """The IP-allowlisted key (127.0.0.0/8 and ::1), and X-Forwarded-For *value*."""
    return (*auth(b"Bearer {ip_local}"), (b"x-forwarded-for", value))


# The IP allowlist (#13): checked after the secret verified, against the
# client as the trusted proxies resolve it.
IP_CASES: Final = [
    valid("ip_allowlisted_key_from_its_network", headers=auth(b"Bearer {ip_local}"),
          principal="ip_local"),
    valid("ip_allowlisted_key_from_a_mapped_peer", headers=auth(b"Bearer {ip_local}"),
          principal="ip_local", peer="::ffff:127.0.0.5"),
    Case("ip_not_allowed", 403, bodies.IP_NOT_ALLOWED, None, headers=auth(b"Bearer {ip_local}"),
         peer="192.0.2.9", cost=VERIFIED),
    Case("ip_not_allowed_behind_a_trusted_proxy", 403, bodies.IP_NOT_ALLOWED, None,
         trusted_proxies=_PROXY, headers=_from(b"203.0.113.7"), cost=VERIFIED),
    valid("ip_allowlisted_forwarded_client", trusted_proxies=_PROXY,
          headers=_from(b"203.0.113.7, 127.0.0.9"), principal="ip_local"),
    valid("ip_spoofed_forwarded_for_from_an_untrusted_peer_is_ignored",
          trusted_proxies=_ELSEWHERE, headers=_from(b"127.0.0.1"), principal="ip_local"),
    Case("ip_spoofed_forwarded_for_cannot_let_in", 403, bodies.IP_NOT_ALLOWED, None,
         peer="192.0.2.9", headers=_from(b"127.0.0.1"), cost=VERIFIED),
]

# The quota (#13): charged last, after every other check passed; used up,
# 429 quota_exceeded, with Retry-After only when a refill is due.
_QUOTA_READ_BACK: Final = differs(
    "Django's store reads the quota back after its conditional UPDATE (the ORM has no "
    "RETURNING): one more SELECT of the key table", ("django", "drf"), cost=(2, 1))
QUOTA_CASES: Final = [
    valid("quota_left", headers=auth(b"Bearer {quota_left}"), principal="quota_left",
          differs=_QUOTA_READ_BACK),
    Case("quota_used_up", 429, bodies.QUOTA_EXCEEDED, None,
         headers=auth(b"Bearer {quota_used_up}"), cost=VERIFIED, retry_after=False,
         differs=_QUOTA_READ_BACK),
    Case("quota_used_up_until_its_refill", 429, bodies.QUOTA_EXCEEDED, None,
         headers=auth(b"Bearer {quota_refilling}"), cost=VERIFIED, differs=_QUOTA_READ_BACK),
]

#: A class-based view whose base class is exempt (Flask's ``@auth.exempt`` on
#: the base); every other adapter routes this path to its protected endpoint.
INHERITED_PATH: Final = "/inherits"

# Per-key rate limits (#13): the RateLimit headers on every answer of a
# limited key (draft-ietf-httpapi-ratelimit-headers-11), 429 past the limit.
_POLICY: Final = '"2/minute";q=2;w=60'
_NO_SUB_RESPONSE: Final = differs(
    "FastAPI copies a dependency's headers only into a response it builds; this app's routes "
    "return a JSONResponse themselves (tests/adapters/test_fastapi_rate_limits.py covers a "
    "route returning data)", ("fastapi",), ratelimit=None)
RATE_LIMIT_CASES: Final = [
    valid("rate_limited_key_carries_the_headers", headers=auth(b"Bearer {limited}"),
          principal="limited", ratelimit=(_POLICY, 1), differs=_NO_SUB_RESPONSE),
    passes("rate_limited_key_last_request_in_the_window", headers=auth(b"Bearer {limited}"),
           principal="limited", warmups=1, cost=(1, 0), ratelimit=(_POLICY, 0),
           differs=_NO_SUB_RESPONSE),
    Case("rate_limit_exceeded", 429, bodies.RATE_LIMIT_EXCEEDED, None,
         headers=auth(b"Bearer {limited}"), warmups=2, cost=(1, 0), ratelimit=(_POLICY, 0)),
]

VIEW_CASES: Final = [
    missing("subclass_of_an_exempt_view", path=INHERITED_PATH),
    valid("subclass_of_an_exempt_view_with_key", path=INHERITED_PATH),
]

CASES: Final = [*HEADER_CASES, *KEY_CASES, *PATH_CASES, *METHOD_CASES, *LIMIT_CASES,
                *CLIENT_CASES, *IP_CASES, *QUOTA_CASES, *RATE_LIMIT_CASES,
                *VIEW_CASES]
