"""The refusal fast paths (#12) give exactly the answers of the general ones.

* ``bearer_token``'s fast path for the usual header (``"Bearer "`` and a
  token with no space or tab at either end), and its copy inlined in
  ``Authenticator.authenticate``, agree with the step-by-step parser on any
  value: the same token, or the same error (class, detail, description).
* The usual malformed refusal, raised without the failure limiter's tail,
  is counted the same, and a refusal with a client address still reaches
  the limiter.
"""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aqnt_auth import (
    MAX_AUTHORIZATION_LENGTH,
    AQNTError,
    Authenticator,
    AuthError,
    InvalidAPIKey,
    KeyFormat,
    KeyManager,
    MemoryKeyStore,
)
from aqnt_auth._header import _parsed_bearer_token, bearer_token

from ._support import CountingHasher, SpyLimiter

FMT = KeyFormat()
KEY = FMT.generate("live").raw
BAD_CHECKSUM = KEY[:-1] + ("A" if KEY[-1] != "A" else "B")

Outcome = tuple[Any, ...]


def outcome(parse: Any, value: Any) -> Outcome:
    """What *parse* makes of *value*: the token, or its error's class, detail
    and description."""
    try:
        return ("token", parse(value))
    except AuthError as exc:
        return (type(exc), exc.args, exc.description)


# Header values built around the usual shape, to reach every branch of the
# fast path's test (scheme, separator, edges of the token, type, length).
_SCHEMES = st.sampled_from(["Bearer", "bearer", "BEARER", "Basic", "Bearerx", "", "Token"])
_SEPARATORS = st.sampled_from([" ", "  ", "\t", " \t", "", ", "])
_EDGES = st.sampled_from(["", " ", "  ", "\t", " \t", "\t ", "\x00", "\n", "é", ","])
_TOKENS = st.sampled_from([KEY, BAD_CHECKSUM, "sk_live_not-a-key!", "", "Bearer " + KEY,
                           "bearer " + KEY, KEY + " extra", "x" * 2000, "é" + KEY, KEY + "é"])


@st.composite
def header_values(draw: st.DrawFn) -> str | bytes:
    text = (draw(_EDGES) + draw(_SCHEMES) + draw(_SEPARATORS) + draw(_EDGES) + draw(_TOKENS)
            + draw(_EDGES))
    if draw(st.booleans()):
        return text
    return text.encode("utf-8")


EDGE_CASES: list[str | bytes | None] = [
    None, "", " ", "\t", "Bearer", "Bearer ", "Bearer  ", "Bearer \t", "bearer " + KEY,
    "BEARER " + KEY, "Bearer " + KEY, " Bearer " + KEY, "Bearer " + KEY + " ",
    "Bearer " + KEY + "\t", "\tBearer " + KEY, "Bearer  " + KEY, "Bearer \t" + KEY,
    "Bearer\t" + KEY, "Bearer " + KEY + " \t ", "Bearer " + "a" * (MAX_AUTHORIZATION_LENGTH - 7),
    "Bearer " + "a" * (MAX_AUTHORIZATION_LENGTH - 6), "Bearer é", "Bearer " + KEY + "\x00",
    "Bearer Bearer " + KEY, "Bearer " + KEY + ", Bearer " + KEY, "Bearer x", "Bearer \x00",
    b"Bearer " + KEY.encode(), b"Bearer  " + KEY.encode(), b"Bearer \xff", b"",
    "Bearer sk_live_not-a-key!", "Bearer " + BAD_CHECKSUM,
]


class _Text(str):
    """A str subclass: never taken by the fast path (``type(value) is str``)."""


class TestBearerFastPath:
    @pytest.mark.parametrize("value", EDGE_CASES)
    def test_edge_cases(self, value: str | bytes | None) -> None:
        assert outcome(bearer_token, value) == outcome(_parsed_bearer_token, value)

    def test_str_subclass(self) -> None:
        value = _Text("Bearer " + KEY)
        assert outcome(bearer_token, value) == outcome(_parsed_bearer_token, value)

    @settings(max_examples=500)
    @given(header_values())
    def test_built_values(self, value: str | bytes) -> None:
        assert outcome(bearer_token, value) == outcome(_parsed_bearer_token, value)

    @settings(max_examples=300)
    @given(st.text(max_size=80).map(lambda t: "Bearer " + t))
    def test_arbitrary_tokens(self, value: str) -> None:
        assert outcome(bearer_token, value) == outcome(_parsed_bearer_token, value)


@pytest.fixture
def hasher() -> CountingHasher:
    return CountingHasher()


@pytest.fixture
def issued(hasher: CountingHasher) -> Any:
    store = MemoryKeyStore()
    return store, KeyManager(store, hasher=hasher).create("fast")


