"""The admin flow through the test client: create (key shown once), the list
and its status filter, revoke (confirmed), delete (revoked keys only), edit
(an expiry only moves earlier), rotate (links, times in the admin's format)."""

from __future__ import annotations

import datetime as dt
import re
from types import SimpleNamespace
from typing import Any

import pytest
from django.apps import apps
from django.contrib.admin import site
from django.contrib.auth.models import User
from django.contrib.messages.storage.cookie import CookieStorage
from django.contrib.sessions.models import Session
from django.core import serializers
from django.test import Client, RequestFactory, override_settings
from django.utils import formats, timezone

from aqnt_auth import KeyManager
from aqnt_auth.adapters.django.admin import APIKeyAdmin
from aqnt_auth.adapters.django.models import APIKey, APIKeyAudit
from aqnt_auth.adapters.django.store import DjangoKeyStore
from tests import bodies

from ._support import assert_error, bearer, issue

CHANGELIST = "/admin/aqnt_auth/apikey/"
ADD = CHANGELIST + "add/"
KEY = re.compile(r"sk_(?:live|test)_[0-9A-Za-z]{50}")


MESSAGE_STORAGES = [
    pytest.param("django.contrib.messages.storage.fallback.FallbackStorage", id="fallback"),
    pytest.param("django.contrib.messages.storage.cookie.CookieStorage", id="cookie"),
    pytest.param("django.contrib.messages.storage.session.SessionStorage", id="session"),
]


@pytest.fixture
def admin_client(db: None) -> Client:
    user = User.objects.create_superuser("admin", "admin@example.com", "pw")
    client = Client()
    client.force_login(user)
    return client


def _add(client: Client, *, follow: bool = True, **fields: str) -> Any:
    return _post_add(client, fields, follow=follow)


def _post_add(client: Client, fields: dict[str, str], *, follow: bool = True) -> Any:
    data = {"name": "Production Server", "mode": "live", "scopes_text": "", "read_only": "",
            "allowed_paths_text": "", "expires_at_0": "", "expires_at_1": "", "owner": "",
            "metadata": "{}"}
    data.update(fields)
    if not data["read_only"]:
        del data["read_only"]
    return client.post(ADD, data, follow=follow)


def _action(client: Client, action: str, *ids: str, grace: str = "", confirm: bool = True
            ) -> Any:
    data = {"action": action, "_selected_action": list(ids), "grace": grace, "index": "0"}
    if confirm:
        data["post"] = "yes"
    # An action runs on the list as filtered; "all" includes revoked keys.
    return client.post(CHANGELIST + "?status=all", data, follow=True)


def _messages(response: Any) -> list[str]:
    return [str(m) for m in response.context["messages"]]


def _change(key_id: str) -> str:
    return f"{CHANGELIST}{key_id}/change/"


def _edit(client: Client, key_id: str, expires: dt.datetime | None, name: str = "Test key"
          ) -> Any:
    when = ("", "") if expires is None else (
        expires.strftime("%Y-%m-%d"), expires.strftime("%H:%M:%S"))
    return client.post(_change(key_id), {"name": name, "expires_at_0": when[0],
                                         "expires_at_1": when[1]})


def assert_kept_nowhere(client: Client, key: str) -> None:
    """*key* is in no cookie (raw or as decoded messages), no session row, no
    messages storage and no table, and no admin page shows it again."""
    for morsel in client.cookies.values():
        assert key not in morsel.value
        if morsel.key == "messages":
            storage = CookieStorage(RequestFactory().get("/"))
            stored = storage._decode(morsel.value)  # type: ignore[attr-defined]
            assert key not in repr(stored)
    for session in Session.objects.all():
        assert key not in repr(session.get_decoded())
    for model in apps.get_models():
        assert key not in serializers.serialize("json", model._default_manager.all())
    # Reloading the add page, the list and the key's page: no key, and no
    # message left over that could hold one.
    for url in (ADD, CHANGELIST, _change(key[8:20])):
        page = client.get(url)
        assert KEY.findall(page.content.decode()) == []
        assert all(key not in text for text in _messages(page))


def _no_store(response: Any) -> None:
    assert "no-store" in response["Cache-Control"]


