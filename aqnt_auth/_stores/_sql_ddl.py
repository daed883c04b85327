"""The SQL store's PostgreSQL DDL, as plain text (no SQLAlchemy needed).

``aqnt-auth store init --sql`` prints it; teams that run their own
migrations apply it themselves.  The store runs exactly these statements
when it creates its tables on PostgreSQL.
"""

from __future__ import annotations

import re
from typing import Final

from .._errors import ConfigurationError

__all__ = [
    "DEFAULT_TABLE",
    "SCHEMA",
    "SCHEMA_VERSION",
    "VERSION_TABLE",
    "check_identifier",
    "postgres_ddl",
    "postgres_upgrade_ddl",
]

SCHEMA_VERSION: Final = 3
DEFAULT_TABLE: Final = "aqnt_api_keys"
#: One row per key table: ``(name, version)``.
VERSION_TABLE: Final = "aqnt_auth_schema"

_IDENTIFIER: Final = re.compile(r"[a-z_][a-z0-9_]{0,62}")

_DDL_TEMPLATE: Final = """\
CREATE TABLE IF NOT EXISTS {table} (
    id            text        PRIMARY KEY,
    name          text        NOT NULL,
    mode          text        NOT NULL CHECK (mode IN ('live', 'test')),
    prefix        text        NOT NULL,
    hash          text        NOT NULL,
    hint          text        NOT NULL,
    created_at    timestamptz NOT NULL,
    expires_at    timestamptz,
    revoked_at    timestamptz,
    last_used_at  timestamptz,
    usage_count   bigint      NOT NULL DEFAULT 0,
    scopes        jsonb       NOT NULL DEFAULT '[]',
    read_only     boolean     NOT NULL DEFAULT false,
    allowed_paths jsonb       NOT NULL DEFAULT '[]',
    owner         text,
    metadata      jsonb       NOT NULL DEFAULT '{{}}',
    rotated_from  text,
    disabled_at       timestamptz,
    rate_limits       jsonb       NOT NULL DEFAULT '[]',
    rate_limit_shared boolean     NOT NULL DEFAULT false,
    quota_remaining   bigint,
    quota_refill      text,
    quota_refilled_at timestamptz,
    allowed_ips       jsonb       NOT NULL DEFAULT '[]',
    lineage_id        text
);
CREATE INDEX IF NOT EXISTS {index} ON {table} (owner);
CREATE TABLE IF NOT EXISTS {versions} (
    name    text    PRIMARY KEY,
    version integer NOT NULL
);
INSERT INTO {versions} (name, version) VALUES ('{name}', {version})
    ON CONFLICT (name) DO NOTHING"""


#: The upgrade steps on PostgreSQL: step N takes a table from version N - 1
#: to N.  Each is its own literal text, never derived from today's columns.
_UPGRADES: Final[dict[int, str]] = {
    # 2: the per-key policies (issue #13).
    2: """\
ALTER TABLE {table}
    ADD COLUMN IF NOT EXISTS disabled_at       timestamptz,
    ADD COLUMN IF NOT EXISTS rate_limits       jsonb       NOT NULL DEFAULT '[]',
    ADD COLUMN IF NOT EXISTS rate_limit_shared boolean     NOT NULL DEFAULT false,
    ADD COLUMN IF NOT EXISTS quota_remaining   bigint,
    ADD COLUMN IF NOT EXISTS quota_refill      text,
    ADD COLUMN IF NOT EXISTS quota_refilled_at timestamptz,
    ADD COLUMN IF NOT EXISTS allowed_ips       jsonb       NOT NULL DEFAULT '[]'""",
    # 3: the first key of each key's rotation chain (rate-limit and quota budget).
    3: "ALTER TABLE {table} ADD COLUMN IF NOT EXISTS lineage_id text",
}


def check_identifier(value: str, what: str) -> str:
    """Return *value* if it is a plain lower-case SQL identifier, else raise."""
    if not isinstance(value, str) or not _IDENTIFIER.fullmatch(value):
        raise ConfigurationError(
            f"{what} must be a lower-case SQL identifier (letters, digits, _), got {value!r}"
        )
    return value


def postgres_ddl(table: str = DEFAULT_TABLE, schema: str | None = None) -> list[str]:
    """The statements that create the store's tables on PostgreSQL, in order."""
    check_identifier(table, "table")
    qualify = (lambda name: f"{check_identifier(schema, 'schema')}.{name}") if schema else str
    text = _DDL_TEMPLATE.format(
        table=qualify(table),
        index=f"{table}_owner",
        versions=qualify(VERSION_TABLE),
        name=table,
        version=SCHEMA_VERSION,
    )
    return [statement.strip() for statement in text.split(";")]


def postgres_upgrade_ddl(version: int, table: str = DEFAULT_TABLE,
                         schema: str | None = None) -> list[str]:
    """The statements that take the store's tables on PostgreSQL from
    *version* to :data:`SCHEMA_VERSION`, the version row included."""
    check_identifier(table, "table")
    qualify = (lambda name: f"{check_identifier(schema, 'schema')}.{name}") if schema else str
    statements = [_UPGRADES[step].format(table=qualify(table))
                  for step in range(version + 1, SCHEMA_VERSION + 1)]
    statements.append(f"UPDATE {qualify(VERSION_TABLE)} SET version = {SCHEMA_VERSION} "  # noqa: S608
                      f"WHERE name = '{table}'")
    return statements


#: The PostgreSQL DDL with the default names, for teams that run their own
#: migrations.  Version 3 of the schema; the row in ``aqnt_auth_schema``
#: tells the store which version a database holds.
SCHEMA: Final = ";\n".join(postgres_ddl()) + ";\n"
