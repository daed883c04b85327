"""The Django admin for API keys.

* The list shows name, mode, hint, status, whether the key is due for
  rotation, when it expires, created, last used and request count; a status
  filter (active, expiring, expired, due for rotation, revoked, all) hides
  revoked keys unless asked.
* Adding a key issues it through the core's :class:`~aqnt_auth.KeyManager`.
  The plaintext is shown once, in the response to the add POST itself
  (``Cache-Control: no-store``): never in a message, a cookie, a session or
  any table.  Rotating shows the new keys the same way.
* Revoking is final, so it asks for confirmation first (from the list's
  action or the key's own page), as deleting does.  Only a key that no longer
  works (revoked or expired) can be deleted: deleting destroys its record and
  usage, so an active key is revoked first.
* Disabling is reversible: the disable and enable actions go through
  :class:`~aqnt_auth.KeyManager`, so every process sees them as it sees a
  revocation; a disabled key can be neither deleted nor rotated.
* An active key's name and expiry can be edited; an expiry once set only
  moves earlier, so no edit revives a key.  A revoked key is read-only, and
  nothing can clear a revocation.  A rotated key's page links to the key it
  replaced and to the key that replaced it.
* Every change made here (add, edit, revoke, rotate, disable, enable,
  delete) goes through :class:`~aqnt_auth.KeyManager` with the staff user as
  actor (``django:<username>``), so it is in the audit log, which the key's
  page shows (newest first, the last 50 entries).
"""

from __future__ import annotations

import datetime as dt
import os
from typing import TYPE_CHECKING, Any, Final, cast

from django import forms
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.contrib.admin.actions import delete_selected
from django.contrib.admin.helpers import ActionForm
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied
from django.db.models import Q, QuerySet
from django.http import (
    Http404,
    HttpRequest,
    HttpResponse,
    HttpResponseBase,
    HttpResponseRedirect,
)
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils import formats, timezone
from django.utils.cache import add_never_cache_headers
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from aqnt_auth import (
    AQNTError,
    Argon2Hasher,
    ConfigurationError,
    HMACHasher,
    IssuedKey,
    KeyManager,
    KeyRecord,
    MemoryKeyStore,
    parse_duration,
)
from aqnt_auth._audit import MAX_ACTOR_LENGTH
from aqnt_auth._policies import normalise_allowed_ips, normalise_rate_limits
from aqnt_auth._quota import check_quota, is_moved, parse_refill, quota_view
from aqnt_auth._records import ROTATION_AGE
from aqnt_auth.adapters.django.models import (
    MODE_CHOICES,
    APIKey,
    aware,
    db_datetime,
    record_fields,
)
from aqnt_auth.adapters.django.settings import get_settings, runtime

if TYPE_CHECKING:
    from aqnt_auth.adapters.django.store import DjangoKeyStore

__all__ = ["APIKeyAdmin", "StatusFilter"]

ADD_FIELDS: Final = (
    "name", "mode", "scopes_text", "read_only", "allowed_paths_text", "allowed_ips_text",
    "rate_limits_text", "shared_limit", "expires_at", "owner", "metadata",
)
CHANGE_FIELDS: Final = (
    "id", "name", "mode", "hint", "status", "created_at", "expires_at", "revoked_at",
    "disabled_at", "last_used_at", "usage_count", "scopes", "read_only", "allowed_paths",
    "owner", "metadata", "rate_limits_text", "shared_limit", "quota_text", "quota_refill_text",
    "quota_refilled_at", "allowed_ips_text", "predecessor", "successors", "audit_log",
)
#: Audit entries shown on a key's page, newest first.
AUDIT_SHOWN: Final = 50
EDITABLE: Final = ("name", "expires_at", "allowed_ips_text", "rate_limits_text", "shared_limit",
                   "quota_text", "quota_refill_text")
