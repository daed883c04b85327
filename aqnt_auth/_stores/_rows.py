"""A key record as a row of a key table, and back: what the SQL stores share.

Every SQL store keeps one column per record field, in :data:`KEY_COLUMNS`
order.  What differs between them is what their driver hands back for a time
or a JSON column; a store converts those itself (the embedded SQLite store,
which reads integers and JSON text on every request, builds its records on
its own), then :func:`record_from_row` makes the record.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final

from .._records import KeyRecord

__all__ = ["KEY_COLUMNS", "UPDATABLE_COLUMNS", "record_from_row", "row_from_record",
           "update_columns"]

#: The key table's columns, one per :class:`~aqnt_auth.KeyRecord` field, in
#: the order the stores select them.
KEY_COLUMNS: Final = (
    "id", "name", "mode", "prefix", "hash", "hint", "created_at", "expires_at", "revoked_at",
    "last_used_at", "usage_count", "scopes", "read_only", "allowed_paths", "owner", "metadata",
    "rotated_from", "disabled_at", "rate_limits", "rate_limit_shared", "quota_remaining",
    "quota_refill", "quota_refilled_at", "allowed_ips", "lineage_id",
)

#: The columns :meth:`~aqnt_auth.KeyStore.update` may change: a key's name,
#: scopes and policies, never its secret, identity or history.
UPDATABLE_COLUMNS: Final = frozenset({
    "name", "scopes", "disabled_at", "rate_limits", "rate_limit_shared", "quota_remaining",
    "quota_refill", "quota_refilled_at", "allowed_ips",
})

#: The columns holding JSON lists.
_LISTS: Final = frozenset({"scopes", "allowed_paths", "rate_limits", "allowed_ips"})


def row_from_record(record: KeyRecord) -> dict[str, Any]:
    """The column values of *record*: lists and a dict for the JSON columns,
    the times as they are."""
    return {
        "id": record.id,
        "name": record.name,
        "mode": record.mode,
        "prefix": record.prefix,
        "hash": record.hash,
        "hint": record.hint,
        "created_at": record.created_at,
        "expires_at": record.expires_at,
        "revoked_at": record.revoked_at,
        "last_used_at": record.last_used_at,
        "usage_count": record.usage_count,
        "scopes": list(record.scopes),
        "read_only": record.read_only,
        "allowed_paths": list(record.allowed_paths),
        "owner": record.owner,
        "metadata": dict(record.metadata),
        "rotated_from": record.rotated_from,
        "disabled_at": record.disabled_at,
        "rate_limits": list(record.rate_limits),
        "rate_limit_shared": record.rate_limit_shared,
        "quota_remaining": record.quota_remaining,
        "quota_refill": record.quota_refill,
        "quota_refilled_at": record.quota_refilled_at,
        "allowed_ips": list(record.allowed_ips),
        "lineage_id": record.lineage_id,
    }


def update_columns(changes: Mapping[str, Any]) -> dict[str, Any]:
    """*changes* (record field names and values) as column values, refusing
    any column :data:`UPDATABLE_COLUMNS` does not name."""
    unknown = set(changes) - UPDATABLE_COLUMNS
    if unknown:
        raise ValueError(f"not updatable: {', '.join(sorted(unknown))}")
    return {name: list(value) if name in _LISTS else value for name, value in changes.items()}


def record_from_row(row: Sequence[Any]) -> KeyRecord:
    """The record of the values of every column, in :data:`KEY_COLUMNS` order,
    as Python values: aware datetimes, lists (or tuples) and a mapping."""
    return KeyRecord(
        id=row[0],
        name=row[1],
        mode=row[2],
        prefix=row[3],
        hash=row[4],
        hint=row[5],
        created_at=row[6],
        expires_at=row[7],
        revoked_at=row[8],
        last_used_at=row[9],
        usage_count=row[10],
        scopes=tuple(row[11]),
        read_only=bool(row[12]),
        allowed_paths=tuple(row[13]),
        owner=row[14],
        metadata=row[15],
        rotated_from=row[16],
        disabled_at=row[17],
        rate_limits=tuple(row[18]),
        rate_limit_shared=bool(row[19]),
        quota_remaining=row[20],
        quota_refill=row[21],
        quota_refilled_at=row[22],
        allowed_ips=tuple(row[23]),
        lineage_id=row[24],
    )
