"""``open_store``: a store from a URL."""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from .._errors import ConfigurationError
from ._memory import MemoryKeyStore
from ._protocol import KeyStore
from ._sqlite import SQLiteKeyStore

__all__ = ["DEFAULT_STORE_URL", "open_store", "register_store_scheme"]

DEFAULT_STORE_URL: Final = "sqlite:///aqnt_keys.db"

_SCHEMES: dict[str, Callable[[str], KeyStore]] = {}


def register_store_scheme(scheme: str, opener: Callable[[str], KeyStore]) -> None:
    """Make ``open_store`` hand URLs of *scheme* (``"redis"``...) to *opener*."""
    _SCHEMES[scheme] = opener


def _open_sqlite(url: str) -> KeyStore:
    rest = url[len("sqlite://"):]
    if rest in ("", "/", "/:memory:"):
        return SQLiteKeyStore(":memory:")
    if not rest.startswith("/"):
        raise ConfigurationError(
            "SQLite URLs look like sqlite:///relative.db or sqlite:////absolute/path.db"
        )
    return SQLiteKeyStore(rest[1:])


def _open_sqlalchemy(url: str) -> KeyStore:
    try:
        # Imported here: SQLAlchemy is an optional extra.
        from ._sqlalchemy import SQLAlchemyKeyStore
    except ImportError as exc:
        raise ConfigurationError(
            f"store URL {_redact(url)!r} needs SQLAlchemy: pip install 'aqnt-auth[sql]' ({exc})"
        ) from None
    return SQLAlchemyKeyStore(url)


def _redact(url: str) -> str:
    # Never echo a database password into an error message.
    scheme, sep, rest = url.partition("://")
    creds, at, host = rest.rpartition("@")
    if at and ":" in creds:
        return f"{scheme}{sep}{creds.split(':', 1)[0]}:***@{host}"
    return url


register_store_scheme("memory", lambda url: MemoryKeyStore())
register_store_scheme("sqlite", _open_sqlite)


def open_store(url: str | KeyStore) -> KeyStore:
    """Return the store a URL names; a store object is returned unchanged.

    * ``memory://``: an in-process :class:`MemoryKeyStore`.
    * ``sqlite:///relative.db``, ``sqlite:////absolute.db``,
      ``sqlite:///:memory:``: the embedded :class:`SQLiteKeyStore`.
    * ``postgresql+psycopg://...`` and other SQLAlchemy URLs: the SQL store
      (the ``sql`` extra).
    """
    if not isinstance(url, str):
        return url
    scheme, sep, _ = url.partition("://")
    if not sep:
        raise ConfigurationError(f"store URL {_redact(url)!r} has no scheme (try sqlite:///keys.db)")
    opener = _SCHEMES.get(scheme)
    if opener is not None:
        return opener(url)
    if "+" in scheme or scheme in ("postgresql", "postgres", "mysql", "mariadb"):
        return _open_sqlalchemy(url)
    raise ConfigurationError(f"unknown store URL scheme {scheme!r}")
