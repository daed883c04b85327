"""The admin flow through the test client: create (key shown once), revoke, rotate."""

from __future__ import annotations

import re
from types import SimpleNamespace
from typing import Any

import pytest
from django.contrib.admin import site
from django.contrib.auth.models import User
from django.contrib.messages.storage.cookie import CookieStorage
from django.test import Client, RequestFactory

from aqnt_auth import KeyManager
from aqnt_auth.adapters.django.admin import APIKeyAdmin
from aqnt_auth.adapters.django.models import APIKey
from aqnt_auth.adapters.django.store import DjangoKeyStore
from tests import bodies

from ._support import assert_error, bearer, issue

CHANGELIST = "/admin/aqnt_auth/apikey/"
ADD = CHANGELIST + "add/"
KEY = re.compile(r"sk_(?:live|test)_[0-9A-Za-z]{50}")


@pytest.fixture
def admin_client(db: None) -> Client:
    user = User.objects.create_superuser("admin", "admin@example.com", "pw")
    client = Client()
    client.force_login(user)
    return client


def _add(client: Client, **fields: str) -> Any:
    data = {"name": "Production Server", "mode": "live", "scopes_text": "", "read_only": "",
            "allowed_paths_text": "", "expires_at_0": "", "expires_at_1": "", "owner": "",
            "metadata": "{}"}
    data.update(fields)
    if not data["read_only"]:
        del data["read_only"]
    return client.post(ADD, data, follow=True)


def _action(client: Client, action: str, *ids: str, grace: str = "") -> Any:
    return client.post(CHANGELIST, {"action": action, "_selected_action": list(ids),
                                    "grace": grace, "index": "0"}, follow=True)


def _messages(response: Any) -> list[str]:
    return [str(m) for m in response.context["messages"]]


@pytest.mark.django_db
class TestCreate:
    def test_key_is_shown_once(self, admin_client: Client) -> None:
        """Adding a key shows its plaintext once, in a message; it works; the
        next page no longer shows it; the database holds only its hash."""
        response = _add(admin_client, scopes_text="charges:read, charges:write",
                        owner="acct_1")
        assert response.status_code == 200
        (key,) = set(KEY.findall(response.content.decode()))
        row = APIKey.objects.get()
        assert key.startswith("sk_live_")
        assert key[8:20] == row.id
        assert row.scopes == ["charges:read", "charges:write"]
        assert row.owner == "acct_1"
        assert key not in row.hash
        assert row.hash.startswith("$argon2id$")
        assert row.hint == key[:8] + "..." + key[-4:]
        # The key works through the middleware.
        who = Client().get("/v1/whoami", headers=bearer(key))
        assert who.json()["api_key"]["id"] == row.id
        # Never shown again.
        again = admin_client.get(CHANGELIST)
        assert KEY.findall(again.content.decode()) == []
        detail = admin_client.get(f"{CHANGELIST}{row.id}/change/")
        assert KEY.findall(detail.content.decode()) == []
        assert row.hint in detail.content.decode()

    def test_bad_values_are_form_errors(self, admin_client: Client) -> None:
        """The core's rules (scopes, paths, names) come back as form errors."""
        for fields in ({"scopes_text": 'bad"scope'}, {"allowed_paths_text": "v1/charges"},
                       {"name": "   "}):
            response = _add(admin_client, **fields)
            assert response.status_code == 200
            assert response.context["adminform"].form.errors
        assert not APIKey.objects.exists()

    def test_test_mode_and_restrictions(self, admin_client: Client) -> None:
        """Mode, read-only and allowed paths reach the record."""
        response = _add(admin_client, mode="test", read_only="on",
                        allowed_paths_text="/v1/charges /v1/refunds/")
        (key,) = set(KEY.findall(response.content.decode()))
        assert key.startswith("sk_test_")
        row = APIKey.objects.get()
        assert (row.mode, row.read_only, row.allowed_paths) == (
            "test", True, ["/v1/charges", "/v1/refunds"])


@pytest.mark.django_db
class TestList:
    def test_columns(self, admin_client: Client) -> None:
        """The list shows name, mode, hint, status and the request count."""
        issued = issue(name="Reporting")
        Client().get("/v1/whoami", headers=bearer(issued.key))
        from aqnt_auth.adapters.django import get_authenticator

        get_authenticator().flush_usage()
        page = admin_client.get(CHANGELIST).content.decode()
        for text in ("Reporting", "live", issued.record.hint, "active", ">1<"):
            assert text in page