#: The page that shows new plaintext keys, once, in the response that issued them.
ISSUED_TEMPLATE: Final = "admin/aqnt_auth/apikey/key_issued.html"
REVOKE_TEMPLATE: Final = "admin/aqnt_auth/apikey/revoke_confirmation.html"
# Where save_model leaves the key it issued for response_add, on the request
# object only: it lives as long as the request, and nothing stores it.
_ISSUED_ATTR: Final = "_aqnt_auth_issued"


def admin_actor(request: HttpRequest) -> str:
    """``django:<username>``: the staff user, as the audit log names them."""
    # A request the admin serves has a user; one built by hand may not.
    user: Any = getattr(request, "user", None)
    name = user.get_username() if user is not None and user.is_authenticated else "anonymous"
    return f"django:{name}"[:MAX_ACTOR_LENGTH]


def _manager(request: HttpRequest) -> KeyManager:
    conf = get_settings()
    authenticator = runtime().authenticator
    return KeyManager(authenticator.store, hasher=conf.hasher or Argon2Hasher(),
                      prefixes=conf.prefixes, max_hash_memory_mib=authenticator.max_hash_memory_mib,
                      actor=admin_actor(request))


_IPS_HELP: Final = ("IPv4/IPv6 addresses or CIDR networks the key may be used from, separated "
                    "by spaces (empty: anywhere); at most 100.")
_LIMITS_HELP: Final = ("LIMIT/PERIOD rate limits such as 100/minute or 5000/hour, separated by "
                       "commas (empty: none); at most 10. Past one: 429 rate_limit_exceeded.")
_SHARED_HELP: Final = ("Count the rate limits per owner: every key of the owner that shares "
                       "its limit draws on one budget (needs an owner).")


def _limits(text: str) -> list[str]:
    # Commas separate limits; a limit may hold spaces ("10 per 2 seconds").
    return [part.strip() for part in text.split(",") if part.strip()]


def _words(text: str) -> list[str]:
    return text.replace(",", " ").split()


def admin_time(value: dt.datetime) -> str:
    """*value* as the admin shows times: in the current time zone, in the
    active locale's ``DATETIME_FORMAT``."""
    return formats.date_format(timezone.localtime(value), "DATETIME_FORMAT")


def _aware(value: dt.datetime) -> dt.datetime:
    found = aware(value)
    assert found is not None
    return found


class APIKeyAddForm(forms.ModelForm):  # type: ignore[type-arg]
    """The new key's properties, checked by the core before anything is issued."""

    mode = forms.ChoiceField(choices=MODE_CHOICES, initial="live")
    scopes_text = forms.CharField(
        label="Scopes", required=False, help_text="Separated by spaces or commas."
    )
    allowed_paths_text = forms.CharField(
        label="Allowed paths", required=False,
        help_text="Path prefixes the key is limited to, separated by spaces (empty: any path).",
    )
    allowed_ips_text = forms.CharField(
        label="Allowed IPs", required=False, help_text=_IPS_HELP,
    )
    rate_limits_text = forms.CharField(label="Rate limits", required=False,
                                       help_text=_LIMITS_HELP)
    shared_limit = forms.BooleanField(label="Rate limits shared per owner", required=False,
                                      help_text=_SHARED_HELP)

    class Meta:
        model = APIKey
        fields = ("name", "mode", "read_only", "expires_at", "owner", "metadata")

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if self.errors:
            return data
        self.create_options: dict[str, Any] = {
            "name": data.get("name") or "",
            "mode": data.get("mode") or "live",
            "scopes": _words(data.get("scopes_text") or ""),
            "read_only": bool(data.get("read_only")),
            "allowed_paths": _words(data.get("allowed_paths_text") or ""),
            "allowed_ips": _words(data.get("allowed_ips_text") or ""),
            "rate_limits": _limits(data.get("rate_limits_text") or ""),
            "shared_limit": bool(data.get("shared_limit")),
            "expires_at": data.get("expires_at"),
            "owner": data.get("owner") or None,
            "metadata": data.get("metadata") or None,
        }
        # The core's create() is the one place the rules for names, scopes,
        # paths and metadata live: run it against a scratch memory store with
        # a microsecond hasher, so a bad value is a form error, not a 500.
        scratch = KeyManager(MemoryKeyStore(), hasher=HMACHasher(os.urandom(32)),
                             prefixes=get_settings().prefixes)
        try:
            scratch.create(**self.create_options)
        except ConfigurationError as exc:
            raise forms.ValidationError(str(exc)) from None
        return data


