"""The SQL store's tables as a SQLAlchemy Core model.

On PostgreSQL the store creates its tables with the documented DDL
(:mod:`aqnt_auth._stores._sql_ddl`); other databases get the same tables
from this model.
"""

from __future__ import annotations

import datetime as dt
from typing import Final

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    Dialect,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.schema import CreateIndex, CreateTable

from .._outcomes import OUTCOMES
from ._sql_ddl import (
    DEFAULT_TABLE,
    SCHEMA,
    SCHEMA_VERSION,
    VERSION_TABLE,
    audit_table_name,
    check_identifier,
    postgres_ddl,
    postgres_upgrade_ddl,
    usage_table,
)

__all__ = [
    "DEFAULT_TABLE",
    "SCHEMA",
    "SCHEMA_VERSION",
    "VERSION_TABLE",
    "Tables",
    "UTCDateTime",
    "check_identifier",
    "postgres_ddl",
    "postgres_upgrade_ddl",
    "upgrade_ddl",
]

_UTC: Final = dt.timezone.utc


class UTCDateTime(TypeDecorator[dt.datetime]):
    """Aware UTC datetimes in, aware UTC datetimes out, on every database.

    PostgreSQL keeps ``timestamptz``; SQLite keeps naive text, which is
    written in UTC and read back as UTC.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Dialect
                           ) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("datetimes must be timezone-aware")
        value = value.astimezone(_UTC)
        return value if dialect.name == "postgresql" else value.replace(tzinfo=None)

    def process_result_value(self, value: dt.datetime | None, dialect: Dialect
                             ) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=_UTC)
        return value.astimezone(_UTC)


def _json() -> JSON:
    return JSON().with_variant(JSONB(), "postgresql")


class Tables:
    """The Core model of the key table, its audit table and the version table."""

    def __init__(self, table: str = DEFAULT_TABLE, schema: str | None = None) -> None:
        check_identifier(table, "table")
        if schema is not None:
            check_identifier(schema, "schema")
        self.name = table
        self.schema = schema
        self.metadata = MetaData(schema=schema)
        self.keys = Table(
            table,
            self.metadata,
            Column("id", String(64), primary_key=True),
            Column("name", Text, nullable=False),
            Column("mode", String(8), nullable=False),
            Column("prefix", String(16), nullable=False),
            Column("hash", Text, nullable=False),
            Column("hint", Text, nullable=False),
            Column("created_at", UTCDateTime, nullable=False),
            Column("expires_at", UTCDateTime),
            Column("revoked_at", UTCDateTime),
            Column("last_used_at", UTCDateTime),
            Column("usage_count", BigInteger, nullable=False, default=0),
            Column("scopes", _json(), nullable=False),
            Column("read_only", Boolean, nullable=False, default=False),
            Column("allowed_paths", _json(), nullable=False),
            Column("owner", Text),
            Column("metadata", _json(), nullable=False),
            Column("rotated_from", String(64)),
            Column("disabled_at", UTCDateTime),
            Column("rate_limits", _json(), nullable=False),
            Column("rate_limit_shared", Boolean, nullable=False, default=False),
            Column("quota_remaining", BigInteger),
            Column("quota_refill", Text),
            Column("quota_refilled_at", UTCDateTime),
            Column("allowed_ips", _json(), nullable=False),
            Column("lineage_id", String(64)),
            CheckConstraint("mode IN ('live', 'test')", name=f"{table}_mode"),
            Index(f"{table}_owner", "owner"),
        )
        audit = audit_table_name(table)
        self.audit = Table(
            audit,
            self.metadata,
            Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True,
                   autoincrement=True),
            Column("at", UTCDateTime, nullable=False),
            Column("key_id", Text, nullable=False),
            Column("event", Text, nullable=False),
            Column("actor", Text),
            Column("old", _json(), nullable=False),
            Column("new", _json(), nullable=False),
            Column("related_key_id", Text),
            Index(f"{audit}_key", "key_id", "at"),
            Index(f"{audit}_at", "at"),
        )
        #: Usage history (issue #14), per key id and UTC hour.
        self.usage = Table(
            usage_table(table),
            self.metadata,
            Column("key_id", Text, primary_key=True),
            Column("hour", BigInteger, primary_key=True, autoincrement=False),
            *(Column(name, BigInteger, nullable=False, server_default="0")
              for name in OUTCOMES),
            Column("clients", Integer, nullable=False, server_default="0"),
            Column("last_at", BigInteger),
            Column("last_client", Text),
            Column("last_user_agent", Text),
            Column("paths", Text, nullable=False, server_default="{}"),
            Index(f"{usage_table(table)}_hour", "hour"),
        )
        self.versions = Table(
            VERSION_TABLE,
            self.metadata,
            Column("name", String(63), primary_key=True),
            Column("version", Integer, nullable=False),
        )

    @property
    def qualified_versions(self) -> str:
        """The version table's name as ``to_regclass`` wants it."""
        return f"{self.schema}.{VERSION_TABLE}" if self.schema else VERSION_TABLE


#: The columns each upgrade step adds, for databases other than PostgreSQL
#: (which runs :func:`postgres_upgrade_ddl`), as ``(name, NOT NULL default)``.
_ADDED: Final[dict[int, tuple[tuple[str, str | None], ...]]] = {
    2: (("disabled_at", None), ("rate_limits", "'[]'"), ("rate_limit_shared", "0"),
        ("quota_remaining", None), ("quota_refill", None), ("quota_refilled_at", None),
        ("allowed_ips", "'[]'")),
    3: (("lineage_id", None),),
}


#: The step that creates the audit table (#14).
_AUDIT_STEP: Final = 4
#: The step that creates the usage-history table (#14).
_USAGE_STEP: Final = 5


def upgrade_ddl(tables: Tables, version: int, dialect: Dialect) -> list[str]:
    """The statements that take *tables* from *version* to
    :data:`SCHEMA_VERSION` on *dialect*, the version row included."""
    if dialect.name == "postgresql":
        return postgres_upgrade_ddl(version, tables.name, tables.schema)
    table = f"{tables.schema}.{tables.name}" if tables.schema else tables.name
    statements = []
    for step in range(version + 1, SCHEMA_VERSION + 1):
        if step == _AUDIT_STEP:
            statements.append(str(CreateTable(tables.audit, if_not_exists=True)
                                  .compile(dialect=dialect)).strip())
            statements += [str(CreateIndex(index, if_not_exists=True).compile(dialect=dialect))
                           for index in sorted(tables.audit.indexes, key=lambda i: str(i.name))]
            continue
        if step == _USAGE_STEP:
            statements.append(str(CreateTable(tables.usage, if_not_exists=True)
                                  .compile(dialect=dialect)).strip())
            statements.extend(str(CreateIndex(index, if_not_exists=True).compile(dialect=dialect))
                              for index in tables.usage.indexes)
            continue
        for name, default in _ADDED[step]:
            column_type = tables.keys.c[name].type.compile(dialect=dialect)
            tail = "" if default is None else f" NOT NULL DEFAULT {default}"
            statements.append(f"ALTER TABLE {table} ADD COLUMN {name} {column_type}{tail}")
    versions = f"{tables.schema}.{VERSION_TABLE}" if tables.schema else VERSION_TABLE
    statements.append(f"UPDATE {versions} SET version = {SCHEMA_VERSION} "  # noqa: S608
                      f"WHERE name = '{tables.name}'")
    return statements
