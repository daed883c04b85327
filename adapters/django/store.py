"""``DjangoKeyStore``: the key store on the Django ORM.

Management calls (add, list, revoke...) are ordinary ORM queries.  The read
each request makes is not: building a queryset and compiling it to SQL costs
far more than running it, so :meth:`DjangoKeyStore.get` compiles its query
once per database connection and then runs the SQL text through Django's own
cursor, which keeps Django's error wrapping, ``execute_wrapper`` hooks and
query logging, and converts the columns with Django's own converters.
"""

from __future__ import annotations

import datetime as dt
import logging
import weakref
from collections.abc import Callable, Mapping
from typing import Any, Final, NamedTuple

from asgiref.sync import sync_to_async
from django.db import (
    DatabaseError,
    Error,
    IntegrityError,
    connections,
    router,
    transaction,
)
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models import Case, F, Value, When
from django.db.models.expressions import Expression

from aqnt_auth import KeyRecord, KeyStateError, StoreUnavailable, UsageDelta
from aqnt_auth.adapters.django.models import APIKey, aware, db_datetime, record_fields

__all__ = ["AsyncDjangoKeyStore", "DjangoKeyStore"]

log = logging.getLogger("aqnt_auth.store.django")

# The record's fields in the order of KeyRecord's constructor arguments.
_FIELDS: Final = (
    "id", "name", "mode", "prefix", "hash", "hint", "created_at", "expires_at", "revoked_at",
    "last_used_at", "usage_count", "scopes", "read_only", "allowed_paths", "owner", "metadata",
    "rotated_from",
)


class _Prepared(NamedTuple):
    sql: str
    # (column position, Django's converters for it, the column expression)
    converters: tuple[tuple[int, tuple[Callable[..., Any], ...], Expression], ...]


def _prepare(alias: str) -> _Prepared:
    # Any non-empty placeholder: Oracle would turn "" into IS NULL.
    query = APIKey.objects.using(alias).filter(pk="?").order_by().values_list(*_FIELDS).query
    compiler = query.get_compiler(using=alias)
    sql, params = compiler.as_sql()
    if len(params) != 1:  # pragma: no cover - guards against a Django change
        raise RuntimeError(f"unexpected parameters in the key lookup: {params!r}")
    expressions = [column for column, _, _ in compiler.select]
    found = compiler.get_converters(expressions)
    converters = tuple(
        (position, tuple(funcs), expression) for position, (funcs, expression) in found.items()
    )
    return _Prepared(sql, converters)


def _record(row: list[Any]) -> KeyRecord:
    created = row[6]
    return KeyRecord(
        id=row[0],
        name=row[1],
        mode=row[2],
        prefix=row[3],
        hash=row[4],
        hint=row[5],
        created_at=created if created.tzinfo is not None else aware(created),
        expires_at=aware(row[7]),
        revoked_at=aware(row[8]),
        last_used_at=aware(row[9]),
        usage_count=row[10],
        scopes=tuple(row[11]),
        read_only=row[12],
        allowed_paths=tuple(row[13]),
        owner=row[14],
        metadata=row[15],
        rotated_from=row[16],
    )


