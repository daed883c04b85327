"""The console's signed session cookie and its CSRF tokens, without pages."""

from __future__ import annotations

import base64
import json

import pytest

from aqnt_auth.console import Request
from aqnt_auth.console._session import Session, Sessions, is_loopback_request


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def sessions(clock: Clock) -> Sessions:
    return Sessions(b"k" * 32, clock=clock)


def _request(cookie: str | None = None, *, host: str = "127.0.0.1:8000",
             client: str | None = "127.0.0.1", scheme: str = "http",
             root_path: str = "") -> Request:
    headers = {"host": host}
    if cookie is not None:
        headers["cookie"] = f"aqnt_console={cookie}"
    return Request("GET", "/", headers=headers, client=client, scheme=scheme,
                   root_path=root_path)


class TestCookie:
    def test_round_trip(self, sessions: Sessions) -> None:
        session = sessions.sign_in("key:abc", can_write=True).with_nonce("n1")
        assert sessions.decode(sessions.encode(session)) == session
        assert sessions.load(_request(sessions.encode(session))) == session

    def test_holds_only_what_it_says(self, sessions: Sessions) -> None:
        value = sessions.encode(sessions.sign_in("key:abc", can_write=False))
        body = value.split(".")[0]
        payload = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
        assert sorted(payload) == ["a", "c", "i", "n", "s", "w"]

    def test_signature_checked(self, sessions: Sessions, clock: Clock) -> None:
        value = sessions.encode(sessions.sign_in("key:abc", can_write=False))
        body, signature = value.split(".")
        assert sessions.decode(f"{body}.{signature[:-1]}A") is None or signature[-1] == "A"
        other = Sessions(b"o" * 32, clock=clock)
        assert other.decode(value) is None
        forged = Session("key:abc", True, clock.now, clock.now, "c")
        forged_body = other.encode(forged).split(".")[0]
        assert sessions.decode(f"{forged_body}.{signature}") is None

    @pytest.mark.parametrize("value", ["", ".", "a.b", "a.b.c", "é.é", "x" * 5000])
    def test_garbage(self, sessions: Sessions, value: str) -> None:
        assert sessions.decode(value) is None

    def test_signed_garbage(self, sessions: Sessions) -> None:
        """A payload that is signed but not a session (a key rotation of the
        format, say) is no session, not an error."""
        for payload in (b"[]", b"{}", b'{"a":1,"w":true,"i":0,"s":0,"c":"x","n":[]}', b"\xff"):
            body = base64.urlsafe_b64encode(payload).rstrip(b"=").decode()
            assert sessions.decode(f"{body}.{sessions._signature(body)}") is None

    def test_attributes(self, sessions: Sessions) -> None:
        session = sessions.anonymous()
        cookie = sessions.set_cookie(_request(root_path="/keys-admin"), session)
        assert cookie.startswith("aqnt_console=")
        assert "; Path=/keys-admin; HttpOnly; SameSite=Strict" in cookie
        assert "Secure" not in cookie
        assert "Max-Age" not in cookie
        public = sessions.set_cookie(_request(host="keys.example.com", client="10.0.0.2"),
                                     session)
        assert public.endswith("; Secure")
        assert sessions.clear_cookie(_request()).endswith("; Max-Age=0")

    def test_secure_forced(self, clock: Clock) -> None:
        always = Sessions(b"k" * 32, secure=True, clock=clock)
        never = Sessions(b"k" * 32, secure=False, clock=clock)
        assert "; Secure" in always.set_cookie(_request(), always.anonymous())
        assert "Secure" not in never.set_cookie(_request(host="example.com", client="1.2.3.4"),
                                                never.anonymous())

    def test_short_secret_refused(self) -> None:
        with pytest.raises(ValueError, match="16 bytes"):
            Sessions(b"short")


class TestTimeouts:
    def test_idle(self, sessions: Sessions, clock: Clock) -> None:
        value = sessions.encode(sessions.sign_in("key:abc", can_write=True))
        clock.now += 15 * 60
        assert sessions.decode(value) is not None
        clock.now += 1
        assert sessions.decode(value) is None

    def test_touch_restarts_the_idle_timeout(self, sessions: Sessions, clock: Clock) -> None:
        session = sessions.sign_in("key:abc", can_write=True)
        clock.now += 10 * 60
        touched = sessions.encode(sessions.touch(session))
        clock.now += 10 * 60
        assert sessions.decode(touched) is not None

    def test_absolute(self, sessions: Sessions, clock: Clock) -> None:
        session = sessions.sign_in("key:abc", can_write=True)
        while clock.now - session.issued_at < 8 * 3600:
            clock.now += 60
            session = sessions.touch(session)
        clock.now += 1
        assert sessions.decode(sessions.encode(sessions.touch(session))) is None

    def test_from_the_future(self, sessions: Sessions, clock: Clock) -> None:
        clock.now += 3600
        value = sessions.encode(sessions.sign_in("key:abc", can_write=True))
        clock.now -= 3600
        assert sessions.decode(value) is None


class TestCSRF:
    def test_per_form_and_per_session(self, sessions: Sessions) -> None:
        one, two = sessions.anonymous(), sessions.anonymous()
        token = sessions.csrf_token(one, "/keys")
        assert sessions.csrf_valid(one, "/keys", token)
        assert not sessions.csrf_valid(one, "/keys/x/revoke", token)
        assert not sessions.csrf_valid(two, "/keys", token)
        assert not sessions.csrf_valid(None, "/keys", token)
        assert not sessions.csrf_valid(one, "/keys", "")
        assert not sessions.csrf_valid(one, "/keys", None)
        assert not sessions.csrf_valid(one, "/keys", "é")

    def test_server_secret_bound(self, clock: Clock) -> None:
        session = Session(None, False, clock.now, clock.now, "shared")
        one = Sessions(b"1" * 32, clock=clock)
        two = Sessions(b"2" * 32, clock=clock)
        assert one.csrf_token(session, "/keys") != two.csrf_token(session, "/keys")


class TestNonces:
    def test_kept_newest_last_and_bounded(self, sessions: Sessions) -> None:
        session = sessions.anonymous()
        for n in range(12):
            session = session.with_nonce(f"n{n}")
        assert session.used_nonces == tuple(f"n{n}" for n in range(4, 12))
        assert session.with_nonce("n4").used_nonces[-1] == "n4"


@pytest.mark.parametrize(("host", "client", "loopback"), [
    ("127.0.0.1:8000", "127.0.0.1", True),
    ("127.0.0.2", "127.0.0.1", True),
    ("localhost", "127.0.0.1", True),
    ("app.localhost:8000", "127.0.0.1", True),
    ("[::1]:8000", "::1", True),
    ("localhost", None, True),
    ("localhost", "::ffff:127.0.0.1", True),
    ("example.com", "127.0.0.1", False),
    ("127.0.0.1", "192.0.2.1", False),
    ("", "127.0.0.1", False),
    ("10.0.0.1:80", "10.0.0.1", False),
])
def test_loopback(host: str, client: str | None, loopback: bool) -> None:
    assert is_loopback_request(_request(host=host, client=client)) is loopback
