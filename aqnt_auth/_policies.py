"""Per-key policies: checked once when they are set, enforced on every
request from the cached record.

A key without policies never gets here: :attr:`KeyRecord.policed` is false
and the authenticator skips this module on that one attribute test.
"""

from __future__ import annotations

import functools
import ipaddress
import itertools
import logging
import math
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, Final, NamedTuple

from ._errors import ConfigurationError, IPNotAllowed, RateLimitExceeded, RateLimitUnavailable
from ._records import KeyRecord

if TYPE_CHECKING:
    from limits import RateLimitItem
    from limits.storage import Storage
    from limits.strategies import RateLimiter

__all__ = [
    "MAX_ALLOWED_IPS",
    "MAX_RATE_LIMITS",
    "STRATEGIES",
    "KeyRateLimiter",
    "budget_id",
    "check_client_ip",
    "normalise_allowed_ips",
    "normalise_rate_limits",
]

log = logging.getLogger("aqnt_auth")

_monotonic_ns: Final = time.monotonic_ns

#: Addresses and networks one key may list.
MAX_ALLOWED_IPS: Final = 100

_Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def normalise_allowed_ips(values: Iterable[str]) -> tuple[str, ...]:
    """*values* (IPv4/IPv6 addresses and CIDR networks) in canonical form,
    without duplicates, or :class:`ConfigurationError`.

    A network with host bits set (``10.0.0.1/8``) is refused rather than
    widened silently: it is most likely a typo.  IPv4-mapped IPv6 entries
    (``::ffff:10.0.0.1``) become IPv4, as client addresses do.
    """
    if isinstance(values, str):
        values = (values,)
    out: list[str] = []
    for value in values:
        if not isinstance(value, str):
            raise ConfigurationError(f"allowed IP {value!r} must be a string")
        try:
            network: _Network = ipaddress.ip_network(value.strip(), strict=True)
        except ValueError as exc:
            raise ConfigurationError(
                f"allowed IP {value!r} is not an IPv4 or IPv6 address or network ({exc})"
            ) from None
        if isinstance(network, ipaddress.IPv6Network):
            mapped = network.network_address.ipv4_mapped
            if mapped is not None and network.prefixlen >= 96:
                network = ipaddress.IPv4Network(f"{mapped}/{network.prefixlen - 96}")
        text = str(network.network_address) if network.num_addresses == 1 else str(network)
        if text not in out:
            out.append(text)
    if len(out) > MAX_ALLOWED_IPS:
        raise ConfigurationError(
            f"a key allows at most {MAX_ALLOWED_IPS} IP addresses or networks, not {len(out)}"
        )
    return tuple(out)


@functools.lru_cache(maxsize=4096)
def _networks(allowed: tuple[str, ...]) -> tuple[_Network, ...]:
    # Records are immutable and share their tuple: parsed once per allowlist.
    return tuple(ipaddress.ip_network(entry) for entry in allowed)


def check_client_ip(allowed: tuple[str, ...], client: str | None) -> None:
    """Return if *client* (as :class:`~aqnt_auth.TrustedProxies` resolved it)
    is in *allowed*; else raise :class:`IPNotAllowed`.  An unknown or
    unparseable client (a Unix socket, a test client) is refused: an
    allowlist fails closed."""
    if client is None:
        raise IPNotAllowed("no client address")
    try:
        address = ipaddress.ip_address(client)
    except ValueError:
        raise IPNotAllowed("client address is not an IP address") from None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    for network in _networks(allowed):
        if address in network:
            return
    raise IPNotAllowed("client address not in the key's allowlist")


def budget_id(record: KeyRecord, *, per_owner: bool | None = None) -> str:
    """The name a key's counters are kept under: its rate limits, and its quota.

    ``"owner:<owner>"`` when the budget is per owner (*per_owner*, by default
    the key's :attr:`~KeyRecord.rate_limit_shared`) and the key has an
    owner: every key of that owner then shares it.  Otherwise
    ``"key:<id>"`` with the id of the first key of the key's rotation chain
    (:attr:`~KeyRecord.lineage_id`), so that a key and its successors, while
    both work during a rotation's grace period, share one budget.  A shared
    key without an owner counts per key.
    """
    if (record.rate_limit_shared if per_owner is None else per_owner) and record.owner:
        return "owner:" + record.owner
    return "key:" + (record.lineage_id or record.id)


