"""Key records (what a store holds) and principals (what a request gets)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
import types
from collections.abc import Callable, Mapping
from typing import Any, Final, Literal

from ._format import Mode

__all__ = ["KeyRecord", "KeyStatus", "Principal", "UsageDelta", "utcnow"]

KeyStatus = Literal["active", "expiring", "expired", "revoked", "disabled"]

UTC: Final = dt.timezone.utc

#: Keys older than this are flagged as due for rotation by ``keys list``.
ROTATION_AGE: Final = dt.timedelta(days=90)


def utcnow() -> dt.datetime:
    """The current time, timezone-aware UTC, to the microsecond."""
    return dt.datetime.now(UTC)


@dataclasses.dataclass(frozen=True, slots=True)
class KeyRecord:
    """One API key as a store holds it.  Never holds the key itself.

    Records are immutable: a change is a new record
    (:func:`dataclasses.replace`), which is what lets stores and caches share
    them between threads without locks.
    """

    id: str
    name: str
    mode: Mode
    hash: str = dataclasses.field(repr=False)
    #: ``sk_live_...`` and the key's last four characters: safe to display.
    hint: str
    prefix: str = "sk"
    created_at: dt.datetime = dataclasses.field(default_factory=utcnow)
    expires_at: dt.datetime | None = None
    revoked_at: dt.datetime | None = None
    last_used_at: dt.datetime | None = None
    usage_count: int = 0
    scopes: tuple[str, ...] = ()
    read_only: bool = False
    allowed_paths: tuple[str, ...] = ()
    owner: str | None = None
    metadata: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    #: Id of the key this one replaced by rotation, if any.
    rotated_from: str | None = None
    # -- per-key policies (issue #13) --
    #: When the key was disabled (reversibly, unlike a revocation), if it is.
    disabled_at: dt.datetime | None = None
    #: ``LIMIT/PERIOD`` strings in the ``limits`` library's syntax.
    rate_limits: tuple[str, ...] = ()
    #: Whether the rate limits are counted per owner (every key of the owner
    #: shares one budget) rather than per key.
    rate_limit_shared: bool = False
    #: Requests the key may still make; ``None``: no quota.  As a cached
    #: record holds it, stale by design: the store's atomic
    #: :meth:`~aqnt_auth.KeyStore.consume_quota` decides (see
    #: :mod:`aqnt_auth._quota`).
    quota_remaining: int | None = None
    #: ``COUNT/PERIOD``: the quota is set back to COUNT once per PERIOD,
    #: counted from :attr:`quota_refilled_at`.
    quota_refill: str | None = None
    #: When the quota was last refilled (or set); ``None`` with a quota of 0:
    #: the quota moved to the key's successor at a rotation.
    quota_refilled_at: dt.datetime | None = None
    #: IPv4/IPv6 addresses and networks the key may be used from; empty: any.
    allowed_ips: tuple[str, ...] = ()
    #: Id of the first key of this key's rotation chain (``None``: this key
    #: is the first).  Rotation carries it over, so that a key and its
    #: successors count their rate limits and quota under one budget
    #: (:func:`aqnt_auth.budget_id`).
    lineage_id: str | None = None
    #: Derived, never stored: whether the key is revoked or disabled, so
    #: that the warm path tests one attribute for both.
    halted: bool = dataclasses.field(init=False, repr=False, compare=False)
    #: Derived, never stored: whether a policy applies to the key's requests
    #: (an IP allowlist, rate limits, a quota), so that a key without one pays one
    #: attribute test.
    policed: bool = dataclasses.field(init=False, repr=False, compare=False)
    #: Derived, never stored: whether the key has a quota (each request then
    #: takes a unit from the store).
    metered: bool = dataclasses.field(init=False, repr=False, compare=False)
    #: Derived, never stored: :attr:`expires_at` as Unix time (infinity
    #: where the key never expires), so that the warm path compares floats.
    ends_at: float = dataclasses.field(init=False, repr=False, compare=False)
    #: Derived, never stored: whether the key is usable and has neither a
    #: policy nor a restriction (read-only, allowed paths), so that once it
    #: has been accepted only its expiry is left to decide a request.
    plain: bool = dataclasses.field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        halted = self.revoked_at is not None or self.disabled_at is not None
        object.__setattr__(self, "halted", halted)
        metered = self.quota_remaining is not None
        object.__setattr__(self, "metered", metered)
        policed = bool(self.allowed_ips) or bool(self.rate_limits) or metered
        object.__setattr__(self, "policed", policed)
        object.__setattr__(self, "ends_at", math.inf if self.expires_at is None
                           else self.expires_at.timestamp())
        object.__setattr__(self, "plain", not (halted or policed or self.read_only
                                               or self.allowed_paths))

    def status(self, now: dt.datetime | None = None) -> KeyStatus:
        """``revoked``, ``expired``, ``disabled``, ``expiring`` (an expiry is
        set) or ``active``: a revocation or an expiry outranks a disable,
        which can be undone."""
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and self.expires_at <= (now or utcnow()):
            return "expired"
        if self.disabled_at is not None:
            return "disabled"
        if self.expires_at is not None:
            return "expiring"
        return "active"

    def due_for_rotation(self, now: dt.datetime | None = None) -> bool:
        """Whether the key is older than 90 days and still usable."""
        return self.status(now) in ("active", "expiring") and (
            (now or utcnow()) - self.created_at >= ROTATION_AGE
        )

    def allows_expiry(self, at: dt.datetime | None) -> bool:
        """Whether the key's expiry may become *at* (``None``: never expires).

        A revoked key never changes, and an expiry once set only moves
        earlier: clearing or extending it would revive an expired key, or a
        rotated-out predecessor whose grace period is running out.  Stores
        apply it in the write itself (:meth:`KeyStore.set_expiry`); in SQL
        it reads ``revoked_at IS NULL AND (expires_at IS NULL OR expires_at
        >= :at)``, which a NULL *at* fails wherever an expiry is set.
        """
        if self.revoked_at is not None:
            return False
        return self.expires_at is None or (at is not None and at <= self.expires_at)

    def expiry_refusal(self, at: dt.datetime | None) -> str:
        """Why the expiry may not become *at* (:meth:`allows_expiry` said no)."""
        if self.revoked_at is not None:
            return f"key {self.id} is revoked: a revoked key cannot be changed"
        change = "clearing it" if at is None else f"moving it to {at.isoformat()}"
        ends = "never" if self.expires_at is None else f"at {self.expires_at.isoformat()}"
        return (f"key {self.id} expires {ends}: {change} is refused, an expiry can only "
                "move earlier (rotate or create a key instead)")

    def public_dict(self) -> dict[str, Any]:
        """Every field but the hash, JSON-ready (ISO 8601 times)."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            if not f.init or f.name == "hash":  # derived fields, and the hash
                continue
            value = getattr(self, f.name)
            if isinstance(value, dt.datetime):
                value = value.isoformat()
            elif isinstance(value, tuple):
                value = list(value)
            elif isinstance(value, Mapping):
                value = dict(value)
            out[f.name] = value
        out["status"] = self.status()
        out["livemode"] = self.mode == "live"
        return out


