"""On SQLite, a change log of the key table, written by triggers, that keeps
every process's record cache exact (see :mod:`aqnt_auth._stores._sqlite_watch`).
Other databases are left as they are."""

from __future__ import annotations

from typing import Any, ClassVar

from django.db import migrations
from django.db.backends.base.schema import BaseDatabaseSchemaEditor

from aqnt_auth._stores._sqlite_watch import UNWATCHED_COLUMNS, change_log_ddl


def _tables(apps: Any) -> tuple[str, str, tuple[str, ...]]:
    meta = apps.get_model("aqnt_auth", "APIKey")._meta
    watched = tuple(f.column for f in meta.concrete_fields if f.column not in UNWATCHED_COLUMNS)
    return meta.db_table, f"{meta.db_table}_changes", watched


def add_change_log(apps: Any, schema_editor: BaseDatabaseSchemaEditor) -> None:
    if schema_editor.connection.vendor != "sqlite":
        return
    for statement in change_log_ddl(*_tables(apps)):
        schema_editor.execute(statement)


def drop_change_log(apps: Any, schema_editor: BaseDatabaseSchemaEditor) -> None:
    if schema_editor.connection.vendor != "sqlite":
        return
    table, log_table, _ = _tables(apps)
    for trigger in ("created", "changed", "deleted"):
        schema_editor.execute(f"DROP TRIGGER IF EXISTS {table}_{trigger}")
    schema_editor.execute(f"DROP TABLE IF EXISTS {log_table}")


class Migration(migrations.Migration):
    dependencies: ClassVar[list[tuple[str, str]]] = [("aqnt_auth", "0001_initial")]

    operations: ClassVar[list[migrations.operations.base.Operation]] = [
        migrations.RunPython(add_change_log, drop_change_log, elidable=False),
    ]
