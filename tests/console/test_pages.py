"""The console's HTML pages: every route for a signed-out visitor, a
read-only admin and an admin; CSRF; sessions ending; the new key shown once;
the security headers of every answer."""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import html
import json
import re
import time
from collections.abc import Iterator

import pytest

from aqnt_auth import (
    AQNTError,
    Argon2Hasher,
    Authenticator,
    FailureLimiter,
    KeyManager,
    MemoryKeyStore,
    RevokedAPIKey,
)
from aqnt_auth.console import Admin, Console, Request, Response
from aqnt_auth.console._pages import Pages, rotation_chain
from aqnt_auth.console._security import CONTENT_SECURITY_POLICY

from ._pages import KEY, Client, cookie_attributes, form_fields, text
from .conftest import Keys


class Clock:
    """Seconds since the epoch, moved by the test."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def pages(console: Console, clock: Clock) -> Pages:
    console.pages.sessions.clock = clock
    return console.pages


@pytest.fixture
def site(pages: Pages) -> Console:
    return pages.console


@pytest.fixture
def admin(site: Console, keys: Keys) -> Client:
    client = Client(site)
    client.sign_in(keys.admin)
    return client


@pytest.fixture
def reader(site: Console, keys: Keys) -> Client:
    client = Client(site)
    client.sign_in(keys.read)
    return client


def _payload(cookie: str) -> dict[str, object]:
    body = cookie.split(".")[0]
    loaded: dict[str, object] = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    return loaded


SECURITY = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
}


def assert_secured(response: Response) -> None:
    for name, value in SECURITY.items():
        assert response.header(name) == value, name
        assert sum(1 for k, _ in response.headers if k.lower() == name.lower()) == 1, name


#: Every page route: method, path ("{id}" is a key's id), whether it changes keys.
PAGES = [
    ("GET", "/", False),
    ("GET", "/keys", False),
    ("GET", "/audit", False),
    ("GET", "/keys/new", True),
    ("POST", "/keys", True),
    ("GET", "/keys/{id}", False),
    ("GET", "/keys/{id}/edit", True),
    ("POST", "/keys/{id}/edit", True),
    ("GET", "/keys/{id}/revoke", True),
    ("POST", "/keys/{id}/revoke", True),
    ("POST", "/keys/{id}/rotate", True),
    ("POST", "/keys/{id}/disable", True),
    ("POST", "/keys/{id}/enable", True),
]
POSTS = [(m, p, w) for m, p, w in PAGES if m == "POST"]


class TestSignIn:
    """The sign-in form: an admin key, a read key, wrong keys, the limiter."""

    def test_form_has_a_token_and_an_anonymous_session(self, site: Console) -> None:
        client = Client(site)
        page = client.get("/sign-in")
        assert page.status == 200
        assert form_fields(page, "/sign-in")["csrf_token"]
        assert 'type="password"' in text(page)
        attributes = cookie_attributes(page)
        assert attributes["path"] == "/"
        assert "httponly" in attributes
        assert attributes["samesite"] == "Strict"
        assert "secure" not in attributes  # loopback
        assert _payload(client.cookies["aqnt_console"])["a"] is None

    def test_admin_key_signs_in(self, site: Console, keys: Keys) -> None:
        client = Client(site)
        response = client.submit("/sign-in", "/sign-in", {"api_key": keys.admin},
                                 query="next=%2Fkeys")
        assert response.status == 303
        assert response.header("Location") == "/keys"
        cookie = client.cookies["aqnt_console"]
        payload = _payload(cookie)
        assert payload["a"] == f"key:{keys.admin_id}"
        assert payload["w"] is True
        # neither the key nor its secret nor its hash is in the cookie
        record = site.manager.get(keys.admin_id)
        assert keys.admin not in cookie
        assert keys.admin[20:52] not in json.dumps(payload)
        assert record.hash not in json.dumps(payload)
        assert client.get("/keys").status == 200

    def test_read_key_signs_in_read_only(self, site: Console, keys: Keys) -> None:
        client = Client(site)
        client.sign_in(keys.read)
        assert _payload(client.cookies["aqnt_console"])["w"] is False
        page = client.get("/keys")
        assert page.status == 200
        assert "read-only" in text(page)

    def test_read_only_restricted_key_signs_in(self, site: Console,
                                               manager: KeyManager) -> None:
        viewer = manager.create("auditor", scopes=["aqnt:read"], read_only=True)
        client = Client(site)
        client.sign_in(viewer.key)
        assert client.get("/").status == 200

    def test_wrong_key_gets_the_form_back(self, site: Console, keys: Keys) -> None:
        client = Client(site)
        wrong = keys.admin[:-6] + ("AAAAAA" if not keys.admin.endswith("AAAAAA") else "BBBBBB")
        response = client.submit("/sign-in", "/sign-in", {"api_key": wrong})
        assert response.status == 401
        body = text(response)
        assert "not accepted" in body
        assert wrong not in body
        assert keys.admin not in body
        assert form_fields(response, "/sign-in")["csrf_token"]
        assert _payload(client.cookies["aqnt_console"])["a"] is None
        assert client.get("/keys").status == 303

    def test_garbage_and_empty(self, site: Console) -> None:
        client = Client(site)
        response = client.submit("/sign-in", "/sign-in", {"api_key": "hunter2"})
        assert response.status == 401
        assert "hunter2" not in text(response)
        assert client.submit("/sign-in", "/sign-in", {"api_key": "  "}).status == 400

    def test_key_without_console_scope(self, site: Console, keys: Keys) -> None:
        client = Client(site)
        response = client.submit("/sign-in", "/sign-in", {"api_key": keys.plain})
        assert response.status == 403
        assert "neither the scope" in text(response)
        assert keys.plain not in text(response)

    def test_revoked_admin_key(self, site: Console, keys: Keys, manager: KeyManager) -> None:
        manager.revoke(keys.admin_id)
        client = Client(site)
        response = client.submit("/sign-in", "/sign-in", {"api_key": keys.admin})
        assert response.status == 401
        assert "revoked" in text(response)

    def test_failed_sign_ins_go_through_the_failure_limiter(
            self, memory_store: MemoryKeyStore, cheap_hasher: Argon2Hasher, keys: Keys) -> None:
        console = Console(memory_store, secret_key="s" * 32, hashers=[cheap_hasher],
                          rate_limit=FailureLimiter("2/minute", "3/minute"))
        try:
            client = Client(console)
            statuses = [client.submit("/sign-in", "/sign-in", {"api_key": "sk_live_nope"}).status
                        for _ in range(5)]
            assert statuses[:3] == [401, 401, 401]
            assert statuses[3:] == [429, 429]
            assert client.last is not None
            assert client.last.header("Retry-After")
            # the limit holds for a right key from the same client too
            assert client.submit("/sign-in", "/sign-in", {"api_key": keys.admin}).status == 429
        finally:
            console.close()

    def test_next_stays_inside_the_console(self, site: Console, keys: Keys) -> None:
        for target in ("//evil.example/x", "https://evil.example/", "/\\evil.example"):
            client = Client(site)
            page = client.get("/sign-in", f"next={target}")
            response = client.post("/sign-in", {**form_fields(page, "/sign-in"),
                                                "api_key": keys.admin, "next": target})
            assert response.header("Location") == "/", target

    def test_signed_in_visitor_skips_the_form(self, admin: Client) -> None:
        response = admin.get("/sign-in", "next=%2Fkeys")
        assert response.status == 303
        assert response.header("Location") == "/keys"

    def test_sign_out(self, admin: Client) -> None:
        response = admin.submit("/keys", "/sign-out")
        assert response.status == 303
        assert response.header("Location") == "/sign-in"
        assert cookie_attributes(response).get("max-age") == "0"
        assert "aqnt_console" not in admin.cookies
        assert admin.get("/keys").status == 303

    def test_sign_out_needs_the_token(self, admin: Client) -> None:
        assert admin.post("/sign-out", {}).status == 403
        assert admin.get("/keys").status == 200

    def test_new_session_on_sign_in(self, site: Console, keys: Keys) -> None:
        """A cookie planted before sign-in (session fixation) is replaced:
        new CSRF secret, and tokens of the anonymous form no longer work."""
        client = Client(site)
        page = client.get("/sign-in")
        before = _payload(client.cookies["aqnt_console"])
        old_token = form_fields(page, "/sign-in")["csrf_token"]
        client.post("/sign-in", {"csrf_token": old_token, "api_key": keys.admin})
        after = _payload(client.cookies["aqnt_console"])
        assert after["c"] != before["c"]
        assert client.post("/sign-out", {"csrf_token": old_token}).status == 403


class TestCookie:
    """Secure unless on loopback; Path is the mount point."""

    @pytest.mark.parametrize(("host", "client", "scheme", "secure"), [
        ("127.0.0.1:8000", "127.0.0.1", "http", False),
        ("localhost:8000", "127.0.0.1", "http", False),
        ("[::1]:8000", "::1", "http", False),
        ("keys.example.com", "203.0.113.9", "http", True),  # a TLS proxy in front
        ("keys.example.com", "127.0.0.1", "http", True),  # a proxy on this machine
        ("127.0.0.1:8000", "203.0.113.9", "http", True),  # a Host header lying
        ("127.0.0.1:8000", "127.0.0.1", "https", True),
    ])
    def test_secure(self, site: Console, host: str, client: str, scheme: str,
                    secure: bool) -> None:
        visitor = Client(site, host=host, client=client, scheme=scheme)
        assert ("secure" in cookie_attributes(visitor.get("/sign-in"))) is secure

    def test_mounted_under_a_prefix(self, site: Console, keys: Keys) -> None:
        client = Client(site, root_path="/keys-admin")
        page = client.get("/sign-in")
        assert cookie_attributes(page)["path"] == "/keys-admin"
        assert 'action="/keys-admin/sign-in"' in text(page)
        assert 'href="/keys-admin/static/console.css"' in text(page)
        response = client.post("/sign-in", {**form_fields(page, "/keys-admin/sign-in"),
                                            "api_key": keys.admin, "next": "/keys"})
        assert response.header("Location") == "/keys-admin/keys"
        assert Client(site, root_path="/keys-admin").get("/keys").header("Location") == (
            "/keys-admin/sign-in?next=%2Fkeys")


class TestSessionExpiry:
    """Idle and absolute timeouts, with the sessions' clock moved by hand."""

    def test_idle(self, admin: Client, clock: Clock) -> None:
        clock.advance(14 * 60)
        assert admin.get("/keys").status == 200  # and seen again now
        clock.advance(14 * 60)
        assert admin.get("/keys").status == 200
        clock.advance(15 * 60 + 1)
        response = admin.get("/keys")
        assert response.status == 303
        assert response.header("Location") == "/sign-in?next=%2Fkeys&ended=1"
        assert "session ended" in text(admin.get("/sign-in", "next=%2Fkeys&ended=1"))

    def test_absolute(self, admin: Client, clock: Clock) -> None:
        issued = _issued(admin)
        while admin.get("/").status == 200:  # busy all day: a request every 10 minutes
            assert clock.now - issued <= 8 * 3600
            clock.advance(10 * 60)
        assert clock.now - issued > 8 * 3600
        assert admin.last is not None
        assert admin.last.header("Location") == (
            "/sign-in?next=%2F&ended=1")

    def test_a_post_after_expiry_changes_nothing(self, admin: Client, clock: Clock,
                                                 keys: Keys, site: Console) -> None:
        page = admin.get(f"/keys/{keys.plain_id}")
        fields = form_fields(page, f"/keys/{keys.plain_id}/disable")
        clock.advance(16 * 60)
        assert admin.post(f"/keys/{keys.plain_id}/disable", fields).status == 303
        assert site.manager.get(keys.plain_id).disabled_at is None

    def test_configurable(self, memory_store: MemoryKeyStore, cheap_hasher: Argon2Hasher,
                          keys: Keys, clock: Clock) -> None:
        console = Console(memory_store, secret_key="s" * 32, hashers=[cheap_hasher],
                          session_idle_timeout=60, session_absolute_timeout=120)
        console.pages.sessions.clock = clock
        try:
            client = Client(console)
            client.sign_in(keys.admin)
            clock.advance(61)
            assert client.get("/").status == 303
        finally:
            console.close()


