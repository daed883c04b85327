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
]

SCHEMA_VERSION: Final = 1
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
    rotated_from  text
);
CREATE INDEX IF NOT EXISTS {index} ON {table} (owner);
CREATE TABLE IF NOT EXISTS {versions} (
    name    text    PRIMARY KEY,
    version integer NOT NULL
);
INSERT INTO {versions} (name, version) VALUES ('{name}', {version})
    ON CONFLICT (name) DO NOTHING"""


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


#: The PostgreSQL DDL with the default names, for teams that run their own
#: migrations.  Version 1 of the schema; the row in ``aqnt_auth_schema``
#: tells the store which version a database holds.
SCHEMA: Final = ";\n".join(postgres_ddl()) + ";\n"
