"""Async access to a synchronous store, without blocking the event loop."""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from .._audit import AuditEvent, AuditLog
from .._quota import QuotaUse
from .._records import KeyRecord, UsageDelta
from ._protocol import AsyncKeyStore, KeyStore, RotationPlan

__all__ = ["ThreadedAsyncStore", "to_async"]

T = TypeVar("T")


class ThreadedAsyncStore:
    """An :class:`AsyncKeyStore` over a :class:`KeyStore`.

    A blocking store's calls run in the loop's default executor; a store
    that does no I/O is called inline, because a thread hop (tens of
    microseconds) would cost more than the call itself.
    """

    def __init__(self, store: KeyStore) -> None:
        self.sync = store
        self._inline = not store.blocking

    def __repr__(self) -> str:
        return f"ThreadedAsyncStore({self.sync!r})"

    async def _run(self, func: Callable[..., T], *args: object, **kwargs: object) -> T:
        if self._inline:
            return func(*args, **kwargs)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(None, functools.partial(func, *args, **kwargs))

    async def get(self, key_id: str) -> KeyRecord | None:
        return await self._run(self.sync.get, key_id)

    async def add(self, record: KeyRecord, *, audit: AuditEvent | None = None) -> None:
        await self._run(self.sync.add, record, audit=audit)

    async def list(self, *, owner: str | None = None) -> list[KeyRecord]:
        return await self._run(self.sync.list, owner=owner)

    async def revoke(self, key_id: str, at: dt.datetime, *, audit: AuditEvent | None = None
                     ) -> KeyRecord | None:
        return await self._run(self.sync.revoke, key_id, at, audit=audit)

    async def set_expiry(self, key_id: str, at: dt.datetime | None, *,
                         audit: AuditEvent | None = None) -> KeyRecord | None:
        return await self._run(self.sync.set_expiry, key_id, at, audit=audit)

    async def update(self, key_id: str, changes: Mapping[str, Any], *,
                     audit: AuditEvent | None = None) -> KeyRecord | None:
        return await self._run(self.sync.update, key_id, changes, audit=audit)

    async def rotate(self, key_id: str, plan: RotationPlan, *,
                     audit: AuditEvent | None = None) -> KeyRecord | None:
        return await self._run(self.sync.rotate, key_id, plan, audit=audit)

    async def consume_quota(self, key_id: str, now: dt.datetime) -> QuotaUse | None:
        return await self._run(self.sync.consume_quota, key_id, now)

    async def replace_hash(self, key_id: str, old_hash: str, new_hash: str) -> bool:
        return await self._run(self.sync.replace_hash, key_id, old_hash, new_hash)

    async def delete(self, key_id: str, *, audit: AuditEvent | None = None) -> bool:
        return await self._run(self.sync.delete, key_id, audit=audit)

    async def audit_entries(self, *, key_id: str | None = None,
                            since: dt.datetime | None = None, until: dt.datetime | None = None,
                            limit: int | None = None) -> AuditLog:
        return await self._run(self.sync.audit_entries, key_id=key_id, since=since,
                               until=until, limit=limit)

    async def record_usage(self, usage: Mapping[str, UsageDelta]) -> None:
        await self._run(self.sync.record_usage, usage)

    async def close(self) -> None:
        await self._run(self.sync.close)


def to_async(store: KeyStore) -> AsyncKeyStore:
    """The store's native async twin (its ``aio`` attribute) if it has one,
    else a :class:`ThreadedAsyncStore` over it."""
    native = getattr(store, "aio", None)
    if native is not None:
        return native  # type: ignore[no-any-return]
    return ThreadedAsyncStore(store)
