"""The key console in Django: ``include("aqnt_auth.adapters.django.console")``
through the test client; admin keys, staff users with the model's
permissions (the default authorize hook), the exemption of its prefix and
its own CSRF rule (Django's CSRF middleware stays out of it)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.contrib.auth.models import Permission, User
from django.test import Client, override_settings

from aqnt_auth.adapters.django.console import console
from aqnt_auth.adapters.django.store import DjangoKeyStore
from aqnt_auth.console import Admin, Request

from ._support import auth_settings, bearer, issue

API = "/keys-admin/api/keys"
MISSING = {"error": {"type": "authentication_error", "message": "No API key provided",
                     "code": "missing_api_key"}}
FORBIDDEN = {"error": {"type": "permission_error",
                       "message": "This API key does not have the required permissions",
                       "code": "insufficient_scope"}}


def _user(name: str, *, staff: bool = True, perms: tuple[str, ...] = ()) -> Client:
    user = User.objects.create_user(name, password="pw", is_staff=staff)
    for codename in perms:
        user.user_permissions.add(Permission.objects.get(codename=codename))
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    return client


def _post(client: Client, path: str, body: Any, **extra: Any) -> Any:
    return client.post(path, json.dumps(body), content_type="application/json", **extra)


@pytest.mark.django_db
class TestDjangoConsole:
    def test_admin_key(self) -> None:
        admin = issue(name="Console admin", scopes=["aqnt:admin"])
        client = Client(enforce_csrf_checks=True)
        r = client.get(API, headers=bearer(admin.key))
        assert r.status_code == 200
        assert r["Cache-Control"] == "no-store"
        assert r["X-Content-Type-Options"] == "nosniff"
        assert [k["id"] for k in r.json()["data"]] == [admin.record.id]
        created = _post(client, API, {"name": "From Django"}, headers=bearer(admin.key))
        assert created.status_code == 201
        new = created.json()
        assert DjangoKeyStore().get(new["api_key"]["id"]) is not None
        # The new key passes the project's middleware.
        assert client.get("/v1/whoami", headers=bearer(new["key"])).status_code == 200

    def test_no_credential(self) -> None:
        r = Client().get(API)
        assert (r.status_code, r.json()) == (401, MISSING)

    def test_staff_with_change_permission(self) -> None:
        client = _user("alice", perms=("view_apikey", "change_apikey"))
        assert client.get(API).status_code == 200
        created = _post(client, API, {"name": "By Alice"})
        assert created.status_code == 201
        # A browser's session changes keys with JSON only (the console's
        # CSRF rule for its API), and Django's CSRF check is not asked.
        form = client.post(API, {"name": "x"})
        assert form.status_code == 415
        assert form.json()["error"]["code"] == "unsupported_media_type"

    def test_staff_with_view_permission_reads(self) -> None:
        client = _user("bob", perms=("view_apikey",))
        assert client.get(API).status_code == 200
        r = _post(client, API, {"name": "x"})
        assert (r.status_code, r.json()) == (403, FORBIDDEN)

    @pytest.mark.parametrize(("staff", "perms"), [
        (True, ()), (False, ("view_apikey", "change_apikey")),
    ])
    def test_not_an_admin(self, staff: bool, perms: tuple[str, ...]) -> None:
        client = _user("carol", staff=staff, perms=perms)
        r = client.get(API)
        assert (r.status_code, r.json()) == (401, MISSING)

    def test_actor_is_the_user(self) -> None:
        user = User.objects.create_superuser("root", "r@example.com", "pw")
        request = type("R", (), {"user": user})()
        assert console().authenticate(Request("GET", "/api/keys", native=request)) == Admin(
            "user:root", True, "hook")

    def test_prefix_must_be_exempt(self) -> None:
        """Without the prefix in EXEMPT_PATHS the middleware answers first,
        and a signed-in staff user never reaches the console."""
        client = _user("dave", perms=("view_apikey", "change_apikey"))
        with override_settings(AQNT_AUTH=auth_settings(
                EXEMPT_PATHS=["/health", "/admin/*", "/drf/*"])):
            r = client.get(API)
        assert (r.status_code, r.json()) == (401, MISSING)

    def test_paths(self) -> None:
        admin = issue(name="Console admin", scopes=["aqnt:read"])
        r = Client().get("/keys-admin/api/nothing", headers=bearer(admin.key))
        assert r.status_code == 404
        assert r.json()["error"]["code"] == "not_found"
        r = Client().get(f"{API}/{admin.record.id}", headers=bearer(admin.key))
        assert r.json()["id"] == admin.record.id

    def test_console_follows_the_settings(self) -> None:
        first = console()
        assert console() is first
        assert first.secret_key == b"tests-only-not-a-secret"
        with override_settings(AQNT_AUTH_CONSOLE={"READ_SCOPE": "keys:read"}):
            assert console().read_scope == "keys:read"
        assert first.pages.sessions.idle_timeout == 15 * 60
        assert first.pages.sessions.secure is None
        with override_settings(AQNT_AUTH_CONSOLE={
                "SESSION_IDLE_TIMEOUT": 60, "SESSION_ABSOLUTE_TIMEOUT": 3600,
                "SECURE_COOKIES": True}):
            sessions = console().pages.sessions
            assert (sessions.idle_timeout, sessions.absolute_timeout, sessions.secure) == (
                60, 3600, True)
        with override_settings(AQNT_AUTH_CONSOLE={"NOPE": 1}), pytest.raises(
                Exception, match="unknown keys"):
            console()


@pytest.mark.django_db
class TestDjangoConsoleHistory:
    """The usage, audit and hygiene routes over the Django store."""

    def test_audit_names_the_staff_user(self) -> None:
        client = _user("erin", perms=("view_apikey", "change_apikey"))
        created = _post(client, API, {"name": "By Erin"}).json()
        key_id = created["api_key"]["id"]
        assert _post(client, f"{API}/{key_id}/disable", {}).status_code == 200
        entries = client.get(f"{API}/{key_id}/audit").json()["data"]
        assert [(e["event"], e["actor"]) for e in entries] == [
            ("disabled", "user:erin"), ("created", "user:erin")]
        everything = client.get("/keys-admin/api/audit").json()
        assert created["key"] not in json.dumps(everything)

    def test_usage_and_hygiene(self) -> None:
        admin = issue(name="Console admin", scopes=["aqnt:read"])
        client = Client()
        assert client.get("/v1/whoami", headers=bearer(admin.key)).status_code == 200
        console().authenticator.flush_usage()
        usage = client.get(f"{API}/{admin.record.id}/usage", headers=bearer(admin.key))
        assert usage.status_code == 200
        assert usage.json()["totals"]["valid"] == 1  # this request is not flushed yet
        summary = client.get("/keys-admin/api/usage", headers=bearer(admin.key)).json()
        assert summary["top_keys"][0]["key_id"] == admin.record.id
        hygiene = client.get("/keys-admin/api/hygiene", headers=bearer(admin.key)).json()
        assert [k["id"] for k in hygiene["never_expire"]] == [admin.record.id]