class DjangoKeyStore:
    """A :class:`~aqnt_auth.KeyStore` over the :class:`~.models.APIKey` model.

    :param using: the database alias; by default the database routers pick
        one for reads and one for writes (asked once, here).

    The store opens no connection of its own: it uses Django's, per thread,
    and :meth:`close` leaves them to Django.  Database errors become
    :class:`~aqnt_auth.StoreUnavailable` (answered with 503), never an
    authentication error; a duplicate id becomes
    :class:`~aqnt_auth.KeyStateError`.  Its async twin, :attr:`aio`, runs
    each call with ``sync_to_async(thread_sensitive=True)``, so under ASGI a
    request's queries run on the thread Django manages that request's
    connections on.
    """

    blocking = True

    def __init__(self, using: str | None = None) -> None:
        self.read_alias: str = using or router.db_for_read(APIKey) or "default"
        self.write_alias: str = using or router.db_for_write(APIKey) or "default"
        # Compiled per connection object: the SQL and the converters belong to
        # one backend, and Django has one connection object per thread.
        self._prepared: weakref.WeakKeyDictionary[BaseDatabaseWrapper, _Prepared] = (
            weakref.WeakKeyDictionary()
        )
        self.aio = AsyncDjangoKeyStore(self)

    def __repr__(self) -> str:
        if self.read_alias == self.write_alias:
            return f"DjangoKeyStore(using={self.read_alias!r})"
        return f"DjangoKeyStore(read={self.read_alias!r}, write={self.write_alias!r})"

    # -- the read on every request ----------------------------------------

    def get(self, key_id: str) -> KeyRecord | None:
        connection = connections[self.read_alias]
        prepared = self._prepared.get(connection)
        try:
            if prepared is None:
                prepared = self._prepared[connection] = _prepare(self.read_alias)
            with connection.cursor() as cursor:
                cursor.execute(prepared.sql, (key_id,))
                found = cursor.fetchone()
        except Error as exc:
            raise _unavailable(exc) from None
        if found is None:
            return None
        row = list(found)
        for position, funcs, expression in prepared.converters:
            value = row[position]
            for func in funcs:
                value = func(value, expression, connection)
            row[position] = value
        return _record(row)

    # -- management ----------------------------------------------------------

    def _rows(self) -> Any:
        return APIKey.objects.using(self.write_alias)

    def _fetch(self, key_id: str) -> KeyRecord | None:
        row = self._rows().filter(pk=key_id).first()
        return None if row is None else row.to_record()

    def add(self, record: KeyRecord) -> None:
        # Each write runs in its own savepoint, so a failure does not break a
        # transaction the caller may have open.
        try:
            with transaction.atomic(using=self.write_alias):
                self._rows().create(**record_fields(record))
        except IntegrityError:
            raise KeyStateError(f"key id {record.id!r} already exists") from None
        except Error as exc:
            raise _unavailable(exc) from None

    def list(self, *, owner: str | None = None) -> list[KeyRecord]:
        rows = APIKey.objects.using(self.read_alias).order_by("created_at", "id")
        if owner is not None:
            rows = rows.filter(owner=owner)
        try:
            return [row.to_record() for row in rows]
        except Error as exc:
            raise _unavailable(exc) from None

    def _update(self, key_id: str, filters: Mapping[str, Any], **changes: Any
                ) -> KeyRecord | None:
        try:
            with transaction.atomic(using=self.write_alias):
                self._rows().filter(pk=key_id, **filters).update(**changes)
                return self._fetch(key_id)
        except Error as exc:
            raise _unavailable(exc) from None

    def revoke(self, key_id: str, at: dt.datetime) -> KeyRecord | None:
        # Only a key not yet revoked is updated: the first revocation stays.
        return self._update(key_id, {"revoked_at__isnull": True}, revoked_at=db_datetime(at))

    def set_expiry(self, key_id: str, at: dt.datetime | None) -> KeyRecord | None:
        return self._update(key_id, {}, expires_at=db_datetime(at))

    def replace_hash(self, key_id: str, old_hash: str, new_hash: str) -> bool:
        try:
            with transaction.atomic(using=self.write_alias):
                rows: int = self._rows().filter(pk=key_id, hash=old_hash).update(hash=new_hash)
        except Error as exc:
            raise _unavailable(exc) from None
        return rows == 1

    def delete(self, key_id: str) -> bool:
        try:
            with transaction.atomic(using=self.write_alias):
                deleted: int = self._rows().filter(pk=key_id).delete()[0]
        except Error as exc:
            raise _unavailable(exc) from None
        return deleted > 0

    def record_usage(self, usage: Mapping[str, UsageDelta]) -> None:
        if not usage:
            return
        connection = connections[self.write_alias]
        if not connection.in_atomic_block:
            # Usage is flushed from a background thread whose connection no
            # request cycle ever closes: drop it if it broke, so a database
            # restart is survived, as Django does between requests.
            connection.close_if_unusable_or_obsolete()
        try:
            with transaction.atomic(using=self.write_alias):
                for key_id, delta in usage.items():
                    at = db_datetime(delta.last_used_at)
                    # count = count + n, so flushes from many processes add up.
                    self._rows().filter(pk=key_id).update(
                        usage_count=F("usage_count") + delta.count,
                        last_used_at=Case(
                            When(last_used_at__isnull=True, then=Value(at)),
                            When(last_used_at__lt=at, then=Value(at)),
                            default=F("last_used_at"),
                        ),
                    )
        except Error as exc:
            raise _unavailable(exc) from None

    def close(self) -> None:
        """Nothing to release: the connections are Django's."""


def _unavailable(exc: Error) -> StoreUnavailable:
    # The store never sees a key, only key ids, so the driver's message is
    # safe to log; the error itself names just the class.
    log.error("Django key store unavailable: %s: %s", type(exc).__name__, exc)
    kind = "database error" if isinstance(exc, DatabaseError) else "database interface error"
    return StoreUnavailable(f"Django key store unavailable: {kind} ({type(exc).__name__})")


class AsyncDjangoKeyStore:
    """:attr:`DjangoKeyStore.aio`: the same calls, each through
    ``sync_to_async(thread_sensitive=True)``."""

    def __init__(self, store: DjangoKeyStore) -> None:
        self.sync = store
        self.get = sync_to_async(store.get, thread_sensitive=True)
        self.add = sync_to_async(store.add, thread_sensitive=True)
        self.list = sync_to_async(store.list, thread_sensitive=True)
        self.revoke = sync_to_async(store.revoke, thread_sensitive=True)
        self.set_expiry = sync_to_async(store.set_expiry, thread_sensitive=True)
        self.replace_hash = sync_to_async(store.replace_hash, thread_sensitive=True)
        self.delete = sync_to_async(store.delete, thread_sensitive=True)
        self.record_usage = sync_to_async(store.record_usage, thread_sensitive=True)
        self.close = sync_to_async(store.close, thread_sensitive=True)

    def __repr__(self) -> str:
        return f"AsyncDjangoKeyStore({self.sync!r})"
