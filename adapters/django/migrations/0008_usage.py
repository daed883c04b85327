"""Usage history (issue #14): one row per key id and UTC hour, in its own
table, so the change log's triggers (on the key table) never fire for a
usage flush."""

from __future__ import annotations

from typing import ClassVar

from django.db import migrations, models

_OUTCOMES = ("valid", "invalid_secret", "revoked", "expired", "disabled", "rate_limited",
             "quota_exceeded", "ip_not_allowed", "forbidden", "unknown_key", "malformed",
             "missing", "throttled")


class Migration(migrations.Migration):
    dependencies: ClassVar[list[tuple[str, str]]] = [("aqnt_auth", "0007_quota_counter")]

    operations: ClassVar[list[migrations.operations.base.Operation]] = [
        migrations.CreateModel(
            name="APIKeyUsage",
            fields=[
                ("id", models.BigAutoField(primary_key=True, serialize=False)),
                ("key_id", models.CharField(max_length=32)),
                ("hour", models.BigIntegerField(db_index=True)),
                *((name, models.PositiveBigIntegerField(default=0)) for name in _OUTCOMES),
                ("clients", models.PositiveIntegerField(default=0)),
                ("last_at", models.BigIntegerField(blank=True, null=True)),
                ("last_client", models.CharField(blank=True, max_length=256, null=True)),
                ("last_user_agent", models.CharField(blank=True, max_length=256, null=True)),
                ("paths", models.TextField(default="{}")),
            ],
            options={
                "verbose_name": "API key usage",
                "verbose_name_plural": "API key usage",
                "constraints": [
                    models.UniqueConstraint(fields=("key_id", "hour"),
                                            name="aqnt_auth_usage_key_hour"),
                ],
            },
        ),
    ]
