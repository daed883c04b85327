"""An in-process store: for tests, demos and single-process apps."""

from __future__ import annotations

import builtins
import dataclasses
import datetime as dt
import threading
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final

from .._audit import AuditEntry, AuditEvent, AuditLog, ensure, select_entries
from .._errors import KeyStateError
from .._quota import QuotaRow, QuotaUse, is_moved, quota_step
from .._records import KeyRecord, UsageDelta
from .._usage_history import TOP_PATHS, UsageRow, merge_paths, merge_rows
from ._protocol import RotationPlan
from ._rows import update_columns

__all__ = ["MemoryKeyStore"]

#: Every field, derived ones included (see _with_quota).
_FIELDS: Final = tuple(f.name for f in dataclasses.fields(KeyRecord))


def _with_quota(record: KeyRecord, quota: QuotaRow) -> KeyRecord:
    """*record* with another count and refill time: :func:`dataclasses.replace`
    without its cost (several microseconds), which a request with a quota
    would pay each time.  The derived fields are copied: none of them
    depends on the count or the refill time (the key keeps a quota)."""
    new = object.__new__(KeyRecord)
    for name in _FIELDS:
        object.__setattr__(new, name, getattr(record, name))
    object.__setattr__(new, "quota_remaining", quota.remaining)
    object.__setattr__(new, "quota_refilled_at", quota.refilled_at)
    return new


