"""The first key of each key's rotation chain (issue #13), which a key's
rate limits and quota are counted under, so that a key and its successor
share one budget during a rotation's grace period.

A nullable column without a default: no table rebuild on SQLite.  It is
written once, when a key is inserted, and never updated, so the change
log's triggers need not watch it; they are recreated anyway in case a
Django version rebuilds the table."""

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
    dependencies: ClassVar[list[tuple[str, str]]] = [("aqnt_auth", "0003_policies")]

    operations: ClassVar[list[migrations.operations.base.Operation]] = [
        migrations.RunPython(migrations.RunPython.noop, recreate_change_log, elidable=False),
        migrations.AddField(
            model_name="apikey", name="lineage_id",
            field=models.CharField(blank=True, editable=False, max_length=32, null=True),
        ),
        migrations.RunPython(recreate_change_log, migrations.RunPython.noop, elidable=False),
    ]