# -- rate limits ----------------------------------------------------------------

#: Rate limits one key may have.
MAX_RATE_LIMITS: Final = 10

#: The strategies of the ``limits`` library a :class:`KeyRateLimiter` can use.
STRATEGIES: Final = ("fixed-window", "moving-window", "sliding-window-counter")

Headers = tuple[tuple[str, str], ...]


class _Limit(NamedTuple):
    """One parsed ``LIMIT/PERIOD`` of a key."""

    item: RateLimitItem
    amount: int
    #: The window in seconds.
    window: int
    #: What follows the budget id in the counter's storage key (as the
    #: ``limits`` library's ``key_for`` spells it).
    suffix: str
    #: The policy's name in the RateLimit headers: the canonical limit.
    name: str
    #: Its ``RateLimit`` item up to the remaining count: ``"100/minute";r=``.
    head: str


class _Parsed(NamedTuple):
    limits: tuple[_Limit, ...]
    #: The ``RateLimit-Policy`` value: the same on every response.
    policy: str


def _canonical(item: RateLimitItem) -> str:
    unit = item.GRANULARITY.name
    if item.multiples == 1:
        return f"{item.amount}/{unit}"
    return f"{item.amount}/{item.multiples} {unit}s"


def _parse_one(value: object) -> RateLimitItem:
    from limits import parse_many

    if not isinstance(value, str):
        raise ConfigurationError(f"rate limit {value!r} must be a string such as '100/minute'")
    try:
        items = parse_many(value.strip())
    except ValueError:
        raise ConfigurationError(
            f"rate limit {value!r} is not LIMIT/PERIOD, such as '100/minute', '5000/hour' or "
            "'10/2 seconds' (periods: second, minute, hour, day, month, year)"
        ) from None
    if len(items) != 1:
        raise ConfigurationError(f"rate limit {value!r}: give one limit per string")
    if items[0].amount < 1:
        raise ConfigurationError(f"rate limit {value!r}: the limit must be at least 1")
    return items[0]


def normalise_rate_limits(values: Iterable[str]) -> tuple[str, ...]:
    """*values* (``LIMIT/PERIOD`` strings in the ``limits`` library's syntax)
    in canonical form (``100/minute``, ``10/2 seconds``), shortest period
    first, without duplicates, or :class:`ConfigurationError`."""
    if isinstance(values, str):
        values = (values,)
    items: dict[str, RateLimitItem] = {}
    for value in values:
        item = _parse_one(value)
        items.setdefault(_canonical(item), item)
    if len(items) > MAX_RATE_LIMITS:
        raise ConfigurationError(
            f"a key has at most {MAX_RATE_LIMITS} rate limits, not {len(items)}")
    ordered = sorted(items.items(), key=lambda pair: (pair[1].get_expiry(), pair[1].amount))
    return tuple(name for name, _ in ordered)


@functools.lru_cache(maxsize=4096)
def _parsed(rate_limits: tuple[str, ...]) -> _Parsed:
    # Records are immutable and share their tuple: parsed once per set of
    # limits, not per request.  Stored values were normalised when set; a
    # value written around KeyManager is parsed all the same, or refused.
    limits = []
    for value in rate_limits:
        item = _parse_one(value)
        window = item.get_expiry()
        name = _canonical(item)
        limits.append(_Limit(item, item.amount, window,
                             f"/{item.amount}/{item.multiples}/{item.GRANULARITY.name}",
                             name, f'"{name}";r='))
    limits.sort(key=lambda limit: limit.window)
    policy = ", ".join(f'"{limit.name}";q={limit.amount};w={limit.window}' for limit in limits)
    return _Parsed(tuple(limits), policy)


