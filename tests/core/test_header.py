"""Authorization header rules (RFC 6750, RFC 9110)."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aqnt_auth import (
    MAX_AUTHORIZATION_LENGTH,
    AuthError,
    InvalidAPIKey,
    KeyFormat,
    MissingAPIKey,
    authorization_and_agent,
    bearer_token,
    single_authorization,
)

TOKEN = "sk_test_" + "A" * 50


class TestBearerToken:
    @pytest.mark.parametrize(
        "value",
        [
            f"Bearer {TOKEN}",
            f"bearer {TOKEN}",
            f"BEARER {TOKEN}",
            f"BeArEr {TOKEN}",
            f"Bearer     {TOKEN}",
            f"  Bearer {TOKEN}  ",
            f"Bearer {TOKEN}".encode(),
        ],
    )
    def test_accepted(self, value: str | bytes) -> None:
        """Any case of Bearer, one or more spaces, outer whitespace ignored."""
        assert bearer_token(value) == TOKEN

    @pytest.mark.parametrize(
        "value",
        [None, "", "   ", "\t", "Bearer", "Bearer ", "bearer    ", b"", "Basic dXNlcjpwYXNz",
         f"Token {TOKEN}", TOKEN, "Digest username=\"a\", realm=\"b\"", f"Bearerx {TOKEN}"],
    )
    def test_missing(self, value: str | bytes | None) -> None:
        """No header, blank, Bearer alone, another scheme or a bare key: missing_api_key."""
        with pytest.raises(MissingAPIKey):
            bearer_token(value)

    @pytest.mark.parametrize(
        "value",
        [
            f"Bearer\t{TOKEN}",
            f"Bearer {TOKEN}\x00",
            f"\x00Bearer {TOKEN}",
            "Basic \x01abc",
            "Bearer é" + TOKEN,
            f"Bearer {TOKEN}".encode() + b"\xff",
            b"\xc3\xa9",
            "Basic abc, Bearer " + TOKEN,
            f"Bearer {TOKEN}, Bearer {TOKEN}",
            f"Bearer, Bearer {TOKEN}",
            "x" * (MAX_AUTHORIZATION_LENGTH + 1),
            "Bearer " + "a" * 1_000_000,
            b"Bearer " + b"a" * 65536,
        ],
    )
    def test_invalid(self, value: str | bytes) -> None:
        """Control or non-ASCII bytes, several credentials, over-long: invalid_api_key."""
        # Anything the header layer lets through must fail at the key layer.
        with pytest.raises(InvalidAPIKey):
            KeyFormat().parse(bearer_token(value))

    def test_trailing_junk_is_not_the_key(self) -> None:
        """Anything after the key stays in the token, so the key check fails."""
        token = bearer_token(f"Bearer {TOKEN} extra")
        assert token != TOKEN

    @settings(max_examples=300)
    @given(st.binary(max_size=300))
    def test_arbitrary_bytes_raise_only_auth_errors(self, value: bytes) -> None:
        """Whatever bytes arrive, the result is a token or an AuthError."""
        with contextlib.suppress(AuthError):
            assert isinstance(bearer_token(value), str)

    @settings(max_examples=300)
    @given(st.text(max_size=300))
    def test_arbitrary_text_raise_only_auth_errors(self, value: str) -> None:
        with contextlib.suppress(AuthError):
            assert isinstance(bearer_token(value), str)


class TestSingleAuthorization:
    def test_none(self) -> None:
        assert single_authorization([(b"host", b"x")]) is None

    def test_one(self) -> None:
        assert single_authorization([(b"authorization", b"Bearer x")]) == b"Bearer x"

    def test_several_are_invalid(self) -> None:
        """Two Authorization headers are invalid_api_key, in either order."""
        good, bad = b"Bearer " + TOKEN.encode(), b"Bearer nope"
        for pair in ([good, bad], [bad, good]):
            with pytest.raises(InvalidAPIKey):
                single_authorization([(b"authorization", v) for v in pair])


class TestAuthorizationAndAgent:
    def test_one_pass(self) -> None:
        """The Authorization value and the last User-Agent, or None."""
        headers = [(b"user-agent", b"a/1"), (b"authorization", b"Bearer x"),
                   (b"user-agent", b"b/2")]
        assert authorization_and_agent(headers) == (b"Bearer x", b"b/2")
        assert authorization_and_agent([(b"host", b"x")]) == (None, None)

    def test_several_are_joined_for_the_parser_to_refuse(self) -> None:
        """Two Authorization headers come back joined, as WSGI servers join
        them, and the header parser refuses that (never "any one matches")."""
        good, bad = b"Bearer " + TOKEN.encode(), b"Bearer nope"
        fmt = KeyFormat(("sk",))
        for pair in ([good, bad], [bad, good], [good, good]):
            joined, _ = authorization_and_agent([(b"authorization", v) for v in pair])
            assert joined == pair[0] + b", " + pair[1]
            with pytest.raises(AuthError):
                fmt.parse(bearer_token(joined))