def _issued(client: Client) -> float:
    issued = _payload(client.cookies["aqnt_console"])["i"]
    assert isinstance(issued, float)
    return issued


class TestTamperedCookie:
    """A cookie this console did not sign is no session."""

    def test_flipped_signature(self, admin: Client) -> None:
        value = admin.cookies["aqnt_console"]
        admin.cookies["aqnt_console"] = value[:-2] + ("AA" if value[-2:] != "AA" else "BB")
        assert admin.get("/keys").status == 303

    def test_read_only_made_admin(self, reader: Client, keys: Keys, site: Console) -> None:
        _body, signature = reader.cookies["aqnt_console"].split(".")
        payload = _payload(reader.cookies["aqnt_console"])
        payload["w"] = True
        forged = base64.urlsafe_b64encode(json.dumps(payload).encode()).rstrip(b"=").decode()
        reader.cookies["aqnt_console"] = f"{forged}.{signature}"
        assert reader.get("/keys").status == 303
        assert site.manager.get(keys.plain_id).disabled_at is None

    def test_other_secret(self, admin: Client, memory_store: MemoryKeyStore,
                          cheap_hasher: Argon2Hasher) -> None:
        other = Console(memory_store, secret_key="t" * 32, hashers=[cheap_hasher])
        try:
            stranger = Client(other)
            stranger.cookies = dict(admin.cookies)
            assert stranger.get("/keys").status == 303
        finally:
            other.close()

    def test_garbage(self, site: Console) -> None:
        client = Client(site)
        for value in ("", "x", "a.b.c", "\u00e9.\u00e9", "e30.e30", "." * 5000):
            client.cookies["aqnt_console"] = value
            assert client.get("/keys").status == 303