class MemoryKeyStore:
    """Keys in a dict.  Thread-safe; does no I/O, so async callers call it directly.

    Reads take no lock: records are immutable and a dict lookup is atomic,
    so a reader sees either the old record or the new one.  The audit log is
    a list, written under the lock with the change.
    """

    blocking = False

    def __init__(self, records: Iterable[KeyRecord] = ()) -> None:
        self._records: dict[str, KeyRecord] = {r.id: r for r in records}
        self._lock = threading.Lock()
        self._audit: list[AuditEntry] = []
        self._usage: dict[tuple[str, int], UsageRow] = {}
        if type(self).get is MemoryKeyStore.get:
            # get() is the dict's own get, with no Python frame: the warm
            # path reads a record on every request.  (Not where a subclass
            # has its own get(): an instance attribute would hide it.)
            self.__dict__["get"] = self._records.get

    def __repr__(self) -> str:
        return f"MemoryKeyStore({len(self._records)} keys)"

    def get(self, key_id: str) -> KeyRecord | None:
        return self._records.get(key_id)

    def _log(self, entries: list[AuditEntry]) -> None:
        # Under the lock: ids in the order the changes were made.
        for entry in entries:
            self._audit.append(dataclasses.replace(entry, id=len(self._audit) + 1))

    def add(self, record: KeyRecord, *, audit: AuditEvent | None = None) -> None:
        with self._lock:
            if record.id in self._records:
                raise KeyStateError(f"key id {record.id!r} already exists")
            entries = ensure(audit).entries(None, record)
            self._records[record.id] = record
            self._log(entries)

    def list(self, *, owner: str | None = None) -> list[KeyRecord]:
        records = [r for r in self._records.values() if owner is None or r.owner == owner]
        return sorted(records, key=lambda r: (r.created_at, r.id))

    def _replace(self, before: KeyRecord, audit: AuditEvent | None, **changes: Any
                 ) -> KeyRecord:
        after = dataclasses.replace(before, **changes)
        entries = ensure(audit).entries(before, after)
        self._records[before.id] = after
        self._log(entries)
        return after

    def revoke(self, key_id: str, at: dt.datetime, *, audit: AuditEvent | None = None
               ) -> KeyRecord | None:
        with self._lock:
            record = self._records.get(key_id)
            if record is None:
                return None
            if record.revoked_at is None:
                record = self._replace(record, audit, revoked_at=at)
            return record

    def set_expiry(self, key_id: str, at: dt.datetime | None, *,
                   audit: AuditEvent | None = None) -> KeyRecord | None:
        with self._lock:
            record = self._records.get(key_id)
            if record is None:
                return None
            if not record.allows_expiry(at):
                raise KeyStateError(record.expiry_refusal(at))
            return self._replace(record, audit, expires_at=at)

    def update(self, key_id: str, changes: Mapping[str, Any], *,
               audit: AuditEvent | None = None) -> KeyRecord | None:
        update_columns(changes)  # refuses what may not change
        with self._lock:
            record = self._records.get(key_id)
            if record is None or record.revoked_at is not None:
                return record
            return self._replace(record, audit, **changes)

    def rotate(self, key_id: str, plan: RotationPlan, *, audit: AuditEvent | None = None
               ) -> KeyRecord | None:
        with self._lock:
            record = self._records.get(key_id)
            if record is None:
                return None
            successors = sorted((r for r in self._records.values() if r.rotated_from == key_id),
                                key=lambda r: (r.created_at, r.id))
            successor, expires_at = plan(record, successors)
            if successor.id in self._records:
                raise KeyStateError(f"key id {successor.id!r} already exists")
            after = dataclasses.replace(record, expires_at=expires_at)
            if successor.metered:  # the successor took the quota: mark it moved
                after = dataclasses.replace(after, quota_remaining=0, quota_refilled_at=None)
            entries = ensure(audit).rotation(record, after, successor)
            self._records[successor.id] = successor
            self._records[key_id] = after
            self._log(entries)
            return after

    def consume_quota(self, key_id: str, now: dt.datetime) -> QuotaUse | None:
        with self._lock:
            record = self._records.get(key_id)
            for _ in range(8):
                if record is None:
                    return None
                if record.quota_remaining is None:
                    return QuotaUse(True, None, None)
                if not is_moved(record.quota_remaining, record.quota_refilled_at):
                    break
                # Moved at a rotation: the newest successor holds the counter.
                successors = [r for r in self._records.values() if r.rotated_from == record.id]
                if not successors:
                    return QuotaUse(False, 0, None)
                record = max(successors, key=lambda r: (r.created_at, r.id))
            else:
                return QuotaUse(False, 0, None)
            row = QuotaRow(record.quota_remaining, record.quota_refill, record.quota_refilled_at)
            use, new = quota_step(row, now)
            if new != row:
                self._records[record.id] = _with_quota(record, new)
            return use

    def replace_hash(self, key_id: str, old_hash: str, new_hash: str) -> bool:
        with self._lock:
            record = self._records.get(key_id)
            if record is None or record.hash != old_hash:
                return False
            self._records[key_id] = dataclasses.replace(record, hash=new_hash)
            return True

    def delete(self, key_id: str, *, audit: AuditEvent | None = None) -> bool:
        with self._lock:
            record = self._records.get(key_id)
            if record is None:
                return False
            entries = ensure(audit).entries(record, None)
            del self._records[key_id]
            self._log(entries)
            return True

    def audit_entries(self, *, key_id: str | None = None, since: dt.datetime | None = None,
                      until: dt.datetime | None = None, limit: int | None = None
                      ) -> AuditLog:
        return select_entries(list(self._audit), key_id, since, until, limit)

    def record_usage(self, usage: Mapping[str, UsageDelta]) -> None:
        with self._lock:
            for key_id, delta in usage.items():
                record = self._records.get(key_id)
                if record is None:
                    continue
                last = record.last_used_at
                if last is None or delta.last_used_at > last:
                    last = delta.last_used_at
                self._records[key_id] = dataclasses.replace(
                    record, usage_count=record.usage_count + delta.count, last_used_at=last
                )

    def record_usage_history(self, rows: Sequence[UsageRow], *,
                             prune_before: int | None = None) -> None:
        with self._lock:
            usage = self._usage
            for row in rows:
                slot = (row.key_id, row.hour)
                old = usage.get(slot)
                if old is None:
                    row = dataclasses.replace(row, paths=merge_paths({}, row.paths))
                else:
                    row = merge_rows(old, row, keep_paths=TOP_PATHS)
                usage[slot] = row
            if prune_before is not None:
                for slot in [s for s in usage if s[1] < prune_before]:
                    del usage[slot]

    def usage_rows(self, *, key_id: str | None = None, since: int, until: int
                   ) -> builtins.list[UsageRow]:
        with self._lock:
            rows = [row for (kid, hour), row in self._usage.items()
                    if since <= hour < until and (key_id is None or kid == key_id)]
        return sorted(rows, key=lambda row: (row.hour, row.key_id))

    def close(self) -> None:
        pass