class APIKeyChangeForm(forms.ModelForm):  # type: ignore[type-arg]
    """An active key's editable fields; its policies are checked by the core."""

    allowed_ips_text = forms.CharField(label="Allowed IPs", required=False, help_text=_IPS_HELP)
    rate_limits_text = forms.CharField(label="Rate limits", required=False,
                                       help_text=_LIMITS_HELP)
    shared_limit = forms.BooleanField(label="Rate limits shared per owner", required=False,
                                      help_text=_SHARED_HELP)
    quota_text = forms.IntegerField(
        label="Quota (requests left)", required=False, min_value=0,
        help_text="Requests the key may still make, past which it gets 429 quota_exceeded "
                  "(empty: no quota). Setting it starts the refill period now.")
    quota_refill_text = forms.CharField(
        label="Quota refill", required=False,
        help_text="COUNT/PERIOD, like 1000/day: the quota is set back to COUNT every PERIOD "
                  "(minute, hour, day, week, month = 30 days). Empty: no refill.")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.instance is not None and self.instance.pk is not None:
            self.initial["allowed_ips_text"] = " ".join(self.instance.allowed_ips or ())
            self.initial["rate_limits_text"] = ", ".join(self.instance.rate_limits or ())
            self.initial["shared_limit"] = bool(self.instance.rate_limit_shared)
            record = self.instance.to_record()
            view = quota_view(record.quota_remaining, record.quota_refill,
                              record.quota_refilled_at, timezone.now())
            self.initial["quota_text"] = None if view is None else view["remaining"]
            self.initial["quota_refill_text"] = record.quota_refill or ""

    def clean_quota_text(self) -> int | None:
        value = self.cleaned_data.get("quota_text")
        try:
            return None if value is None else check_quota(value)
        except ConfigurationError as exc:
            raise forms.ValidationError(str(exc)) from None

    def clean_quota_refill_text(self) -> str | None:
        value = (self.cleaned_data.get("quota_refill_text") or "").strip()
        try:
            return parse_refill(value).text if value else None
        except ConfigurationError as exc:
            raise forms.ValidationError(str(exc)) from None

    def clean_rate_limits_text(self) -> tuple[str, ...]:
        try:
            return normalise_rate_limits(_limits(self.cleaned_data.get("rate_limits_text") or ""))
        except ConfigurationError as exc:
            raise forms.ValidationError(str(exc)) from None

    def clean_shared_limit(self) -> bool:
        shared = bool(self.cleaned_data.get("shared_limit"))
        if shared and not self.instance.owner:
            raise forms.ValidationError("A rate limit shared per owner needs a key with an "
                                        "owner.")
        return shared

    def clean_allowed_ips_text(self) -> tuple[str, ...]:
        try:
            return normalise_allowed_ips(_words(self.cleaned_data.get("allowed_ips_text") or ""))
        except ConfigurationError as exc:
            raise forms.ValidationError(str(exc)) from None


class KeyActionForm(ActionForm):
    """The action bar, with the grace period the rotate action uses."""

    grace = forms.CharField(
        label="Grace period (rotate)", required=False, initial="24h",
        help_text="How long a rotated key keeps working: 24h, 7d, 0.",
    )


