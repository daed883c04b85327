"""Per-key usage quotas: the refill rule, and the one consume step every
store runs atomically.

A quota is the number of requests a key may still make
(:attr:`KeyRecord.quota_remaining`).  Each admitted request takes one unit
in the store, atomically (:meth:`KeyStore.consume_quota`): a conditional
``UPDATE ... WHERE quota_remaining > 0``, never a read followed by a write,
so any number of processes and servers together admit at most the quota.
The cached record's count is stale by design; only the store decides.

**Refill** (``"1000/day"``): ``COUNT/PERIOD`` with PERIOD ``minute``,
``hour``, ``day``, ``week`` or ``month``, fixed lengths (a day is 86 400
seconds, a month 30 days), counted from :attr:`KeyRecord.quota_refilled_at`:
once ``quota_refilled_at + PERIOD`` has passed, the next request finds the
quota set back to COUNT (not added to: unused units do not carry over), and
``quota_refilled_at`` advances by whole periods, so the boundaries stay where
they were (a key refilled daily at 09:00 stays refilled at 09:00 whenever it
is next used).  Setting a quota starts its period at that moment.

**Rotation**: the successor takes the old key's counter (remaining count,
refill and period), and the old key's own counter is emptied and marked
*moved* (``quota_remaining = 0`` with no ``quota_refilled_at``, which no
quota set otherwise has): during the grace period a request with the old
key spends its successor's counter, so both keys share one quota exactly.
"""

from __future__ import annotations

import datetime as dt
import functools
import math
import re
from collections.abc import Callable
from typing import Any, Final, NamedTuple

from ._errors import ConfigurationError, InvalidAPIKey, QuotaExceeded, StoreUnavailable

__all__ = [
    "MAX_QUOTA",
    "PERIODS",
    "QuotaOps",
    "QuotaRow",
    "QuotaUse",
    "Refill",
    "check_quota",
    "consume_with",
    "is_moved",
    "next_refill",
    "parse_refill",
    "quota_step",
    "quota_view",
    "refill_cutoffs",
    "refused",
]

#: The refill periods and their lengths.
PERIODS: Final[dict[str, dt.timedelta]] = {
    "minute": dt.timedelta(minutes=1),
    "hour": dt.timedelta(hours=1),
    "day": dt.timedelta(days=1),
    "week": dt.timedelta(days=7),
    "month": dt.timedelta(days=30),
}

#: The largest quota (a signed 64-bit column holds it everywhere).
MAX_QUOTA: Final = 2**62

_REFILL: Final = re.compile(r"\s*(\d{1,19})\s*/\s*([a-z]+?)s?\s*")

# A store retries its conditional writes this often when other processes
# keep changing the row between its read and its write (they cannot do so
# for long: while a refill is due, nobody can take a unit).
_ATTEMPTS: Final = 16
# Rotations chained within one grace period followed at most this deep.
_MAX_MOVES: Final = 8


class Refill(NamedTuple):
    """A parsed ``COUNT/PERIOD`` refill."""

    amount: int
    period: dt.timedelta
    #: The canonical text, as stored: ``"1000/day"``.
    text: str


@functools.lru_cache(maxsize=1024)
def parse_refill(text: str) -> Refill:
    """*text* (``"1000/day"``, ``"50000 / months"``) as a :class:`Refill`, or
    :class:`ConfigurationError`.  Parsed once per distinct text."""
    match = _REFILL.fullmatch(text.lower()) if isinstance(text, str) else None
    period = PERIODS.get(match.group(2)) if match else None
    if match is None or period is None:
        raise ConfigurationError(
            f"quota refill {text!r} must be COUNT/PERIOD with PERIOD one of "
            f"{', '.join(PERIODS)} (like 1000/day)")
    amount = int(match.group(1))
    if not 1 <= amount <= MAX_QUOTA:
        raise ConfigurationError(f"quota refill {text!r}: COUNT must be 1 to {MAX_QUOTA}")
    return Refill(amount, period, f"{amount}/{match.group(2)}")


def check_quota(quota: object) -> int:
    """*quota* if it is a whole number of requests from 0 to :data:`MAX_QUOTA`."""
    if isinstance(quota, bool) or not isinstance(quota, int) or not 0 <= quota <= MAX_QUOTA:
        raise ConfigurationError(f"quota must be a whole number from 0 to {MAX_QUOTA}, "
                                 f"not {quota!r}")
    return quota


class QuotaUse(NamedTuple):
    """What :meth:`KeyStore.consume_quota` did for one request."""

    #: Whether the request may go on (a unit was taken, or the key has no quota).
    admitted: bool
    #: Units left after this request; ``None``: the key has no quota (any more).
    remaining: int | None
    #: When the next refill is due, if the quota refills.
    refills_at: dt.datetime | None


class QuotaRow(NamedTuple):
    """The quota columns of a key as stored."""

    remaining: int | None
    refill: str | None
    refilled_at: dt.datetime | None


def is_moved(remaining: int | None, refilled_at: dt.datetime | None) -> bool:
    """Whether a key's quota moved to its successor at a rotation."""
    return remaining == 0 and refilled_at is None