def _path(template: str, key_id: str) -> str:
    return template.replace("{id}", key_id)


class TestPermissions:
    """Every page for a signed-out visitor, a read-only admin and an admin."""

    @pytest.mark.parametrize(("method", "template", "writes"), PAGES)
    def test_signed_out(self, site: Console, keys: Keys, method: str, template: str,
                        writes: bool) -> None:
        client = Client(site)
        path = _path(template, keys.plain_id)
        response = client.request(method, path, form={} if method == "POST" else None)
        assert response.status == 303
        assert (response.header("Location") or "").startswith("/sign-in?next=")
        assert_secured(response)

    @pytest.mark.parametrize(("method", "template", "writes"), PAGES)
    def test_read_only(self, reader: Client, keys: Keys, site: Console, pages: Pages,
                       method: str, template: str, writes: bool) -> None:
        path = _path(template, keys.plain_id)
        before = site.manager.get(keys.plain_id)
        if method == "GET":
            response = reader.get(path)
            assert response.status == (403 if writes else 200)
        else:
            # with the reader's own valid token: still refused
            token = site_token(pages, reader, path)
            response = reader.post(path, {"csrf_token": token, "nonce": "n1", "name": "x"})
            assert response.status == 403
            assert "Read-only" in text(response)
        assert_secured(response)
        assert site.manager.get(keys.plain_id) == before
        assert len(site.manager.list()) == 3

    @pytest.mark.parametrize(("method", "template", "writes"),
                             [p for p in PAGES if p[0] == "GET"])
    def test_admin_pages(self, admin: Client, keys: Keys, method: str, template: str,
                         writes: bool) -> None:
        response = admin.get(_path(template, keys.plain_id))
        assert response.status == 200
        assert response.header("Content-Type") == "text/html; charset=utf-8"
        assert_secured(response)
        assert KEY.search(text(response)) is None

    def test_read_only_sees_no_action_buttons(self, reader: Client, admin: Client,
                                              keys: Keys) -> None:
        for client, shown in ((reader, False), (admin, True)):
            detail = text(client.get(f"/keys/{keys.plain_id}"))
            assert ("/rotate" in detail) is shown
            assert ("/disable" in detail) is shown
            assert ("/revoke" in detail) is shown
            assert ("/edit" in detail) is shown
            assert ('href="/keys/new"' in text(client.get("/keys"))) is shown

    def test_unknown_key(self, admin: Client) -> None:
        response = admin.get("/keys/NoSuchKey123")
        assert response.status == 404
        assert "No such key" in text(response)
        assert_secured(response)

    def test_a_whole_key_in_the_url_is_not_echoed(self, admin: Client, keys: Keys) -> None:
        response = admin.get(f"/keys/{keys.plain}")
        assert response.status == 404
        assert keys.plain not in text(response)

    def test_unknown_page_and_method(self, admin: Client) -> None:
        assert admin.get("/nothing").status == 404
        response = admin.request("DELETE", "/keys")
        assert response.status == 405
        assert response.header("Allow") is not None
        assert_secured(response)


def site_token(pages: Pages, client: Client, action: str) -> str:
    """*client*'s own CSRF token for *action*, as its pages would carry it."""
    session = pages.sessions.decode(client.cookies["aqnt_console"])
    assert session is not None
    return pages.sessions.csrf_token(session, action)


