"""The key record as a Django model: one row per key, never the key itself."""

from __future__ import annotations

import datetime as dt
from typing import Any, Final

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.utils import timezone

from aqnt_auth import KEY_COLUMNS, KeyRecord, record_from_row, row_from_record
from aqnt_auth._outcomes import OUTCOMES
from aqnt_auth._usage_history import UsageRow, paths_of_json

__all__ = ["APIKey", "APIKeyAudit", "APIKeyUsage", "aware", "db_datetime", "expiry_allowed",
           "record_fields",
           "record_of_values"]

MODE_CHOICES = (("live", "live"), ("test", "test"))


class APIKey(models.Model):
    """Every field of :class:`aqnt_auth.KeyRecord`, one column each.

    ``hash`` holds an argon2 PHC string (about 100 characters with the default
    profile, some 200 with the largest salt and hash lengths) or an
    HMAC hash, so it is wide.  The primary key is the key id, so the lookup
    each request makes is one primary-key index probe.
    """

    id = models.CharField(primary_key=True, max_length=32, editable=False)
    name = models.CharField(max_length=200)
    mode = models.CharField(max_length=4, choices=MODE_CHOICES)
    prefix = models.CharField(max_length=8, default="sk", editable=False)
    hash = models.CharField(max_length=512, editable=False)
    hint = models.CharField(max_length=32, editable=False)
    created_at = models.DateTimeField(editable=False)
    expires_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True, editable=False)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)
    usage_count = models.PositiveBigIntegerField(default=0, editable=False)
    scopes = models.JSONField(default=list, blank=True)
    read_only = models.BooleanField(default=False)
    allowed_paths = models.JSONField(default=list, blank=True)
    owner = models.CharField(max_length=200, null=True, blank=True, db_index=True)
    metadata = models.JSONField(default=dict, blank=True)
    rotated_from = models.CharField(max_length=32, null=True, blank=True, editable=False)
    # The per-key policies (issue #13): changed through KeyManager only.
    disabled_at = models.DateTimeField(null=True, blank=True, editable=False)
    rate_limits = models.JSONField(default=list, blank=True, editable=False)
    rate_limit_shared = models.BooleanField(default=False, editable=False)
    quota_remaining = models.BigIntegerField(null=True, blank=True, editable=False)
    quota_refill = models.CharField(max_length=64, null=True, blank=True, editable=False)
    quota_refilled_at = models.DateTimeField(null=True, blank=True, editable=False)
    allowed_ips = models.JSONField(default=list, blank=True, editable=False)
    # The first key of the rotation chain (rate-limit and quota budget).
    lineage_id = models.CharField(max_length=32, null=True, blank=True, editable=False)

    class Meta:
        verbose_name = "API key"
        verbose_name_plural = "API keys"
        ordering = ("created_at", "id")

    def __str__(self) -> str:
        return f"{self.name} ({self.hint})"

    def to_record(self) -> KeyRecord:
        """This row as the core's immutable record."""
        return record_of_values([getattr(self, name) for name in KEY_COLUMNS])

    @property
    def status(self) -> str:
        """``active``, ``expiring``, ``expired``, ``disabled`` or ``revoked``, as
        the core decides."""
        return self.to_record().status()

    @property
    def due_for_rotation(self) -> bool:
        """Older than the core's rotation age and still usable."""
        return self.to_record().due_for_rotation()

    def clean(self) -> None:
        """Refuse an expiry that would revive the key: once set, an expiry
        only moves earlier (:meth:`aqnt_auth.KeyRecord.allows_expiry`),
        checked against the row as stored, not as the form loaded it."""
        super().clean()
        if self._state.adding:
            return
        stored = type(self)._default_manager.using(self._state.db).filter(pk=self.pk).first()
        if stored is None:
            return
        record = stored.to_record()
        if record.expires_at == aware(self.expires_at) or record.allows_expiry(
                aware(self.expires_at)):
            return
        raise ValidationError({"expires_at": (
            "Once set, an expiry can only move earlier: clearing or extending it would revive "
            "the key. Rotate it or create a new key instead."
        )})


class APIKeyAudit(models.Model):
    """One change to one key (:class:`aqnt_auth.AuditEntry`): written by
    :class:`~aqnt_auth.adapters.django.store.DjangoKeyStore` in the transaction
    of the change, kept when the key is deleted.  Never a secret or a hash."""

    id = models.BigAutoField(primary_key=True)
    at = models.DateTimeField(db_index=True)
    key_id = models.CharField(max_length=32)
    event = models.CharField(max_length=32)
    actor = models.CharField(max_length=200, null=True, blank=True)
    old = models.JSONField(default=dict, blank=True)
    new = models.JSONField(default=dict, blank=True)
    related_key_id = models.CharField(max_length=32, null=True, blank=True)

    class Meta:
        verbose_name = "API key audit entry"
        verbose_name_plural = "API key audit entries"
        ordering = ("-at", "-id")
        indexes = (models.Index(fields=("key_id", "at"), name="aqnt_auth_audit_key_at"),)

    def __str__(self) -> str:
        return f"{self.event} {self.key_id} at {self.at}"
