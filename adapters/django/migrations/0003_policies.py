"""The per-key policies (issue #13): a reversible disable, rate limits, a
quota with its refill, and an IP allowlist.

On SQLite, adding a column with a default rebuilds the key table, which
drops the change log's triggers: they are created again, watching the new
columns too (and, when this migration is unapplied, without them)."""

from __future__ import annotations

from typing import Any, ClassVar

from django.db import migrations, models
from django.db.backends.base.schema import BaseDatabaseSchemaEditor

from aqnt_auth._stores._sqlite_watch import UNWATCHED_COLUMNS, change_log_ddl


def recreate_change_log(apps: Any, schema_editor: BaseDatabaseSchemaEditor) -> None:
    if schema_editor.connection.vendor != "sqlite":
        return
    meta = apps.get_model("aqnt_auth", "APIKey")._meta
    table = meta.db_table
    watched = tuple(f.column for f in meta.concrete_fields if f.column not in UNWATCHED_COLUMNS)
    for trigger in ("created", "changed", "deleted"):
        schema_editor.execute(f"DROP TRIGGER IF EXISTS {table}_{trigger}")
    for statement in change_log_ddl(table, f"{table}_changes", watched):
        schema_editor.execute(statement)


class Migration(migrations.Migration):
    dependencies: ClassVar[list[tuple[str, str]]] = [("aqnt_auth", "0002_change_log")]

    operations: ClassVar[list[migrations.operations.base.Operation]] = [
        # Unapplying: the columns are gone by now, the triggers are made again.
        migrations.RunPython(migrations.RunPython.noop, recreate_change_log, elidable=False),
        migrations.AddField(
            model_name="apikey", name="disabled_at",
            field=models.DateTimeField(blank=True, editable=False, null=True),
        ),
        migrations.AddField(
            model_name="apikey", name="rate_limits",
            field=models.JSONField(blank=True, default=list, editable=False),
        ),
        migrations.AddField(
            model_name="apikey", name="rate_limit_shared",
            field=models.BooleanField(default=False, editable=False),
        ),
        migrations.AddField(
            model_name="apikey", name="quota_remaining",
            field=models.BigIntegerField(blank=True, editable=False, null=True),
        ),
        migrations.AddField(
            model_name="apikey", name="quota_refill",
            field=models.CharField(blank=True, editable=False, max_length=64, null=True),
        ),
        migrations.AddField(
            model_name="apikey", name="quota_refilled_at",
            field=models.DateTimeField(blank=True, editable=False, null=True),
        ),
        migrations.AddField(
            model_name="apikey", name="allowed_ips",
            field=models.JSONField(blank=True, default=list, editable=False),
        ),
        migrations.RunPython(recreate_change_log, migrations.RunPython.noop, elidable=False),
    ]