class TestCSRF:
    """Every POST needs its form's token: missing, wrong, or another form's is 403."""

    @pytest.mark.parametrize(("method", "template", "writes"), POSTS)
    @pytest.mark.parametrize("token", ["missing", "wrong", "other form", "other session"])
    def test_refused(self, admin: Client, site: Console, keys: Keys, pages: Pages,
                     method: str, template: str, writes: bool, token: str) -> None:
        path = _path(template, keys.plain_id)
        fields = {"nonce": "n1", "name": "x", "grace": "0"}
        if token == "wrong":
            fields["csrf_token"] = "A" * 43
        elif token == "other form":
            fields["csrf_token"] = site_token(pages, admin, "/keys/new")
        elif token == "other session":
            other = Client(site)
            other.sign_in(keys.admin)
            fields["csrf_token"] = site_token(pages, other, path)
        before = site.manager.get(keys.plain_id)
        response = admin.post(path, fields)
        assert response.status == 403
        assert "security token" in text(response)
        assert_secured(response)
        assert site.manager.get(keys.plain_id) == before
        assert len(site.manager.list()) == 3

    def test_sign_in_without_token(self, site: Console, keys: Keys) -> None:
        client = Client(site)
        response = client.post("/sign-in", {"api_key": keys.admin})
        assert response.status == 403
        assert "expired" in text(response)
        assert keys.admin not in text(response)
        assert "aqnt_console" in client.cookies
        assert _payload(client.cookies["aqnt_console"])["a"] is None
        # the fresh form it gave back works
        retry = client.post("/sign-in", {**form_fields(response, "/sign-in"),
                                         "api_key": keys.admin})
        assert retry.status == 303

    def test_tokens_are_per_form(self, admin: Client, keys: Keys) -> None:
        page = admin.get(f"/keys/{keys.plain_id}")
        disable = form_fields(page, f"/keys/{keys.plain_id}/disable")["csrf_token"]
        rotate = form_fields(page, f"/keys/{keys.plain_id}/rotate")["csrf_token"]
        assert disable != rotate


class TestNewKey:
    """Creation: the key is in the POST's answer only, once."""

    def _create(self, client: Client, **fields: str) -> Response:
        return client.submit("/keys/new", "/keys", {"name": "Billing", **fields})

    def test_shown_once(self, admin: Client, site: Console) -> None:
        response = self._create(admin, scopes="orders:read, orders:write",
                                owner="team-a", expires_in="30d",
                                allowed_ips="10.0.0.0/8\n2001:db8::/32",
                                allowed_paths="/v1/orders", read_only="on", mode="test")
        assert response.status == 201
        assert_secured(response)
        found = KEY.findall(text(response))
        assert len(found) == 1
        key = found[0]
        assert key.startswith("sk_test_")
        assert 'data-copy="new-key"' in text(response)
        record = next(r for r in site.manager.list() if r.name == "Billing")
        assert record.scopes == ("orders:read", "orders:write")
        assert record.owner == "team-a"
        assert record.read_only
        assert record.allowed_ips == ("10.0.0.0/8", "2001:db8::/32")
        assert record.allowed_paths == ("/v1/orders",)
        assert record.expires_at is not None
        # the key works
        with Authenticator(site.authenticator.store, hashers=site.authenticator.hashers) as auth:
            assert auth.authenticate(f"Bearer {key}", client="10.1.2.3").id == record.id
        # never in the cookie, the session, or any page after this one
        cookie = admin.cookies["aqnt_console"]
        assert key not in cookie
        assert key[20:] not in json.dumps(_payload(cookie))
        for path in ("/", "/keys", f"/keys/{record.id}", f"/keys/{record.id}/edit",
                     f"/keys/{record.id}/revoke"):
            assert key not in text(admin.get(path)), path
            assert key[-20:] not in text(admin.get(path)), path

    def test_reload_repeats_the_post_and_makes_nothing(self, admin: Client,
                                                       site: Console) -> None:
        page = admin.get("/keys/new")
        fields = {**form_fields(page, "/keys"), "name": "Once"}
        first = admin.post("/keys", fields)
        assert first.status == 201
        assert KEY.search(text(first))
        again = admin.post("/keys", fields)  # what a reload sends
        assert again.status == 409
        assert KEY.search(text(again)) is None
        assert "already submitted" in text(again)
        assert [r.name for r in site.manager.list()].count("Once") == 1

    def test_without_nonce(self, admin: Client, site: Console, pages: Pages) -> None:
        response = admin.post("/keys", {"csrf_token": site_token(pages, admin, "/keys"),
                                        "name": "x"})
        assert response.status == 409
        assert len(site.manager.list()) == 3

    @pytest.mark.parametrize(("fields", "message"), [
        ({"name": ""}, "non-empty name"),
        ({"expires_in": "soon"}, "bad duration"),
        ({"allowed_ips": "300.1.1.1"}, "not an IPv4 or IPv6"),
        ({"scopes": 'a"b'}, "printable ASCII"),
        ({"mode": "prod"}, "live or test"),
        ({"allowed_paths": "relative"}, "must start with"),
    ])
    def test_invalid(self, admin: Client, site: Console, fields: dict[str, str],
                     message: str) -> None:
        response = self._create(admin, owner="kept", **fields)
        assert response.status == 400
        assert message in text(response)
        assert 'value="kept"' in text(response)  # what was typed is kept
        assert KEY.search(text(response)) is None
        assert len(site.manager.list()) == 3
        # the form still works after the error
        retry = admin.post("/keys", {**form_fields(response, "/keys"), "name": "Fixed"})
        assert retry.status == 201


