"""``DjangoKeyStore``: the key store on the Django ORM.

Management calls (add, list, revoke...) are ordinary ORM queries.  The read
each request makes is not: building a queryset and compiling it costs
several times more than running it, so :meth:`DjangoKeyStore.get` runs one
prepared ``SELECT ... WHERE id = %s`` (a primary-key probe) through Django's
own cursor, which keeps Django's error wrapping, ``execute_wrapper`` hooks
and query logging, and converts the columns with Django's own converters.
On SQLite the records read are cached in the process, kept exact across
processes by the change log that migration ``0002`` adds (triggers, polled
at most once per lease, inline: :mod:`aqnt_auth._stores._sqlite_watch`): a
change made by any process, the admin's included, is seen within the lease
(20 ms), and at once by the process that made it through this store.  On
PostgreSQL (with psycopg 3 installed) they are cached too, kept exact by the
trigger of migration ``0005``, which sends ``NOTIFY`` in every changing
transaction, and a listener thread per process that listens on a
connection of its own, made from Django's settings for the database
(:mod:`aqnt_auth._stores._pg_listener`, as the SQL store does).  On other
databases the row is read on every call, so a revocation applies to the next
request.
"""

from __future__ import annotations

import builtins
import datetime as dt
import logging
import math
import sqlite3
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Final, cast

from asgiref.sync import sync_to_async
from django.core.exceptions import ImproperlyConfigured
from django.db import (
    DatabaseError,
    Error,
    IntegrityError,
    connections,
    router,
    transaction,
)
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models import (
    BigIntegerField,
    Case,
    CharField,
    DateTimeField,
    F,
    Field,
    IntegerField,
    Q,
    Value,
    When,
)
from django.db.models.expressions import Expression
from django.db.models.functions import Greatest
from django.db.models.signals import post_save

from aqnt_auth import (
    KEY_COLUMNS,
    AuditEntry,
    AuditEvent,
    AuditLog,
    KeyRecord,
    KeyStateError,
    RotationPlan,
    StoreUnavailable,
    UsageDelta,
)
from aqnt_auth._audit import ensure, entry_of_row
from aqnt_auth._outcomes import OUTCOMES
from aqnt_auth._quota import QuotaOps, QuotaRow, QuotaUse, consume_with
from aqnt_auth._stores._record_cache import ABSENT, IDS_SIZE, RecordCache
from aqnt_auth._stores._rows import update_columns
from aqnt_auth._stores._sqlite_watch import ChangeWatcher
from aqnt_auth._usage_history import UsageRow, merge_paths, paths_of_json
from aqnt_auth.adapters.django.models import (
    APIKey,
    APIKeyAudit,
    APIKeyUsage,
    aware,
    db_datetime,
    expiry_allowed,
    record_fields,
    record_of_values,
)

if TYPE_CHECKING:
    import psycopg

    from aqnt_auth._stores._pg_listener import Listener

__all__ = ["AsyncDjangoKeyStore", "DjangoKeyStore"]

log = logging.getLogger("aqnt_auth.store.django")

# Raw JSON text that needs no parser: most keys have no scopes, paths or metadata.
_EMPTY_JSON: Final = frozenset({"[]", "{}"})
# Records remembered per reader (per thread), against the row they were made of.
_MEMO_SIZE: Final = 1024


