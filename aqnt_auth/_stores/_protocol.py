"""The contract between the authenticator and wherever keys are kept."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

from .._audit import AuditEvent, AuditLog
from .._quota import QuotaUse
from .._records import KeyRecord, UsageDelta
from .._usage_history import UsageRow

__all__ = ["AsyncKeyStore", "KeyStore", "RotationPlan", "UsageHistoryStore"]

#: Decides a rotation inside a store's transaction: given the old key's
#: record and its successors (the records whose ``rotated_from`` is its id),
#: return the successor to insert and the old key's new expiry, or raise to
#: refuse.  Pure and quick: it runs while the store holds its write lock.
RotationPlan = Callable[[KeyRecord, Sequence[KeyRecord]], "tuple[KeyRecord, dt.datetime | None]"]


@runtime_checkable
class KeyStore(Protocol):
    """A synchronous key store.

    Implementations must be safe to call from several threads at once, and
    raise :class:`~aqnt_auth.StoreUnavailable` (never an auth error) when
    the backing storage cannot answer.  Records are immutable values: a store
    may hand out the same record object to many callers.

    ``blocking`` says whether calls do I/O.  Async callers run the calls of a
    blocking store in worker threads and call a non-blocking one directly, so
    a warm request on an in-memory store never leaves the event loop.  A
    store with a native async twin exposes it as ``aio``.  A blocking store
    with a record cache may also offer ``peek(key_id)``: the record if it
    can answer without I/O (a fresh, trustworthy cache entry), else ``None``
    meaning "ask :meth:`get`" (never "no such key"); the event loop then
    serves warm requests without a coroutine or a thread.
    """

    blocking: bool

    def get(self, key_id: str) -> KeyRecord | None:
        """Return the record with *key_id*, or ``None``.  On every request: keep it lean."""

    def add(self, record: KeyRecord, *, audit: AuditEvent | None = None) -> None:
        """Store a new record.  An existing id raises :class:`~aqnt_auth.KeyStateError`.

        Every method that changes a key takes *audit* (who and when; ``None``:
        nobody in particular, now) and writes the entries
        :meth:`AuditEvent.entries <aqnt_auth.AuditEvent.entries>` gives for the
        record before and after the change, in the transaction that makes it:
        a change that fails or is refused writes none.
        """

    def list(self, *, owner: str | None = None) -> list[KeyRecord]:
        """All records (of *owner*, if given), oldest first."""

    def revoke(self, key_id: str, at: dt.datetime, *, audit: AuditEvent | None = None
               ) -> KeyRecord | None:
        """Mark the key revoked at *at*; an earlier revocation is kept.

        Returns the updated record, ``None`` for an unknown id.  Revocation
        is never undone: no store method clears ``revoked_at``.
        """

    def set_expiry(self, key_id: str, at: dt.datetime | None, *,
                   audit: AuditEvent | None = None) -> KeyRecord | None:
        """Set the expiry (``None``: never expires) if the rule allows it.

        Check and write are one atomic step (a conditional ``UPDATE``, or
        under the store's lock): only what
        :meth:`KeyRecord.allows_expiry <aqnt_auth.KeyRecord.allows_expiry>`
        accepts for the record as stored at that moment is written, so an
        expiry once set only moves earlier, and a revoked key never changes.
        Returns the updated record; ``None`` for an unknown id.  A refused
        change writes nothing and raises :class:`~aqnt_auth.KeyStateError`
        (:meth:`KeyRecord.expiry_refusal` says why).
        """

    def update(self, key_id: str, changes: Mapping[str, Any], *,
               audit: AuditEvent | None = None) -> KeyRecord | None:
        """Set the fields named in *changes* (record field names, among
        :data:`~aqnt_auth._stores._rows.UPDATABLE_COLUMNS`: name, scopes,
        ``disabled_at`` and the policies) in one write, unless the key is
        revoked (revocation is final: a revoked key is left as it is).

        Returns the record as it now is (check ``revoked_at``), ``None`` for
        an unknown id.  Every process's cached record of the key is
        invalidated as by :meth:`revoke`.
        """

    def rotate(self, key_id: str, plan: RotationPlan, *, audit: AuditEvent | None = None
               ) -> KeyRecord | None:
        """Replace a key by a successor, check and write in one transaction.

        Holding off every other change to *key_id* (a revocation waits, or
        is seen), read its record and its successors, call *plan* with them,
        insert the successor it returns and set the old key's expiry.  When
        the successor carries a quota (the plan copied the old key's, as read
        here), the old key's quota is marked moved (``quota_remaining = 0``,
        ``quota_refilled_at = NULL``) in the same transaction, so that both
        keys spend one counter (:meth:`consume_quota`).  If
        *plan* raises, nothing is written and the error propagates.  Returns
        the old record as updated; ``None`` for an unknown id (*plan* is not
        called).  An existing successor id raises
        :class:`~aqnt_auth.KeyStateError`.  The audit entries are those of
        :meth:`AuditEvent.rotation <aqnt_auth.AuditEvent.rotation>`.
        """

    def consume_quota(self, key_id: str, now: dt.datetime) -> QuotaUse | None:
        """Take one unit of the key's quota, atomically, as one request.

        Applies a refill that is due at *now* first, in the same atomic step
        (:func:`aqnt_auth._quota.quota_step`), then takes a unit if one is
        left.  Exact across threads, processes and servers: a conditional
        write (``UPDATE ... WHERE quota_remaining > 0``) or under the store's
        lock, never a read then a write, so no request is admitted beyond the
        quota.  A key whose quota moved to its successor at a rotation takes
        the unit from the successor's.  Returns what happened (a key without
        a quota is admitted with ``remaining=None``); ``None`` for an unknown
        id.  Invalidates no cached record: a cached ``quota_remaining`` is
        stale by design.
        """

    def replace_hash(self, key_id: str, old_hash: str, new_hash: str) -> bool:
        """Swap the stored hash if it is still *old_hash* (compare-and-swap)."""

    def delete(self, key_id: str, *, audit: AuditEvent | None = None) -> bool:
        """Remove the record; whether it existed.  Its audit entries stay."""

    def audit_entries(self, *, key_id: str | None = None, since: dt.datetime | None = None,
                      until: dt.datetime | None = None, limit: int | None = None
                      ) -> AuditLog:
        """The audit log (of *key_id*; at or after *since*, before *until*),
        newest first, at most *limit* entries."""

    def record_usage(self, usage: Mapping[str, UsageDelta]) -> None:
        """Add counts and advance ``last_used_at`` for many keys in one go.

        Counts from several processes must add up exactly; ``last_used_at``
        only moves forward.  Unknown ids are ignored.
        """

    def close(self) -> None:
        """Release connections.  Idempotent."""


@runtime_checkable
class AsyncKeyStore(Protocol):
    """The async twin of :class:`KeyStore`: the same methods, awaitable."""

    async def get(self, key_id: str) -> KeyRecord | None: ...

    async def add(self, record: KeyRecord, *, audit: AuditEvent | None = None) -> None: ...

    async def list(self, *, owner: str | None = None) -> list[KeyRecord]: ...

    async def revoke(self, key_id: str, at: dt.datetime, *, audit: AuditEvent | None = None
                     ) -> KeyRecord | None: ...

    async def set_expiry(self, key_id: str, at: dt.datetime | None, *,
                         audit: AuditEvent | None = None) -> KeyRecord | None: ...

    async def update(self, key_id: str, changes: Mapping[str, Any], *,
                     audit: AuditEvent | None = None) -> KeyRecord | None: ...

    async def rotate(self, key_id: str, plan: RotationPlan, *,
                     audit: AuditEvent | None = None) -> KeyRecord | None: ...

    async def consume_quota(self, key_id: str, now: dt.datetime) -> QuotaUse | None: ...

    async def replace_hash(self, key_id: str, old_hash: str, new_hash: str) -> bool: ...

    async def delete(self, key_id: str, *, audit: AuditEvent | None = None) -> bool: ...

    async def audit_entries(self, *, key_id: str | None = None,
                            since: dt.datetime | None = None, until: dt.datetime | None = None,
                            limit: int | None = None) -> AuditLog: ...

    async def record_usage(self, usage: Mapping[str, UsageDelta]) -> None: ...

    async def close(self) -> None: ...


@runtime_checkable
class UsageHistoryStore(Protocol):
    """A store that keeps usage history (issue #14): every store of the
    package does; a store of your own without these methods still serves
    keys, and the authenticator then keeps the per-key counters only.

    Usage rows live in their own table: writing them changes no key record,
    so no record cache is invalidated (no change-log trigger, no ``NOTIFY``).
    """

    def record_usage_history(self, rows: Sequence[UsageRow], *,
                             prune_before: int | None = None) -> None:
        """Add *rows* (deltas, one per key id and hour) in one transaction.

        Counts add up (``count = count + new``) so flushes from many processes
        add up exactly; the client count keeps the larger value; the last
        client and user agent are those of the later ``last_at``; paths merge
        by :func:`~aqnt_auth._usage_history.merge_paths`.  With
        *prune_before* (Unix seconds), rows of earlier hours are deleted in
        the same transaction.
        """

    def usage_rows(self, *, key_id: str | None = None, since: int, until: int
                   ) -> list[UsageRow]:
        """The rows of hours in ``[since, until)`` (Unix seconds), of *key_id*
        (``""``: the key-less rows) or of every key id (``None``), oldest first."""