_Count = Callable[[tuple[_Limit, ...], str], tuple[int, str]]

#: Records whose budget and limits were worked out, by ``id``: bounded.
_PLANS_KEPT: Final = 4096


class _Plan(NamedTuple):
    """What counting a record's requests needs, worked out once per record
    (records are immutable and shared by the stores' caches)."""

    record: KeyRecord
    budget: str
    limits: tuple[_Limit, ...]
    #: Each limit with its counter's key in memory (the budget and the limit).
    counters: tuple[tuple[str, _Limit], ...]
    policy: tuple[str, str]


class _MemoryWindows:
    """Fixed windows counted in this process: the ``limits`` library's
    fixed-window strategy (a window opens with a budget's first request and
    lasts the period), in a dict.  The default storage's hot path: ``limits``'
    own ``MemoryStorage`` takes a lock per key and restarts a timer thread
    every 10 ms, which alone costs more than a warm request.

    Exact under threads: a window's count is an ``itertools.count`` (its
    ``next`` is atomic), and a window is opened or replaced under a lock.
    Ended windows are swept, under that lock, at most once a period of the
    shortest limit seen, when a new window opens."""

    __slots__ = ("_lock", "_next_sweep", "_windows")

    def __init__(self) -> None:
        self._windows: dict[str, tuple[int, itertools.count[int]]] = {}
        self._lock = threading.Lock()
        self._next_sweep = 0

    def count(self, plan: _Plan) -> tuple[int, str]:
        """Count one request against each of *plan*'s limits: ``(0, the
        RateLimit value)``, or ``(seconds to wait, the value)`` past one.
        Times are integer nanoseconds: rounding them up to the seconds left
        is integer arithmetic."""
        now = _monotonic_ns()
        windows = self._windows
        value = ""
        for key, limit in plan.counters:
            window = windows.get(key)
            if window is None or window[0] <= now:
                window = self._open(key, limit.window, now)
            count = next(window[1])
            # The seconds left, rounded up: 1 to the window.
            reset = (window[0] - now - 1) // 1_000_000_000 + 1
            if count > limit.amount:
                item = f"{limit.head}0;t={reset}"
                return reset, item if not value else f"{value}, {item}"
            item = f"{limit.head}{limit.amount - count};t={reset}"
            value = item if not value else f"{value}, {item}"
        return 0, value

    def _open(self, key: str, seconds: int, now: int) -> tuple[int, itertools.count[int]]:
        with self._lock:
            window = self._windows.get(key)
            if window is None or window[0] <= now:
                if now >= self._next_sweep:
                    self._windows = {k: w for k, w in self._windows.items() if w[0] > now}
                    self._next_sweep = now + seconds * 1_000_000_000
                window = (now + seconds * 1_000_000_000, itertools.count(1))
                self._windows[key] = window
            return window

    def reset(self) -> None:
        with self._lock:
            self._windows = {}


