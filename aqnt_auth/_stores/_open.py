"""``open_store``: a store from a URL."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Final

from .._errors import ConfigurationError, StoreOpenError, StoreUnavailable
from .._records import KeyRecord
from ._memory import MemoryKeyStore
from ._protocol import KeyStore
from ._sqlite import SQLiteKeyStore

__all__ = [
    "DEFAULT_STORE_URL",
    "UnopenedStore",
    "open_store",
    "open_store_to_serve",
    "register_store_scheme",
    "store_url",
]

#: The one default store of every front end (CLI, Flask, the demo) and the
#: README: a SQLite file in the working directory.
DEFAULT_STORE_URL: Final = "sqlite:///aqnt_keys.db"

# scheme -> (opener, whether the opener takes create=)
_SCHEMES: dict[str, tuple[Callable[..., KeyStore], bool]] = {}


def register_store_scheme(scheme: str, opener: Callable[[str], KeyStore]) -> None:
    """Make ``open_store`` hand URLs of *scheme* (``"redis"``...) to *opener*."""
    _SCHEMES[scheme] = (opener, False)


def _sqlite_path(url: str) -> str | None:
    # The file a sqlite:// URL names; None for a private in-memory store.
    rest = url[len("sqlite://"):]
    if rest in ("", "/", "/:memory:"):
        return None
    if not rest.startswith("/"):
        raise ConfigurationError(
            "SQLite URLs look like sqlite:///relative.db or sqlite:////absolute/path.db"
        )
    return rest[1:]


def _open_sqlite(url: str, *, create: bool = True) -> KeyStore:
    path = _sqlite_path(url)
    if path is not None and create:
        directory = os.path.dirname(path)
        if directory and not os.path.isdir(directory):
            # SQLite would say only "unable to open database file".
            raise ConfigurationError(
                f"the directory {directory!r} does not exist: create it, or fix the path"
            )
    return SQLiteKeyStore(":memory:" if path is None else path, create=create)


def _open_sqlalchemy(url: str, *, create: bool = True) -> KeyStore:
    try:
        # Imported here: SQLAlchemy is an optional extra.
        from ._sqlalchemy import SQLAlchemyKeyStore
    except ImportError as exc:
        raise ConfigurationError(
            f"store URL {_redact(url)!r} needs SQLAlchemy: pip install 'aqnt-auth[sql]' ({exc})"
        ) from None
    return SQLAlchemyKeyStore(url, create_schema=create)


def _redact(url: str) -> str:
    # Never echo a database password into an error message.
    scheme, sep, rest = url.partition("://")
    creds, at, host = rest.rpartition("@")
    if at and ":" in creds:
        return f"{scheme}{sep}{creds.split(':', 1)[0]}:***@{host}"
    return url


register_store_scheme("memory", lambda url: MemoryKeyStore())
_SCHEMES["sqlite"] = (_open_sqlite, True)


def open_store(url: str | KeyStore, *, create: bool = True) -> KeyStore:
    """Return the store a URL names; a store object is returned unchanged.

    * ``memory://``: an in-process :class:`MemoryKeyStore`.
    * ``sqlite:///relative.db``, ``sqlite:////absolute.db``,
      ``sqlite:///:memory:``: the embedded :class:`SQLiteKeyStore`.
    * ``postgresql+psycopg://...`` and other SQLAlchemy URLs: the SQL store
      (the ``sql`` extra).

    With ``create=False`` the store must exist already: a SQLite file that is
    missing (or holds no store) and SQL tables that are missing raise
    :class:`~aqnt_auth.StoreNotFound`, and nothing is created.  Commands
    that only read or change existing keys open their store this way.
    """
    if not isinstance(url, str):
        return url
    scheme, sep, _ = url.partition("://")
    if not sep:
        raise ConfigurationError(
            f"store URL {_redact(url)!r} has no scheme (try {DEFAULT_STORE_URL})"
        )
    entry = _SCHEMES.get(scheme)
    if entry is not None:
        opener, takes_create = entry
        return opener(url, create=create) if takes_create else opener(url)
    if "+" in scheme or scheme in ("postgresql", "postgres", "mysql", "mariadb"):
        return _open_sqlalchemy(url, create=create)
    raise ConfigurationError(f"unknown store URL scheme {scheme!r}")


def open_store_to_serve(store: str | KeyStore) -> KeyStore:
    """:func:`open_store` for an app that is starting: a URL that is
    malformed or cannot be opened raises :class:`~aqnt_auth.StoreOpenError`
    naming the URL (password redacted) and the reason, whatever the store's
    own error was."""
    if not isinstance(store, str):
        return store
    try:
        return open_store(store)
    except StoreOpenError:
        raise
    except (ConfigurationError, StoreUnavailable) as exc:
        raise StoreOpenError(f"cannot open the key store {store_url(store)}: {exc}") from None


class UnopenedStore(MemoryKeyStore):
    """Stands in for a store that could not be opened (*error*), where an
    app must keep serving (an ASGI server that runs no lifespan start-up):
    every read raises :class:`~aqnt_auth.StoreUnavailable`, so every request
    that needs a key is answered 503 and none is ever accepted."""

    def __init__(self, error: StoreOpenError) -> None:
        super().__init__()
        self.error = error

    def __repr__(self) -> str:
        return f"UnopenedStore({str(self.error)!r})"

    def get(self, key_id: str) -> KeyRecord | None:
        raise StoreUnavailable(str(self.error))


def store_url(store: str | KeyStore) -> str:
    """The URL to show for *store* (a URL or a store object): a password is
    redacted, and a SQLite file is named by its absolute path, so that
    ``sqlite:///aqnt_keys.db`` opened in another directory is seen to be
    another store."""
    if isinstance(store, str):
        if store.startswith("sqlite://"):
            try:
                path = _sqlite_path(store)
            except ConfigurationError:
                return store
            return "sqlite:///:memory:" if path is None else _sqlite_file_url(path)
        return _redact(store)
    if isinstance(store, SQLiteKeyStore):
        private = store._tempdir is not None
        return "sqlite:///:memory:" if private else _sqlite_file_url(store.path)
    if isinstance(store, MemoryKeyStore):
        return "memory://"
    # The SQL store: its engine's URL, which SQLAlchemy renders without the password.
    url = getattr(getattr(store, "engine", None), "url", None)
    render = getattr(url, "render_as_string", None)
    if callable(render):
        return str(render(hide_password=True))
    return repr(store)  # a store of another kind is named as it names itself


def _sqlite_file_url(path: str) -> str:
    return "sqlite:///" + os.path.abspath(path)