class TestKeyPages:
    """The list, the detail page and the actions."""

    def test_list_filters(self, admin: Client, site: Console, manager: KeyManager) -> None:
        gone = manager.create("Old thing", owner="team-b")
        manager.revoke(gone.record.id)
        manager.create("Sandbox", mode="test", owner="team-b")
        page = text(admin.get("/keys"))
        assert "Old thing" not in page
        assert "1 revoked hidden" in page
        assert "Sandbox" in page
        assert "Billing service" in page
        assert "Old thing" in text(admin.get("/keys", "status=all"))
        assert "Old thing" in text(admin.get("/keys", "status=revoked"))
        assert "Sandbox" not in text(admin.get("/keys", "status=revoked"))
        only_test = text(admin.get("/keys", "mode=test"))
        assert "Sandbox" in only_test
        assert "Billing service" not in only_test
        team_b = text(admin.get("/keys", "owner=team-b&status=all"))
        assert "Sandbox" in team_b
        assert "Old thing" in team_b
        assert "Console admin" not in team_b
        search = text(admin.get("/keys", "q=BILLING"))
        assert "Billing service" in search
        assert "Sandbox" not in search
        assert '<option value="team-b">team-b</option>' in page

    def test_badges(self, admin: Client, manager: KeyManager) -> None:
        paused = manager.create("Paused")
        manager.disable(paused.record.id)
        manager.create("Temporary", expires_in=__import__("datetime").timedelta(days=3))
        page = text(admin.get("/keys"))
        assert 'badge-disabled">disabled' in page
        assert 'badge-expiring">expiring' in page
        assert 'badge-active">active' in page
        disabled_only = text(admin.get("/keys", "status=disabled"))
        assert "Paused" in disabled_only
        assert "Temporary" not in disabled_only

    def test_detail(self, admin: Client, keys: Keys, site: Console) -> None:
        record = site.manager.get(keys.plain_id)
        page = text(admin.get(f"/keys/{keys.plain_id}"))
        for shown in (record.name, record.hint, record.id, "charges:write", "never rotated"):
            assert shown in page
        assert record.hash not in page
        assert keys.plain not in page

    def test_rotate_with_grace(self, admin: Client, keys: Keys, site: Console) -> None:
        response = admin.submit(f"/keys/{keys.plain_id}", f"/keys/{keys.plain_id}/rotate",
                                {"grace": "1h"})
        assert response.status == 200
        new_keys = KEY.findall(text(response))
        assert len(new_keys) == 1
        assert new_keys[0] != keys.plain
        assert "keeps working until" in text(response)
        old = site.manager.get(keys.plain_id)
        assert old.expires_at is not None
        assert old.status() == "expiring"
        successor = next(r for r in site.manager.list() if r.rotated_from == old.id)
        detail = text(admin.get(f"/keys/{successor.id}"))
        assert f'href="/keys/{old.id}"' in detail
        assert "(predecessor)" in detail
        assert new_keys[0] not in detail
        back = text(admin.get(f"/keys/{old.id}"))
        assert f'href="/keys/{successor.id}"' in back
        assert "(successor)" in back
        # both keys work during the grace period
        with Authenticator(site.authenticator.store, hashers=site.authenticator.hashers) as auth:
            assert auth.authenticate(f"Bearer {keys.plain}").id == old.id
            assert auth.authenticate(f"Bearer {new_keys[0]}").id == successor.id

    def test_rotate_again_is_refused(self, admin: Client, keys: Keys) -> None:
        admin.submit(f"/keys/{keys.plain_id}", f"/keys/{keys.plain_id}/rotate", {"grace": "1h"})
        again = admin.submit(f"/keys/{keys.plain_id}", f"/keys/{keys.plain_id}/rotate",
                             {"grace": "1h"})
        assert again.status == 409
        assert "already rotated" in text(again)
        assert KEY.search(text(again)) is None

    def test_rotate_bad_grace(self, admin: Client, keys: Keys) -> None:
        response = admin.submit(f"/keys/{keys.plain_id}", f"/keys/{keys.plain_id}/rotate",
                                {"grace": "a while"})
        assert response.status == 400
        assert "bad duration" in text(response)

    def test_disable_and_enable(self, admin: Client, keys: Keys, site: Console) -> None:
        response = admin.submit(f"/keys/{keys.plain_id}", f"/keys/{keys.plain_id}/disable")
        assert response.status == 303
        assert response.header("Location") == f"/keys/{keys.plain_id}?done=disabled"
        assert site.manager.get(keys.plain_id).disabled_at is not None
        page = admin.get(f"/keys/{keys.plain_id}", "done=disabled")
        assert "was disabled" in text(page)
        assert f"/keys/{keys.plain_id}/enable" in text(page)
        admin.submit(f"/keys/{keys.plain_id}", f"/keys/{keys.plain_id}/enable")
        assert site.manager.get(keys.plain_id).disabled_at is None

    def test_revoke_after_confirmation(self, admin: Client, keys: Keys,
                                       site: Console) -> None:
        confirm = admin.get(f"/keys/{keys.plain_id}/revoke")
        page = text(confirm)
        assert "Billing service" in page
        assert site.manager.get(keys.plain_id).hint in page
        assert site.manager.get(keys.plain_id).revoked_at is None  # asking changes nothing
        response = admin.post(f"/keys/{keys.plain_id}/revoke",
                              form_fields(confirm, f"/keys/{keys.plain_id}/revoke"))
        assert response.status == 303
        assert site.manager.get(keys.plain_id).revoked_at is not None
        with (Authenticator(site.authenticator.store, hashers=site.authenticator.hashers)
              as auth, pytest.raises(RevokedAPIKey)):
            auth.authenticate(f"Bearer {keys.plain}")
        detail = text(admin.get(f"/keys/{keys.plain_id}"))
        assert "badge-revoked" in detail
        assert "/rotate" not in detail

    def test_edit(self, admin: Client, keys: Keys, site: Console) -> None:
        response = admin.submit(f"/keys/{keys.plain_id}/edit", f"/keys/{keys.plain_id}/edit",
                                {"name": "Billing (EU)", "scopes": "charges:write refunds",
                                 "allowed_ips": "192.0.2.7"})
        assert response.status == 303
        record = site.manager.get(keys.plain_id)
        assert record.name == "Billing (EU)"
        assert record.scopes == ("charges:write", "refunds")
        assert record.allowed_ips == ("192.0.2.7",)
        bad = admin.submit(f"/keys/{keys.plain_id}/edit", f"/keys/{keys.plain_id}/edit",
                           {"name": "x", "allowed_ips": "nope"})
        assert bad.status == 400
        assert "not an IPv4" in text(bad)

    def test_escaping(self, admin: Client, manager: KeyManager) -> None:
        made = manager.create("<script>alert(1)</script>", owner='"><img src=x>')
        page = text(admin.get("/keys"))
        assert "<script>alert(1)" not in page
        assert "&lt;script&gt;" in page
        assert '"><img' not in page
        assert "<script>alert(1)" not in text(admin.get(f"/keys/{made.record.id}"))

    def test_overview(self, admin: Client, manager: KeyManager) -> None:
        manager.create("Paused")
        page = text(admin.get("/"))
        assert 'href="/keys?status=active"' in page