def next_refill(refill: str | None, refilled_at: dt.datetime | None) -> dt.datetime | None:
    """When a quota refilled at *refilled_at* is refilled next."""
    if refill is None or refilled_at is None:
        return None
    return refilled_at + parse_refill(refill).period


def quota_step(row: QuotaRow, now: dt.datetime) -> tuple[QuotaUse, QuotaRow]:
    """The decision for one request on a key with a quota (*row*, not moved):
    refill it if that is due, then take a unit if one is left.  Returns what
    happened and the row to write (equal to *row* when nothing changes)."""
    remaining, refill, at = row
    assert remaining is not None
    refills_at = None
    if refill is not None and at is not None:
        parsed = parse_refill(refill)
        if now >= at + parsed.period:
            at += ((now - at) // parsed.period) * parsed.period
            remaining = parsed.amount
        refills_at = at + parsed.period
    if remaining > 0:
        return QuotaUse(True, remaining - 1, refills_at), QuotaRow(remaining - 1, refill, at)
    return QuotaUse(False, 0, refills_at), QuotaRow(remaining, refill, at)


def quota_view(remaining: int | None, refill: str | None, refilled_at: dt.datetime | None,
               now: dt.datetime) -> dict[str, Any] | None:
    """A key's quota as management shows it at *now*: the units the next
    request finds (a refill that is due counted in), when it refills next,
    and whether it moved to the key's successor at a rotation; ``None``
    without a quota."""
    if remaining is None:
        return None
    if is_moved(remaining, refilled_at):
        return {"remaining": None, "refill": refill, "refills_at": None,
                "moved_to_successor": True}
    refills_at = None
    if refill is not None and refilled_at is not None:
        # What the next request would find: a refill that is due, counted in.
        use, _ = quota_step(QuotaRow(remaining, refill, refilled_at), now)
        remaining = use.remaining + 1 if use.admitted and use.remaining is not None else 0
        refills_at = use.refills_at
    return {"remaining": remaining, "refill": refill,
            "refills_at": None if refills_at is None else refills_at.isoformat(),
            "moved_to_successor": False}


def refill_cutoffs(now: dt.datetime) -> dict[str, dt.datetime]:
    """Per period name, the ``quota_refilled_at`` after which no refill is due
    at *now*: the SQL stores' single ``UPDATE`` takes a unit only from a row
    refilled after the cutoff of its own period (``quota_refill`` ends with
    ``/<period>``), so it never skips a refill."""
    return {name: now - length for name, length in PERIODS.items()}


class QuotaOps(NamedTuple):
    """A SQL store's primitives, for :func:`consume_with`."""

    #: Take a unit if one is left and no refill is due (one conditional
    #: ``UPDATE``); the row after it, or ``None`` if no row was changed.
    take: Callable[[str, dict[str, dt.datetime]], QuotaRow | None]
    #: The quota columns of a key; ``None`` for an unknown id.
    read: Callable[[str], QuotaRow | None]
    #: Write *new* if the row still is *old* (compare-and-swap); whether it did.
    swap: Callable[[str, QuotaRow, QuotaRow], bool]
    #: The id of the key's newest successor (``rotated_from``), if any.
    successor: Callable[[str], str | None]


def consume_with(ops: QuotaOps, key_id: str, now: dt.datetime) -> QuotaUse | None:
    """:meth:`KeyStore.consume_quota` out of a SQL store's primitives.

    The usual request is one statement (*take*).  A refill that is due is
    written by a compare-and-swap on the whole quota (so exactly one process
    refills, and a unit taken meanwhile by a server whose clock lags is not
    lost); a key whose quota moved at a rotation spends its successor's.
    """
    cutoffs = refill_cutoffs(now)
    for _ in range(_MAX_MOVES):
        for _ in range(_ATTEMPTS):
            taken = ops.take(key_id, cutoffs)
            if taken is not None:
                return QuotaUse(True, taken.remaining, next_refill(taken.refill,
                                                                   taken.refilled_at))
            row = ops.read(key_id)
            if row is None:
                return None
            if row.remaining is None:
                return QuotaUse(True, None, None)  # no quota (any more)
            if is_moved(row.remaining, row.refilled_at):
                break
            use, new = quota_step(row, now)
            if new == row:
                if not use.admitted:
                    return use
                continue  # the row changed between take and read: again
            if ops.swap(key_id, row, new):
                return use
        else:
            raise StoreUnavailable(f"key {key_id}: quota row kept changing")
        successor = ops.successor(key_id)
        if successor is None:
            return QuotaUse(False, 0, None)  # moved to a successor since deleted
        key_id = successor
    raise StoreUnavailable(f"key {key_id}: quota moved through too many rotations")


def refused(use: QuotaUse | None, now: float) -> None:
    """Raise the error of a request the quota refuses (or of a key deleted
    meanwhile); return if *use* admits it."""
    if use is None:
        raise InvalidAPIKey("unknown key id")
    if use.admitted:
        return
    retry_after = None
    if use.refills_at is not None:
        retry_after = max(1, math.ceil(use.refills_at.timestamp() - now))
    raise QuotaExceeded("quota exhausted", retry_after=retry_after)