class _Reader:
    """The read each request makes, on one Django connection object.

    Django has one connection object per thread, and the SQL text and the
    column converters belong to its backend, so each gets its own reader.
    The SQL names the columns once, unqualified: a backend cursor may scan
    the whole text on every execute (Django's SQLite one does), so a short
    text is a faster one.  The cursor is kept between requests while the
    underlying database connection stays the same.
    """

    __slots__ = ("converters", "cursor", "memo", "named", "raw", "sql")

    def __init__(self, alias: str, connection: BaseDatabaseWrapper) -> None:
        quote = connection.ops.quote_name
        meta = APIKey._meta
        # Every field named is a concrete column, never a relation.
        columns = [cast("Field[Any, Any]", meta.get_field(name)) for name in KEY_COLUMNS]
        names = [quote(f.column or f.name) for f in columns]
        # A named parameter where the backend takes one: Django's SQLite
        # cursor then formats the text with % instead of a regex substitution.
        self.named: bool = connection.features.supports_paramstyle_pyformat
        self.sql = (
            f"SELECT {', '.join(names)} "  # noqa: S608
            f"FROM {quote(meta.db_table)} WHERE {names[0]} = "
            + ("%(id)s" if self.named else "%s")
        )
        # Django's own converters (SQLite's datetime parsing, JSON decoding,
        # booleans...), taken from the compiler of the equivalent queryset.
        compiler = APIKey.objects.using(alias).values_list(*KEY_COLUMNS).query.get_compiler(alias)
        compiler.setup_query()
        found = compiler.get_converters([column for column, _, _ in compiler.select])
        json = {i for i, f in enumerate(columns) if f.get_internal_type() == "JSONField"}
        # (position, converters, column expression, whether it holds JSON)
        self.converters: tuple[
            tuple[int, tuple[Callable[..., Any], ...], Expression, bool], ...
        ] = tuple((i, tuple(funcs), expr, i in json) for i, (funcs, expr) in found.items())
        self.cursor: Any = None
        self.raw: Any = None
        # key id -> (the row as the driver gave it, the record made of it)
        self.memo: dict[str, tuple[Any, KeyRecord]] = {}

    def fetch(self, connection: BaseDatabaseWrapper, key_id: str) -> KeyRecord | None:
        # What connection.cursor() would check once per request.
        connection.close_if_health_check_failed()
        params = {"id": key_id} if self.named else (key_id,)
        if connection.queries_logged:
            # DEBUG or a test capturing queries: a logging cursor, each time.
            with connection.cursor() as logged:
                logged.execute(self.sql, params)
                found = logged.fetchone()
        else:
            cursor = self.cursor
            if cursor is None or connection.connection is not self.raw:
                # Kept while Django keeps this database connection open.
                cursor = connection.cursor()
                self.cursor, self.raw = cursor, connection.connection
            cursor.execute(self.sql, params)
            found = cursor.fetchone()
        if found is None:
            return None
        # The same values from the driver as last time for this id make the
        # same record: converting them again (dates, JSON) and building a new
        # record would only cost time.  Any change to the row (a revocation,
        # usage counts written) changes the values.
        memo = self.memo.get(key_id)
        if memo is not None and memo[0] == found:
            return memo[1]
        row = list(found)
        for position, funcs, expression, json in self.converters:
            value = row[position]
            # NULL is None whatever the converter.
            if value is None:
                continue
            if json and type(value) is str and value in _EMPTY_JSON:
                # "[]" and "{}" need no parser.
                row[position] = [] if value == "[]" else {}
                continue
            for func in funcs:
                value = func(value, expression, connection)
            row[position] = value
        record = record_of_values(row)
        if len(self.memo) >= _MEMO_SIZE:
            del self.memo[next(iter(self.memo))]
        self.memo[key_id] = (found, record)
        return record