class StatusFilter(admin.SimpleListFilter):
    """The key's status as the core names it, plus "due for rotation".

    With no choice made the list shows every key that is not revoked:
    revoked keys are history, shown when asked for ("revoked" or "all").
    """

    title = "status"
    parameter_name = "status"
    ALL: Final = "all"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("active", "active"), ("expiring", "expiring"), ("expired", "expired"),
                ("disabled", "disabled"), ("due", "due for rotation"), ("revoked", "revoked"),
                (self.ALL, "all")]

    def choices(self, changelist: Any) -> Any:
        # Django's "All" (no parameter) is the default here, so it is named
        # for what it shows; "all" is an explicit choice of its own.
        current = self.value()
        yield {
            "selected": current is None,
            "query_string": changelist.get_query_string(remove=[self.parameter_name]),
            "display": "not revoked",
        }
        for value, label in self.lookup_choices:
            yield {
                "selected": current == value,
                "query_string": changelist.get_query_string({self.parameter_name: value}),
                "display": label,
            }

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        # The same decisions as KeyRecord.status() and due_for_rotation(), as queries.
        now = timezone.now()
        at = db_datetime(now)
        live = Q(revoked_at__isnull=True)
        enabled = Q(disabled_at__isnull=True)
        conditions = {
            self.ALL: Q(),
            "revoked": Q(revoked_at__isnull=False),
            "active": live & enabled & Q(expires_at__isnull=True),
            "expiring": live & enabled & Q(expires_at__gt=at),
            "expired": live & Q(expires_at__lte=at),
            # An expiry outranks a disable, as in KeyRecord.status().
            "disabled": live & ~enabled & (Q(expires_at__isnull=True) | Q(expires_at__gt=at)),
            "due": live & (Q(expires_at__isnull=True) | Q(expires_at__gt=at))
            & Q(created_at__lte=db_datetime(now - ROTATION_AGE)),
        }
        found: QuerySet[Any] = queryset.filter(conditions.get(self.value() or "", live))
        return found