@pytest.mark.django_db
class TestCreate:
    @pytest.mark.parametrize("storage", MESSAGE_STORAGES)
    def test_key_is_shown_once(self, admin_client: Client, storage: str) -> None:
        """The key is in the response to the add POST itself (no-store), and
        nowhere else: no message, cookie, session or table holds it (#10);
        the database has only its hash, and the key works."""
        with override_settings(MESSAGE_STORAGE=storage):
            response = _add(admin_client, follow=False,
                            scopes_text="charges:read, charges:write", owner="acct_1")
            assert response.status_code == 200
            _no_store(response)
            (key,) = set(KEY.findall(response.content.decode()))
            assert key not in str(response.cookies)
            assert_kept_nowhere(admin_client, key)
        row = APIKey.objects.get()
        assert key.startswith("sk_live_")
        assert key[8:20] == row.id
        assert row.scopes == ["charges:read", "charges:write"]
        assert row.owner == "acct_1"
        assert key not in row.hash
        assert row.hash.startswith("$argon2id$")
        assert row.hint == key[:8] + "..." + key[-4:]
        # The page links to the key's own page, which shows only the hint.
        assert _change(row.id) in response.content.decode()
        assert row.hint in admin_client.get(_change(row.id)).content.decode()
        # The key works through the middleware.
        who = Client().get("/v1/whoami", headers=bearer(key))
        assert who.json()["api_key"]["id"] == row.id

    def test_bad_values_are_form_errors(self, admin_client: Client) -> None:
        """The core's rules (scopes, paths, names) come back as form errors."""
        for fields in ({"scopes_text": 'bad"scope'}, {"allowed_paths_text": "v1/charges"},
                       {"name": "   "}):
            response = _post_add(admin_client, fields)
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


def _names(response: Any) -> set[str]:
    return {key.name for key in response.context["cl"].result_list}


@pytest.mark.django_db
class TestList:
    def test_columns(self, admin_client: Client) -> None:
        """The list shows name, mode, hint, status, due for rotation, expires
        and the request count."""
        issued = issue(name="Reporting")
        Client().get("/v1/whoami", headers=bearer(issued.key))
        from aqnt_auth.adapters.django import get_authenticator

        get_authenticator().flush_usage()
        page = admin_client.get(CHANGELIST).content.decode()
        for text in ("Reporting", "live", issued.record.hint, "active", ">1<",
                     "due for rotation", "Expires at"):
            assert text in page

    def test_status_filter(self, admin_client: Client) -> None:
        """Each status shows exactly its keys; by default revoked keys are hidden."""
        now = timezone.now()
        issue(name="active")
        issue(name="expiring", expires_at=now + dt.timedelta(days=1))
        issue(name="expired", expires_at=now - dt.timedelta(days=1))
        revoked = issue(name="revoked")
        KeyManager(DjangoKeyStore()).revoke(revoked.record.id)
        old = issue(name="old")
        APIKey.objects.filter(pk=old.record.id).update(created_at=now - dt.timedelta(days=91))
        old_revoked = issue(name="old revoked")
        APIKey.objects.filter(pk=old_revoked.record.id).update(
            created_at=now - dt.timedelta(days=91), revoked_at=now)
        disabled = issue(name="disabled", expires_at=now + dt.timedelta(days=1))
        KeyManager(DjangoKeyStore()).disable(disabled.record.id)
        disabled_expired = issue(name="disabled expired", expires_at=now - dt.timedelta(days=1))
        APIKey.objects.filter(pk=disabled_expired.record.id).update(disabled_at=now)
        expected = {
            None: {"active", "expiring", "expired", "old", "disabled", "disabled expired"},
            "active": {"active", "old"},
            "expiring": {"expiring"},
            "expired": {"expired", "disabled expired"},
            "disabled": {"disabled"},
            "revoked": {"revoked", "old revoked"},
            "due": {"old"},
            "all": {"active", "expiring", "expired", "revoked", "old", "old revoked", "disabled",
                    "disabled expired"},
        }
        for status, names in expected.items():
            query = {} if status is None else {"status": status}
            assert _names(admin_client.get(CHANGELIST, query)) == names, status
        # The same "due" as the core's, shown as a column.
        page = admin_client.get(CHANGELIST, {"status": "due"}).content.decode()
        assert 'alt="True"' in page
        assert APIKey.objects.get(pk=old.record.id).due_for_rotation
        # The default choice is named for what it shows.
        assert "not revoked" in admin_client.get(CHANGELIST).content.decode()


