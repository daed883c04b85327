"""The Django admin for API keys.

* The list shows name, mode, hint, status, created, last used and request count.
* Adding a key issues it through the core's :class:`~aqnt_auth.KeyManager`;
  the plaintext is shown once, in a message, and never stored.
* Actions revoke keys and rotate them, the old key working on for the grace
  period typed next to the action (``24h``, ``90d``, ``0``).
* An active key's name and expiry can be edited; a revoked key is read-only,
  and nothing can clear a revocation.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Final, cast

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.helpers import ActionForm
from django.db.models import QuerySet
from django.http import HttpRequest

from aqnt_auth import (
    AQNTError,
    Argon2Hasher,
    ConfigurationError,
    HMACHasher,
    KeyManager,
    MemoryKeyStore,
    parse_duration,
)
from aqnt_auth.adapters.django.models import MODE_CHOICES, APIKey, db_datetime, record_fields
from aqnt_auth.adapters.django.settings import get_settings, runtime

if TYPE_CHECKING:
    from aqnt_auth.adapters.django.store import DjangoKeyStore

__all__ = ["APIKeyAdmin"]

ADD_FIELDS: Final = (
    "name", "mode", "scopes_text", "read_only", "allowed_paths_text", "expires_at", "owner",
    "metadata",
)
CHANGE_FIELDS: Final = (
    "id", "name", "mode", "hint", "status", "created_at", "expires_at", "revoked_at",
    "last_used_at", "usage_count", "scopes", "read_only", "allowed_paths", "owner", "metadata",
    "rotated_from",
)
EDITABLE: Final = ("name", "expires_at")


def _manager() -> KeyManager:
    conf = get_settings()
    return KeyManager(runtime().authenticator.store, hasher=conf.hasher or Argon2Hasher(),
                      prefixes=conf.prefixes)


def _words(text: str) -> list[str]:
    return text.replace(",", " ").split()


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


class KeyActionForm(ActionForm):
    """The action bar, with the grace period the rotate action uses."""

    grace = forms.CharField(
        label="Grace period (rotate)", required=False, initial="24h",
        help_text="How long a rotated key keeps working: 24h, 7d, 0.",
    )


@admin.register(APIKey)
class APIKeyAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    list_display = ("name", "mode", "hint", "status_label", "created_at", "last_used_at",
                    "usage_count")
    list_filter = ("mode",)
    search_fields = ("name", "id", "owner")
    ordering = ("-created_at",)
    action_form = KeyActionForm
    actions = ("revoke_keys", "rotate_keys")

    @admin.display(description="status")
    def status_label(self, obj: APIKey) -> str:
        return str(obj.status)

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
        return super().get_form(request, obj, change, **kwargs)

    def has_change_permission(self, request: HttpRequest, obj: APIKey | None = None) -> bool:
        # A revoked key is shown read-only: revocation is final.
        if obj is not None and obj.revoked_at is not None:
            return False
        return super().has_change_permission(request, obj)

    def save_model(self, request: HttpRequest, obj: APIKey, form: Any, change: bool) -> None:
        if not change:
            issued = _manager().create(**form.create_options)
            # The row exists now; make obj that row, for the admin's log and redirect.
            for name, value in record_fields(issued.record).items():
                setattr(obj, name, value)
            obj._state.adding = False
            # The Django app always builds its authenticator on a DjangoKeyStore.
            store = cast("DjangoKeyStore", runtime().authenticator.store)
            obj._state.db = store.write_alias
            self.message_user(
                request,
                f"The new API key is {issued.key} . Copy it now: it will not be shown again.",
                messages.SUCCESS,
            )
            return
        changes = {name: obj.__dict__[name] for name in EDITABLE if name in form.changed_data}
        if "expires_at" in changes:
            changes["expires_at"] = db_datetime(changes["expires_at"])
        if changes:
            # One conditional UPDATE of the edited columns only: it cannot
            # undo a revocation or overwrite usage counts written meanwhile.
            updated = (APIKey.objects.using(obj._state.db)
                       .filter(pk=obj.pk, revoked_at__isnull=True).update(**changes))
            if not updated:
                self.message_user(request, "The key was revoked meanwhile; nothing was changed.",
                                  messages.ERROR)

    # -- actions ---------------------------------------------------------------

    @admin.action(description="Revoke selected API keys", permissions=["change"])
    def revoke_keys(self, request: HttpRequest, queryset: QuerySet[APIKey]) -> None:
        keys = _manager()
        revoked = 0
        for key_id in queryset.filter(revoked_at__isnull=True).values_list("pk", flat=True):
            keys.revoke(key_id)
            revoked += 1
        self.message_user(request, f"Revoked {revoked} API key(s). Requests with them now get "
                                   "key_revoked.", messages.SUCCESS)

    @admin.action(description="Rotate selected API keys (the old ones expire after the grace "
                              "period)", permissions=["change"])
    def rotate_keys(self, request: HttpRequest, queryset: QuerySet[APIKey]) -> None:
        try:
            grace = parse_duration(request.POST.get("grace") or "0")
        except ConfigurationError as exc:
            self.message_user(request, str(exc), messages.ERROR)
            return
        keys = _manager()
        for key_id in queryset.values_list("pk", flat=True):
            try:
                issued = keys.rotate(key_id, grace=grace)
                old = keys.get(key_id)
            except AQNTError as exc:
                self.message_user(request, f"Key {key_id} was not rotated: {exc}",
                                  messages.ERROR)
                continue
            ends = old.expires_at.isoformat() if old.expires_at else "now"
            self.message_user(
                request,
                f"Rotated {old.name}: the new API key is {issued.key} . Copy it now: it will "
                f"not be shown again. The old key {old.id} keeps working until {ends}.",
                messages.SUCCESS,
            )
