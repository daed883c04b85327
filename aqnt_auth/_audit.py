"""The audit log: what changed about a key, when, and who changed it.

Every store writes the entries of a change in the transaction that makes it
(:meth:`KeyStore.add`, ``revoke``, ``set_expiry``, ``update``, ``rotate``,
``delete`` take an :class:`AuditEvent`), so a change that fails writes no
entry and no committed change lacks one.  What an entry says is decided here,
once, from the record before and after the change: every store and every
front end (CLI, Flask and Django commands, the admin, the console) gets the
same entries.

An entry never holds a secret or a hash: only the fields in
:data:`AUDITED_FIELDS`, whose values are public (the key's hint at most).
Usage counters (``usage_count``, ``last_used_at``) are not changes to a key
and are never audited; neither is a hash upgrade (``replace_hash``: the same
secret, stronger parameters).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import getpass
import json
import socket
from collections.abc import Mapping
from typing import Any, Final, Literal

from ._errors import ConfigurationError
from ._records import KeyRecord, utcnow

__all__ = [
    "AUDITED_FIELDS",
    "AUDIT_EVENTS",
    "AuditEntry",
    "AuditEvent",
    "AuditEventName",
    "AuditLog",
    "check_actor",
    "default_actor",
    "ensure",
    "entry_of_row",
    "select_entries",
]

AuditEventName = Literal["created", "rotated", "revoked", "expiry_set", "expiry_cleared",
                         "disabled", "enabled", "updated", "deleted", "scanner_revoked"]

#: Every event an entry may name.
AUDIT_EVENTS: Final[tuple[AuditEventName, ...]] = (
    "created", "rotated", "revoked", "expiry_set", "expiry_cleared", "disabled", "enabled",
    "updated", "deleted", "scanner_revoked",
)

#: The record fields an entry may show: every field but the hash and the usage counters.
AUDITED_FIELDS: Final = (
    "name", "mode", "prefix", "hint", "created_at", "expires_at", "revoked_at", "scopes",
    "read_only", "allowed_paths", "owner", "metadata", "rotated_from", "disabled_at",
    "rate_limits", "rate_limit_shared", "quota_remaining", "quota_refill",
    "quota_refilled_at", "allowed_ips", "lineage_id",
)

#: The longest actor string kept.
MAX_ACTOR_LENGTH: Final = 200


#: A list of entries, as the stores' ``audit_entries`` return them (a name that
#: the ``list`` methods of store classes do not shadow).
AuditLog = list["AuditEntry"]


def check_actor(actor: str | None) -> str | None:
    """*actor* if it is printable text of at most 200 characters (or ``None``)."""
    if actor is None:
        return None
    if not isinstance(actor, str) or not actor.strip() or not actor.isprintable() \
            or len(actor) > MAX_ACTOR_LENGTH:
        raise ConfigurationError(
            f"actor must be printable text of 1 to {MAX_ACTOR_LENGTH} characters")
    return actor.strip()


def default_actor() -> str:
    """``user@host``: who runs this process, as the command-line front ends
    name the actor of their changes."""
    try:
        user = getpass.getuser()
    except (OSError, KeyError):  # no login name and no passwd entry
        user = "unknown"
    actor = f"{user}@{socket.gethostname() or 'localhost'}"
    return actor if actor.isprintable() and len(actor) <= MAX_ACTOR_LENGTH else "unknown"


def _json_value(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return value.isoformat()
    if isinstance(value, tuple):
        return list(value)
    if isinstance(value, Mapping):
        # A copy that JSON can hold (metadata is JSON already).
        return json.loads(json.dumps(dict(value), sort_keys=True))
    return value


def _snapshot(record: KeyRecord) -> dict[str, Any]:
    return {name: _json_value(getattr(record, name)) for name in AUDITED_FIELDS}


def _diff(before: KeyRecord, after: KeyRecord) -> tuple[dict[str, Any], dict[str, Any]]:
    old: dict[str, Any] = {}
    new: dict[str, Any] = {}
    for name in AUDITED_FIELDS:
        was, now = getattr(before, name), getattr(after, name)
        if was != now:
            old[name] = _json_value(was)
            new[name] = _json_value(now)
    return old, new


@dataclasses.dataclass(frozen=True, slots=True)
class AuditEntry:
    """One change to one key, as the audit log keeps it.

    :attr:`old` and :attr:`new` hold the changed fields' values before and
    after (JSON-ready: ISO 8601 times, lists): the whole public record as
    :attr:`new` of ``created`` and :attr:`old` of ``deleted``.  Never a
    secret or a hash.  :attr:`id` is the store's row id (``None`` in an
    event hook, which sees the entry as it was written).
    """

    at: dt.datetime
    key_id: str
    event: AuditEventName
    actor: str | None = None
    old: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    new: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    #: The other key of a rotation: the successor on the old key's
    #: ``rotated`` entry, the predecessor on the new key's ``created`` entry.
    related_key_id: str | None = None
    id: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """The entry, JSON-ready."""
        return {"id": self.id, "at": self.at.isoformat(), "key_id": self.key_id,
                "event": self.event, "actor": self.actor, "old": dict(self.old),
                "new": dict(self.new), "related_key_id": self.related_key_id}

    def summary(self) -> str:
        """The change in a line: ``name: "a" -> "b"`` per changed field (the
        name and mode of a created or deleted key), and the other key of a
        rotation.  What the CLI and the Django admin show."""
        if self.event in ("created", "deleted"):
            record = self.new if self.event == "created" else self.old
            parts = [f"{json.dumps(record.get('name'))} ({record.get('mode')})"]
        else:
            parts = [f"{name}: {json.dumps(self.old.get(name))} -> {json.dumps(value)}"
                     for name, value in self.new.items()]
        if self.related_key_id is not None:
            other = "successor" if self.event == "rotated" else "replaces"
            parts.append(f"{other} {self.related_key_id}")
        return "; ".join(parts)

    def old_json(self) -> str:
        """:attr:`old` as the JSON text SQL stores keep."""
        return json.dumps(dict(self.old), sort_keys=True)

    def new_json(self) -> str:
        """:attr:`new` as the JSON text SQL stores keep."""
        return json.dumps(dict(self.new), sort_keys=True)


@dataclasses.dataclass(slots=True)
class AuditEvent:
    """Who makes a change, and when: what a caller hands a store's changing
    method, which writes the entries in its transaction.

    :param actor: who (``alice@host``, ``django:admin``...); ``None``: unknown.
    :param at: when (default: when the store writes it).
    :param event: the event to name instead of the one the change implies
        (the leak scanner's ``scanner_revoked``).

    A store calls :meth:`entries` with the record as it was and as it is,
    inside its transaction, and writes what it returns; the entries are
    kept in :attr:`written` for the caller's event hooks, which run once
    the store call has returned (committed).
    """

    actor: str | None = None
    at: dt.datetime | None = None
    event: AuditEventName | None = None
    #: The entries of the last :meth:`entries` call.
    written: list[AuditEntry] = dataclasses.field(default_factory=list)

    def __post_init__(self) -> None:
        self.actor = check_actor(self.actor)
        if self.event is not None and self.event not in AUDIT_EVENTS:
            raise ConfigurationError(f"unknown audit event {self.event!r}")
        if self.at is not None and self.at.tzinfo is None:
            raise ConfigurationError("the audit time must be timezone-aware")

    def _entry(self, event: AuditEventName, key_id: str, old: dict[str, Any],
               new: dict[str, Any], related: str | None = None) -> AuditEntry:
        return AuditEntry(at=self.at or utcnow(), key_id=key_id, event=event,
                          actor=self.actor, old=old, new=new, related_key_id=related)

    def entries(self, before: KeyRecord | None, after: KeyRecord | None) -> list[AuditEntry]:
        """The entries of a change from *before* to *after* (``None``: no such
        record, so created or deleted): none when nothing audited changed."""
        self.written = self._entries(before, after)
        return self.written

    def _entries(self, before: KeyRecord | None, after: KeyRecord | None) -> list[AuditEntry]:
        if before is None and after is None:
            return []
        if before is None:
            assert after is not None
            return [self._entry("created", after.id, {}, _snapshot(after), after.rotated_from)]
        if after is None:
            return [self._entry("deleted", before.id, _snapshot(before), {})]
        old, new = _diff(before, after)
        if not new:
            return []
        return [self._entry(self.event or _event_of(old, new), after.id, old, new)]

    def rotation(self, before: KeyRecord, after: KeyRecord, successor: KeyRecord
                 ) -> list[AuditEntry]:
        """The entries of a rotation: ``rotated`` on the old key (its expiry,
        naming the successor) and ``created`` on the successor (naming the
        old key), in that order."""
        old, new = _diff(before, after)
        self.written = [
            self._entry("rotated", after.id, old, new, successor.id),
            self._entry("created", successor.id, {}, _snapshot(successor), after.id),
        ]
        return self.written


def _event_of(old: Mapping[str, Any], new: Mapping[str, Any]) -> AuditEventName:
    changed = set(new)
    if changed == {"revoked_at"}:
        return "revoked"
    if changed == {"expires_at"}:
        return "expiry_cleared" if new["expires_at"] is None else "expiry_set"
    if changed == {"disabled_at"}:
        return "enabled" if new["disabled_at"] is None else "disabled"
    return "updated"


def ensure(audit: AuditEvent | None) -> AuditEvent:
    """*audit*, or an event with no actor: a store writes an entry for every
    change, whoever calls it."""
    return AuditEvent() if audit is None else audit


def entry_of_row(row_id: int, at: dt.datetime, key_id: str, event: str, actor: str | None,
                 old: Any, new: Any, related: str | None) -> AuditEntry:
    """An entry as a store reads it back (*old* and *new*: JSON text or mappings)."""
    return AuditEntry(
        id=int(row_id), at=at, key_id=key_id, event=event,  # type: ignore[arg-type]
        actor=actor, old=json.loads(old) if isinstance(old, (str, bytes)) else dict(old or {}),
        new=json.loads(new) if isinstance(new, (str, bytes)) else dict(new or {}),
        related_key_id=related,
    )


def select_entries(entries: list[AuditEntry], key_id: str | None, since: dt.datetime | None,
                   until: dt.datetime | None, limit: int | None) -> list[AuditEntry]:
    """The entries of a query over an in-memory log, newest first (the
    memory store's, and the order every store returns)."""
    found = [e for e in entries
             if (key_id is None or e.key_id == key_id)
             and (since is None or e.at >= since) and (until is None or e.at < until)]
    found.sort(key=lambda e: (e.at, e.id or 0), reverse=True)
    return found if limit is None else found[:limit]