class DjangoKeyStore:
    """A :class:`~aqnt_auth.KeyStore` over the :class:`~.models.APIKey` model.

    :param using: the database alias; by default the database routers pick
        one for reads and one for writes (asked once, here).
    :param cache: cache records in the process (``None``: when the read
        database is an SQLite file, or PostgreSQL with psycopg 3 installed
        outside Django's test environment).
        Needs migration ``0002`` (SQLite) or ``0005`` (PostgreSQL); until it
        has run every lookup reads the database.  On PostgreSQL, a change is
        seen by the other processes when it commits: a queryset ``update()``
        inside a transaction that never commits (a ``TestCase``) is seen by
        none, and by this process only through this store or ``save()``.
    :param id_set_size: key ids the cache knows at most (about 100 bytes
        each), so that an unknown id is refused without a query; ``0`` turns
        it off (see :class:`~aqnt_auth.SQLiteKeyStore`).
    :param heartbeat: PostgreSQL: seconds between the listener's liveness
        round trips; *lease*: seconds the cache is trusted after one, the
        bound on how long a silently dead listener could miss a change (a
        change is normally heard as soon as it commits).

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

    def __init__(self, using: str | None = None, *, cache: bool | None = None,
                 cache_ttl: float = 30.0, cache_size: int = 10_000,
                 id_set_size: int = IDS_SIZE, heartbeat: float = 0.25,
                 lease: float = 1.0) -> None:
        self.read_alias: str = using or router.db_for_read(APIKey) or "default"
        self.write_alias: str = using or router.db_for_write(APIKey) or "default"
        self._readers: weakref.WeakKeyDictionary[BaseDatabaseWrapper, _Reader] = (
            weakref.WeakKeyDictionary()
        )
        reader = connections[self.read_alias]
        on_file = reader.vendor == "sqlite" and not reader.is_in_memory_db()  # type: ignore[attr-defined]
        on_postgres = reader.vendor == "postgresql" and _has_psycopg()
        if cache and not (on_file or on_postgres):
            raise ImproperlyConfigured(
                "DjangoKeyStore(cache=True) needs an SQLite database file, or PostgreSQL "
                "with psycopg 3 installed")
        if cache is None:
            # Not under Django's test runner on PostgreSQL: a TestCase's
            # changes never commit (so never notify), and the listener's
            # session would keep the test database from being dropped.
            cache = on_file or (on_postgres and not _testing())
        size = cache_size if cache else 0
        #: The record cache (it never answers when off).
        self.cache = RecordCache(size, cache_ttl, absent_size=size,
                                 ids_size=id_set_size if size else 0,
                                 ids_ttl=cache_ttl if on_postgres else math.inf)
        #: The change-log watcher (SQLite) or the listener (PostgreSQL),
        #: when the cache is on.
        self.watcher: ChangeWatcher | None = None
        self.listener: Listener | None = None
        if size and on_postgres:
            from aqnt_auth._stores._pg_listener import Listener

            self.listener = Listener(
                self._listen_connection, self.cache, channel=APIKey._meta.db_table,
                name="aqnt-auth-listener", heartbeat=heartbeat, lease=lease,
                timeout=_PG_TIMEOUT, read_ids=_read_ids)
        elif size:
            self.watcher = ChangeWatcher(self._watch_connection, self.cache,
                                         log_table=f"{APIKey._meta.db_table}_changes",
                                         table=APIKey._meta.db_table)
            # A key saved through the ORM in this process (a fixture, a test's
            # uncommitted transaction) is known here at once; other processes
            # learn it from the change log once it commits.  Held weakly.
            post_save.connect(self._saved, sender=APIKey)
        self.aio = AsyncDjangoKeyStore(self)

    def __repr__(self) -> str:
        if self.read_alias == self.write_alias:
            return f"DjangoKeyStore(using={self.read_alias!r})"
        return f"DjangoKeyStore(read={self.read_alias!r}, write={self.write_alias!r})"

    def _saved(self, sender: object, instance: APIKey, **kwargs: object) -> None:
        self.cache.drop(instance.pk)

    def _listen_connection(self) -> psycopg.Connection[Any]:
        # The listener's own session, from the settings Django connects with
        # now (a test run switches NAME to the test database).
        import psycopg

        wrapper = connections[self.read_alias]
        params = dict(wrapper.get_connection_params())
        for driver_only in ("cursor_factory", "context", "prepare_threshold"):
            params.pop(driver_only, None)
        params.setdefault("connect_timeout", 2)  # libpq's minimum
        conn = psycopg.connect(**params)
        try:
            table = APIKey._meta.db_table
            found = conn.execute(
                "SELECT 1 FROM pg_trigger WHERE tgname = %s AND tgrelid = to_regclass(%s)",
                (f"{table}_notify", wrapper.ops.quote_name(table))).fetchone()
            conn.rollback()
        except BaseException:
            conn.close()
            raise
        if found is None:
            conn.close()
            # Without the trigger no change would be heard: the listener
            # retries, and every lookup reads the database meanwhile.
            raise ImproperlyConfigured(
                f"the NOTIFY trigger on {table} is missing: run manage.py migrate "
                "(aqnt_auth 0005)")
        return conn

    def _watch_connection(self) -> sqlite3.Connection:
        # The watcher's own connection to the file Django's connection names
        # now (a test run switches it to the test database).
        name = connections[self.read_alias].settings_dict["NAME"]
        return sqlite3.connect(name, timeout=0, isolation_level=None, check_same_thread=False)

    # -- the read on every request ----------------------------------------

    def peek(self, key_id: str) -> KeyRecord | None:
        """The cached record if the cache may answer now, else ``None`` (then
        call :meth:`get`): a warm read without I/O, for the event loop."""
        return self.cache.get(key_id)

    def get(self, key_id: str) -> KeyRecord | None:
        return self.cache.read_through(key_id, self._fetch_for_request)

    def _fetch_for_request(self, key_id: str) -> KeyRecord | None:
        connection = connections[self.read_alias]
        reader = self._readers.get(connection)
        try:
            if reader is None:
                reader = self._readers[connection] = _Reader(self.read_alias, connection)
            return reader.fetch(connection, key_id)
        except Error as exc:
            raise _unavailable(exc) from None

    # -- management ----------------------------------------------------------

    def _rows(self) -> Any:
        return APIKey.objects.using(self.write_alias)

    def _fetch(self, key_id: str) -> KeyRecord | None:
        row = self._rows().filter(pk=key_id).first()
        return None if row is None else row.to_record()

    def _write_audit(self, entries: list[AuditEntry]) -> None:
        if entries:
            APIKeyAudit.objects.using(self.write_alias).bulk_create([
                APIKeyAudit(at=cast("dt.datetime", db_datetime(e.at)), key_id=e.key_id,
                            event=e.event, actor=e.actor, old=dict(e.old), new=dict(e.new),
                            related_key_id=e.related_key_id)
                for e in entries])

    def _locked(self, key_id: str) -> KeyRecord | None:
        """The record of *key_id*, read after writing its row: its row lock
        (PostgreSQL) or the write lock (SQLite), so it is the record the
        change that follows changes."""
        if not self._rows().filter(pk=key_id).update(expires_at=F("expires_at")):
            return None
        return self._fetch(key_id)

    def add(self, record: KeyRecord, *, audit: AuditEvent | None = None) -> None:
        with self._changing(record.id):
            self._add(record, audit)

    def _add(self, record: KeyRecord, audit: AuditEvent | None) -> None:
        # Each write runs in its own savepoint, so a failure does not break a
        # transaction the caller may have open.
        try:
            with transaction.atomic(using=self.write_alias):
                self._rows().create(**record_fields(record))
                self._write_audit(ensure(audit).entries(None, record))
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

    @contextmanager
    def _changing(self, key_id: str) -> Iterator[None]:
        # This process forgets the key at once, even after a failure (the
        # commit may have happened); the others learn it from the change log.
        try:
            yield
        finally:
            self.cache.drop(key_id)

    def _update(self, key_id: str, filters: Mapping[str, Any], audit: AuditEvent | None,
                **changes: Any) -> KeyRecord | None:
        with self._changing(key_id):
            return self._update_now(key_id, filters, audit, **changes)

    def _update_now(self, key_id: str, filters: Mapping[str, Any], audit: AuditEvent | None,
                    **changes: Any) -> KeyRecord | None:
        try:
            with transaction.atomic(using=self.write_alias):
                before = self._locked(key_id)
                if before is None:
                    return None
                self._rows().filter(pk=key_id, **filters).update(**changes)
                after = self._fetch(key_id)
                self._write_audit(ensure(audit).entries(before, after))
                return after
        except Error as exc:
            raise _unavailable(exc) from None

    def revoke(self, key_id: str, at: dt.datetime, *, audit: AuditEvent | None = None
               ) -> KeyRecord | None:
        # Only a key not yet revoked is updated: the first revocation stays.
        return self._update(key_id, {"revoked_at__isnull": True}, audit,
                            revoked_at=db_datetime(at))

    def set_expiry(self, key_id: str, at: dt.datetime | None, *,
                   audit: AuditEvent | None = None) -> KeyRecord | None:
        with self._changing(key_id):
            return self._set_expiry(key_id, at, audit)

    def _set_expiry(self, key_id: str, at: dt.datetime | None, audit: AuditEvent | None
                    ) -> KeyRecord | None:
        stored = db_datetime(at)
        try:
            with transaction.atomic(using=self.write_alias):
                before = self._locked(key_id)
                if before is None:
                    return None
                # The rule in the UPDATE, as the admin's save does: nothing
                # committed meanwhile is undone.
                changed = self._rows().filter(expiry_allowed(stored), pk=key_id).update(
                    expires_at=stored)
                if not changed:
                    raise KeyStateError(before.expiry_refusal(at))
                after = self._fetch(key_id)
                self._write_audit(ensure(audit).entries(before, after))
                return after
        except Error as exc:
            raise _unavailable(exc) from None

    def update(self, key_id: str, changes: Mapping[str, Any], *,
               audit: AuditEvent | None = None) -> KeyRecord | None:
        values = {name: db_datetime(value) if isinstance(value, dt.datetime) else value
                  for name, value in update_columns(changes).items()}
        if not values:
            return self._fetch(key_id)
        # Only a key not revoked is changed: revocation is final.
        return self._update(key_id, {"revoked_at__isnull": True}, audit, **values)

    def rotate(self, key_id: str, plan: RotationPlan, *, audit: AuditEvent | None = None
               ) -> KeyRecord | None:
        # The successor is created with the ORM: post_save drops its id.
        with self._changing(key_id):
            return self._rotate(key_id, plan, audit)

    def _rotate(self, key_id: str, plan: RotationPlan, audit: AuditEvent | None
                ) -> KeyRecord | None:
        try:
            with transaction.atomic(using=self.write_alias):
                # The first statement writes the old key's row: its row lock
                # (PostgreSQL) or the write lock (SQLite), so a revocation
                # waits for this transaction or has committed before it reads.
                old = self._locked(key_id)
                if old is None:
                    return None
                successors = [row.to_record() for row in
                              self._rows().filter(rotated_from=key_id).order_by("created_at", "id")]
                successor, expires_at = plan(old, successors)
                self._rows().create(**record_fields(successor))
                moved: dict[str, Any] = {}
                if successor.metered:  # the successor took the quota: mark it moved
                    moved = {"quota_remaining": 0, "quota_refilled_at": None}
                self._rows().filter(pk=key_id).update(expires_at=db_datetime(expires_at),
                                                      **moved)
                after = self._fetch(key_id)
                assert after is not None
                self._write_audit(ensure(audit).rotation(old, after, successor))
                return after
        except IntegrityError:
            raise KeyStateError("the successor's key id already exists") from None
        except Error as exc:
            raise _unavailable(exc) from None

    def consume_quota(self, key_id: str, now: dt.datetime) -> QuotaUse | None:
        """One unit of the key's quota: a conditional ``UPDATE`` (and its row
        read back) in one transaction; invalidates no cached record."""
        try:
            with transaction.atomic(using=self.write_alias):
                return consume_with(QuotaOps(self._quota_take, self._quota_read,
                                             self._quota_swap, self._quota_successor),
                                    key_id, now)
        except Error as exc:
            raise _unavailable(exc) from None

    def _quota_take(self, key_id: str, cutoffs: dict[str, dt.datetime]) -> QuotaRow | None:
        # The UPDATE comes first in the transaction: on SQLite it takes the
        # write lock before anything is read.
        due = Case(*(When(quota_refill__endswith=f"/{name}", then=Value(db_datetime(at)))
                     for name, at in cutoffs.items()), output_field=DateTimeField())
        taken = self._rows().filter(
            Q(quota_refill__isnull=True) | Q(quota_refilled_at__gt=due),
            pk=key_id, quota_remaining__gt=0,
        ).update(quota_remaining=F("quota_remaining") - 1)
        return self._quota_read(key_id) if taken else None

    def _quota_read(self, key_id: str) -> QuotaRow | None:
        row = self._rows().filter(pk=key_id).values_list(
            "quota_remaining", "quota_refill", "quota_refilled_at").first()
        return None if row is None else QuotaRow(row[0], row[1], aware(row[2]))

    def _quota_swap(self, key_id: str, old: QuotaRow, new: QuotaRow) -> bool:
        swapped: int = self._rows().filter(
            pk=key_id, quota_remaining=old.remaining, quota_refill=old.refill,
            quota_refilled_at=db_datetime(old.refilled_at),
        ).update(quota_remaining=new.remaining, quota_refilled_at=db_datetime(new.refilled_at))
        return swapped == 1

    def _quota_successor(self, key_id: str) -> str | None:
        found = self._rows().filter(rotated_from=key_id).order_by(
            "-created_at", "-id").values_list("id", flat=True).first()
        return None if found is None else str(found)

    def replace_hash(self, key_id: str, old_hash: str, new_hash: str) -> bool:
        with self._changing(key_id):
            return self._replace_hash(key_id, old_hash, new_hash)

    def _replace_hash(self, key_id: str, old_hash: str, new_hash: str) -> bool:
        try:
            with transaction.atomic(using=self.write_alias):
                rows: int = self._rows().filter(pk=key_id, hash=old_hash).update(hash=new_hash)
        except Error as exc:
            raise _unavailable(exc) from None
        return rows == 1

    def delete(self, key_id: str, *, audit: AuditEvent | None = None) -> bool:
        with self._changing(key_id):
            return self._delete(key_id, audit)

    def _delete(self, key_id: str, audit: AuditEvent | None) -> bool:
        try:
            with transaction.atomic(using=self.write_alias):
                before = self._locked(key_id)
                if before is None:
                    return False
                self._rows().filter(pk=key_id).delete()
                self._write_audit(ensure(audit).entries(before, None))
        except Error as exc:
            raise _unavailable(exc) from None
        return True

    def audit_entries(self, *, key_id: str | None = None, since: dt.datetime | None = None,
                      until: dt.datetime | None = None, limit: int | None = None
                      ) -> AuditLog:
        rows = APIKeyAudit.objects.using(self.read_alias).order_by("-at", "-id")
        if key_id is not None:
            rows = rows.filter(key_id=key_id)
        if since is not None:
            rows = rows.filter(at__gte=db_datetime(since))
        if until is not None:
            rows = rows.filter(at__lt=db_datetime(until))
        if limit is not None:
            rows = rows[:limit]
        try:
            return [entry_of_row(row.id, cast("dt.datetime", aware(row.at)), row.key_id,
                                 row.event, row.actor, row.old, row.new, row.related_key_id)
                    for row in rows]
        except Error as exc:
            raise _unavailable(exc) from None

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

    def on_commit(self, callback: Callable[[], object]) -> None:
        """Run *callback* once the changes just made are committed: at once,
        or, inside the caller's ``transaction.atomic()``, when it commits
        (never, if it rolls back).  KeyManager's event hooks wait for it."""
        transaction.on_commit(callback, using=self.write_alias)
    def record_usage_history(self, rows: Sequence[UsageRow], *,
                             prune_before: int | None = None) -> None:
        """Add usage-history rows in one transaction: per row an ``UPDATE``
        adding the counts with ``F()`` expressions (exact under concurrency),
        or the row's ``INSERT`` (on a unique-constraint race, the ``UPDATE``
        again), then the merged paths; rows in (key id, hour) order so
        PostgreSQL's row locks are taken in one order.  The key table is not
        touched: no cached record is invalidated."""
        if not rows and prune_before is None:
            return
        connection = connections[self.write_alias]
        if not connection.in_atomic_block:
            connection.close_if_unusable_or_obsolete()  # see record_usage
        try:
            with transaction.atomic(using=self.write_alias):
                for row in sorted(rows, key=lambda r: (r.key_id, r.hour)):
                    self._add_usage_row(row)
                if prune_before is not None:
                    self._usage().filter(hour__lt=prune_before).delete()
        except Error as exc:
            raise _unavailable(exc) from None

    def _usage(self) -> Any:
        return APIKeyUsage.objects.using(self.write_alias)

    def _add_usage_row(self, row: UsageRow) -> None:
        found = self._usage().filter(key_id=row.key_id, hour=row.hour)
        changes: dict[str, Any] = {o: F(o) + n for o, n in row.counts.items() if n}
        if row.clients:
            changes["clients"] = Greatest(F("clients"), Value(row.clients),
                                          output_field=IntegerField())
        if row.last_at is not None:
            # Every SET expression reads the row as it was before the UPDATE.
            later = Q(last_at__isnull=True) | Q(last_at__lt=row.last_at)
            for column, value in (("last_client", row.last_client),
                                  ("last_user_agent", row.last_user_agent)):
                changes[column] = Case(When(later, then=Value(value, output_field=CharField())),
                                       default=F(column))
            changes["last_at"] = Case(When(later, then=Value(row.last_at)), default=F("last_at"),
                                      output_field=BigIntegerField())
        if not changes or not found.update(**changes):
            try:
                with transaction.atomic(using=self.write_alias):
                    self._usage().create(
                        key_id=row.key_id, hour=row.hour,
                        **{o: n for o, n in row.counts.items() if o in OUTCOMES},
                        clients=row.clients, last_at=row.last_at, last_client=row.last_client,
                        last_user_agent=row.last_user_agent,
                        paths=UsageRow(row.key_id, row.hour,
                                       paths=merge_paths({}, row.paths)).paths_json())
                return
            except IntegrityError:
                # Another process inserted it meanwhile: add to theirs.
                if changes:
                    found.update(**changes)
        if row.paths:
            # The UPDATE above holds the row's lock until commit.
            stored = found.values_list("paths", flat=True).first()
            merged = merge_paths(paths_of_json(stored), row.paths)
            found.update(paths=UsageRow(row.key_id, row.hour, paths=merged).paths_json())

    def usage_rows(self, *, key_id: str | None = None, since: int, until: int
                   ) -> builtins.list[UsageRow]:
        rows = APIKeyUsage.objects.using(self.read_alias).filter(
            hour__gte=since, hour__lt=until).order_by("hour", "key_id")
        if key_id is not None:
            rows = rows.filter(key_id=key_id)
        try:
            return [row.to_row() for row in rows]
        except Error as exc:
            raise _unavailable(exc) from None

    def close(self) -> None:
        """Stop reading the change log; the connections are Django's."""
        post_save.disconnect(self._saved, sender=APIKey)
        if self.watcher is not None:
            self.watcher.stop()
        if self.listener is not None:
            self.listener.stop()


