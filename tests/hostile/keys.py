"""The keys a hostile case can name, issued into an adapter's own store on first use.

A case's headers, path and query are templates: ``{live}`` becomes a valid
live key, ``{wrong_secret}`` that key with another secret but a correct
checksum, and so on (see :data:`NAMES`).  Keys are made at run time;
nothing key-shaped is committed.
"""

from __future__ import annotations

import datetime as dt
import re
import secrets
import string
from typing import Final

from aqnt_auth import KeyManager, checksum

CHECKSUM_LENGTH: Final = 6
SECRET_LENGTH: Final = 32

_BASE62: Final = string.digits + string.ascii_uppercase + string.ascii_lowercase
_PLACEHOLDER: Final = re.compile(rb"\{([a-z_]+)\}")


def _resum(head: str) -> str:
    """*head* with its correct checksum: a key that passes the offline checks."""
    return head + checksum(head)


def _other_char(char: str) -> str:
    return "A" if char != "A" else "B"


class KeySet:
    """Keys of every kind the table names, issued on first use.

    Stored keys (``live``, ``test``, ``revoked``...) are issued by
    *manager*, into the adapter's store; the others are derived from
    ``live`` (``wrong_secret``, ``bad_checksum``...) or random
    (``unknown``).  :attr:`stored` and :attr:`presented` list what a leak
    check must search for.
    """

    #: Keys held by the store.
    STORED: Final = ("live", "test", "revoked", "expired", "read_only", "charges_only",
                     "disabled", "ip_local", "quota_left", "quota_used_up", "quota_refilling",
                     "limited")
    #: Keys derived from ``live`` or made up, never stored.
    DERIVED: Final = ("wrong_secret", "unknown", "bad_checksum", "wrong_prefix", "mode_swapped",
                      "short", "long", "upper", "truncated")
    NAMES: Final = STORED + DERIVED

    def __init__(self, manager: KeyManager) -> None:
        self._manager = manager
        self._keys: dict[str, str] = {}
        self.hashes: list[str] = []
        self.presented: set[str] = set()

    def __getitem__(self, name: str) -> str:
        key = self._keys.get(name)
        if key is None:
            key = self._keys[name] = self._make(name)
        return key

    @property
    def stored(self) -> list[str]:
        """Every key issued into the store so far."""
        return [self._keys[n] for n in self.STORED if n in self._keys]

    def id_of(self, name: str) -> str:
        """The key id of a stored key."""
        return self._id(self[name])

    def fill(self, template: bytes) -> bytes:
        """*template* with each ``{name}`` replaced by that key (noted as presented)."""
        def replace(match: re.Match[bytes]) -> bytes:
            name = match.group(1).decode()
            if name not in self.NAMES:
                return match.group(0)
            key = self[name]
            self.presented.add(key)
            return key.encode()

        return _PLACEHOLDER.sub(replace, template)

    def _issue(self, name: str, **options: object) -> str:
        issued = self._manager.create(f"hostile {name}", **options)  # type: ignore[arg-type]
        self.hashes.append(issued.record.hash)
        return issued.key

    def _make(self, name: str) -> str:
        if name == "live":
            return self._issue(name)
        if name == "test":
            return self._issue(name, mode="test")
        if name == "revoked":
            key = self._issue(name)
            self._manager.revoke(self._id(key))
            return key
        if name == "expired":
            key = self._issue(name, expires_in=dt.timedelta(days=1))
            self._manager.expire(self._id(key), dt.datetime(2020, 1, 1, tzinfo=dt.timezone.utc))
            return key
        if name == "disabled":
            key = self._issue(name)
            self._manager.disable(self._id(key))
            return key
        if name == "ip_local":
            return self._issue(name, allowed_ips=["127.0.0.0/8", "::1"])
        if name == "quota_left":
            return self._issue(name, quota=1_000_000)
        if name == "quota_used_up":  # no refill: no Retry-After
            return self._issue(name, quota=0)
        if name == "quota_refilling":  # used up, refilled within the minute
            return self._issue(name, quota=0, quota_refill="1/minute")
        if name == "limited":
            return self._issue(name, rate_limits=["2/minute"])
        if name == "read_only":
            return self._issue(name, read_only=True)
        if name == "charges_only":
            return self._issue(name, allowed_paths=["/v1/charges"])
        return self._derive(name, self["live"])

    @staticmethod
    def _id(key: str) -> str:
        return key[-(12 + SECRET_LENGTH + CHECKSUM_LENGTH):][:12]

    @staticmethod
    def _derive(name: str, live: str) -> str:
        head = live[:-CHECKSUM_LENGTH]
        if name == "wrong_secret":  # the right id, another secret, a valid checksum
            return _resum(head[:-1] + _other_char(head[-1]))
        if name == "unknown":  # well formed, but no such id
            body = "".join(secrets.choice(_BASE62) for _ in range(12 + SECRET_LENGTH))
            return _resum("sk_live_" + body)
        if name == "bad_checksum":
            return live[:-1] + _other_char(live[-1])
        if name == "wrong_prefix":  # a valid key of a prefix this app does not accept
            return _resum("rk" + head[2:])
        if name == "mode_swapped":  # the live key's id and secret under sk_test_
            return _resum(head.replace("sk_live_", "sk_test_", 1))
        if name == "short":
            return _resum(head[:-1])
        if name == "long":
            return _resum(head + "A")
        if name == "upper":
            return live.upper()
        if name == "truncated":
            return live[:-1]
        raise KeyError(name)


def secret_parts(key: str) -> tuple[str, str]:
    """What must never appear in output: the whole *key* and its secret."""
    return key, key[-(SECRET_LENGTH + CHECKSUM_LENGTH):-CHECKSUM_LENGTH]