@pytest.mark.django_db
class TestRevoke:
    def test_revoke_action(self, admin_client: Client) -> None:
        """Revoking makes the key answer key_revoked and its page read-only."""
        issued = issue()
        response = _action(admin_client, "revoke_keys", issued.record.id)
        assert "Revoked 1 API key(s)." in " ".join(_messages(response))
        assert_error(Client().get("/v1/whoami", headers=bearer(issued.key)), 401, bodies.REVOKED,
                     bodies.INVALID_CHALLENGE)
        row = APIKey.objects.get()
        assert row.revoked_at is not None
        # Read-only: no editable name field, and a POST is refused.
        url = f"{CHANGELIST}{row.id}/change/"
        page = admin_client.get(url).content.decode()
        assert 'name="name"' not in page
        assert admin_client.post(url, {"name": "renamed"}).status_code == 403
        assert APIKey.objects.get().name == row.name

    def test_revoked_key_page_refuses_edits(self, admin_client: Client) -> None:
        """A key revoked elsewhere (CLI, another admin) refuses a later POST."""
        issued = issue()
        url = f"{CHANGELIST}{issued.record.id}/change/"
        assert 'name="name"' in admin_client.get(url).content.decode()
        KeyManager(DjangoKeyStore()).revoke(issued.record.id)
        response = admin_client.post(url, {"name": "renamed", "expires_at_0": "",
                                           "expires_at_1": ""})
        assert response.status_code == 403
        row = APIKey.objects.get()
        assert row.revoked_at is not None
        assert row.name == "Test key"

    def test_save_cannot_unrevoke(self, admin_client: Client) -> None:
        """Revoked between loading the form and saving it: the edit is refused
        by a conditional UPDATE, and the revocation stays."""
        issued = issue()
        obj = APIKey.objects.get()  # loaded by the form, still active
        KeyManager(DjangoKeyStore()).revoke(issued.record.id)
        obj.name = "renamed"
        form = SimpleNamespace(changed_data=["name"])
        request = RequestFactory().post("/")
        request._messages = CookieStorage(request)  # type: ignore[attr-defined]
        APIKeyAdmin(APIKey, site).save_model(request, obj, form, change=True)
        row = APIKey.objects.get()
        assert row.revoked_at is not None
        assert row.name == "Test key"
        assert [str(m) for m in request._messages] == [  # type: ignore[attr-defined]
            "The key was revoked meanwhile; nothing was changed."]


@pytest.mark.django_db
class TestEdit:
    def test_name_and_expiry_only(self, admin_client: Client) -> None:
        """An active key's name can change; other columns are untouched."""
        issued = issue(scopes=["a"])
        APIKey.objects.filter(pk=issued.record.id).update(usage_count=41)
        url = f"{CHANGELIST}{issued.record.id}/change/"
        response = admin_client.post(url, {"name": "Renamed", "expires_at_0": "",
                                           "expires_at_1": "", "scopes": '["b"]'}, follow=True)
        assert response.status_code == 200
        row = APIKey.objects.get()
        assert (row.name, row.scopes, row.usage_count, row.hash) == (
            "Renamed", ["a"], 41, issued.record.hash)


@pytest.mark.django_db
class TestRotate:
    def test_rotate_with_grace(self, admin_client: Client) -> None:
        """Rotating shows the new key once; the old one works through the grace."""
        old = issue(name="Server", scopes=["charges:read"])
        response = _action(admin_client, "rotate_keys", old.record.id, grace="24h")
        (new_key,) = set(KEY.findall(response.content.decode()))
        assert new_key != old.key
        (message,) = _messages(response)
        assert f"The old key {old.record.id} keeps working until" in message
        for key in (old.key, new_key):
            assert Client().get("/v1/whoami", headers=bearer(key)).status_code == 200
        new_row = APIKey.objects.get(rotated_from=old.record.id)
        assert (new_row.name, new_row.scopes) == ("Server", ["charges:read"])
        assert APIKey.objects.get(pk=old.record.id).expires_at is not None

    def test_rotate_without_grace(self, admin_client: Client) -> None:
        """grace 0 ends the old key at once."""
        old = issue()
        response = _action(admin_client, "rotate_keys", old.record.id, grace="0")
        (new_key,) = set(KEY.findall(response.content.decode()))
        assert_error(Client().get("/v1/whoami", headers=bearer(old.key)), 401, bodies.REVOKED,
                     bodies.INVALID_CHALLENGE)
        assert Client().get("/v1/whoami", headers=bearer(new_key)).status_code == 200

    def test_bad_grace_and_revoked_keys(self, admin_client: Client) -> None:
        """A bad grace rotates nothing; a revoked key is refused with a message."""
        issued = issue()
        response = _action(admin_client, "rotate_keys", issued.record.id, grace="soon")
        assert "bad duration 'soon'" in " ".join(_messages(response))
        assert APIKey.objects.count() == 1
        _action(admin_client, "revoke_keys", issued.record.id)
        response = _action(admin_client, "rotate_keys", issued.record.id, grace="1h")
        assert "was not rotated" in " ".join(_messages(response))
        assert KEY.findall(response.content.decode()) == []
        assert APIKey.objects.count() == 1