def _unavailable(exc: Error) -> StoreUnavailable:
    if _missing_table(exc):
        return _not_migrated()
    # The store never sees a key, only key ids, so the driver's message is
    # safe to log; the error itself names just the class.
    log.error("Django key store unavailable: %s: %s", type(exc).__name__, exc)
    kind = "database error" if isinstance(exc, DatabaseError) else "database interface error"
    return StoreUnavailable(f"Django key store unavailable: {kind} ({type(exc).__name__})")


# A round trip of the PostgreSQL listener: longer and its connection is dead.
_PG_TIMEOUT: Final = 1.0


def _testing() -> bool:
    # setup_test_environment() (Django's test runner, pytest-django) gives
    # django.core.mail an outbox; nothing else does.
    from django.core import mail

    return hasattr(mail, "outbox")


def _has_psycopg() -> bool:
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return False
    return True


def _read_ids(conn: psycopg.Connection[Any], limit: int) -> list[str]:
    from psycopg import sql

    query = sql.SQL("SELECT id FROM {} LIMIT %s").format(sql.Identifier(APIKey._meta.db_table))
    return [key_id for (key_id,) in conn.execute(query, (limit,))]


#: The fix for a key table that does not exist (a forgotten migrate).
NOT_MIGRATED: Final = "the table {table} does not exist: run manage.py migrate"