def expected(fmt: KeyFormat, value: Any, key: str) -> Outcome:
    """What authenticate() answers for *value*, by the step-by-step parser."""
    parsed = outcome(_parsed_bearer_token, value)
    if parsed[0] != "token":
        return parsed
    token = parsed[1]
    if token == key:
        return ("ok",)
    if fmt.checksum_ok(token):
        # Well-formed but another key: not this test's business.
        return ("well-formed",)
    if " " in token and token.partition(" ")[0].lower() == "bearer":
        return (InvalidAPIKey, ("Bearer written twice",),
                "Bearer is written twice: use Authorization: Bearer <key>")
    return (InvalidAPIKey, ("malformed key or bad checksum",), None)


class TestAuthenticateInlinePath:
    """authenticate()'s inlined header test, and its refusal tail."""

    @pytest.fixture
    def auth(self, issued: Any, hasher: CountingHasher) -> Iterator[Authenticator]:
        with Authenticator(issued[0], hashers=[hasher], usage_flush_interval=3600) as a:
            yield a

    def check(self, auth: Authenticator, key: str, value: Any) -> None:
        want = expected(auth.format, value, key)
        if want == ("well-formed",):
            return
        got = outcome(auth.authenticate, value)
        assert got == (want if want != ("ok",) else ("token", got[1])), value

    def test_edge_cases(self, auth: Authenticator, issued: Any) -> None:
        key = issued[1].key
        for value in [*EDGE_CASES, _Text("Bearer " + key)]:
            if isinstance(value, str):
                value = value.replace(KEY, key)
            elif isinstance(value, bytes):
                value = value.replace(KEY.encode(), key.encode())
            self.check(auth, key, value)

    # The authenticator is shared by the examples: none is ever valid but
    # the issued key, and without a client address the limiter counts nothing.
    @settings(max_examples=300, deadline=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(value=header_values())
    def test_built_values(self, auth: Authenticator, issued: Any, value: str | bytes) -> None:
        key = issued[1].key
        value = (value.replace(KEY, key) if isinstance(value, str)
                 else value.replace(KEY.encode(), key.encode()))
        self.check(auth, key, value)

    @pytest.mark.parametrize("header", ["Bearer sk_live_not-a-key!", "Bearer " + BAD_CHECKSUM,
                                        "Bearer Bearer " + KEY, " Bearer x "])
    def test_refusals_are_counted_malformed(self, issued: Any, hasher: CountingHasher,
                                            header: str) -> None:
        store, _ = issued
        with Authenticator(store, hashers=[hasher], usage_flush_interval=3600,
                           rate_limit=None) as auth:
            for _ in range(3):
                with pytest.raises(InvalidAPIKey) as info:
                    auth.authenticate(header)
                assert info.value.outcome == "malformed"
                assert info.value.key_id is None
            assert auth.flush_usage()
        rows = store.usage_rows(since=0, until=2**40)
        assert [(r.key_id, dict(r.counts)) for r in rows] == [("", {"malformed": 3})]

    @pytest.mark.parametrize("header", ["Bearer sk_live_not-a-key!", "Bearer " + BAD_CHECKSUM])
    def test_the_limiter_sees_refusals_with_a_client(self, issued: Any,
                                                     hasher: CountingHasher,
                                                     header: str) -> None:
        store, _ = issued
        limiter = SpyLimiter(per_client="2/minute")
        with Authenticator(store, hashers=[hasher], rate_limit=limiter) as auth:
            codes = []
            for _ in range(3):
                try:
                    auth.authenticate(header, client="192.0.2.9")
                except AQNTError as exc:
                    codes.append(exc.code)
            # Without a client address there is nothing to count against.
            with pytest.raises(InvalidAPIKey):
                auth.authenticate(header)
        assert codes == ["invalid_api_key", "invalid_api_key", "rate_limited"]
        assert limiter.failures == 3

    def test_a_refusal_is_freed_without_the_collector(self, auth: Authenticator) -> None:
        """No local of authenticate() holds the raised error: once the caller
        drops it, it is gone, with no cycle left for the garbage collector."""
        def refused(header: str | None) -> tuple[weakref.ref[AuthError], str]:
            # Not pytest.raises: its ExceptionInfo and this frame make a cycle.
            try:
                auth.authenticate(header)
            except AuthError as exc:
                return weakref.ref(exc), f"{exc!r} {exc}"
            raise AssertionError(header)

        gc.disable()
        try:
            for header in ("Bearer sk_live_not-a-key!", "Bearer " + BAD_CHECKSUM, None,
                           "Bearer Bearer x"):
                ref, shown = refused(header)
                assert ref() is None, header
                assert KEY[8:20] not in shown
        finally:
            gc.enable()
