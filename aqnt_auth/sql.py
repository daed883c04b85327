"""The SQL key store (the ``sql`` extra: SQLAlchemy 2 and psycopg 3).

``aqnt_auth.open_store("postgresql+psycopg://...")`` opens it from a URL;
import from here to build it on the application's own engines, or to get
the documented PostgreSQL DDL::

    from aqnt_auth.sql import SCHEMA, SQLAlchemyKeyStore

    store = SQLAlchemyKeyStore(engine, async_engine=async_engine)
"""

from __future__ import annotations

from ._stores._sql_ddl import SCHEMA, SCHEMA_VERSION
from ._stores._sqlalchemy import DEFAULT_CHANNEL, AsyncSQLAlchemyKeyStore, SQLAlchemyKeyStore

__all__ = [
    "DEFAULT_CHANNEL",
    "SCHEMA",
    "SCHEMA_VERSION",
    "AsyncSQLAlchemyKeyStore",
    "SQLAlchemyKeyStore",
]