class TestRotationChain:
    def test_chain_through_the_middle(self, manager: KeyManager) -> None:
        first = manager.create("svc")
        second = manager.rotate(first.record.id)
        third = manager.rotate(second.record.id)
        records = manager.list()
        chain = rotation_chain(manager.get(second.record.id), records)
        assert [r.id for r in chain] == [first.record.id, second.record.id, third.record.id]
        assert [r.id for r in rotation_chain(manager.get(first.record.id), records)] == [
            r.id for r in chain]


class TestHeaders:
    """Every answer of the console carries the security headers."""

    def test_everywhere(self, site: Console, admin: Client, reader: Client,
                        keys: Keys) -> None:
        anonymous = Client(site)
        answers = [
            anonymous.get("/sign-in"), anonymous.get("/keys"), anonymous.get("/nothing"),
            anonymous.get("/static/console.css"), anonymous.get("/static/console.js"),
            anonymous.get("/static/nothing.css"), anonymous.post("/sign-in", {}),
            admin.get("/"), admin.get("/keys"), admin.get("/keys/new"),
            admin.request("GET", "/api/keys"), anonymous.request("GET", "/api/keys"),
            reader.post("/keys", {}), admin.request("PUT", "/keys"),
        ]
        for response in answers:
            assert_secured(response)

    def test_static(self, site: Console) -> None:
        client = Client(site)
        css = client.get("/static/console.css")
        assert css.status == 200
        assert css.header("Content-Type") == "text/css; charset=utf-8"
        script = client.get("/static/console.js")
        assert script.status == 200
        assert script.header("Content-Type") == "text/javascript; charset=utf-8"
        assert client.get("/static/../_pages.py").status == 404
        assert client.get("/static/nothing.js").status == 404

    def test_pages_use_no_inline_script_or_style(self, admin: Client, keys: Keys) -> None:
        for path in ("/", "/keys", "/keys/new", f"/keys/{keys.plain_id}"):
            page = text(admin.get(path))
            assert "<script>" not in page
            assert "<style" not in page
            assert " style=" not in page
            assert "http://" not in page
            assert "https://" not in page


class TestPolicies:
    """The quota and the expiry, in the creation and edit forms."""

    def test_create_with_quota(self, admin: Client, site: Console) -> None:
        response = admin.submit("/keys/new", "/keys", {"name": "Metered", "quota": "500",
                                                       "quota_refill": "1000/day"})
        assert response.status == 201
        record = next(r for r in site.manager.list() if r.name == "Metered")
        assert (record.quota_remaining, record.quota_refill) == (500, "1000/day")
        page = text(admin.get(f"/keys/{record.id}"))
        assert "500 requests left, refilled to 1000/day (next: " in page

    @pytest.mark.parametrize(("fields", "message"), [
        ({"quota": "lots"}, "whole number"),
        ({"quota_refill": "often"}, "refill"),
    ])
    def test_bad_quota(self, admin: Client, site: Console, fields: dict[str, str],
                       message: str) -> None:
        response = admin.submit("/keys/new", "/keys", {"name": "Metered", **fields})
        assert response.status == 400
        assert message in text(response)
        assert len(site.manager.list()) == 3

    def test_edit_quota(self, admin: Client, keys: Keys, site: Console) -> None:
        edit = f"/keys/{keys.plain_id}/edit"
        name = site.manager.get(keys.plain_id).name
        assert "Now: no quota" in text(admin.get(edit))
        admin.submit(edit, edit, {"name": name, "quota": "20"})
        assert site.manager.get(keys.plain_id).quota_remaining == 20
        admin.submit(edit, edit, {"name": name, "scopes": "charges:write"})  # unchanged
        assert site.manager.get(keys.plain_id).quota_remaining == 20
        assert "Now: 20 requests left" in text(admin.get(edit))
        admin.submit(edit, edit, {"name": name, "clear_quota": "on"})
        assert site.manager.get(keys.plain_id).quota_remaining is None

    def test_edit_expiry_only_earlier(self, admin: Client, keys: Keys, site: Console) -> None:
        edit = f"/keys/{keys.plain_id}/edit"
        name = site.manager.get(keys.plain_id).name
        assert admin.submit(edit, edit, {"name": name, "expires_in": "7d"}).status == 303
        expires = site.manager.get(keys.plain_id).expires_at
        assert expires is not None
        later = admin.submit(edit, edit, {"name": "Renamed", "expires_in": "30d"})
        assert later.status == 400
        assert "only move earlier" in text(later)
        after = site.manager.get(keys.plain_id)
        assert (after.expires_at, after.name) == (expires, name)  # nothing applied
        assert admin.submit(edit, edit, {"name": name, "expires_in": "1d"}).status == 303
        shorter = site.manager.get(keys.plain_id).expires_at
        assert shorter is not None
        assert shorter < expires


