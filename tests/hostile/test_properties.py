"""Properties over arbitrary header bytes, paths and methods, for every adapter.

Whatever arrives: no endpoint runs and nothing answers 2xx without the one
valid key in an accepted form, except on the exempt path ``/health``; no
5xx but the contract's 503 while the store is down (one example in ten);
and every 401 is one of the contract's exact bodies.
"""

from __future__ import annotations

import dataclasses
import re
import string
import urllib.parse

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests import bodies

from .cases import ADAPTERS, WERKZEUG
from .driver import METHODS, Driver, Outcome, Request, open_driver
from .keys import KeySet

#: A key slot in a drawn header: filled with a key of the driver's store.
_KEY_NAMES = ("live", "live", "live", "test", "revoked", "wrong_secret", "bad_checksum",
              "unknown", "mode_swapped", "upper")
_SCHEMES = (b"Bearer ", b"bearer ", b"BEARER ", b"Bearer  ", b" Bearer ", b"\tBearer ",
            b"Bearer\t", b"Bearer", b"Basic ", b"Token ", b"", b"Bearer \x00", b"B\xe9arer ")
_ENDS = (b"", b" ", b"\t", b"  \t", b",", b";", b"\x00", b"\r\n", b" x", b"\xc2\xa0")


@dataclasses.dataclass(frozen=True)
class KeyedValue:
    """A header value around a key: scheme, key (maybe edited), tail."""

    head: bytes
    key: str
    edit: tuple[int, int] | None
    tail: bytes

    def build(self, keys: KeySet) -> bytes:
        key = bytearray(keys[self.key].encode())
        if self.edit is not None:
            position, byte = self.edit
            key[position % len(key)] = byte
        keys.presented.add(key.decode("latin-1"))
        return self.head + bytes(key) + self.tail


_values = st.one_of(
    st.binary(max_size=96),
    st.builds(
        KeyedValue,
        head=st.one_of(st.sampled_from(_SCHEMES), st.binary(max_size=10)),
        key=st.sampled_from(_KEY_NAMES),
        edit=st.none() | st.tuples(st.integers(0, 100), st.integers(0, 255)),
        tail=st.one_of(st.sampled_from(_ENDS), st.binary(max_size=6)),
    ),
)
_names = st.sampled_from([b"authorization", b"Authorization", b"AUTHORIZATION"])
_SAFE = string.ascii_letters + string.digits + "-._~!$&'()*+,;=:@/"
_segments = st.one_of(
    st.text(_SAFE, max_size=8),
    st.binary(min_size=1, max_size=3).map(lambda b: urllib.parse.quote_from_bytes(b, safe="")),
)
_paths = st.one_of(
    st.sampled_from(["/health", "//health", "/health/", "/%68ealth", "/HEALTH", "/health;x",
                     "/health/../admin", "/%2Fhealth", "/v1/charges", "/", "/api/health"]),
    st.lists(_segments, max_size=5).map(lambda parts: "/" + "".join(parts)),
)


Drawn = tuple[str, list[tuple[bytes, bytes | KeyedValue]], str, bool]


@st.composite
def _requests(draw: st.DrawFn) -> Drawn:
    """Method, Authorization headers, path, and whether the store is down."""
    method = draw(st.sampled_from(METHODS))
    headers = draw(st.lists(st.tuples(_names, _values), max_size=2))
    path = draw(_paths)
    return method, headers, path, draw(st.integers(0, 9)) == 0


def _accepted(value: bytes, key: str) -> bool:
    """The oracle: is *value* an Authorization value carrying *key* in an accepted form?"""
    pattern = rb"[ \t]*(?i:bearer) +" + re.escape(key.encode()) + rb"[ \t]*"
    return re.fullmatch(pattern, value) is not None


def _route(adapter: str, request: Request) -> str:
    route = request.wsgi_paths()[1]
    if adapter == "flask":  # werkzeug strips extra leading slashes before routing
        route = "/" + route.lstrip("/")
    return route


def _check(adapter: str, driver: Driver, request: Request, outcome: Outcome, down: bool
           ) -> None:
    assert outcome.escaped is None, f"the app raised {outcome.escaped!r}"
    assert outcome.status is not None
    head = request.method == "HEAD" and adapter in WERKZEUG
    if outcome.status >= 500:
        assert down, "a 5xx while the store works"
        assert outcome.status == 503
        assert outcome.body == (b"" if head else bodies.UNAVAILABLE)
    live = driver.keys["live"]
    values = [v for n, v in request.headers if n.lower() == b"authorization"]
    valid = len(values) == 1 and _accepted(values[0], live)
    if outcome.endpoint is not None or 200 <= outcome.status < 300:
        if not valid:
            # Exemptions are by path, whatever the method and whichever
            # handler the app routes it to.
            assert _route(adapter, request) == "/health", "an endpoint ran without the key"
        elif outcome.endpoint == "protected" and _route(adapter, request) != "/health":
            assert getattr(outcome.principal, "id", None) == driver.keys.id_of("live")
    if outcome.status == 401:
        allowed = {bodies.MISSING: (bodies.CHALLENGE, bodies.BARE_KEY_CHALLENGE),
                   bodies.INVALID: (bodies.INVALID_CHALLENGE, bodies.DOUBLED_CHALLENGE),
                   bodies.REVOKED: (bodies.INVALID_CHALLENGE,)}
        if head:
            assert outcome.body == b""
        else:
            assert outcome.body in allowed
            assert outcome.header("www-authenticate") in allowed[outcome.body]


@pytest.mark.parametrize(
    "adapter",
    [pytest.param(a, marks=pytest.mark.django_db if a in ("django", "drf") else ())
     for a in ADAPTERS],
)
def test_no_success_without_a_valid_key(adapter: str) -> None:
    with open_driver(adapter) as driver:
        # One driver for every example: keys are issued once, and a key
        # verified by one example is warm for the next, as in production.
        @settings(max_examples=150, deadline=None, database=None,
                  suppress_health_check=[HealthCheck.too_slow])
        @given(_requests())
        def check(drawn: Drawn) -> None:
            method, raw, path, down = drawn
            headers = tuple(
                (name, value.build(driver.keys) if isinstance(value, KeyedValue) else value)
                for name, value in raw
            )
            request = Request(method, path, headers, b"", "", True)
            if down:
                driver.break_store()
            try:
                outcome = driver.send(request)
            finally:
                driver.repair_store()
            _check(adapter, driver, request, outcome, down)

        check()
