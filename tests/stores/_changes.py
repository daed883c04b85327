"""The key changes every record cache must see, from this process or another:
one table for the SQLite change-log tests and the PostgreSQL NOTIFY tests."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

from aqnt_auth import Argon2Hasher, KeyManager, KeyStore

from .contract import T0

__all__ = ["CHANGES", "changed"]


def _revoke(store: KeyStore, key_id: str) -> None:
    store.revoke(key_id, T0)


def _expire(store: KeyStore, key_id: str) -> None:
    store.set_expiry(key_id, T0)


def _rotate(store: KeyStore, key_id: str) -> None:
    KeyManager(store, hasher=Argon2Hasher("cheapest")).rotate(key_id, grace=dt.timedelta(0))


def _rehash(store: KeyStore, key_id: str) -> None:
    record = store.get(key_id)
    assert record is not None
    assert store.replace_hash(key_id, record.hash, "$argon2id$v=19$m=8,t=1,p=1$bmV3$bmV3")


def _disable(store: KeyStore, key_id: str) -> None:
    store.update(key_id, {"disabled_at": T0})


def _enable(store: KeyStore, key_id: str) -> None:
    # A disabled key enabled from elsewhere: the cached disabled record goes.
    assert store.update(key_id, {"disabled_at": None}) is not None


def _policies(store: KeyStore, key_id: str) -> None:
    store.update(key_id, {"allowed_ips": ("192.0.2.0/24",), "rate_limits": ("1/second",)})


def _delete(store: KeyStore, key_id: str) -> None:
    assert store.delete(key_id)


#: Each change by name.  ``enable`` expects the key created disabled, named
#: "was disabled".
CHANGES: dict[str, Callable[[KeyStore, str], None]] = {
    "revoke": _revoke, "expire": _expire, "rehash": _rehash, "delete": _delete,
    "disable": _disable, "enable": _enable, "policies": _policies, "rotate": _rotate,
}


def changed(store: KeyStore, key_id: str, change: str) -> bool:
    """Whether *store* now answers with the record as *change* left it."""
    record = store.get(key_id)
    if change == "delete":
        return record is None
    assert record is not None
    return {
        "revoke": record.revoked_at == T0,
        "expire": record.expires_at == T0,
        "rehash": record.hash.endswith("$bmV3$bmV3"),
        "disable": record.disabled_at == T0,
        "enable": record.disabled_at is None and record.name == "was disabled",
        "policies": record.allowed_ips == ("192.0.2.0/24",),
        "rotate": record.expires_at is not None,
    }[change]