class KeyRateLimiter:
    """Counts the requests of keys with rate limits, per :func:`budget_id`.

    :param storage_uri: ``memory://`` (the default: counters per process) or
        a storage URI of the ``limits`` library such as
        ``redis://127.0.0.1:6379``, whose counters every server shares
        (needs the ``redis`` extra).
    :param strategy: ``fixed-window`` (the default: a window starts with a
        budget's first request and admits LIMIT requests until it ends; the
        cheapest, exact across servers, though a client can make up to
        2 x LIMIT requests around a window's end), ``moving-window`` (no
        window of the period ever holds more than LIMIT requests; it keeps
        a timestamp per request) or ``sliding-window-counter`` (an
        approximation of the moving window with two counters): the
        ``limits`` library's strategies, on its storage.  With
        ``memory://`` the fixed window is counted by a lean in-process
        counter of the same semantics, which costs a fraction of ``limits``'
        ``MemoryStorage``.
    :param fail_open: when the storage fails, let requests through (without
        RateLimit headers) rather than answer 503 ``rate_limit_unavailable``
        (the default: fail closed).  Either way the failure is logged.
    :param storage_options: keyword options of the ``limits`` storage, such
        as ``{"key_prefix": "myapp"}`` for Redis.

    ``blocking`` is true for a networked storage: async callers then count
    in a worker thread, never on the event loop.
    """

    def __init__(
        self,
        storage_uri: str = "memory://",
        *,
        strategy: str = "fixed-window",
        fail_open: bool = False,
        storage_options: Mapping[str, Any] | None = None,
    ) -> None:
        from limits import strategies

        if not isinstance(storage_uri, str):
            raise ConfigurationError(f"storage_uri must be a string, not {storage_uri!r}")
        kinds: dict[str, type[RateLimiter] | None] = {
            "fixed-window": strategies.FixedWindowRateLimiter,
            "moving-window": strategies.MovingWindowRateLimiter,
            # limits >= 4.1
            "sliding-window-counter": getattr(strategies, "SlidingWindowCounterRateLimiter",
                                              None),
        }
        kind = kinds.get(strategy)
        if kind is None:
            raise ConfigurationError(
                f"strategy must be one of {', '.join(STRATEGIES)}"
                if strategy not in kinds else f"strategy {strategy!r} needs limits >= 4.1")
        self._kind = kind
        self._options = dict(storage_options or {})
        self.strategy = strategy
        self.fail_open = bool(fail_open)
        self.storage_uri = storage_uri
        self.blocking = not storage_uri.startswith("memory://")
        self._last_logged = 0.0
        self._lock = threading.Lock()
        self._storage: Storage | None = None
        self._strategy: RateLimiter | None = None
        self._memory: _MemoryWindows | None = None
        self._plans: dict[int, _Plan] = {}
        # limits' MemoryStorage starts a timer thread: made when a limited
        # key first needs it (the lean counter, when it serves, never).
        self._count: _Count = self._open_and_count
        if strategy == "fixed-window" and not self.blocking and not self._options:
            self._memory = _MemoryWindows()
        elif self.blocking:
            # Checked here, where the app starts (a networked storage
            # connects on first use).
            self._count = self._counter(*self._open())

    def __repr__(self) -> str:
        return (f"KeyRateLimiter({self.storage_uri!r}, strategy={self.strategy!r}, "
                f"fail_open={self.fail_open})")

    def _open(self) -> tuple[Storage, RateLimiter]:
        from limits import storage

        with self._lock:
            if self._storage is None or self._strategy is None:
                try:
                    made = storage.storage_from_string(self.storage_uri, **self._options)
                except Exception as exc:  # limits raises several types for bad URIs
                    raise ConfigurationError(
                        f"bad key rate limit storage {_redacted(self.storage_uri)!r}: {exc}"
                    ) from None
                if not isinstance(made, storage.Storage):
                    raise ConfigurationError(
                        f"key rate limit storage {_redacted(self.storage_uri)!r} is an async "
                        "storage: give the synchronous URI (async callers count in threads)")
                self._strategy = self._kind(made)
                self._storage = made
            return self._storage, self._strategy

    def _counter(self, storage: Storage, strategy: RateLimiter) -> _Count:
        if self.strategy == "fixed-window":
            return functools.partial(_fixed_window, storage)
        return functools.partial(_by_strategy, strategy)

    def _open_and_count(self, limits: tuple[_Limit, ...], budget: str) -> tuple[int, str]:
        self._count = self._counter(*self._open())
        return self._count(limits, budget)

    def _plan(self, record: KeyRecord) -> _Plan:
        parsed = _parsed(record.rate_limits)
        budget = budget_id(record)
        plan = _Plan(record, budget, parsed.limits,
                     tuple((budget + limit.suffix, limit) for limit in parsed.limits),
                     ("RateLimit-Policy", parsed.policy))
        plans = self._plans
        if len(plans) >= _PLANS_KEPT:
            plans.clear()
        plans[id(record)] = plan
        return plan

    def hit(self, record: KeyRecord) -> Headers:
        """Count one request of *record*'s key against each of its limits.

        Returns the ``RateLimit-Policy`` and ``RateLimit`` headers
        (draft-ietf-httpapi-ratelimit-headers-11) to add to the response; or
        raises :class:`RateLimitExceeded` (with those headers and
        ``Retry-After``) when a limit is used up, or
        :class:`RateLimitUnavailable` when the storage fails and the
        limiter fails closed.  The limits are counted shortest period first
        and a refused request is not counted against the longer ones.
        """
        # The record's plan: its id is reused only once it is gone, which
        # the identity test sees (the plan holds the record it was made for).
        plan = self._plans.get(id(record))
        if plan is None or plan.record is not record:
            try:
                plan = self._plan(record)
            except ConfigurationError as exc:
                # A limit written around KeyManager that does not parse: the
                # key's limit cannot be enforced, so its requests are not admitted.
                log.error("key %s: its stored rate limits are invalid: %s", record.id, exc)
                raise RateLimitUnavailable("invalid stored rate limits") from None
        memory = self._memory
        try:
            if memory is not None:
                exceeded, values = memory.count(plan)
            else:
                exceeded, values = self._count(plan.limits, plan.budget)
        except Exception as exc:
            return self._failed(exc)
        if exceeded:
            error = RateLimitExceeded("key rate limit exceeded", retry_after=exceeded)
            error.response_headers = (plan.policy, ("RateLimit", values))
            raise error
        return (plan.policy, ("RateLimit", values))

    def _failed(self, exc: Exception) -> Headers:
        # Logged at most once a second: an outage must not flood the log.
        # The message names the storage and the error, never a key.
        now = time.monotonic()
        if now - self._last_logged >= 1.0:
            self._last_logged = now
            log.error("key rate limiter storage %s failed (%s): %s: %s",
                      _redacted(self.storage_uri),
                      "failing open: requests admitted" if self.fail_open
                      else "failing closed: 503", type(exc).__name__, exc)
        if self.fail_open:
            return ()
        raise RateLimitUnavailable(f"key rate limiter failed: {type(exc).__name__}")

    def reset(self) -> None:
        """Forget every counter (tests, or after an incident)."""
        if self._memory is not None:
            self._memory.reset()
        if self._storage is not None:
            self._storage.reset()