@pytest.mark.django_db
class TestRevoke:
    def test_revoke_action_asks_first(self, admin_client: Client) -> None:
        """The action shows a confirmation page and revokes nothing; "Yes"
        revokes, and the key answers key_revoked and its page is read-only."""
        issued = issue()
        asked = _action(admin_client, "revoke_keys", issued.record.id, confirm=False)
        page = asked.content.decode()
        assert "Are you sure you want to revoke this API key?" in page
        assert issued.record.hint in page
        assert 'name="post" value="yes"' in page
        assert APIKey.objects.get().revoked_at is None
        response = _action(admin_client, "revoke_keys", issued.record.id)
        assert "Revoked 1 API key(s)." in " ".join(_messages(response))
        assert_error(Client().get("/v1/whoami", headers=bearer(issued.key)), 401, bodies.REVOKED,
                     bodies.INVALID_CHALLENGE)
        row = APIKey.objects.get()
        assert row.revoked_at is not None
        # Read-only: no editable name field, no Revoke button, and a POST is refused.
        url = _change(row.id)
        page = admin_client.get(url).content.decode()
        assert 'name="name"' not in page
        assert "revokelink" not in page
        assert admin_client.post(url, {"name": "renamed"}).status_code == 403
        assert APIKey.objects.get().name == row.name

    def test_disable_and_enable_actions(self, admin_client: Client) -> None:
        """Disable answers key_disabled at once, enable restores the key; a
        disabled key cannot be deleted; a revoked key is left as it is."""
        issued, revoked = issue(), issue(name="revoked")
        KeyManager(DjangoKeyStore()).revoke(revoked.record.id)
        assert Client().get("/v1/whoami", headers=bearer(issued.key)).status_code == 200
        response = _action(admin_client, "disable_keys", issued.record.id, revoked.record.id)
        said = " ".join(_messages(response))
        assert "Disabled 1 API key(s)." in said
        assert f"Key {revoked.record.id} was not changed" in said
        assert APIKey.objects.get(pk=revoked.record.id).disabled_at is None
        assert_error(Client().get("/v1/whoami", headers=bearer(issued.key)), 401,
                     bodies.DISABLED, bodies.INVALID_CHALLENGE)
        page = admin_client.get(_change(issued.record.id)).content.decode()
        assert "disabled" in page
        assert "deletelink" not in page
        response = _action(admin_client, "delete_selected", issued.record.id)
        assert "Nothing was deleted." in " ".join(_messages(response))
        response = _action(admin_client, "enable_keys", issued.record.id)
        assert "Enabled 1 API key(s)." in " ".join(_messages(response))
        assert Client().get("/v1/whoami", headers=bearer(issued.key)).status_code == 200

    def test_allowed_ips_on_add_and_on_an_active_key(self, admin_client: Client) -> None:
        """The add form and an active key's page take allowed IPs, checked by
        the core (a bad network is a form error); the key is refused from
        elsewhere at once and works again when the list allows it."""
        page = _add(admin_client, allowed_ips_text="192.0.2.0/24 10.0.0.1/8")
        assert "host bits set" in page.content.decode()
        assert APIKey.objects.count() == 0
        key = KEY.findall(_add(admin_client, allowed_ips_text="192.0.2.0/24").content.decode())[0]
        row = APIKey.objects.get()
        assert row.allowed_ips == ["192.0.2.0/24"]
        assert_error(Client().get("/v1/whoami", headers=bearer(key)), 403,
                     bodies.IP_NOT_ALLOWED, None)
        form = {"name": row.name, "expires_at_0": "", "expires_at_1": ""}
        refused = admin_client.post(_change(row.pk), {**form, "allowed_ips_text": "nope"})
        assert "is not an IPv4 or IPv6 address" in refused.content.decode()
        assert admin_client.get(_change(row.pk)).content.decode().count("192.0.2.0/24") >= 1
        done = admin_client.post(_change(row.pk), {**form,
                                                   "allowed_ips_text": "127.0.0.1 ::1"})
        assert done.status_code == 302
        assert APIKey.objects.get().allowed_ips == ["127.0.0.1", "::1"]
        assert Client().get("/v1/whoami", headers=bearer(key)).status_code == 200

    def test_rate_limits_on_add_and_on_an_active_key(self, admin_client: Client) -> None:
        """The add form and an active key's page take rate limits, checked by
        the core (a bad one, or sharing without an owner, is a form error);
        the key gets the RateLimit headers and its 429 at once; clearing them
        lets it through without headers."""
        page = _add(admin_client, rate_limits_text="100/fortnight")
        assert "is not LIMIT/PERIOD" in page.content.decode()
        page = _add(admin_client, rate_limits_text="1/hour", shared_limit="on")
        assert "needs a key with an owner" in page.content.decode()
        assert APIKey.objects.count() == 0
        key = KEY.findall(_add(admin_client, rate_limits_text="5000/hour, 1/minute",
                               owner="acme", shared_limit="on").content.decode())[0]
        row = APIKey.objects.get()
        assert (row.rate_limits, row.rate_limit_shared) == (["1/minute", "5000/hour"], True)
        first = Client().get("/v1/whoami", headers=bearer(key))
        assert first.status_code == 200
        assert first["RateLimit-Policy"] == '"1/minute";q=1;w=60, "5000/hour";q=5000;w=3600'
        assert_error(Client().get("/v1/whoami", headers=bearer(key)), 429,
                     bodies.RATE_LIMIT_EXCEEDED, None)
        form = {"name": row.name, "expires_at_0": "", "expires_at_1": ""}
        assert "1/minute, 5000/hour" in admin_client.get(_change(row.pk)).content.decode()
        refused = admin_client.post(_change(row.pk), {**form, "rate_limits_text": "lots",
                                                      "shared_limit": "on"})
        assert "is not LIMIT/PERIOD" in refused.content.decode()
        done = admin_client.post(_change(row.pk), {**form, "rate_limits_text": ""})
        assert done.status_code == 302
        row = APIKey.objects.get()
        assert (row.rate_limits, row.rate_limit_shared) == ([], False)
        plain = Client().get("/v1/whoami", headers=bearer(key))
        assert plain.status_code == 200
        assert not plain.has_header("RateLimit")

    def test_quota_on_an_active_key(self, admin_client: Client) -> None:
        """An active key's page sets, refills and clears the quota through the
        core: a bad refill is a form error, a used-up quota answers 429
        quota_exceeded at once, and clearing it lets the key through again."""
        issued = issue()
        key_id = issued.record.id
        form = {"name": issued.record.name, "expires_at_0": "", "expires_at_1": ""}
        refused = admin_client.post(_change(key_id), {**form, "quota_text": "5",
                                                      "quota_refill_text": "5/fortnight"})
        assert "must be COUNT/PERIOD" in refused.content.decode()
        assert APIKey.objects.get().quota_remaining is None
        done = admin_client.post(_change(key_id), {**form, "quota_text": "1",
                                                   "quota_refill_text": "1000/day"})
        assert done.status_code == 302
        row = APIKey.objects.get()
        assert (row.quota_remaining, row.quota_refill) == (1, "1000/day")
        assert Client().get("/v1/whoami", headers=bearer(issued.key)).status_code == 200
        used_up = Client().get("/v1/whoami", headers=bearer(issued.key))
        assert_error(used_up, 429, bodies.QUOTA_EXCEEDED, None)
        assert 1 <= int(used_up["Retry-After"]) <= 86400
        page = admin_client.get(_change(key_id)).content.decode()
        assert 'name="quota_text" value="0"' in page
        assert "0 left" in admin_client.get(CHANGELIST).content.decode()
        cleared = admin_client.post(_change(key_id), {**form, "quota_text": "",
                                                      "quota_refill_text": ""})
        assert cleared.status_code == 302
        assert APIKey.objects.get().quota_remaining is None
        assert Client().get("/v1/whoami", headers=bearer(issued.key)).status_code == 200

    def test_revoke_button_asks_first(self, admin_client: Client) -> None:
        """The key's page has a Revoke button: a confirmation page on GET, the
        revocation on POST."""
        issued = issue()
        url = f"{CHANGELIST}{issued.record.id}/revoke/"
        assert url in admin_client.get(_change(issued.record.id)).content.decode()
        asked = admin_client.get(url)
        assert "Are you sure you want to revoke this API key?" in asked.content.decode()
        assert APIKey.objects.get().revoked_at is None
        done = admin_client.post(url, {"post": "yes"}, follow=True)
        assert "Revoked 1 API key(s)." in " ".join(_messages(done))
        assert APIKey.objects.get().revoked_at is not None
        # Revoked: the button and its view are gone.
        assert admin_client.post(url, {"post": "yes"}).status_code == 403

    def test_revoked_key_page_refuses_edits(self, admin_client: Client) -> None:
        """A key revoked elsewhere (CLI, another admin) refuses a later POST."""
        issued = issue()
        url = _change(issued.record.id)
        assert 'name="name"' in admin_client.get(url).content.decode()
        KeyManager(DjangoKeyStore()).revoke(issued.record.id)
        response = _edit(admin_client, issued.record.id, None, name="renamed")
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
        row = _save(obj, ["name"])
        assert row.revoked_at is not None
        assert row.name == "Test key"
        assert row.messages == ["The key was revoked meanwhile; nothing was changed."]