@dataclasses.dataclass(frozen=True, slots=True)
class UsageDelta:
    """Requests counted in memory since the last flush, for one key."""

    count: int
    last_used_at: dt.datetime


class Principal:
    """The authenticated API key, as the application sees it.

    Exposes every field of the record except the hash, plus
    :attr:`livemode`.  A thin view over the (immutable) record, so building
    one per request costs next to nothing.  Its ``repr`` shows no secret.
    """

    # _usage, when set: (a callable, the request's time) that moves this
    # request's usage from valid to forbidden, for a route-level scope refusal
    # (aqnt_auth.require_scopes).  Set by the authenticator only.
    __slots__ = ("_record", "_usage")
    _usage: tuple[Callable[[str, float], None], float] | None

    #: Headers the response to this request must carry: the
    #: ``RateLimit-Policy`` and ``RateLimit`` headers of a key with rate
    #: limits (every adapter adds them); empty for a key without.
    response_headers: tuple[tuple[str, str], ...] = ()

    def __init__(self, record: KeyRecord) -> None:
        self._record = record

    @classmethod
    def with_headers(cls, record: KeyRecord, headers: tuple[tuple[str, str], ...]
                     ) -> Principal:
        """The principal of *record*, whose response must carry *headers*."""
        return _HeadedPrincipal(record, headers) if headers else cls(record)

    def __repr__(self) -> str:
        r = self._record
        return f"<Principal id={r.id!r} name={r.name!r} mode={r.mode!r}>"

    def __reduce__(self) -> tuple[Any, ...]:
        # The key and its headers; never the usage link (its buffer holds locks).
        return (Principal.with_headers, (self._record, self.response_headers))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Principal) and other._record.id == self._record.id

    def __hash__(self) -> int:
        return hash(self._record.id)

    @property
    def id(self) -> str:
        return self._record.id

    @property
    def key_id(self) -> str:
        """Alias of :attr:`id`."""
        return self._record.id

    @property
    def name(self) -> str:
        return self._record.name

    @property
    def mode(self) -> Mode:
        return self._record.mode

    @property
    def livemode(self) -> bool:
        """``True`` for a live key, ``False`` for a test key: route data on this."""
        return self._record.mode == "live"

    @property
    def prefix(self) -> str:
        return self._record.prefix

    @property
    def hint(self) -> str:
        return self._record.hint

    @property
    def created_at(self) -> dt.datetime:
        return self._record.created_at

    @property
    def expires_at(self) -> dt.datetime | None:
        return self._record.expires_at

    @property
    def revoked_at(self) -> dt.datetime | None:
        return self._record.revoked_at

    @property
    def last_used_at(self) -> dt.datetime | None:
        """As last flushed to the store; the current request is not yet counted."""
        return self._record.last_used_at

    @property
    def usage_count(self) -> int:
        """As last flushed to the store; the current request is not yet counted."""
        return self._record.usage_count

    @property
    def scopes(self) -> frozenset[str]:
        return frozenset(self._record.scopes)

    @property
    def read_only(self) -> bool:
        return self._record.read_only

    @property
    def allowed_paths(self) -> tuple[str, ...]:
        return self._record.allowed_paths

    @property
    def owner(self) -> str | None:
        return self._record.owner

    @property
    def metadata(self) -> Mapping[str, Any]:
        return types.MappingProxyType(dict(self._record.metadata))

    @property
    def rotated_from(self) -> str | None:
        return self._record.rotated_from

    @property
    def disabled_at(self) -> dt.datetime | None:
        """Always ``None`` on a request: a disabled key is refused."""
        return self._record.disabled_at

    @property
    def allowed_ips(self) -> tuple[str, ...]:
        """The addresses and networks the key may be used from (empty: any)."""
        return self._record.allowed_ips

    @property
    def rate_limits(self) -> tuple[str, ...]:
        """The key's ``LIMIT/PERIOD`` rate limits (empty: none)."""
        return self._record.rate_limits

    @property
    def rate_limit_shared(self) -> bool:
        """Whether the rate limits count per owner rather than per key."""
        return self._record.rate_limit_shared

    def has_scopes(self, *required: str) -> bool:
        """Whether the key carries every one of *required*."""
        return set(required).issubset(self._record.scopes)

    def to_dict(self) -> dict[str, Any]:
        """Every public field, JSON-ready."""
        return self._record.public_dict()


class _HeadedPrincipal(Principal):
    # A subclass, so that a principal without headers (most) is built and
    # stored without the extra slot.
    __slots__ = ("response_headers",)

    def __init__(self, record: KeyRecord, headers: tuple[tuple[str, str], ...]) -> None:
        self._record = record
        self.response_headers = headers