@admin.register(APIKey)
class APIKeyAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    list_display = ("name", "mode", "hint", "status_label", "rotation_due", "expires_at",
                    "created_at", "last_used_at", "usage_count", "quota_summary")
    list_filter = (StatusFilter, "mode")
    search_fields = ("name", "id", "owner")
    ordering = ("-created_at",)
    action_form = KeyActionForm
    actions = ("revoke_keys", "rotate_keys", "disable_keys", "enable_keys", "delete_selected")

    @admin.display(description="status")
    def status_label(self, obj: APIKey) -> str:
        return str(obj.status)

    @admin.display(description="due for rotation", boolean=True)
    def rotation_due(self, obj: APIKey) -> bool:
        return obj.due_for_rotation

    @admin.display(description="allowed IPs")
    def allowed_ips_text(self, obj: APIKey) -> str:
        return " ".join(obj.allowed_ips or ()) or "-"

    @admin.display(description="rate limits")
    def rate_limits_text(self, obj: APIKey) -> str:
        return ", ".join(obj.rate_limits or ()) or "-"

    @admin.display(description="rate limits shared per owner", boolean=True)
    def shared_limit(self, obj: APIKey) -> bool:
        return bool(obj.rate_limit_shared)

    @admin.display(description="replaces")
    def predecessor(self, obj: APIKey) -> SafeString | str:
        if not obj.rotated_from:
            return "-"
        return self._key_link(obj.rotated_from)

    @admin.display(description="replaced by")
    def successors(self, obj: APIKey) -> SafeString | str:
        found = list(APIKey.objects.using(obj._state.db).filter(rotated_from=obj.pk)
                     .order_by("created_at").values_list("pk", flat=True))
        if not found:
            return "-"
        return format_html_join(", ", "{}", ((self._key_link(pk),) for pk in found))

    def _save_quota(self, request: HttpRequest, obj: APIKey, form: Any) -> None:
        """The quota fields, through KeyManager.update: checked by the core, and
        seen by every process at once."""
        quota = form.cleaned_data.get("quota_text")
        refill = form.cleaned_data.get("quota_refill_text")
        options: dict[str, Any]
        if quota is None and refill is None:
            options = {"clear_quota": True}
        elif "quota_text" in form.changed_data or quota is None:
            # A new count (and the refill shown); a refill alone gives the
            # key a quota of its COUNT.
            options = {"quota": quota, "quota_refill": refill or ""}
        else:
            options = {"quota_refill": refill or ""}
        try:
            _manager(request).update(obj.pk, **options)
        except AQNTError as exc:
            self.message_user(request, f"The quota was not changed: {exc}", messages.ERROR)

    @admin.display(description="quota")
    def quota_summary(self, obj: APIKey) -> str:
        if obj.quota_remaining is None:
            return "-"
        if is_moved(obj.quota_remaining, obj.quota_refilled_at):
            return "shared with its successor"
        return f"{obj.quota_remaining} left"

    @admin.display(description="audit log")
    def audit_log(self, obj: APIKey) -> SafeString | str:
        """The key's audit log, newest first: when, what, who, and the changed values."""
        store = cast("DjangoKeyStore", runtime().authenticator.store)
        entries = store.audit_entries(key_id=obj.pk, limit=AUDIT_SHOWN)
        if not entries:
            return "-"
        rows = format_html_join(
            "\n", "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            ((admin_time(e.at), e.event, e.actor or "-", e.summary()) for e in entries))
        return format_html(
            '<table class="aqnt-audit"><thead><tr><th>when</th><th>event</th><th>by</th>'
            "<th>change</th></tr></thead><tbody>{}</tbody></table>", rows)

    def _key_link(self, key_id: str) -> SafeString:
        url = reverse(f"admin:{self.opts.app_label}_{self.opts.model_name}_change",
                      args=[key_id], current_app=self.admin_site.name)
        return format_html('<a href="{}">{}</a>', url, key_id)

    # -- forms -----------------------------------------------------------------

    def get_fields(self, request: HttpRequest, obj: APIKey | None = None) -> Any:
        return ADD_FIELDS if obj is None else CHANGE_FIELDS

    def get_readonly_fields(self, request: HttpRequest, obj: APIKey | None = None) -> Any:
        if obj is None:
            return ()
        return tuple(f for f in CHANGE_FIELDS if f not in EDITABLE)

    def get_form(self, request: HttpRequest, obj: APIKey | None = None, change: bool = False,
                 **kwargs: Any) -> Any:
        if obj is None:
            kwargs["form"] = APIKeyAddForm
        else:
            kwargs["form"] = APIKeyChangeForm
        return super().get_form(request, obj, change, **kwargs)

    def has_change_permission(self, request: HttpRequest, obj: APIKey | None = None) -> bool:
        # A revoked key is shown read-only: revocation is final.
        if obj is not None and obj.revoked_at is not None:
            return False
        return super().has_change_permission(request, obj)

    def has_delete_permission(self, request: HttpRequest, obj: APIKey | None = None) -> bool:
        # Deleting destroys the record and its usage: a key that still works,
        # or may again (disabled), is revoked first.
        if obj is not None and obj.status not in ("revoked", "expired"):
            return False
        return super().has_delete_permission(request, obj)

    def save_model(self, request: HttpRequest, obj: APIKey, form: Any, change: bool) -> None:
        if not change:
            issued = _manager(request).create(**form.create_options)
            # The row exists now; make obj that row, for the admin's log and redirect.
            for name, value in record_fields(issued.record).items():
                setattr(obj, name, value)
            obj._state.adding = False
            # The Django app always builds its authenticator on a DjangoKeyStore.
            store = cast("DjangoKeyStore", runtime().authenticator.store)
            obj._state.db = store.write_alias
            setattr(request, _ISSUED_ATTR, issued)
            return
        # Every edit goes through the core: checked, audited as this staff
        # user, and seen by every process at once.  Each is a conditional
        # write in the store, so a revocation or an earlier expiry committed
        # since the form was loaded is never undone.  The expiry, which can
        # be refused, goes first: refused, nothing else is changed.
        keys = _manager(request)
        try:
            if "expires_at" in form.changed_data and obj.expires_at is not None:
                keys.expire(obj.pk, _aware(obj.expires_at))
            if "name" in form.changed_data:
                keys.update(obj.pk, name=obj.name)
        except AQNTError:
            revoked = APIKey.objects.using(obj._state.db).filter(
                pk=obj.pk, revoked_at__isnull=False).exists()
            self.message_user(
                request,
                "The key was revoked meanwhile; nothing was changed." if revoked else
                "The key's expiry was moved meanwhile; nothing was changed.",
                messages.ERROR)
            return
        if "allowed_ips_text" in form.changed_data:
            try:
                keys.update(obj.pk, allowed_ips=form.cleaned_data["allowed_ips_text"])
            except AQNTError as exc:
                self.message_user(request, f"The allowed IPs were not changed: {exc}",
                                  messages.ERROR)
        if {"rate_limits_text", "shared_limit"} & set(form.changed_data):
            try:
                keys.update(obj.pk, rate_limits=form.cleaned_data["rate_limits_text"],
                            shared_limit=form.cleaned_data["shared_limit"])
            except AQNTError as exc:
                self.message_user(request, f"The rate limits were not changed: {exc}",
                                  messages.ERROR)
        if {"quota_text", "quota_refill_text"} & set(form.changed_data):
            self._save_quota(request, obj, form)

    def delete_model(self, request: HttpRequest, obj: APIKey) -> None:
        # Through the core: the deletion is audited as this staff user.
        _manager(request).delete(obj.pk)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[APIKey]) -> None:
        keys = _manager(request)
        for key_id in queryset.values_list("pk", flat=True):
            keys.delete(key_id)

    def response_add(self, request: HttpRequest, obj: APIKey,
                     post_url_continue: str | None = None) -> HttpResponse:
        issued: IssuedKey | None = getattr(request, _ISSUED_ATTR, None)
        if issued is None:
            return super().response_add(request, obj, post_url_continue)
        return self._issued_page(request, "API key created", [(issued, None)])

    def _issued_page(self, request: HttpRequest, title: str,
                     issued: list[tuple[IssuedKey, KeyRecord | None]]) -> TemplateResponse:
        """The one page a new plaintext key is ever in: this response, not
        cached, with nothing of it kept in a cookie, session or message."""
        keys = [{
            "key": new.key,
            "record": new.record,
            "url": reverse(f"admin:{self.opts.app_label}_{self.opts.model_name}_change",
                           args=[new.record.id], current_app=self.admin_site.name),
            "old": old,
            "old_until": admin_time(old.expires_at) if old and old.expires_at else None,
        } for new, old in issued]
        context = {
            **self.admin_site.each_context(request),
            "title": title,
            "opts": self.opts,
            "keys": keys,
        }
        response = TemplateResponse(request, ISSUED_TEMPLATE, context)
        add_never_cache_headers(response)
        return response

    # -- revoking ----------------------------------------------------------------

    def get_urls(self) -> list[URLPattern]:
        info = self.opts.app_label, self.opts.model_name
        return [
            path("<path:object_id>/revoke/", self.admin_site.admin_view(self.revoke_view),
                 name="{}_{}_revoke".format(*info)),
            *super().get_urls(),
        ]

    def revoke_view(self, request: HttpRequest, object_id: str) -> HttpResponseBase:
        """One key's "Revoke" button: a confirmation page, then the revocation."""
        obj = self.get_object(request, unquote(object_id))
        if obj is None:
            raise Http404("No such API key.")
        if not self.has_change_permission(request, obj):
            raise PermissionDenied
        if request.method == "POST":
            self._revoke(request, [obj.pk])
            return HttpResponseRedirect(reverse(
                f"admin:{self.opts.app_label}_{self.opts.model_name}_change",
                args=[obj.pk], current_app=self.admin_site.name))
        return self._revoke_confirmation(request, [obj], single=True)

    def _revoke_confirmation(self, request: HttpRequest, keys: list[APIKey],
                             single: bool = False) -> TemplateResponse:
        context = {
            **self.admin_site.each_context(request),
            "title": "Are you sure?",
            "opts": self.opts,
            "keys": keys,
            "single": single,
            "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
        }
        return TemplateResponse(request, REVOKE_TEMPLATE, context)

    def _revoke(self, request: HttpRequest, key_ids: list[str]) -> None:
        keys = _manager(request)
        for key_id in key_ids:
            keys.revoke(key_id)
        self.message_user(request, f"Revoked {len(key_ids)} API key(s). Requests with them now "
                                   "get key_revoked.", messages.SUCCESS)

    # -- actions ---------------------------------------------------------------

    @admin.action(description="Revoke selected API keys", permissions=["change"])
    def revoke_keys(self, request: HttpRequest, queryset: QuerySet[APIKey]
                    ) -> TemplateResponse | None:
        live = list(queryset.filter(revoked_at__isnull=True))
        if not live:
            self.message_user(request, "The selected API keys are already revoked.",
                              messages.WARNING)
            return None
        if request.POST.get("post") != "yes":
            # Revocation is final: ask first, as deleting does.
            return self._revoke_confirmation(request, live)
        self._revoke(request, [key.pk for key in live])
        return None

    @admin.action(description="Rotate selected API keys (the old ones expire after the grace "
                              "period)", permissions=["change"])
    def rotate_keys(self, request: HttpRequest, queryset: QuerySet[APIKey]
                    ) -> TemplateResponse | None:
        try:
            grace = parse_duration(request.POST.get("grace") or "0")
        except ConfigurationError as exc:
            self.message_user(request, str(exc), messages.ERROR)
            return None
        keys = _manager(request)
        rotated: list[tuple[IssuedKey, KeyRecord | None]] = []
        for key_id in queryset.values_list("pk", flat=True):
            try:
                issued = keys.rotate(key_id, grace=grace)
                old = keys.get(key_id)
            except AQNTError as exc:
                self.message_user(request, f"Key {key_id} was not rotated: {exc}",
                                  messages.ERROR)
                continue
            rotated.append((issued, old))
        if not rotated:
            return None
        return self._issued_page(request, "API keys rotated", rotated)

    @admin.action(description="Disable selected API keys (reversible)", permissions=["change"])
    def disable_keys(self, request: HttpRequest, queryset: QuerySet[APIKey]) -> None:
        self._switch(request, queryset, "disable")

    @admin.action(description="Enable selected API keys", permissions=["change"])
    def enable_keys(self, request: HttpRequest, queryset: QuerySet[APIKey]) -> None:
        self._switch(request, queryset, "enable")

    def _switch(self, request: HttpRequest, queryset: QuerySet[APIKey], action: str) -> None:
        """Disable or enable through the core, so every process sees it as a
        revocation; revoked keys are left alone (revocation is final)."""
        keys = _manager(request)
        done = 0
        for key_id in queryset.values_list("pk", flat=True):
            try:
                getattr(keys, action)(key_id)
            except AQNTError as exc:
                self.message_user(request, f"Key {key_id} was not changed: {exc}",
                                  messages.ERROR)
                continue
            done += 1
        if done:
            self.message_user(
                request,
                f"Disabled {done} API key(s). Requests with them now get key_disabled."
                if action == "disable" else
                f"Enabled {done} API key(s). Requests with them work again.",
                messages.SUCCESS)

    @admin.action(description="Delete selected API keys (revoked or expired only)",
                  permissions=["delete"])
    def delete_selected(self, request: HttpRequest, queryset: QuerySet[APIKey]
                        ) -> TemplateResponse | None:
        usable = [key for key in queryset if key.status not in ("revoked", "expired")]
        if usable:
            self.message_user(
                request,
                f"{len(usable)} of the selected API keys still work (or are disabled and may "
                "work again); deleting would destroy "
                "their record and usage. Revoke them first. Nothing was deleted.",
                messages.ERROR)
            return None
        return delete_selected(self, request, queryset)
