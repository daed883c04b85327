"""Issuing, listing, revoking, rotating, disabling and updating keys; their
audit log, event hooks and hygiene findings."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from types import TracebackType
from typing import Any, Final

from ._access import normalise_allowed_paths
from ._audit import AuditEvent, AuditLog, check_actor
from ._errors import ConfigurationError, KeyNotFound, KeyStateError, NotAKeyId
from ._format import MODES, KeyFormat, Mode, hint, key_id_in
from ._hashers import Argon2Hasher, Hasher, check_memory_budget, default_hash_memory_mib
from ._hooks import ALL_EVENTS, Hook, HookRunner
from ._policies import normalise_allowed_ips, normalise_rate_limits
from ._quota import check_quota, is_moved, parse_refill
from ._records import KeyRecord, utcnow
from ._stores._open import open_store
from ._stores._protocol import KeyStore, UsageHistoryStore
from ._stores._record_cache import RecordCache
from ._usage_history import Bucket, UsageSeries, UsageSummary, build_series, build_summary, window

__all__ = ["IDLE_AGE", "Hygiene", "IssuedKey", "KeyManager"]

MAX_NAME_LENGTH: Final = 200
#: Keys unused (or, never used, created) this long ago are idle (:meth:`KeyManager.hygiene`).
IDLE_AGE: Final = dt.timedelta(days=90)
# RFC 6750 §3 scope-token characters, so scopes can be named in WWW-Authenticate.
_SCOPE_CHARS: Final = frozenset(chr(c) for c in range(0x21, 0x7F)) - {'"', "\\"}


class IssuedKey:
    """A newly issued key: :attr:`key` is the plaintext, shown this once.

    Its ``repr`` hides the key, so logging the object leaks nothing.
    """

    __slots__ = ("key", "record")

    def __init__(self, key: str, record: KeyRecord) -> None:
        self.key = key
        self.record = record

    def __repr__(self) -> str:
        return f"<IssuedKey id={self.record.id!r} hint={self.record.hint!r}>"


def _check_name(name: str) -> str:
    if not isinstance(name, str) or not name.strip():
        raise ConfigurationError("a key needs a non-empty name")
    if len(name) > MAX_NAME_LENGTH or not name.isprintable():
        raise ConfigurationError(
            f"key names are printable text of at most {MAX_NAME_LENGTH} characters"
        )
    return name.strip()


def _check_scopes(scopes: Iterable[str]) -> tuple[str, ...]:
    if isinstance(scopes, str):
        scopes = (scopes,)
    out: list[str] = []
    for scope in scopes:
        if not isinstance(scope, str) or not scope or not set(scope) <= _SCOPE_CHARS:
            raise ConfigurationError(
                f"scope {scope!r} must be non-empty printable ASCII without spaces or quotes"
            )
        if scope not in out:
            out.append(scope)
    return tuple(out)


def _check_metadata(metadata: Mapping[str, Any] | None) -> dict[str, Any]:
    if metadata is None:
        return {}
    if not isinstance(metadata, Mapping):
        raise ConfigurationError("metadata must be a JSON object")
    try:
        # Round-trip so the record holds exactly what any store will give back.
        loaded: dict[str, Any] = json.loads(json.dumps(dict(metadata)))
    except (TypeError, ValueError) as exc:
        raise ConfigurationError(f"metadata must be JSON-serialisable: {exc}") from None
    return loaded


def _check_shared(shared: bool, owner: str | None) -> bool:
    if shared and owner is None:
        raise ConfigurationError("a rate limit shared per owner needs a key with an owner")
    return bool(shared)


def _key_id(key_id: str) -> str:
    """*key_id*, unless it is a whole key: then say so, naming its id, never the key."""
    found = key_id_in(key_id) if isinstance(key_id, str) else None
    if found is not None:
        raise NotAKeyId(f"that is an API key, not a key id: use its id {found} "
                          "(a key is secret; never pass one as an argument)")
    return key_id


def _when(value: dt.datetime) -> str:
    return value.isoformat(timespec="seconds")


def _quota_fields(quota: int | None, quota_refill: str | None, now: dt.datetime
                  ) -> dict[str, Any]:
    """The record fields of a quota set now (none for no quota)."""
    if quota is None and quota_refill is None:
        return {}
    refill = parse_refill(quota_refill) if quota_refill is not None else None
    if quota is None:
        assert refill is not None
        quota = refill.amount
    return {"quota_remaining": check_quota(quota),
            "quota_refill": refill.text if refill is not None else None,
            "quota_refilled_at": now}
@dataclasses.dataclass(frozen=True, slots=True)
class Hygiene:
    """Key-hygiene findings (:meth:`KeyManager.hygiene`) over the keys not
    revoked or expired, each list oldest key first; a key may be in several."""

    #: When the findings were computed.
    checked_at: dt.datetime
    #: Keys without an expiry.
    never_expire: list[KeyRecord]
    #: Keys unused for :data:`IDLE_AGE` (90 days) or more (never used: since created).
    idle: list[KeyRecord]
    #: Live-mode keys without an IP allowlist.
    live_without_allowlist: list[KeyRecord]
    #: Keys older than 90 days (:meth:`KeyRecord.due_for_rotation`).
    due_for_rotation: list[KeyRecord]

    def findings(self) -> dict[str, list[KeyRecord]]:
        """The four lists by name, in a stable order."""
        return {"never_expire": self.never_expire, "idle": self.idle,
                "live_without_allowlist": self.live_without_allowlist,
                "due_for_rotation": self.due_for_rotation}

    def __bool__(self) -> bool:
        """Whether anything was found."""
        return any(self.findings().values())


def _aware(value: dt.datetime | None, what: str) -> dt.datetime | None:
    if value is not None and value.tzinfo is None:
        raise ConfigurationError(f"{what} must be timezone-aware")
    return value


def _check_rotatable(record: KeyRecord, successors: Sequence[KeyRecord], now: dt.datetime,
                     force: bool) -> None:
    """Raise :class:`KeyStateError` if *record* may not be rotated at *now*."""
    if record.revoked_at is not None:
        raise KeyStateError(f"key {record.id} was revoked at {_when(record.revoked_at)}: "
                            "a revoked key cannot be rotated (revocation is final); "
                            "create a new key")
    if record.expires_at is not None and record.expires_at <= now:
        raise KeyStateError(f"key {record.id} expired at {_when(record.expires_at)}: "
                            "an expired key cannot be rotated; create a new key")
    if record.disabled_at is not None:
        raise KeyStateError(f"key {record.id} is disabled: enable it before rotating it")
    live = [s for s in successors if s.status(now) in ("active", "expiring")]
    if live and not force:
        ends = ("has no expiry" if record.expires_at is None
                else f"stops working at {_when(record.expires_at)}")
        raise KeyStateError(
            f"key {record.id} was already rotated: its successor is {live[-1].id}, and "
            f"{record.id} {ends}; rotate {live[-1].id} instead, or rotate {record.id} again "
            "with --force (force=True), which cuts its remaining grace to the new --grace"
        )
    if live and is_moved(record.quota_remaining, record.quota_refilled_at):
        # Forced: a second successor would need the first one's counter
        # while that one still spends it; refused rather than inexact.
        raise KeyStateError(
            f"key {record.id} shares its usage quota with its successor {live[-1].id}, which "
            f"holds the counter: rotate {live[-1].id} instead (or revoke it, or clear the "
            "quota on it, first)")


class KeyManager:
    """Creates and manages keys in a store.

    :param store: a :class:`KeyStore` or a store URL.
    :param hasher: hashes new secrets (default: argon2id, OWASP profile).
    :param prefixes: prefixes keys may be issued with; the first is the default.
    :param max_hash_memory_mib: the argon2 memory budget of the servers that
        will verify the keys (default: the :class:`Authenticator`'s).  A
        hasher needing more for one hash cannot issue keys: every
        verification would be refused (:class:`ConfigurationError`).
    :param actor: who makes the changes, for the audit log (``alice@host``,
        ``django:admin``); each changing method's ``actor`` overrides it.
    :param on_event: a hook called with every :class:`AuditEntry` once its
        change has committed (see :meth:`on`).

    Every change (create, revoke, rotate, expire, disable, enable, update,
    delete) writes its audit entries in the store's transaction;
    :meth:`audit` reads them back.
    """

    def __init__(
        self,
        store: KeyStore | str,
        *,
        hasher: Hasher | None = None,
        prefixes: Iterable[str] = ("sk",),
        clock: Callable[[], dt.datetime] = utcnow,
        max_hash_memory_mib: int | None = None,
        actor: str | None = None,
        on_event: Hook | None = None,
    ) -> None:
        self.actor = check_actor(actor)
        self._hooks = HookRunner()
        if on_event is not None:
            self._hooks.add(ALL_EVENTS, on_event)
        self.store: KeyStore = open_store(store)
        self.hasher: Hasher = hasher if hasher is not None else Argon2Hasher()
        self.max_hash_memory_mib = (max_hash_memory_mib if max_hash_memory_mib is not None
                                    else default_hash_memory_mib())
        self.format = KeyFormat(tuple(prefixes))
        self._clock = clock

    def __repr__(self) -> str:
        return f"KeyManager(store={self.store!r}, hasher={self.hasher!r})"

    def on(self, event: str, hook: Hook) -> None:
        """Call *hook* with each :class:`AuditEntry` of *event* (``"revoked"``,
        ``"rotated"``...; ``"*"``: every event), after its change has committed.

        Hooks run on a background thread, in the order the changes were made:
        they never block the caller, and an exception in one is logged
        (logger ``aqnt_auth.hooks``), never raised.  :meth:`close` waits up to
        5 seconds for the hooks still queued.
        """
        self._hooks.add(event, hook)

    def _event(self, actor: str | None, at: dt.datetime | None = None) -> AuditEvent:
        return AuditEvent(actor=self.actor if actor is None else actor,
                          at=self._clock() if at is None else at)

    def _committed(self, event: AuditEvent) -> None:
        # The store call returned: its transaction, entries included, has
        # committed, unless it ran inside a caller's transaction (Django's
        # atomic()); a store that can tell says when, with on_commit().
        if not self._hooks:
            return
        entries = list(event.written)
        on_commit = getattr(self.store, "on_commit", None)
        if on_commit is None:
            self._hooks.dispatch(entries)
        else:
            on_commit(lambda: self._hooks.dispatch(entries))

    def _hash(self, secret: str) -> str:
        # Checked when a key is issued (not at construction, so a manager
        # can still list and revoke keys whatever its hasher).
        check_memory_budget(self.hasher, self.max_hash_memory_mib)
        return self.hasher.hash(secret)

    def create(
        self,
        name: str,
        *,
        mode: Mode = "live",
        scopes: Iterable[str] = (),
        read_only: bool = False,
        allowed_paths: Iterable[str] = (),
        expires_at: dt.datetime | None = None,
        expires_in: dt.timedelta | None = None,
        owner: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        prefix: str | None = None,
        allowed_ips: Iterable[str] = (),
        quota: int | None = None,
        quota_refill: str | None = None,
        rate_limits: Iterable[str] = (),
        shared_limit: bool = False,
        actor: str | None = None,
    ) -> IssuedKey:
        """Issue a new key.  The plaintext is in the result only; the store gets its hash.

        *allowed_ips*: IPv4/IPv6 addresses and CIDR networks (at most 100) the
        key may be used from; from anywhere else it gets ``ip_not_allowed``.
        *quota*: the requests the key may make; past them it gets 429
        ``quota_exceeded``.  *quota_refill* (``"1000/day"``): set the quota
        back to COUNT every PERIOD (``minute``, ``hour``, ``day``, ``week``,
        ``month`` = 30 days), counted from now; alone, it also sets the
        quota to COUNT.
        *rate_limits*: ``LIMIT/PERIOD`` strings (``"100/minute"``, at most
        10); past one, the key gets 429 ``rate_limit_exceeded``.  With
        *shared_limit* they count per *owner*: every key of the owner that
        shares its limit draws on one budget.
        """
        if mode not in MODES:
            raise ConfigurationError("mode must be 'live' or 'test'")
        now = self._clock()
        if expires_at is not None and expires_in is not None:
            raise ConfigurationError("give expires_at or expires_in, not both")
        if expires_in is not None:
            if expires_in <= dt.timedelta(0):
                raise ConfigurationError("expires_in must be positive")
            expires_at = now + expires_in
        if expires_at is not None and expires_at.tzinfo is None:
            raise ConfigurationError("expires_at must be timezone-aware")
        if owner is not None and (not isinstance(owner, str) or not owner.isprintable()):
            raise ConfigurationError("owner must be printable text")
        quota_fields = _quota_fields(quota, quota_refill, now)
        parsed = self.format.generate(mode, prefix)
        record = KeyRecord(
            id=parsed.key_id,
            name=_check_name(name),
            mode=mode,
            prefix=parsed.prefix,
            hash=self._hash(parsed.secret),
            hint=hint(parsed.raw),
            created_at=now,
            expires_at=expires_at,
            scopes=_check_scopes(scopes),
            read_only=bool(read_only),
            allowed_paths=normalise_allowed_paths(allowed_paths),
            owner=owner,
            metadata=_check_metadata(metadata),
            allowed_ips=normalise_allowed_ips(allowed_ips),
            rate_limits=normalise_rate_limits(rate_limits),
            rate_limit_shared=_check_shared(shared_limit, owner),
            **quota_fields,
        )
        event = self._event(actor, now)
        self.store.add(record, audit=event)
        self._committed(event)
        return IssuedKey(parsed.raw, record)

    def get(self, key_id: str) -> KeyRecord:
        """The record of *key_id* as the store holds it now; :class:`KeyNotFound`
        if there is none.

        Read past the store's record cache: a cached record is exact for every
        check a request makes, but its counters (``usage_count``,
        ``last_used_at``) stay as they were read, since usage flushes do not
        invalidate it.  A management read (``keys show``, the console's key
        page) shows the counters as flushed."""
        key_id = _key_id(key_id)
        cache = getattr(self.store, "cache", None)
        if isinstance(cache, RecordCache):
            cache.drop(key_id)
        record = self.store.get(key_id)
        if record is None:
            raise KeyNotFound(f"no key with id {key_id!r}")
        return record

    def list(self, *, include_inactive: bool = True, owner: str | None = None) -> list[KeyRecord]:
        """Records oldest first; without revoked and expired ones if not *include_inactive*."""
        records = self.store.list(owner=owner)
        if include_inactive:
            return records
        now = self._clock()
        # A disabled key is listed: it can be enabled again.
        return [r for r in records if r.status(now) not in ("revoked", "expired")]

    def revoke(self, key_id: str, *, actor: str | None = None) -> KeyRecord:
        """Revoke a key, at once and for good.  Revoking twice keeps the first
        time (and writes no second audit entry)."""
        event = self._event(actor)
        assert event.at is not None
        record = self.store.revoke(_key_id(key_id), event.at, audit=event)
        if record is None:
            raise KeyNotFound(f"no key with id {key_id!r}")
        self._committed(event)
        return record

    def disable(self, key_id: str, *, actor: str | None = None) -> KeyRecord:
        """Disable a key: requests with it get ``key_disabled`` until
        :meth:`enable`.  Unlike a revocation it can be undone.  Disabling a
        disabled key keeps the first time; a revoked key cannot be changed."""
        current = self.get(key_id)
        if current.disabled_at is not None and current.revoked_at is None:
            return current
        event = self._event(actor)
        return self._update(current.id, {"disabled_at": event.at}, event)

    def enable(self, key_id: str, *, actor: str | None = None) -> KeyRecord:
        """Undo :meth:`disable`.  An expired key stays expired, and a revoked
        key cannot be enabled (revocation is final)."""
        return self._update(self.get(key_id).id, {"disabled_at": None}, self._event(actor))

    def update(self, key_id: str, *, name: str | None = None,
               scopes: Iterable[str] | None = None,
               allowed_ips: Iterable[str] | None = None,
               rate_limits: Iterable[str] | None = None,
               shared_limit: bool | None = None,
               clear_rate_limits: bool = False,
               quota: int | None = None, quota_refill: str | None = None,
               clear_quota: bool = False, actor: str | None = None) -> KeyRecord:
        """Change a key's name, scopes, IP allowlist, rate limits or quota
        (those given; an empty allowlist removes it, as do an empty
        *rate_limits* and *clear_rate_limits* the rate limits), checked as
        :meth:`create` checks them; never its secret.  *shared_limit* counts
        the rate limits per owner (``True``) or per key (``False``).  A
        revoked key cannot be changed.

        *quota* sets the requests left (whatever was used) and starts the
        refill period now; *quota_refill* alone changes the refill of a key
        with a quota (its remaining count is kept, the period starts now) or
        gives a key without one a quota of COUNT, and ``""`` removes the
        refill, keeping the quota; *clear_quota* removes the quota and its
        refill.  The change applies to the next request in
        this process, and in others within the store's bound.
        """
        key_id = _key_id(key_id)
        changes: dict[str, Any] = {}
        if name is not None:
            changes["name"] = _check_name(name)
        if scopes is not None:
            changes["scopes"] = _check_scopes(scopes)
        if allowed_ips is not None:
            changes["allowed_ips"] = normalise_allowed_ips(allowed_ips)
        if clear_rate_limits:
            if rate_limits is not None and tuple(rate_limits):
                raise ConfigurationError("give rate limits or clear them, not both")
            rate_limits = ()
        if rate_limits is not None:
            changes["rate_limits"] = normalise_rate_limits(rate_limits)
        if shared_limit is not None:
            changes["rate_limit_shared"] = _check_shared(
                shared_limit, self.get(key_id).owner if shared_limit else None)
        if clear_quota:
            if quota is not None or quota_refill is not None:
                raise ConfigurationError("give a quota or clear it, not both")
            # quota_refill is in every quota change: it is a column every
            # store's change signal watches, and the others may not be.
            changes.update(quota_remaining=None, quota_refill=None, quota_refilled_at=None)
        elif quota is not None or quota_refill is not None:
            changes.update(self._quota_changes(key_id, quota, quota_refill))
        return self._update(key_id, changes, self._event(actor))

    def _quota_changes(self, key_id: str, quota: int | None, quota_refill: str | None
                       ) -> dict[str, Any]:
        current = self.get(key_id)
        if is_moved(current.quota_remaining, current.quota_refilled_at):
            raise KeyStateError(
                f"key {key_id} was rotated and its quota moved to its successor, which "
                "both keys share until the grace period ends: change the successor's quota")
        no_refill = quota_refill == ""  # an empty refill removes it, keeping the quota
        changes = _quota_fields(quota, None if no_refill else quota_refill, self._clock())
        if no_refill:
            if quota is None:
                if current.quota_remaining is None:
                    return {}
                return {"quota_refill": None}
            return changes
        if quota is None:
            changes["quota_refill"] = changes["quota_refill"] or current.quota_refill
            if current.quota_remaining is not None:
                # A new refill only: the units left stay as the store counts them.
                del changes["quota_remaining"]
        elif quota_refill is None:
            changes["quota_refill"] = current.quota_refill
        return changes

    def _update(self, key_id: str, changes: Mapping[str, Any], event: AuditEvent
                ) -> KeyRecord:
        record = self.store.update(key_id, changes, audit=event)
        if record is None:
            raise KeyNotFound(f"no key with id {key_id!r}")
        if record.revoked_at is not None:
            raise KeyStateError(f"key {key_id} was revoked at {_when(record.revoked_at)}: "
                                "a revoked key cannot be changed (revocation is final)")
        self._committed(event)
        return record

    def expire(self, key_id: str, at: dt.datetime, *, actor: str | None = None) -> KeyRecord:
        """Set the key to expire at *at* (timezone-aware).  An expiry once set
        only moves earlier (:meth:`KeyRecord.allows_expiry`): a key is never
        revived by extending it."""
        if at.tzinfo is None:
            raise ConfigurationError("expiry must be timezone-aware")
        current = self.get(key_id)
        if not current.allows_expiry(at):
            raise KeyStateError(current.expiry_refusal(at))
        # The store checks the rule again in its write: an expiry or a
        # revocation committed since the read above is not undone.
        event = self._event(actor)
        record = self.store.set_expiry(key_id, at, audit=event)
        if record is None:
            raise KeyNotFound(f"no key with id {key_id!r}")
        self._committed(event)
        return record

    def rotate(
        self,
        key_id: str,
        *,
        grace: dt.timedelta = dt.timedelta(0),
        expires_at: dt.datetime | None = None,
        expires_in: dt.timedelta | None = None,
        force: bool = False,
        actor: str | None = None,
    ) -> IssuedKey:
        """Issue a replacement and let the old key expire after *grace*.

        The new key keeps the old one's name, mode, prefix, scopes,
        restrictions, IP allowlist, rate limits (and their budget: the two
        keys share it), quota, owner and metadata, and at most its remaining lifetime:
        the old key's expiry, unless *expires_at* or *expires_in* set
        another.  ``grace=0`` ends the old key at once; an old key that
        expires sooner keeps its expiry.

        Refused with :class:`KeyStateError`: a revoked key (revocation is
        final), an expired key, and, unless *force*, a key already rotated
        whose successor is still usable (rotating it again would cut its
        grace period short).  The checks and the writes are one store
        transaction (:meth:`KeyStore.rotate`), so a revocation that lands
        while the new secret is being hashed wins.
        """
        if grace < dt.timedelta(0):
            raise ConfigurationError("grace must not be negative")
        if expires_at is not None and expires_in is not None:
            raise ConfigurationError("give expires_at or expires_in, not both")
        if expires_in is not None and expires_in <= dt.timedelta(0):
            raise ConfigurationError("expires_in must be positive")
        if expires_at is not None and expires_at.tzinfo is None:
            raise ConfigurationError("expires_at must be timezone-aware")
        old = self.get(key_id)
        # Refuse what can be refused before paying for a hash; the store
        # checks again, with the successors, in its transaction.
        _check_rotatable(old, (), self._clock(), force)
        parsed = self.format.generate(old.mode, old.prefix if old.prefix in self.format.prefixes
                                      else None)
        secret_hash = self._hash(parsed.secret)
        issued: list[KeyRecord] = []

        def plan(current: KeyRecord, successors: Sequence[KeyRecord]
                 ) -> tuple[KeyRecord, dt.datetime | None]:
            now = self._clock()
            _check_rotatable(current, successors, now, force)
            new_expiry = current.expires_at
            if expires_in is not None:
                new_expiry = now + expires_in
            elif expires_at is not None:
                if expires_at <= now:
                    raise ConfigurationError("expires_at must be in the future")
                new_expiry = expires_at
            ends = now + grace
            if current.expires_at is not None and current.expires_at < ends:
                ends = current.expires_at
            # The quota goes with the successor (the store marks the old
            # key's moved, so both spend one counter); a key whose quota
            # moved already (rotated again with force) passes on its newest
            # successor's.
            counter = current
            if is_moved(current.quota_remaining, current.quota_refilled_at):
                # Its counter went to a successor no longer live (a live one
                # was refused above): the count it left, or none if deleted.
                counter = (successors[-1] if successors
                           else dataclasses.replace(current, quota_refilled_at=now))
            issued[:] = [KeyRecord(
                id=parsed.key_id,
                name=current.name,
                mode=parsed.mode,
                prefix=parsed.prefix,
                hash=secret_hash,
                hint=hint(parsed.raw),
                created_at=now,
                expires_at=new_expiry,
                scopes=current.scopes,
                read_only=current.read_only,
                allowed_paths=current.allowed_paths,
                owner=current.owner,
                metadata=current.metadata,
                rotated_from=current.id,
                allowed_ips=current.allowed_ips,
                rate_limits=current.rate_limits,
                rate_limit_shared=current.rate_limit_shared,
                # One rate-limit budget and quota for the whole chain.
                lineage_id=current.lineage_id or current.id,
                quota_remaining=counter.quota_remaining,
                quota_refill=counter.quota_refill,
                quota_refilled_at=counter.quota_refilled_at,
            )]
            return issued[0], ends

        event = self._event(actor)
        if self.store.rotate(old.id, plan, audit=event) is None:  # deleted meanwhile
            raise KeyNotFound(f"no key with id {key_id!r}")
        self._committed(event)
        return IssuedKey(parsed.raw, issued[0])

    def delete(self, key_id: str, *, actor: str | None = None) -> None:
        """Remove a key's record entirely (prefer :meth:`revoke`, which keeps
        the record).  Its audit log is kept, with a ``deleted`` entry."""
        event = self._event(actor)
        if not self.store.delete(_key_id(key_id), audit=event):
            raise KeyNotFound(f"no key with id {key_id!r}")
        self._committed(event)

    def audit(self, *, key_id: str | None = None, since: dt.datetime | None = None,
              until: dt.datetime | None = None, limit: int | None = None
              ) -> AuditLog:
        """The audit log, newest first: every change to the keys (of *key_id*;
        at or after *since*, before *until*; at most *limit* entries).  A
        deleted key's entries are kept."""
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int)
                                  or limit < 1):
            raise ConfigurationError("limit must be a positive integer")
        return self.store.audit_entries(
            key_id=None if key_id is None else _key_id(key_id),
            since=_aware(since, "since"), until=_aware(until, "until"), limit=limit)

    def hygiene(self, *, now: dt.datetime | None = None) -> Hygiene:
        """Key-hygiene findings over the keys that are neither revoked nor
        expired: keys that never expire, keys idle for 90 days or more, live
        keys without an IP allowlist, and keys due for rotation."""
        now = _aware(now, "now") or self._clock()
        keys = [r for r in self.store.list() if r.status(now) not in ("revoked", "expired")]
        return Hygiene(
            checked_at=now,
            never_expire=[r for r in keys if r.expires_at is None],
            idle=[r for r in keys if now - (r.last_used_at or r.created_at) >= IDLE_AGE],
            live_without_allowlist=[r for r in keys if r.mode == "live" and not r.allowed_ips],
            due_for_rotation=[r for r in keys if r.due_for_rotation(now)],
        )

    # -- usage history (issue #14) -------------------------------------------

    def _history(self) -> UsageHistoryStore:
        store = self.store
        if not isinstance(store, UsageHistoryStore):
            raise ConfigurationError(f"{store!r} keeps no usage history")
        return store

    def usage(self, key_id: str, *, since: dt.datetime | None = None,
              until: dt.datetime | None = None, bucket: Bucket = "hour") -> UsageSeries:
        """One key's usage history, per hour or per day (UTC), zero-filled.

        *since* defaults to 24 hours (``bucket="hour"``) or 30 days
        (``bucket="day"``) before *until*, which defaults to now; the range
        is widened to whole buckets.  Counts are as flushed by the servers
        (every ``usage_flush_interval``), not what they hold in memory.
        A deleted key's history stays readable until retention prunes it;
        an id with neither a key nor history raises :class:`KeyNotFound`.
        """
        key_id = _key_id(key_id)
        store = self._history()
        first, end, starts = window(since, until, bucket, self._clock())
        rows = store.usage_rows(key_id=key_id, since=int(first.timestamp()),
                                until=int(end.timestamp()))
        if not rows and self.store.get(key_id) is None:
            raise KeyNotFound(f"no key with id {key_id!r}")
        return build_series(key_id, rows, bucket, first, end, starts)

    def usage_summary(self, *, since: dt.datetime | None = None,
                      until: dt.datetime | None = None, bucket: Bucket = "hour",
                      top: int = 10) -> UsageSummary:
        """Every key's usage over a range: counts by outcome per bucket (the
        requests that named no existing key included), the *top* keys by
        requests, failures by outcome, and the key-less counts
        (``unknown_key``, ``malformed``, ``missing``, ``throttled``)."""
        store = self._history()
        first, end, starts = window(since, until, bucket, self._clock())
        rows = store.usage_rows(since=int(first.timestamp()), until=int(end.timestamp()))
        names = {record.id: record.name for record in self.store.list()}
        return build_summary(rows, names, bucket, first, end, starts, top)

    def close(self) -> None:
        """Close the store, once the queued event hooks have run (5 s at most)."""
        self._hooks.close()
        self.store.close()

    def __enter__(self) -> KeyManager:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