def _save(obj: APIKey, changed: list[str]) -> Any:
    """save_model of the change form, as the admin calls it, with *changed* fields;
    the row as stored afterwards, with the messages the admin gave."""
    form = SimpleNamespace(changed_data=changed)
    request = RequestFactory().post("/")
    request._messages = CookieStorage(request)  # type: ignore[attr-defined]
    APIKeyAdmin(APIKey, site).save_model(request, obj, form, change=True)
    row = APIKey.objects.get(pk=obj.pk)
    row.messages = [str(m) for m in request._messages]  # type: ignore[attr-defined]
    return row


@pytest.mark.django_db
class TestDelete:
    def test_active_keys_cannot_be_deleted(self, admin_client: Client) -> None:
        """An active or expiring key has no Delete link, its delete view is
        refused, and the bulk action deletes nothing while one is selected."""
        active = issue(name="active")
        expiring = issue(name="expiring", expires_at=timezone.now() + dt.timedelta(days=1))
        revoked = issue(name="revoked")
        KeyManager(DjangoKeyStore()).revoke(revoked.record.id)
        for key in (active, expiring):
            page = admin_client.get(_change(key.record.id)).content.decode()
            assert "deletelink" not in page
            delete_url = f"{CHANGELIST}{key.record.id}/delete/"
            assert admin_client.get(delete_url).status_code == 403
            assert admin_client.post(delete_url, {"post": "yes"}).status_code == 403
        response = _action(admin_client, "delete_selected", active.record.id, revoked.record.id)
        assert "Revoke them first. Nothing was deleted." in " ".join(_messages(response))
        assert APIKey.objects.count() == 3

    def test_revoked_and_expired_keys_can_be_deleted(self, admin_client: Client) -> None:
        """A key that no longer works can be deleted, after Django's confirmation."""
        revoked = issue(name="revoked")
        KeyManager(DjangoKeyStore()).revoke(revoked.record.id)
        expired = issue(name="expired", expires_at=timezone.now() - dt.timedelta(days=1))
        assert "deletelink" in admin_client.get(_change(revoked.record.id)).content.decode()
        asked = _action(admin_client, "delete_selected", revoked.record.id, expired.record.id,
                        confirm=False)
        assert "Are you sure you want to delete the selected" in asked.content.decode()
        assert APIKey.objects.count() == 2
        response = _action(admin_client, "delete_selected", revoked.record.id,
                           expired.record.id)
        assert "Successfully deleted 2" in " ".join(_messages(response))
        assert not APIKey.objects.exists()


