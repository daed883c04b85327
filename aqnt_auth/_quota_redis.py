"""Quota counters in Redis (``Authenticator(quota_storage="redis://...")``).

By default a key's quota is counted in the key store, with one conditional
``UPDATE`` per request (:meth:`KeyStore.consume_quota`).  With Redis the live
counter is a Redis hash and one Lua script per request takes the unit
(refill included), atomically: N servers sharing one Redis admit exactly the
quota, and the key store is not written per request.

**Seeding, and why a restart resets nothing.**  The hash is created from the
key's record the first time it is needed: its ``quota_remaining``, refill
and ``quota_refilled_at``.  In this mode the store's row is written only when
someone sets the quota (``KeyManager.update``), so a record's quota fields
are exactly what was set, and ``quota_refilled_at`` (set anew at each change)
is the quota's *generation*: a hash of an older generation is replaced by
the new quota, a hash of the same or a newer one is kept.  Restarting the
application servers resets nothing (the counter is in Redis); a server whose
cached record is stale cannot reset it either (its generation is not newer).

**The trade-off.**  Redis holds the only live count.  If Redis loses its data
(restarted without persistence, flushed, evicted), each key's counter starts
again from the quota last *set* on it, so up to that many requests are
admitted again.  Run Redis with persistence (``appendonly yes``) and a
``noeviction`` policy for these keys, or keep the default (the key store),
which is exact whatever happens to Redis.

**Rotation.**  The counter is named after the first key of the rotation chain
(:func:`aqnt_auth.budget_id`), so a key and its successor spend one counter
during the grace period; the successor carries the quota's generation.  The
old key, whose record the rotation marked *moved*, seeds and counts with its
newest successor's record (found once by a listing, then by id).
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from typing import TYPE_CHECKING, Final

from ._errors import ConfigurationError, StoreUnavailable
from ._policies import budget_id
from ._quota import QuotaUse, is_moved, parse_refill

if TYPE_CHECKING:
    from ._records import KeyRecord
    from ._stores._protocol import KeyStore

__all__ = ["DEFAULT_PREFIX", "RedisQuotaCounter"]

log = logging.getLogger("aqnt_auth")

#: Prefix of the counters' Redis keys.
DEFAULT_PREFIX: Final = "aqnt:quota:"

_EPOCH: Final = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
# Rotations chained within one grace period followed at most this deep.
_MAX_MOVES: Final = 8
_US: Final = dt.timedelta(microseconds=1)

# KEYS[1]: the counter.  ARGV: the quota's generation, and the quota to
# seed it with (used when there is no counter, or one of an older
# generation): remaining, refilled_at (us), refill amount and period (us;
# 0: no refill); then now (us).  Returns {admitted, remaining, refilled_at
# (us), period (us)}.
_CONSUME: Final = """
local gen = tonumber(ARGV[1])
local cur = redis.call('HMGET', KEYS[1], 'gen', 'remaining', 'at', 'amount', 'period')
local cgen = tonumber(cur[1])
local remaining, at, amount, period
if cgen == nil or gen > cgen then
    remaining, at = tonumber(ARGV[2]), tonumber(ARGV[3])
    amount, period = tonumber(ARGV[4]), tonumber(ARGV[5])
    redis.call('HSET', KEYS[1], 'gen', ARGV[1], 'remaining', ARGV[2], 'at', ARGV[3],
               'amount', ARGV[4], 'period', ARGV[5])
else
    remaining, at = tonumber(cur[2]), tonumber(cur[3])
    amount, period = tonumber(cur[4]), tonumber(cur[5])
end
if period > 0 then
    local now = tonumber(ARGV[6])
    if now >= at + period then
        at = at + math.floor((now - at) / period) * period
        remaining = amount
        redis.call('HSET', KEYS[1], 'remaining', string.format('%d', amount),
                   'at', string.format('%d', at))
    end
end
if remaining > 0 then
    return {1, redis.call('HINCRBY', KEYS[1], 'remaining', -1), at, period}
