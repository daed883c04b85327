"""The audit log (issue #14): one row per change to a key, written in the
changing transaction by the key store, kept when the key is deleted.  A
table of its own: the key table and its change-log triggers are untouched."""

from __future__ import annotations

from typing import ClassVar

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies: ClassVar[list[tuple[str, str]]] = [("aqnt_auth", "0005_pg_notify")]

    operations: ClassVar[list[migrations.operations.base.Operation]] = [
        migrations.CreateModel(
            name="APIKeyAudit",
            fields=[
                ("id", models.BigAutoField(primary_key=True, serialize=False)),
                ("at", models.DateTimeField(db_index=True)),
                ("key_id", models.CharField(max_length=32)),
                ("event", models.CharField(max_length=32)),
                ("actor", models.CharField(blank=True, max_length=200, null=True)),
                ("old", models.JSONField(blank=True, default=dict)),
                ("new", models.JSONField(blank=True, default=dict)),
                ("related_key_id", models.CharField(blank=True, max_length=32, null=True)),
            ],
            options={
                "verbose_name": "API key audit entry",
                "verbose_name_plural": "API key audit entries",
                "ordering": ("-at", "-id"),
                "indexes": [models.Index(fields=["key_id", "at"],
                                         name="aqnt_auth_audit_key_at")],
            },
        ),
    ]