@pytest.mark.django_db
class TestEdit:
    def test_name_and_expiry_only(self, admin_client: Client) -> None:
        """An active key's name can change; other columns are untouched."""
        issued = issue(scopes=["a"])
        APIKey.objects.filter(pk=issued.record.id).update(usage_count=41)
        response = admin_client.post(_change(issued.record.id), {
            "name": "Renamed", "expires_at_0": "", "expires_at_1": "", "scopes": '["b"]'},
            follow=True)
        assert response.status_code == 200
        row = APIKey.objects.get()
        assert (row.name, row.scopes, row.usage_count, row.hash) == (
            "Renamed", ["a"], 41, issued.record.hash)

    def test_expiry_only_moves_earlier(self, admin_client: Client) -> None:
        """Clearing or extending a set expiry is a form error (it would revive
        the key); moving it earlier works; a key without one may get one (#10)."""
        ends = timezone.now().replace(microsecond=0) + dt.timedelta(days=2)
        issued = issue(expires_at=ends)
        for attempt in (None, ends + dt.timedelta(days=30)):
            response = _edit(admin_client, issued.record.id, attempt)
            assert response.status_code == 200
            errors = response.context["adminform"].form.errors
            assert "an expiry can only move earlier" in str(errors["expires_at"])
            assert APIKey.objects.get().expires_at == ends
        earlier = ends - dt.timedelta(days=1)
        assert _edit(admin_client, issued.record.id, earlier).status_code == 302
        assert APIKey.objects.get().expires_at == earlier
        free = issue(name="free")
        assert _edit(admin_client, free.record.id, ends).status_code == 302
        assert APIKey.objects.get(pk=free.record.id).expires_at == ends

    @pytest.mark.parametrize("case", ["expired", "rotated"])
    def test_no_revival(self, admin_client: Client, case: str) -> None:
        """An expired key, or a rotated-out predecessor, cannot be given back
        a future (or no) expiry: it stays unusable."""
        if case == "expired":
            old = issue(expires_at=timezone.now() - dt.timedelta(hours=1))
        else:
            old = issue()
            _action(admin_client, "rotate_keys", old.record.id, grace="0")
        before = APIKey.objects.get(pk=old.record.id).expires_at
        for attempt in (None, timezone.now() + dt.timedelta(days=365)):
            response = _edit(admin_client, old.record.id, attempt)
            assert response.status_code == 200
            assert "expires_at" in response.context["adminform"].form.errors
        assert APIKey.objects.get(pk=old.record.id).expires_at == before
        assert_error(Client().get("/v1/whoami", headers=bearer(old.key)), 401, bodies.REVOKED,
                     bodies.INVALID_CHALLENGE)

    def test_save_rechecks_expiry(self) -> None:
        """The expiry moved earlier between loading the form and saving it:
        the conditional UPDATE refuses the later value, and says so."""
        ends = timezone.now() + dt.timedelta(days=2)
        issued = issue(expires_at=ends)
        obj = APIKey.objects.get()  # loaded (and validated) by the form
        sooner = ends - dt.timedelta(days=1)
        KeyManager(DjangoKeyStore()).expire(issued.record.id, sooner)
        obj.expires_at = ends - dt.timedelta(hours=1)
        row = _save(obj, ["expires_at"])
        assert row.expires_at == sooner
        assert row.messages == ["The key's expiry was moved meanwhile; nothing was changed."]