# Tables whose absence was logged: a forgotten migrate is said once per
# process, not on every request it refuses.
_missing_logged: set[str] = set()


def _not_migrated() -> StoreUnavailable:
    message = NOT_MIGRATED.format(table=APIKey._meta.db_table)
    if APIKey._meta.db_table not in _missing_logged:
        _missing_logged.add(APIKey._meta.db_table)
        log.error("%s; until then every request that needs a key is answered 503", message)
    return StoreUnavailable(message)


def _missing_table(exc: Error) -> bool:
    """Whether the database said the table does not exist (by its own code
    where the driver gives one), rather than that it failed."""
    cause = exc.__cause__ if exc.__cause__ is not None else exc
    # PostgreSQL's undefined_table (psycopg 3: sqlstate, psycopg2: pgcode).
    if "42P01" in (getattr(cause, "sqlstate", None), getattr(cause, "pgcode", None)):
        return True
    args = getattr(cause, "args", ())
    if args and args[0] == 1146:  # MySQL and MariaDB: ER_NO_SUCH_TABLE
        return True
    return isinstance(exc, DatabaseError) and str(cause).startswith("no such table")  # SQLite


class AsyncDjangoKeyStore:
    """:attr:`DjangoKeyStore.aio`: the same calls, each through
    ``sync_to_async(thread_sensitive=True)``."""

    def __init__(self, store: DjangoKeyStore) -> None:
        self.sync = store
        self._lookup = store.cache.lookup
        self._get = sync_to_async(store.get, thread_sensitive=True)
        self.add = sync_to_async(store.add, thread_sensitive=True)
        self.list = sync_to_async(store.list, thread_sensitive=True)
        self.revoke = sync_to_async(store.revoke, thread_sensitive=True)
        self.set_expiry = sync_to_async(store.set_expiry, thread_sensitive=True)
        self.rotate = sync_to_async(store.rotate, thread_sensitive=True)
        self.update = sync_to_async(store.update, thread_sensitive=True)
        self.replace_hash = sync_to_async(store.replace_hash, thread_sensitive=True)
        self.consume_quota = sync_to_async(store.consume_quota, thread_sensitive=True)
        self.delete = sync_to_async(store.delete, thread_sensitive=True)
        self.audit_entries = sync_to_async(store.audit_entries, thread_sensitive=True)
        self.record_usage = sync_to_async(store.record_usage, thread_sensitive=True)
        self.close = sync_to_async(store.close, thread_sensitive=True)

    def __repr__(self) -> str:
        return f"AsyncDjangoKeyStore({self.sync!r})"

    async def get(self, key_id: str) -> KeyRecord | None:
        """A cached answer on the event loop; a read through ``sync_to_async``."""
        found = self._lookup(key_id)
        if found is not None:
            return None if found is ABSENT else found
        return await self._get(key_id)