def _fixed_window(storage: Storage, limits: tuple[_Limit, ...], budget: str
                  ) -> tuple[int, str]:
    # The fixed-window strategy's hit() and get_window_stats() on the
    # storage itself: one increment and one expiry read per limit.
    now = time.time()
    values = []
    for limit in limits:
        key = "LIMITER/aqnt-key/" + budget + limit.suffix
        count = storage.incr(key, limit.window)
        reset = min(limit.window, max(0, math.ceil(storage.get_expiry(key) - now)))
        if count > limit.amount:
            values.append(f'"{limit.name}";r=0;t={reset}')
            return max(1, reset), ", ".join(values)
        values.append(f'"{limit.name}";r={limit.amount - count};t={reset}')
    return 0, ", ".join(values)


def _by_strategy(strategy: RateLimiter, limits: tuple[_Limit, ...], budget: str
                 ) -> tuple[int, str]:
    now = time.time()
    values = []
    for limit in limits:
        admitted = strategy.hit(limit.item, "aqnt-key", budget)
        stats = strategy.get_window_stats(limit.item, "aqnt-key", budget)
        reset = min(limit.window, max(0, math.ceil(stats.reset_time - now)))
        values.append(f'"{limit.name}";r={stats.remaining};t={reset}')
        if not admitted:
            return max(1, reset), ", ".join(values)
    return 0, ", ".join(values)


def _redacted(uri: str) -> str:
    """*uri* without a password."""
    scheme, sep, rest = uri.partition("://")
    if "@" not in rest:
        return uri
    credentials, _, host = rest.rpartition("@")
    user = credentials.partition(":")[0]
    return f"{scheme}{sep}{user}:***@{host}" if user else f"{scheme}{sep}***@{host}"