@pytest.mark.django_db
class TestRotate:
    def test_rotate_with_grace(self, admin_client: Client) -> None:
        """Rotating shows the new key once, in the response (no-store), with
        the old key's end in the admin's format; the old one works through
        the grace; the key is kept nowhere (#10)."""
        old = issue(name="Server", scopes=["charges:read"])
        with override_settings(TIME_ZONE="America/New_York"), timezone.override(
                "America/New_York"):
            response = admin_client.post(CHANGELIST, {
                "action": "rotate_keys", "_selected_action": [old.record.id], "grace": "24h",
                "index": "0"})
            assert response.status_code == 200
            _no_store(response)
            page = response.content.decode()
            (new_key,) = set(KEY.findall(page))
            ends = APIKey.objects.get(pk=old.record.id).expires_at
            assert ends is not None
            shown = formats.date_format(timezone.localtime(ends), "DATETIME_FORMAT")
            assert f"The old key {old.record.id} keeps working until {shown}." in page
            assert ends.isoformat() not in page
            assert_kept_nowhere(admin_client, new_key)
        assert new_key != old.key
        for key in (old.key, new_key):
            assert Client().get("/v1/whoami", headers=bearer(key)).status_code == 200
        new_row = APIKey.objects.get(rotated_from=old.record.id)
        assert (new_row.name, new_row.scopes) == ("Server", ["charges:read"])

    def test_pages_link_predecessor_and_successor(self, admin_client: Client) -> None:
        """A rotated key's page links to the key it replaced, and that key's
        page to its successor."""
        old = issue()
        _action(admin_client, "rotate_keys", old.record.id, grace="1h")
        new_id = APIKey.objects.get(rotated_from=old.record.id).pk
        new_page = admin_client.get(_change(new_id)).content.decode()
        assert f'<a href="{_change(old.record.id)}">{old.record.id}</a>' in new_page
        old_page = admin_client.get(_change(old.record.id)).content.decode()
        assert f'<a href="{_change(new_id)}">{new_id}</a>' in old_page

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