end
return {0, 0, at, period}
"""


def _us(value: dt.datetime) -> int:
    return (value - _EPOCH) // _US


class RedisQuotaCounter:
    """Counts quotas in Redis; :meth:`consume_quota` is the store operation's
    twin, given the key store the records are read from.

    :param url: ``redis://host:6379/0`` (``rediss://`` for TLS).
    :param store: the key store (its records seed the counters).
    :param prefix: prefix of the counters' Redis keys.
    """

    #: Calls do network I/O: async callers run them in worker threads.
    blocking = True

    def __init__(self, url: str, store: KeyStore, *, prefix: str = DEFAULT_PREFIX) -> None:
        try:
            import redis
        except ImportError:  # pragma: no cover - the redis extra is not installed
            raise ConfigurationError(
                "quota_storage='redis://...' needs the redis extra: "
                "pip install 'aqnt-auth[redis]'") from None
        if not isinstance(url, str) or not url.startswith(("redis://", "rediss://", "unix://")):
            raise ConfigurationError(
                f"quota_storage must be a redis:// URL (or None: the key store), not {url!r}")
        self.url = url
        self.prefix = prefix
        self._store = store
        self._client = redis.Redis.from_url(url, socket_timeout=1.0,
                                            socket_connect_timeout=1.0)
        self._script = self._client.register_script(_CONSUME)
        self._errors: tuple[type[Exception], ...] = (redis.RedisError,)
        self._lock = threading.Lock()
        self._successors: dict[str, str] = {}

    def __repr__(self) -> str:
        scheme, _, rest = self.url.partition("://")
        return f"RedisQuotaCounter({scheme}://{rest.rpartition('@')[2]!r})"

    def consume_quota(self, key_id: str, now: dt.datetime) -> QuotaUse | None:
        """Take one unit of *key_id*'s quota in Redis (see the module)."""
        record = self._store.get(key_id)
        if record is None:
            return None
        if record.quota_remaining is None:
            return QuotaUse(True, None, None)
        seed: KeyRecord | None = record
        for _ in range(_MAX_MOVES):
            if seed is None:
                return QuotaUse(False, 0, None)  # moved to a successor since deleted
            if not is_moved(seed.quota_remaining, seed.quota_refilled_at):
                return self._run(seed, now)
            # Rotated: the newest successor carries the quota (and its generation).
            seed = self._successor(seed)
        raise StoreUnavailable(f"key {key_id}: quota moved through too many rotations")

    def _successor(self, record: KeyRecord) -> KeyRecord | None:
        """*record*'s newest successor: its id found by one listing, then
        remembered (a key's successors change only by another rotation, whose
        successor is found through this one)."""
        known = self._successors.get(record.id)
        if known is not None:
            found = self._store.get(known)
            if found is not None:
                return found
        successors = [r for r in self._store.list(owner=record.owner)
                      if r.rotated_from == record.id]
        if not successors:
            return None
        newest = successors[-1]
        with self._lock:
            if len(self._successors) >= 10_000:
                self._successors.clear()
            self._successors[record.id] = newest.id
        return newest

    def _run(self, seed: KeyRecord, now: dt.datetime) -> QuotaUse:
        assert seed.quota_remaining is not None
        amount = period = 0
        if seed.quota_refill is not None:
            refill = parse_refill(seed.quota_refill)
            amount, period = refill.amount, refill.period // _US
        at = _us(seed.quota_refilled_at or _EPOCH)
        key = self.prefix + budget_id(seed, per_owner=False)
        try:
            admitted, remaining, at_us, period_us = self._script(
                keys=[key], args=[at, seed.quota_remaining, at, amount, period, _us(now)])
        except self._errors as exc:
            # Without its counter a quota cannot be enforced: fail closed (503).
            log.error("quota counter (Redis) failed: %s: %s", type(exc).__name__, exc)
            raise StoreUnavailable(f"quota counter (Redis) failed: {type(exc).__name__}"
                                   ) from None
        refills_at = (_EPOCH + dt.timedelta(microseconds=int(at_us) + int(period_us))
                      if int(period_us) else None)
        return QuotaUse(bool(admitted), int(remaining), refills_at)

    def close(self) -> None:
        self._client.close()
