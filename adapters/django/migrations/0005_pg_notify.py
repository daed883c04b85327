"""On PostgreSQL, a trigger that sends ``NOTIFY <key table>, '<key id>'`` for
every created, changed or deleted key (``'*'`` for a ``TRUNCATE``), in the
changing transaction, which keeps every process's record cache exact (see
:class:`~aqnt_auth.adapters.django.store.DjangoKeyStore`).  Changes made
through the admin, ``manage.py``, the ORM or plain SQL all notify.  An update
that changes only the usage columns (``usage_count``, ``last_used_at``)
notifies nothing, so usage flushes invalidate nothing; every other column,
including any a later migration adds, is watched.  Other databases are left
as they are."""

from __future__ import annotations

from typing import Any, ClassVar

from django.db import migrations
from django.db.backends.base.schema import BaseDatabaseSchemaEditor

#: The trigger's (and its function's) name, given the key table's.
TRIGGER: str = "{table}_notify"


def _names(apps: Any, schema_editor: BaseDatabaseSchemaEditor) -> tuple[str, str, str]:
    """The key table, the trigger (and function), the TRUNCATE trigger: quoted."""
    table = apps.get_model("aqnt_auth", "APIKey")._meta.db_table
    trigger = TRIGGER.format(table=table)
    quote = schema_editor.quote_name
    return quote(table), quote(trigger), quote(f"{trigger}_truncate")


def add_notify(apps: Any, schema_editor: BaseDatabaseSchemaEditor) -> None:
    if schema_editor.connection.vendor != "postgresql":
        return
    table, trigger, truncate = _names(apps, schema_editor)
    # TG_TABLE_NAME is the channel: the key table's own name.
    schema_editor.execute(f"""
CREATE OR REPLACE FUNCTION {trigger}() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'TRUNCATE' THEN
        PERFORM pg_notify(TG_TABLE_NAME, '*');
    ELSIF TG_OP = 'INSERT' THEN
        PERFORM pg_notify(TG_TABLE_NAME, NEW.id);
    ELSIF TG_OP = 'DELETE' THEN
        PERFORM pg_notify(TG_TABLE_NAME, OLD.id);
    ELSIF (to_jsonb(NEW) - 'usage_count' - 'last_used_at')
            IS DISTINCT FROM (to_jsonb(OLD) - 'usage_count' - 'last_used_at') THEN
        PERFORM pg_notify(TG_TABLE_NAME, OLD.id);
        IF NEW.id <> OLD.id THEN
            PERFORM pg_notify(TG_TABLE_NAME, NEW.id);
        END IF;
    END IF;
    RETURN NULL;
END
$$""")
    schema_editor.execute(f"CREATE TRIGGER {trigger} AFTER INSERT OR UPDATE OR DELETE ON "
                          f"{table} FOR EACH ROW EXECUTE FUNCTION {trigger}()")
    schema_editor.execute(f"CREATE TRIGGER {truncate} AFTER TRUNCATE ON {table} "
                          f"FOR EACH STATEMENT EXECUTE FUNCTION {trigger}()")


def drop_notify(apps: Any, schema_editor: BaseDatabaseSchemaEditor) -> None:
    if schema_editor.connection.vendor != "postgresql":
        return
    table, trigger, truncate = _names(apps, schema_editor)
    schema_editor.execute(f"DROP TRIGGER IF EXISTS {truncate} ON {table}")
    schema_editor.execute(f"DROP TRIGGER IF EXISTS {trigger} ON {table}")
    schema_editor.execute(f"DROP FUNCTION IF EXISTS {trigger}()")


class Migration(migrations.Migration):
    dependencies: ClassVar[list[tuple[str, str]]] = [("aqnt_auth", "0004_lineage")]

    operations: ClassVar[list[migrations.operations.base.Operation]] = [
        migrations.RunPython(add_notify, drop_notify, elidable=False),
    ]