class APIKeyUsage(models.Model):
    """Usage history (issue #14): one row per key id and UTC hour.

    ``key_id`` is ``""`` for the requests that named no existing key.  Not a
    foreign key: a deleted key's history stays until retention prunes it.
    Written by the authenticator's usage flush only; no key, secret, hash or
    ``Authorization`` value is ever stored here.
    """

    id = models.BigAutoField(primary_key=True)
    key_id = models.CharField(max_length=32)
    #: Start of the hour, Unix seconds (UTC).
    hour = models.BigIntegerField(db_index=True)
    valid = models.PositiveBigIntegerField(default=0)
    invalid_secret = models.PositiveBigIntegerField(default=0)
    revoked = models.PositiveBigIntegerField(default=0)
    expired = models.PositiveBigIntegerField(default=0)
    disabled = models.PositiveBigIntegerField(default=0)
    rate_limited = models.PositiveBigIntegerField(default=0)
    quota_exceeded = models.PositiveBigIntegerField(default=0)
    ip_not_allowed = models.PositiveBigIntegerField(default=0)
    forbidden = models.PositiveBigIntegerField(default=0)
    unknown_key = models.PositiveBigIntegerField(default=0)
    malformed = models.PositiveBigIntegerField(default=0)
    missing = models.PositiveBigIntegerField(default=0)
    throttled = models.PositiveBigIntegerField(default=0)
    clients = models.PositiveIntegerField(default=0)
    #: Unix microseconds of the last valid request.
    last_at = models.BigIntegerField(null=True, blank=True)
    last_client = models.CharField(max_length=256, null=True, blank=True)
    last_user_agent = models.CharField(max_length=256, null=True, blank=True)
    #: The most requested paths, a JSON object of counts.
    paths = models.TextField(default="{}")

    class Meta:
        verbose_name = "API key usage"
        verbose_name_plural = "API key usage"
        constraints = (
            models.UniqueConstraint(fields=("key_id", "hour"), name="aqnt_auth_usage_key_hour"),
        )

    def __str__(self) -> str:
        return f"{self.key_id or '(no key)'} @ {self.hour}"

    def to_row(self) -> UsageRow:
        """This row as the core's :class:`~aqnt_auth._usage_history.UsageRow`."""
        counts = {o: getattr(self, o) for o in OUTCOMES if getattr(self, o)}
        return UsageRow(self.key_id, self.hour, counts, self.clients, self.last_at,
                        self.last_client, self.last_user_agent, paths_of_json(self.paths))


#: Where the times stand among :data:`~aqnt_auth.KEY_COLUMNS`.
_TIMES: Final = tuple(
    KEY_COLUMNS.index(name) for name in ("created_at", "expires_at", "revoked_at", "last_used_at",
                                         "disabled_at", "quota_refilled_at")
)


def record_of_values(values: list[Any]) -> KeyRecord:
    """The record of a row's values in :data:`~aqnt_auth.KEY_COLUMNS` order, as
    Django's fields convert them (times may be naive); *values* is changed."""
    for position in _TIMES:
        values[position] = aware(values[position])
    return record_from_row(values)


def record_fields(record: KeyRecord) -> dict[str, Any]:
    """The column values of *record*, for ``APIKey(**fields)``."""
    fields = row_from_record(record)
    for position in _TIMES:
        name = KEY_COLUMNS[position]
        fields[name] = db_datetime(fields[name])
    return fields


def aware(value: dt.datetime | None) -> dt.datetime | None:
    """*value* as an aware datetime: with ``USE_TZ = False`` Django hands back
    naive local times, while records always hold aware ones."""
    if value is None or value.tzinfo is not None:
        return value
    return timezone.make_aware(value, timezone.get_default_timezone())


def expiry_allowed(at: dt.datetime | None) -> models.Q:
    """The rows whose expiry may become *at* (a value of :func:`db_datetime`):
    :meth:`aqnt_auth.KeyRecord.allows_expiry` as a filter, for an ``UPDATE``
    that checks and writes in one statement."""
    may = models.Q(expires_at__isnull=True)
    if at is not None:
        may |= models.Q(expires_at__gte=at)
    return models.Q(revoked_at__isnull=True) & may


def db_datetime(value: dt.datetime | None) -> dt.datetime | None:
    """*value* as Django stores it: aware with ``USE_TZ``, else naive local time
    (some backends refuse aware datetimes when ``USE_TZ = False``)."""
    if value is None or settings.USE_TZ:
        return value
    return timezone.make_naive(value, timezone.get_default_timezone())