class TestAudit:
    """Every change made in the pages is in the audit log, with the signed-in actor."""

    def test_changes_carry_the_actor(self, admin: Client, site: Console, keys: Keys) -> None:
        admin.submit("/keys/new", "/keys", {"name": "Audited"})
        record = next(r for r in site.manager.list() if r.name == "Audited")
        admin.submit(f"/keys/{record.id}", f"/keys/{record.id}/disable")
        admin.submit(f"/keys/{record.id}", f"/keys/{record.id}/enable")
        admin.submit(f"/keys/{record.id}/edit", f"/keys/{record.id}/edit",
                     {"name": "Audited", "scopes": "a b"})
        admin.submit(f"/keys/{record.id}", f"/keys/{record.id}/rotate", {"grace": "1h"})
        confirm = f"/keys/{record.id}/revoke"
        admin.submit(confirm, confirm)
        events = [(e.event, e.actor) for e in site.manager.audit(key_id=record.id)]
        actor = f"key:{keys.admin_id}"
        assert [e for e, _ in events] == ["revoked", "rotated", "updated", "enabled",
                                          "disabled", "created"]
        assert {a for _, a in events} == {actor}

    def test_pages(self, admin: Client, reader: Client, site: Console, keys: Keys) -> None:
        admin.submit(f"/keys/{keys.plain_id}", f"/keys/{keys.plain_id}/disable")
        detail = text(reader.get(f"/keys/{keys.plain_id}"))
        assert "event-disabled" in detail
        assert f"<code>key:{keys.admin_id}</code>" in detail
        assert "<code>disabled_at</code>: none → " in detail
        log = text(reader.get("/audit"))
        assert f'href="/keys/{keys.plain_id}">Billing service</a>' in log
        assert "event-created" in log
        only = text(reader.get("/audit", f"key={keys.plain_id}"))
        assert "event-disabled" in only
        assert "Console admin" not in only.split("<tbody>")[1]
        assert keys.plain not in text(reader.get("/audit", f"key={keys.plain}"))

    def test_older_entries(self, admin: Client, site: Console, keys: Keys,
                           monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr("aqnt_auth.console._pages.AUDIT_PAGE", 2)
        for _ in range(2):
            site.manager.disable(keys.plain_id, actor="test")
            site.manager.enable(keys.plain_id, actor="test")
        first = text(admin.get("/audit"))
        assert first.count("<tr>") == 1 + 2
        link = re.search(r'href="/audit\?(until=[^"]+)">Older entries', first)
        assert link is not None
        second = text(admin.get("/audit", html.unescape(link.group(1))))
        assert second.count("<tr>") == 1 + 2
        assert second != first

    def test_rotation_links(self, admin: Client, site: Console, keys: Keys) -> None:
        admin.submit(f"/keys/{keys.plain_id}", f"/keys/{keys.plain_id}/rotate", {"grace": "0"})
        successor = next(r for r in site.manager.list() if r.rotated_from == keys.plain_id)
        detail = text(admin.get(f"/keys/{keys.plain_id}"))
        assert f'successor: <a href="/keys/{successor.id}">' in detail
        assert "<code>expires_at</code>: none → 20" in detail
        assert "UTC</li>" in detail


class TestHygiene:
    """The overview's hygiene cards and the list they link to."""

    def test_cards_and_filter(self, admin: Client, manager: KeyManager) -> None:
        manager.create("Fenced", allowed_ips=["10.0.0.0/8"], expires_in=dt.timedelta(days=30))
        manager.create("Sandbox", mode="test", expires_in=dt.timedelta(days=30))
        page = text(admin.get("/"))
        # the three fixture keys never expire and are live without an allowlist
        assert 'data-hygiene="never_expire">3<' in page
        assert 'data-hygiene="live_without_allowlist">3<' in page
        assert 'data-hygiene="due_for_rotation">0<' in page
        assert 'href="/keys?hygiene=never_expire"' in page
        listed = text(admin.get("/keys", "hygiene=live_without_allowlist"))
        assert "Billing service" in listed
        assert "Fenced" not in listed
        assert "Sandbox" not in listed
        assert "live keys without an IP allowlist" in listed
        assert "Fenced" in text(admin.get("/keys", "hygiene=nonsense"))


class TestRateLimits:
    """Rate limits in the creation and edit forms and on the detail page."""

    def test_create_and_show(self, admin: Client, site: Console) -> None:
        response = admin.submit("/keys/new", "/keys", {
            "name": "Limited", "owner": "team-a", "shared_limit": "on",
            "rate_limits": "100/minute\r\n10/2 seconds\r\n"})
        assert response.status == 201
        record = next(r for r in site.manager.list() if r.name == "Limited")
        assert set(record.rate_limits) == {"100/minute", "10/2 seconds"}
        assert record.rate_limit_shared
        page = text(admin.get(f"/keys/{record.id}"))
        assert "<code>100/minute</code>" in page
        assert "shared by every key of team-a" in page

    @pytest.mark.parametrize(("fields", "message"), [
        ({"rate_limits": "lots"}, "rate limit"),
        ({"rate_limits": "5/minute", "shared_limit": "on"}, "needs a key with an owner"),
    ])
    def test_invalid(self, admin: Client, site: Console, fields: dict[str, str],
                     message: str) -> None:
        response = admin.submit("/keys/new", "/keys", {"name": "Limited", **fields})
        assert response.status == 400
        assert message in text(response)
        assert len(site.manager.list()) == 3

    def test_edit(self, admin: Client, site: Console, keys: Keys) -> None:
        edit = f"/keys/{keys.plain_id}/edit"
        name = site.manager.get(keys.plain_id).name
        admin.submit(edit, edit, {"name": name, "rate_limits": "50/minute"})
        assert site.manager.get(keys.plain_id).rate_limits == ("50/minute",)
        form = text(admin.get(edit))
        assert ">50/minute</textarea>" in form
        # submitting the form as shown keeps them; emptying the field removes them
        admin.post(edit, {**form_fields(admin.get(edit), edit), "name": name,
                          "rate_limits": "50/minute"})
        assert site.manager.get(keys.plain_id).rate_limits == ("50/minute",)
        admin.submit(edit, edit, {"name": name, "rate_limits": ""})
        assert site.manager.get(keys.plain_id).rate_limits == ()
def _use(site: Console, key: str, *, times: int = 1, path: str = "/v1/charges",
         client: str = "192.0.2.10", agent: str = "billing-cron/1.0") -> None:
    """Requests with *key* through the console's authenticator (errors counted too)."""
    for _ in range(times):
        with contextlib.suppress(AQNTError):
            site.authenticator.authenticate(f"Bearer {key}", method="GET", path=path,
                                            client=client, user_agent=agent)


def _count(page: str, outcome: str, chart: str) -> int:
    found = re.search(rf'<table class="totals" id="{chart}-totals">.*?'
                      rf'data-outcome="{outcome}">(\d+)<', page, re.S)
    return int(found.group(1)) if found else 0


class TestUsage:
    """The usage the servers flushed, on the detail page, the overview and the list."""

    def test_detail(self, admin: Client, site: Console, keys: Keys) -> None:
        page = text(admin.get(f"/keys/{keys.plain_id}"))
        assert "No requests in this range" in page
        assert _count(page, "total", "key-usage") == 0
        _use(site, keys.plain, times=3)
        _use(site, keys.plain, times=1, path="/v1/refunds")
        _use(site, keys.plain[:-4] + ("AAAA" if keys.plain[-4:] != "AAAA" else "BBBB"))
        assert _count(text(admin.get(f"/keys/{keys.plain_id}")), "total", "key-usage") == 0
        site.authenticator.flush_usage()
        page = text(admin.get(f"/keys/{keys.plain_id}"))
        assert _count(page, "valid", "key-usage") == 4
        assert _count(page, "total", "key-usage") >= 4
        assert '<svg class="chart"' in page
        assert 'class="o-valid"' in page
        assert "192.0.2.10" in page
        assert "billing-cron/1.0" in page
        assert "<code>/v1/charges</code></td><td class=\"num\">3<" in page
        for chosen in ("7d", "30d"):
            ranged = text(admin.get(f"/keys/{keys.plain_id}", f"range={chosen}"))
            assert _count(ranged, "valid", "key-usage") == 4
            assert f'href="/keys/{keys.plain_id}?range={chosen}" aria-current="true"' in ranged

    def test_overview(self, admin: Client, site: Console, keys: Keys) -> None:
        _use(site, keys.plain, times=2)
        _use(site, "sk_live_" + "x" * 10)  # malformed
        _use(site, "")  # missing
        site.authenticator.flush_usage()
        page = text(admin.get("/"))
        assert _count(page, "valid", "all-usage") >= 2
        assert re.search(r'data-outcome="malformed">1<', page)
        assert f'href="/keys/{keys.plain_id}">Billing service</a>' in page

    def test_list_counts_24_hours(self, admin: Client, site: Console, keys: Keys) -> None:
        _use(site, keys.plain, times=5)
        site.authenticator.flush_usage()
        page = text(admin.get("/keys"))
        row = re.search(rf'href="/keys/{keys.plain_id}">.*?</tr>', page, re.S)
        assert row is not None
        assert 'data-label="Requests (24 h)">5<' in row.group(0)

    def test_escaped(self, admin: Client, site: Console, keys: Keys) -> None:
        _use(site, keys.plain, agent='<script>alert("ua")</script>', path="/v1/<b>")
        site.authenticator.flush_usage()
        page = text(admin.get(f"/keys/{keys.plain_id}"))
        assert "<script>alert" not in page
        assert "<b>" not in page


class TestHostSignIn:
    """An admin the host app's ``authorize`` hook recognises: no sign-in form,
    but forms still carry CSRF tokens, from an anonymous session kept alive."""

    @pytest.fixture
    def hooked(self, memory_store: MemoryKeyStore, cheap_hasher: Argon2Hasher, keys: Keys,
               clock: Clock) -> Iterator[Console]:
        def authorize(request: Request) -> str | Admin | None:
            user = request.header("x-user")
            if user == "reader":
                return Admin("user:reader", False)
            return f"user:{user}" if user else None

        built = Console(memory_store, secret_key="s" * 32, hashers=[cheap_hasher],
                        hasher=cheap_hasher, authorize=authorize)
        built.pages.sessions.clock = clock
        yield built
        built.close()

    def test_forms_and_actor(self, hooked: Console, keys: Keys, clock: Clock) -> None:
        client = Client(hooked)
        detail = f"/keys/{keys.plain_id}"
        page = client.request("GET", detail, headers={"x-user": "alice"})
        assert page.status == 200
        assert "Sign out" not in text(page)  # the host app signs its users out
        fields = form_fields(page, f"{detail}/disable")
        for _ in range(3):  # busy for 30 minutes: the CSRF secret lives on
            clock.advance(10 * 60)
            assert client.request("GET", "/keys", headers={"x-user": "alice"}).status == 200
        done = client.request("POST", f"{detail}/disable", form=fields,
                              headers={"x-user": "alice"})
        assert done.status == 303
        assert hooked.manager.audit(key_id=keys.plain_id)[0].actor == "user:alice"
        # no token: refused, hook or not
        assert client.request("POST", f"{detail}/enable", form={},
                              headers={"x-user": "alice"}).status == 403

    def test_read_only_and_signed_out(self, hooked: Console, keys: Keys) -> None:
        client = Client(hooked)
        assert client.request("GET", "/keys/new", headers={"x-user": "reader"}).status == 403
        assert client.get("/keys").status == 303
        page = client.request("GET", "/sign-in", query="next=%2Fkeys",
                              headers={"x-user": "alice"})
        assert (page.status, page.header("Location")) == (303, "/keys")