@pytest.mark.django_db
class TestAuditLog:
    def test_every_admin_change_is_audited_as_the_staff_user(self, admin_client: Client
                                                            ) -> None:
        """Add, edit (name, expiry), disable, enable, rotate, revoke and delete
        through the admin: each is an entry by django:admin, and the key's page
        shows its log, newest first, with no key or hash in it."""
        response = _add(admin_client, name="Server")
        key = KEY.findall(response.content.decode())[0]
        key_id = key[8:20]
        ends = timezone.now().replace(microsecond=0) + dt.timedelta(days=2)
        assert _edit(admin_client, key_id, ends, name="Renamed").status_code == 302
        _action(admin_client, "disable_keys", key_id)
        _action(admin_client, "enable_keys", key_id)
        rotated = _action(admin_client, "rotate_keys", key_id, grace="1h")
        new_key = next(k for k in KEY.findall(rotated.content.decode()) if k != key)
        admin_client.post(f"{CHANGELIST}{key_id}/revoke/", {"post": "yes"})
        store = DjangoKeyStore()
        entries = store.audit_entries(key_id=key_id)
        assert [e.event for e in entries] == ["revoked", "rotated", "enabled", "disabled",
                                              "updated", "expiry_set", "created"]
        assert {e.actor for e in entries} == {"django:admin"}
        assert entries[-3].new == {"name": "Renamed"}
        page = admin_client.get(_change(key_id)).content.decode()
        log = page.split('class="aqnt-audit"', 1)[1].split("</table>", 1)[0]
        events = re.findall(r"<tr><td>[^<]*</td><td>([a-z_]+)</td><td>django:admin</td>", log)
        assert events == ["revoked", "rotated", "enabled", "disabled", "updated", "expiry_set",
                          "created"]
        assert f"successor {new_key[8:20]}" in log
        assert "name: &quot;Server&quot; -&gt; &quot;Renamed&quot;" in log
        record = store.get(key_id)
        assert record is not None
        rows = repr(list(APIKeyAudit.objects.values()))
        for secret in (key, new_key, record.hash, key[20:], new_key[20:]):
            assert secret not in page
            assert secret not in rows
        assert "$argon2" not in rows
        # Deleting (a revoked key) is audited too; the entries stay.
        deleted = _action(admin_client, "delete_selected", key_id)
        assert "Successfully deleted 1" in " ".join(_messages(deleted))
        (last, *_) = store.audit_entries(key_id=key_id)
        assert (last.event, last.actor) == ("deleted", "django:admin")

    def test_a_key_without_entries_shows_a_dash(self, admin_client: Client) -> None:
        APIKey.objects.create(id="handmade0001", name="by hand", mode="live", hash="h",
                              hint="sk_live_...abcd", created_at=timezone.now())
        page = admin_client.get(_change("handmade0001")).content.decode()
        assert 'class="aqnt-audit"' not in page
