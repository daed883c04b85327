"""A quota's counter invalidates no cached record (issue #13).

Every request of a key with a quota writes ``quota_remaining`` (and a refill
``quota_refilled_at``) with one conditional ``UPDATE``; a cached record's
count is stale by design, the store decides.  Until now those writes were
changes: each one made every process drop the key's cached record and read
it again.  From here on the change log's trigger (SQLite) and the NOTIFY
trigger (PostgreSQL) leave the two counter columns out, except when a quota
is set on a key or removed from it (``quota_remaining`` becoming or ceasing to
be NULL), which changes how its requests are checked.  Other databases have
neither trigger and are left as they are."""

from __future__ import annotations

from typing import Any, ClassVar

from django.db import migrations
from django.db.backends.base.schema import BaseDatabaseSchemaEditor

from aqnt_auth._stores._sqlite_watch import (
    QUOTA_COUNTER_COLUMNS,
    UNWATCHED_COLUMNS,
    change_log_ddl,
    quota_set_ddl,
)

#: The NOTIFY function of migration 0005, and as this one changes it: the
#: columns an update may change without notifying, and whether setting or
#: removing a quota notifies anyway.
_FUNCTION = """
CREATE OR REPLACE FUNCTION {trigger}() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'TRUNCATE' THEN
        PERFORM pg_notify(TG_TABLE_NAME, '*');
    ELSIF TG_OP = 'INSERT' THEN
        PERFORM pg_notify(TG_TABLE_NAME, NEW.id);
    ELSIF TG_OP = 'DELETE' THEN
        PERFORM pg_notify(TG_TABLE_NAME, OLD.id);
    ELSIF (to_jsonb(NEW){unwatched}) IS DISTINCT FROM (to_jsonb(OLD){unwatched}){quota_set} THEN
        PERFORM pg_notify(TG_TABLE_NAME, OLD.id);
        IF NEW.id <> OLD.id THEN
            PERFORM pg_notify(TG_TABLE_NAME, NEW.id);
        END IF;
    END IF;
    RETURN NULL;
END
$$"""


def _pg_function(schema_editor: BaseDatabaseSchemaEditor, table: str, counter: bool) -> None:
    columns = sorted(UNWATCHED_COLUMNS | QUOTA_COUNTER_COLUMNS if counter
                     else UNWATCHED_COLUMNS)
    schema_editor.execute(_FUNCTION.format(
        trigger=schema_editor.quote_name(f"{table}_notify"),
        unwatched="".join(f" - '{column}'" for column in columns),
        quota_set=("\n            OR (NEW.quota_remaining IS NULL) <> (OLD.quota_remaining IS NULL)"
                   if counter else ""),
    ))


def _sqlite_triggers(apps: Any, schema_editor: BaseDatabaseSchemaEditor, counter: bool) -> None:
    meta = apps.get_model("aqnt_auth", "APIKey")._meta
    table = meta.db_table
    unwatched = UNWATCHED_COLUMNS | QUOTA_COUNTER_COLUMNS if counter else UNWATCHED_COLUMNS
    watched = tuple(f.column for f in meta.concrete_fields if f.column not in unwatched)
    for trigger in ("created", "changed", "deleted", "quota_set"):
        schema_editor.execute(f"DROP TRIGGER IF EXISTS {table}_{trigger}")
    statements = change_log_ddl(table, f"{table}_changes", watched)
    if counter:
        statements += quota_set_ddl(table, f"{table}_changes")
    for statement in statements:
        schema_editor.execute(statement)


def _change(counter: bool) -> Any:
    def run(apps: Any, schema_editor: BaseDatabaseSchemaEditor) -> None:
        vendor = schema_editor.connection.vendor
        if vendor == "sqlite":
            _sqlite_triggers(apps, schema_editor, counter)
        elif vendor == "postgresql":
            _pg_function(schema_editor, apps.get_model("aqnt_auth", "APIKey")._meta.db_table,
                         counter)

    return run


class Migration(migrations.Migration):
    dependencies: ClassVar[list[tuple[str, str]]] = [("aqnt_auth", "0006_audit")]

    operations: ClassVar[list[migrations.operations.base.Operation]] = [
        migrations.RunPython(_change(True), _change(False), elidable=False),
    ]
