"""The verification decision, and its sync and async drivers.

:meth:`Authenticator._flow` is the whole decision, written once as a
generator in the manner of httpx's ``auth_flow``: it yields what it needs
(a record, an argon2 verification, a hash upgrade) and receives the answer.
It does no I/O.  :meth:`Authenticator.authenticate` and
:meth:`Authenticator.authenticate_async` drive it; they differ only in how
they fetch and verify.  Before starting it, each driver tries
:meth:`Authenticator._warm`, the same decision for a key that verified
before, on a store it may read inline: that request then costs its checks
and no generator.  Both share the record check and :meth:`_accept`.

The order of checks is part of the security design:

1. header, then format and checksum: garbage is rejected offline;
2. store lookup: an unknown id is rejected without argon2 (ids carry 71
   random bits, so the timing of a miss tells an attacker nothing, while a
   dummy hash would make every garbage request cost argon2);
3. secret verification (cached after success, single-flight, bounded);
4. revoked, expired or disabled: only *after* the secret verified, so a key
   id alone reveals nothing about the key's state;
5. allowed modes, the key's policies (its IP allowlist, against the client
   address as the trusted proxies resolve it; skipped on one attribute test
   for a key without policies), and the key's restrictions;
6. the key's quota, last, so that only a request otherwise admitted takes a
   unit: one atomic store write (:meth:`KeyStore.consume_quota`), which the
   flow yields like any other I/O, so the async driver runs it off the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import os
import threading
import time
from collections.abc import Awaitable, Callable, Generator, Iterable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, NamedTuple, TypedDict, TypeVar

from ._access import check_access
from ._cache import Flight, SingleFlight, VerificationCache, Verified
from ._client import TrustedProxies
from ._errors import (
    AQNTError,
    ClientDisconnected,
    ConfigurationError,
    DisabledAPIKey,
    InvalidAPIKey,
    InvalidStoredHash,
    Overloaded,
    RateLimited,
    RevokedAPIKey,
    StoreUnavailable,
)
from ._format import MODES, KeyFormat, Mode, ParsedKey
from ._gate import HashGate, Ticket
from ._hashers import (
    Hasher,
    check_memory_budget,
    default_hash_memory_mib,
    default_hashers,
    hash_memory_kib,
)
from ._header import MALFORMED_KEY, MAX_AUTHORIZATION_LENGTH, bearer_token, malformed_token
from ._outcomes import (
    EXPIRED,
    FORBIDDEN,
    INVALID_SECRET,
    MALFORMED,
    NO_KEY,
    OUTCOME_BY_CODE,
    UNKNOWN_KEY,
)
from ._policies import Headers, KeyRateLimiter, check_client_ip
from ._quota import QuotaUse, refused
from ._ratelimit import FailureLimiter
from ._records import KeyRecord, Principal, UsageDelta, _HeadedPrincipal
from ._response import ErrorResponse, render_error, validate_realm
from ._stores._async import to_async
from ._stores._open import DEFAULT_STORE_URL, open_store_to_serve
from ._stores._protocol import AsyncKeyStore, KeyStore
from ._usage_history import UsageRow

if TYPE_CHECKING:
    from ._quota_redis import RedisQuotaCounter

__all__ = ["Authenticator", "AuthenticatorOptions", "ClientFacts", "make_authenticator"]

log = logging.getLogger("aqnt_auth")

# What the flow asks its driver for.  A load, asked on every request, is the
# bare key id (no tuple to build or unpack); the rare operations are tuples:
_VERIFY: Final = 1  # (_VERIFY, hasher, stored, key, digest) -> _Verdict (argon2 only)
_REHASH: Final = 2  # (_REHASH, key_id, old_hash, new_hash) -> None
_ADMIT: Final = 3  # (_ADMIT, client, key_id) -> None, or raises RateLimited
_QUOTA: Final = 4  # (_QUOTA, key_id, now) -> QuotaUse | None (a store write)

_T = TypeVar("_T")

#: Waits until the client has gone away (an adapter's watch on its connection).
Disconnected = Callable[[], Awaitable[object]]

_Flow = Generator["str | tuple[Any, ...]", Any, Principal]
#: An adapter's raw client facts: peer address, Forwarded, X-Forwarded-For,
#: and the user agent (for usage history only).
_Facts = tuple["str | None", "str | None", "str | None", "str | bytes | None"]


class _NeedsClient(Exception):
    """Raised on the nowait path for a key whose policy needs the client's
    address, which that path does not have, or a store write (a quota): the
    caller awaits the async path."""


class _NeedsFlow(Exception):
    """Raised on an event loop's warm path for a key with a quota counted
    on a networked storage (Redis), before anything is counted: the async
    driver runs the flow instead, which charges the quota off the loop."""


class _NeedsIO(Exception):
    """Raised on the async paths for a key whose rate limits are counted on a
    networked storage, before anything is counted: the async driver counts
    in a worker thread, then decides again with the result (``limited``)."""

    def __init__(self, record: KeyRecord, mode: str) -> None:
        self.record = record
        self.mode = mode


class _Verdict(NamedTuple):
    ok: bool
    new_hash: str | None


_MISMATCH: Final = _Verdict(False, None)


class ClientFacts(TypedDict, total=False):
    """What an adapter knows the client by, as keyword arguments of the
    ``authenticate*`` methods: the peer address, the raw forwarded headers
    and the ``User-Agent`` (recorded in usage history, never decided on)."""

    client: str | None
    forwarded: str | None
    x_forwarded_for: str | None
    user_agent: str | bytes | None


class AuthenticatorOptions(TypedDict, total=False):
    """The keyword options of :class:`Authenticator`, as one type.

    Adapters take them as ``**options: Unpack[AuthenticatorOptions]`` and
    pass them on, so type checkers check every option at the adapter too
    (a plain ``**options: Any`` also defeats Starlette's typed
    ``add_middleware``).
    """

    prefixes: Iterable[str]
    allowed_modes: Iterable[Mode]
    realm: str
    hashers: Iterable[Hasher] | None
    cache_size: int
    cache_ttl: float
    max_concurrent_hashes: int | None
    max_queued_hashes: int | None
    max_hash_wait: float
    max_hash_memory_mib: int | None
    usage_flush_interval: float
    track_usage: bool
    usage_history: bool
    usage_retention_days: float | None
    rehash: bool
    rate_limit: FailureLimiter | str | None
    key_rate_limit_storage: KeyRateLimiter | str
    key_rate_limit_strategy: str
    key_rate_limit_fail_open: bool
    trusted_proxies: Iterable[str]
    quota_storage: str | None
    clock: Callable[[], float]


class Authenticator:
    """Checks ``Authorization`` headers against a key store.

    :param store: a :class:`KeyStore` or a store URL (``"sqlite:///aqnt_keys.db"``);
        a URL that is malformed or cannot be opened raises
        :class:`StoreOpenError`, naming it and what is wrong.
    :param prefixes: key prefixes accepted (``("sk",)``).
    :param allowed_modes: ``"live"`` and/or ``"test"``; a key of another mode
        gets ``invalid_api_key``.
    :param realm: the ``realm`` of ``WWW-Authenticate``.
    :param hashers: hashers able to verify stored hashes; by default
        argon2id, plus HMAC-SHA256 when ``AQNT_AUTH_PEPPER`` is set.
    :param cache_size: successful argon2 verifications remembered (LRU).
    :param cache_ttl: seconds one stays remembered.
    :param max_concurrent_hashes: argon2 verifications running at once, per
        process (default: CPU count), so a flood of wrong secrets cannot take
        every core.
    :param max_queued_hashes: cold verifications allowed to wait for a turn
        (default: 32 per concurrent one); past it a request gets 503
        ``auth_unavailable`` with ``Retry-After`` at once (429 if its client
        is over its failure limit).
    :param max_hash_wait: seconds a cold verification may wait for a turn
        (default 1) before it gets that answer instead.  Queued work whose
        requests were all cancelled (the client went away) is dropped.
    :param max_hash_memory_mib: argon2 memory in use at once, per process, in
        MiB (default: room for the concurrency bound of the OWASP profile,
        at least 1024).  A configured hasher needing more for one hash is a
        :class:`ConfigurationError`; a stored hash needing more is refused.
    :param usage_flush_interval: seconds between usage flushes.
    :param track_usage: count requests and ``last_used_at`` per key.
    :param usage_history: with *track_usage*, also keep usage history: per
        key and UTC hour, requests by outcome, and for valid requests the
        distinct client addresses, last client and user agent, and top paths
        (see :meth:`KeyManager.usage`); written with the same flushes.
    :param usage_retention_days: days of usage history kept (default 90;
        ``None``: kept forever); older hours are deleted by a flush, at most
        once an hour per process.
    :param rehash: upgrade outdated hashes after a successful verification.
    :param rate_limit: a :class:`FailureLimiter` throttling failed attempts
        per client address and per (key id, client); or the storage URI of
        one with the default limits (``"memory://"``, the default: per
        process; ``"redis://host:6379"``: shared by every server); ``None``
        turns throttling off.
    :param key_rate_limit_storage: where the per-key rate limits
        (``KeyManager.create(rate_limits=[...])``) are counted: a storage URI
        of the ``limits`` library, ``"memory://"`` (the default: per process)
        or ``"redis://host:6379"`` (shared by every server), or a
        :class:`KeyRateLimiter`.
    :param key_rate_limit_strategy: ``"fixed-window"`` (the default),
        ``"moving-window"`` or ``"sliding-window-counter"`` (see
        :class:`KeyRateLimiter`).
    :param key_rate_limit_fail_open: when that storage fails, admit the
        requests of limited keys instead of answering 503
        ``rate_limit_unavailable`` (the default: fail closed).  Logged either way.
    :param trusted_proxies: addresses or networks of reverse proxies whose
        ``Forwarded`` / ``X-Forwarded-For`` headers are believed (see
        :meth:`client_address`); none by default, so the client is the peer.
    :param quota_storage: where the usage quotas of keys that have one
        (``KeyManager.create(quota=...)``) are counted: ``None`` (the
        default) in the key store, one atomic write per request, exact
        whatever happens; or ``"redis://host:6379/0"``, a counter per key in
        Redis (one Lua call per request, no store write), exact across
        servers as long as Redis keeps its data (see the README).
    :param clock: wall-clock time, for expiry (tests pass a fake).

    Safe to share between threads and event loops.  Use it as a context
    manager, or call :meth:`close`, so the last usage counts are written.
    """

    def __init__(
        self,
        store: KeyStore | str,
        *,
        prefixes: Iterable[str] = ("sk",),
        allowed_modes: Iterable[Mode] = MODES,
        realm: str = "api",
        hashers: Iterable[Hasher] | None = None,
        cache_size: int = 10_000,
        cache_ttl: float = 300.0,
        max_concurrent_hashes: int | None = None,
        max_queued_hashes: int | None = None,
        max_hash_wait: float = 1.0,
        max_hash_memory_mib: int | None = None,
        usage_flush_interval: float = 10.0,
        track_usage: bool = True,
        usage_history: bool = True,
        usage_retention_days: float | None = 90,
        rehash: bool = True,
        rate_limit: FailureLimiter | str | None = "memory://",
        key_rate_limit_storage: KeyRateLimiter | str = "memory://",
        key_rate_limit_strategy: str = "fixed-window",
        key_rate_limit_fail_open: bool = False,
        trusted_proxies: Iterable[str] = (),
        quota_storage: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store: KeyStore = open_store_to_serve(store)
        self._astore: AsyncKeyStore | None = None
        self.format = self._format = KeyFormat(tuple(prefixes))
        modes = frozenset(allowed_modes)
        if not modes or not modes <= set(MODES):
            raise ConfigurationError("allowed_modes must be a non-empty subset of ('live', 'test')")
        self.allowed_modes: frozenset[str] = modes
        self.realm = validate_realm(realm)
        self.hashers: tuple[Hasher, ...] = (
            tuple(hashers) if hashers is not None else default_hashers()
        )
        if not self.hashers:
            raise ConfigurationError("at least one hasher is required")
        self._hasher_table = tuple((h.identifier, h) for h in self.hashers)
        self._cache = VerificationCache(cache_size, cache_ttl)
        # hash() of tokens that verified: see _token.
        self._verified_hints: set[int] = set()
        self._flights: SingleFlight[_Verdict] = SingleFlight()
        bound = max_concurrent_hashes if max_concurrent_hashes is not None else os.cpu_count()
        if not bound or bound < 1:
            raise ConfigurationError("max_concurrent_hashes must be at least 1")
        self.max_concurrent_hashes: int = bound
        queued = max_queued_hashes if max_queued_hashes is not None else 32 * bound
        if queued < 0:
            raise ConfigurationError("max_queued_hashes must be at least 0")
        if not max_hash_wait >= 0:
            raise ConfigurationError("max_hash_wait must be at least 0 seconds")
        budget = (max_hash_memory_mib if max_hash_memory_mib is not None
                  else default_hash_memory_mib(bound))
        if budget < 1:
            raise ConfigurationError("max_hash_memory_mib must be at least 1")
        for hasher in self.hashers:
            check_memory_budget(hasher, budget)
        self.max_hash_memory_mib: int = budget
        self._gate = HashGate(bound, budget * 1024, queued, max_hash_wait)
        self._hash_pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()
        self._rehash = rehash
        if isinstance(rate_limit, str):
            rate_limit = FailureLimiter(storage_uri=rate_limit)
        elif rate_limit is not None and not isinstance(rate_limit, FailureLimiter):
            raise ConfigurationError(
                f"rate_limit must be a FailureLimiter, a storage URI or None, not {rate_limit!r}"
            )
        self.rate_limit: FailureLimiter | None = rate_limit
        if isinstance(key_rate_limit_storage, str):
            key_limiter = KeyRateLimiter(key_rate_limit_storage,
                                         strategy=key_rate_limit_strategy,
                                         fail_open=key_rate_limit_fail_open)
        elif isinstance(key_rate_limit_storage, KeyRateLimiter):
            if key_rate_limit_strategy != "fixed-window" or key_rate_limit_fail_open:
                raise ConfigurationError(
                    "with a KeyRateLimiter as key_rate_limit_storage, set its strategy and "
                    "fail_open on it, not on the Authenticator")
            key_limiter = key_rate_limit_storage
        else:
            raise ConfigurationError(
                "key_rate_limit_storage must be a storage URI or a KeyRateLimiter, "
                f"not {key_rate_limit_storage!r}")
        #: Counts the requests of keys with rate limits.
        self.key_rate_limiter: KeyRateLimiter = key_limiter
        self._key_limits_blocking = key_limiter.blocking
        self._key_hit = key_limiter.hit
        self.trusted_proxies = TrustedProxies(trusted_proxies)
        self._clock = clock
        self._store_get = self.store.get
        self._store_blocking = bool(getattr(self.store, "blocking", True))
        self._has_native_async = getattr(self.store, "aio", None) is not None
        # Async callers read this store on the loop, so its warm path can too.
        self._inline_store = not (self._store_blocking or self._has_native_async)
        # A store with a record cache may answer a warm read without I/O too.
        self._peek: Callable[[str], KeyRecord | None] | None = (
            None if self._inline_store else getattr(self.store, "peek", None)
        )
        # A verified key never touches the failure limiter, so it does not
        # change what is "nowait"; a refusal there is counted by the async path.
        self._nowait = self._inline_store or self._peek is not None
        self._limiter_blocking = rate_limit is not None and rate_limit.blocking
        self._consume_quota: Callable[[str, dt.datetime], QuotaUse | None] | None = getattr(
            self.store, "consume_quota", None)
        #: The Redis quota counters (``quota_storage``), if any.
        self.quota_counter: RedisQuotaCounter | None = None
        if quota_storage is not None:
            from ._quota_redis import RedisQuotaCounter

            self.quota_counter = RedisQuotaCounter(quota_storage, self.store)
            self._consume_quota = self.quota_counter.consume_quota
        #: Whether taking a quota unit is network I/O even on a store that
        #: does none (Redis counters): then an event loop's warm request of a
        #: key with a quota runs the flow, whose driver charges in a thread.
        self._quota_off_loop = self.quota_counter is not None and self._inline_store
        self._usage = None
        self._hit: Callable[..., None] | None = None
        # Counts a request that did not end valid: (outcome, key id, time).
        self._fail: Callable[[str, str, float], None] | None = None
        # Moves a counted valid request to forbidden: (key id, its time).
        self._forbid: Callable[[str, float], None] | None = None
        if usage_retention_days is not None and not usage_retention_days > 0:
            raise ConfigurationError("usage_retention_days must be positive (or None)")
        if track_usage:
            from ._usage import UsageBuffer

            # A store of one's own without usage history keeps the counters.
            history = (getattr(self.store, "record_usage_history", None)
                       if usage_history else None)
            self._usage = UsageBuffer(
                self._write_usage, interval=usage_flush_interval,
                history=self._write_usage_history if history is not None else None,
                resolve=self.trusted_proxies.resolve,
                retention=(None if usage_retention_days is None
                           else usage_retention_days * 86_400),
                clock=clock,
            )
            self._hit = self._usage.hit
            if history is not None:
                self._fail = self._usage.fail
                self._forbid = self._usage.forbid

    def __repr__(self) -> str:
        return (
            f"Authenticator(store={self.store!r}, prefixes={self.format.prefixes!r}, "
            f"allowed_modes={sorted(self.allowed_modes)!r}, realm={self.realm!r})"
        )

    # -- the decision ------------------------------------------------------

    def _token(self, authorization: str | bytes | None) -> str:
        """Header and format checks: everything that needs no store.

        Run by the drivers before the flow starts, so that garbage and typos
        are rejected before anything else is set up.
        """
        token = bearer_token(authorization)
        # A token that verified before skips the checksum here (costly in a
        # real request, where zlib's tables are cold).  The hint decides
        # nothing: the flow's keyed-digest lookup does, and checks the
        # checksum itself if that lookup misses.
        if hash(token) in self._verified_hints:
            return token
        if not self._format.checksum_ok(token):
            raise malformed_token(token)
        return token

    def _flow(self, token: str, digest: bytes, known: Verified | None, method: str | None,
              path: str | None, client: str | None, facts: _Facts, aio: bool = False) -> _Flow:
        key: ParsedKey | None = None
        mode: str
        if known is None:
            if hash(token) in self._verified_hints and not self._format.checksum_ok(token):
                raise InvalidAPIKey("malformed key or bad checksum")
            key = self._format.split(token)
            key_id, mode, prefix = key.key_id, key.mode, key.prefix
            if self.rate_limit is not None:
                # Work is about to be done for an unproven key: refuse it
                # first if this client or this id is past its failure limit.
                yield (_ADMIT, client, key_id)
        else:
            # This exact string passed the format, checksum and secret checks
            # before; the record below still decides everything else.
            key_id, mode, prefix = known.key_id, known.mode, known.prefix
        record = _matching((yield key_id), mode, prefix)
        if known is None or known.stored_hash != record.hash:
            if key is None:
                key = self._format.split(token)
            hasher = self._hasher_for(record)
            if hasher.expensive:
                verdict: _Verdict = yield (_VERIFY, hasher, record.hash, key, digest)
            else:
                verdict = self._verify(hasher, record.hash, key, digest)
            if not verdict.ok:
                error = InvalidAPIKey("wrong secret")
                error.outcome, error.key_id = INVALID_SECRET, record.id
                raise error
            if verdict.new_hash is not None:
                yield (_REHASH, record.id, record.hash, verdict.new_hash)
        principal = self._accept(record, mode, method, path, *facts, aio=aio, quota=False)
        if record.metered:
            # The quota is a store write: the driver makes it (in a thread,
            # or natively async, on an event loop), then the request counts.
            now = self._clock()
            _settle((yield (_QUOTA, record.id, now)), now, record.id)
            self._counted(principal, now, path, *facts)
        return principal

    def _warm(self, known: Verified, record: KeyRecord | None, method: str | None,
              path: str | None, client: str | None = None, forwarded: str | None = None,
              x_forwarded_for: str | None = None, user_agent: str | bytes | None = None,
              facts: bool = True, aio: bool = False) -> Principal | None:
        """:meth:`_flow` without a generator, for a token that verified before
        (*known*, its cache entry) on a store that can be read inline: the
        warm request, at the cost of its checks alone.  The driver has read
        *record*, the key's, inline (as :meth:`_read` does, or with the
        store's ``peek``).  ``None`` when the flow must run instead (the
        stored hash has changed since)."""
        if record is known.accepted and record is not None:
            # The very record this key was accepted with, and a plain one:
            # nothing but its expiry has changed since (records are
            # immutable).  The end of _accept(), written out.
            clock = self._clock
            now = clock()
            if now < record.ends_at:
                principal = _new_principal(Principal)
                principal._record = record
                hit = self._hit
                if hit is not None:
                    hit(record.id, now, path, client, forwarded, x_forwarded_for, user_agent)
                    if self._forbid is not None:
                        principal._usage = (self._forbid, now)
                return principal
        # _matching() written out: each call is a measurable share of a warm
        # request.
        mode = known.mode
        if record is None or record.mode != mode or record.prefix != known.prefix:
            raise _unknown_key()
        if known.stored_hash != record.hash:
            return None
        principal = self._accept(record, mode, method, path, client, forwarded,
                                 x_forwarded_for, user_agent, facts, aio)
        if record.plain:
            known.accepted = record
        return principal

    def _accept(self, record: KeyRecord, mode: str, method: str | None, path: str | None,
                client: str | None = None, forwarded: str | None = None,
                x_forwarded_for: str | None = None, user_agent: str | bytes | None = None,
                facts: bool = True, aio: bool = False, limited: Headers | None = None,
                quota: bool = True) -> Principal:
        """The checks after the secret verified: state, mode, policies (IP
        allowlist, rate limits), restrictions, then the quota.  *client*,
        *forwarded* and *x_forwarded_for* are the adapter's raw client facts,
        resolved only for a key with a policy that needs the client; without
        *facts* (the nowait path, which has none and does no I/O) a key with
        an allowlist or a quota raises :class:`_NeedsClient`.  With *aio* (an
        event loop's path) a key whose rate limits would block on their
        storage raises :class:`_NeedsIO`; the async driver counts and passes
        the headers it got as *limited*.  Without *quota* a key with a quota
        is checked but neither charged nor counted: the flow's driver does
        that.  A valid request is counted here with its raw facts and
        *user_agent* (resolved at flush time); an error raised here is given
        the key's id, and counted by the driver."""
        clock = self._clock
        now = clock()
        try:
            if record.halted:  # revoked or disabled: one test for both
                if record.revoked_at is not None:
                    raise RevokedAPIKey("revoked")
                if record.ends_at > now:
                    # An expiry outranks a disable, as in KeyRecord.status().
                    raise DisabledAPIKey("disabled")
            if record.ends_at <= now:
                error: AQNTError = RevokedAPIKey("expired")
                error.outcome = EXPIRED
                raise error
            if mode not in self.allowed_modes:
                error = InvalidAPIKey("mode not allowed here")
                error.outcome = FORBIDDEN
                raise error
            if record.policed:  # a key without policies pays this test alone
                if not facts and (record.allowed_ips or record.metered):
                    raise _NeedsClient
                if aio and quota and record.metered and self._quota_off_loop:
                    raise _NeedsFlow
                if record.allowed_ips:
                    check_client_ip(record.allowed_ips, self.trusted_proxies.resolve(
                        client, forwarded, x_forwarded_for))
                if record.rate_limits:
                    if limited is None:
                        if aio and self._key_limits_blocking:
                            raise _NeedsIO(record, mode)
                        limited = self._key_hit(record)  # or RateLimitExceeded
                    if limited:
                        # Principal.with_headers() written out: two slot stores.
                        headed = _new_principal(_HeadedPrincipal)
                        headed._record = record
                        headed.response_headers = limited
                        principal: Principal = headed
                    else:  # a storage outage, failing open
                        principal = Principal(record)
                else:
                    principal = Principal(record)
                if record.metered:
                    return self._metered(principal, method, path, now, quota, client,
                                         forwarded, x_forwarded_for, user_agent)
            else:
                # Principal(record) written out (_new_principal).
                principal = _new_principal(Principal)
                principal._record = record
            # A key without restrictions has nothing for check_access to decide.
            if method is not None and (record.read_only or record.allowed_paths):
                check_access(principal, method, path if path is not None else "/")
        except AQNTError as exc:
            if exc.key_id is None:
                exc.key_id = record.id
            raise
        # Callables kept in attributes are read into a local before the call:
        # CPython 3.11 specializes an attribute read, not a method call on one.
        hit = self._hit
        if hit is not None:
            hit(record.id, now, path, client, forwarded, x_forwarded_for, user_agent)
            if self._forbid is not None:
                # A route-level scope refusal moves it to forbidden.
                principal._usage = (self._forbid, now)
        return principal

    def _metered(self, principal: Principal, method: str | None, path: str | None, now: float,
                 charge: bool, *facts: Any) -> Principal:
        """The end of :meth:`_accept` for a key with a quota: its restrictions,
        then (if *charge*) a unit taken from the store, inline; *facts* are
        the request's client facts and user agent, for usage history."""
        record = principal._record
        if method is not None and (record.read_only or record.allowed_paths):
            check_access(principal, method, path if path is not None else "/")
        if charge:
            _settle(self._charge(record.id, now), now, record.id)
            self._counted(principal, now, path, *facts)
        return principal

    def _counted(self, principal: Principal, now: float, path: str | None, *facts: Any
                 ) -> None:
        """Count a valid request of a key with a quota (charged after
        :meth:`_accept`): what ``_accept`` does inline for every other key."""
        if self._hit is not None:
            self._hit(principal.id, now, path, *facts)
            if self._forbid is not None:
                principal._usage = (self._forbid, now)

    def _charge(self, key_id: str, now: float) -> QuotaUse | None:
        """Take one unit of *key_id*'s quota in the store (blocking)."""
        consume = self._consume_quota
        if consume is None:
            raise _no_quota_support(self.store)
        try:
            return consume(key_id, dt.datetime.fromtimestamp(now, dt.timezone.utc))
        except AQNTError:
            raise
        except Exception as exc:
            raise _store_failed(exc) from None

    async def _charge_async(self, key_id: str, now: float) -> QuotaUse | None:
        """:meth:`_charge` off the event loop: the store's native async twin,
        or a worker thread (inline only for a store that does no I/O)."""
        if self._consume_quota is None:
            raise _no_quota_support(self.store)
        at = dt.datetime.fromtimestamp(now, dt.timezone.utc)
        try:
            if self.quota_counter is not None:
                return await asyncio.get_running_loop().run_in_executor(
                    None, self.quota_counter.consume_quota, key_id, at)
            return await self.async_store.consume_quota(key_id, at)
        except AQNTError:
            raise
        except Exception as exc:
            raise _store_failed(exc) from None

    def _hasher_for(self, record: KeyRecord) -> Hasher:
        stored = record.hash
        for identifier, hasher in self._hasher_table:
            if stored.startswith(identifier):
                return hasher
        log.error("key %s: stored hash made by no configured hasher", record.id)
        error = InvalidAPIKey("no hasher for stored hash")
        error.outcome, error.key_id = INVALID_SECRET, record.id
        raise error

    def _verify(self, hasher: Hasher, stored: str, key: ParsedKey, digest: bytes) -> _Verdict:
        """Verify a secret (inline for a cheap hasher, inside the gate for
        argon2); remember a success."""
        try:
            ok = hasher.verify(stored, key.secret)
        except InvalidStoredHash as exc:
            log.error("key %s: %s", key.key_id, exc)
            return _MISMATCH
        return self._verified(hasher, stored, key, digest) if ok else _MISMATCH

    def _verify_gated(self, flight: Flight[_Verdict], hasher: Hasher, stored: str,
                      key: ParsedKey, digest: bytes, ticket: Ticket, client: str | None
                      ) -> _Verdict:
        """Verify with an expensive hasher once the gate gives a turn
        (blocking: runs in the request's thread or an argon2 worker)."""
        gate = self._gate
        kib = hash_memory_kib(hasher, stored)
        if self._rehash:
            kib = max(kib, hash_memory_kib(hasher))
        if not self._flights.start(flight):
            # Every request waiting for this was cancelled (its client left),
            # which gave its place in the queue back.
            raise ClientDisconnected("nobody waits for this verification")
        if not gate.fits(kib):
            gate.leave()
            log.error("key %s: stored hash needs %d MiB, over max_hash_memory_mib (%d)",
                      key.key_id, -(-kib // 1024), self.max_hash_memory_mib)
            return _MISMATCH
        if not gate.acquire(kib, ticket.deadline):
            raise self._overloaded(key.key_id)
        try:
            if ticket.queued and self.rate_limit is not None:
                # It waited behind others: its client may have failed meanwhile.
                self._admit(client, key.key_id)
            return self._verify(hasher, stored, key, digest)
        finally:
            gate.release(kib)

    def _overloaded(self, key_id: str) -> Overloaded:
        error = Overloaded("too many verifications waiting for argon2")
        error.key_id = key_id
        return error

    def _verified(self, hasher: Hasher, stored: str, key: ParsedKey, digest: bytes
                  ) -> _Verdict:
        """Remember a successful verification; upgrade the hash if it is outdated."""
        new_hash = None
        if self._rehash and hasher.needs_rehash(stored):
            new_hash = hasher.hash(key.secret)
        self._cache.add(digest, key.key_id, key.mode, key.prefix, new_hash or stored)
        hints = self._verified_hints
        if len(hints) >= self._cache.maxsize:
            hints.clear()  # bounded like the cache; a lost hint costs one checksum
        hints.add(hash(key.raw))
        return _Verdict(True, new_hash)

    def _lead(self, flight: Flight[_Verdict], flight_key: bytes, hasher: Hasher, stored: str,
              key: ParsedKey, digest: bytes, ticket: Ticket, client: str | None) -> None:
        try:
            verdict = self._verify_gated(flight, hasher, stored, key, digest, ticket, client)
        except BaseException as exc:
            self._flights.land(flight_key, flight, error=exc)
            raise
        self._flights.land(flight_key, flight, verdict)

    # -- the synchronous driver -------------------------------------------

    def authenticate(
        self,
        authorization: str | bytes | None,
        *,
        method: str | None = None,
        path: str | None = None,
        client: str | None = None,
        forwarded: str | None = None,
        x_forwarded_for: str | None = None,
        user_agent: str | bytes | None = None,
    ) -> Principal:
        """Return the :class:`Principal` of the key in an ``Authorization`` value.

        With *method* and *path* (as the router sees it) the key's
        restrictions are enforced too.  *client* is the peer address, and
        *forwarded* / *x_forwarded_for* the raw header values:
        :meth:`client_address` makes the client the failure limiter counts
        of them, only when the limiter needs it.  Raises an
        :class:`AuthError`, :class:`PermissionDenied` or
        :class:`StoreUnavailable`; never returns a falsy "not authenticated".
        Blocks while argon2 runs on a cold key.  *user_agent* is recorded in
        the key's usage history and decides nothing.

        Each call is counted once in usage history, by its outcome: a valid
        key where it returns, the error's outcome where it raises.
        """
        answer: Any = None
        try:
            # _token() inlined: a refusal here is built, not raised and caught.
            # bearer_token()'s fast path, inlined too: "Bearer " and a token
            # with no space or tab at either end is the token; anything else
            # is parsed by bearer_token().
            if type(authorization) is str and len(authorization) <= MAX_AUTHORIZATION_LENGTH:
                scheme, _, token = authorization.partition(" ")
                if scheme != "Bearer" or not token or token[0] == " " or token[-1] in " \t":
                    token = bearer_token(authorization)
            else:
                token = bearer_token(authorization)
            if hash(token) in self._verified_hints or self._format.checksum_ok(token):
                digest = self._cache.digest(token)
                known = self._cache.get(digest)
                if known is not None:
                    principal = self._warm(known, self._read(known.key_id), method, path,
                                           client, forwarded, x_forwarded_for, user_agent)
                    if principal is not None:
                        return principal
                flow = self._flow(token, digest, known, method, path,
                                  self._client(client, forwarded, x_forwarded_for),
                                  (client, forwarded, x_forwarded_for, user_agent))
                while True:
                    op = flow.send(answer)
                    if type(op) is str:
                        answer = self._read(op)
                    elif op[0] == _VERIFY:
                        answer = self._verify_once(
                            *op[1:], client=self._client(client, forwarded, x_forwarded_for))
                    elif op[0] == _QUOTA:
                        answer = self._charge(*op[1:])
                    elif op[0] == _ADMIT:
                        self._admit(op[1], op[2])
                        answer = None
                    else:
                        self._replace_hash(*op[1:])
                        answer = None
            # A malformed key or bad checksum.  The usual one (no second
            # scheme, and nothing for the failure limiter to count it
            # against) is counted and raised below, outside this try.
            error: AQNTError | None = (
                None if " " not in token and (client is None or self.rate_limit is None)
                else malformed_token(token))
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]
        except AQNTError as exc:
            error = exc
        if error is None:
            fail = self._fail  # read first: see _accept
            if fail is not None:
                clock = self._clock
                fail(MALFORMED, NO_KEY, clock())
            # Raised as it is built: no local holds it, so its traceback
            # (which holds this frame) makes no cycle for the collector.
            raise InvalidAPIKey(MALFORMED_KEY)
        # A refusal, handled once: the failure limiter has its say (it does
        # nothing without a client address or a key id), then it is counted.
        if self.rate_limit is not None and (client is not None or error.key_id is not None):
            error = self._limited(error, self._client(client, forwarded, x_forwarded_for))
        if self._fail is not None:
            outcome = error.outcome
            if outcome is not None:
                self._fail(outcome, error.key_id or NO_KEY, self._clock())
            else:
                self._count(error)
        try:
            raise error
        finally:
            # Its traceback holds this frame: no reference back to it, so
            # the refusal is freed at once, not by the garbage collector.
            del error

    def _limited(self, error: AQNTError, client: str | None) -> AQNTError:
        """What a refusal ends in once the failure limiter has seen it: a
        wrong key is counted (429 instead if its client or id is past its
        limit), an argon2 queue that is full is 429 past the limit, 503
        otherwise; a limiter that fails is 503."""
        try:
            if isinstance(error, InvalidAPIKey):
                refusal = self._limit_failure(client, _failed_id(error))
                if refusal is not None:
                    return _refused(refusal, error)
            elif isinstance(error, Overloaded):
                self._admit(client, error.key_id)
        except AQNTError as exc:
            return exc
        return error

    def _read(self, key_id: str) -> KeyRecord | None:
        """The record of *key_id* from the store, called inline; a store that
        breaks its contract by raising anything else still means 503."""
        try:
            return self._store_get(key_id)
        except AQNTError:
            raise
        except Exception as exc:
            raise _store_failed(exc) from None

    def _verify_once(self, hasher: Hasher, stored: str, key: ParsedKey, digest: bytes, *,
                     client: str | None) -> _Verdict:
        # One flight per (key, stored hash): concurrent first requests with
        # the same key wait for one argon2 run instead of each doing their own.
        flight_key = digest + stored.encode()
        flight, leader = self._flights.join(flight_key)
        if leader:
            ticket = self._enter(flight, flight_key, key)
            self._lead(flight, flight_key, hasher, stored, key, digest, ticket, client)
        return flight.result()

    def client_address(self, peer: str | None, forwarded: str | None = None,
                       x_forwarded_for: str | None = None) -> str | None:
        """The client's address: *peer* (an IPv4-mapped address as IPv4) or,
        when *peer* is one of :attr:`trusted_proxies`, the rightmost untrusted
        address of the ``Forwarded`` / ``X-Forwarded-For`` values (see
        :class:`~aqnt_auth.TrustedProxies`)."""
        return self.trusted_proxies.resolve(peer, forwarded, x_forwarded_for)

    def _client(self, peer: str | None, forwarded: str | None, x_forwarded_for: str | None
                ) -> str | None:
        # Only the failure limiter needs the client: without one, nothing is
        # parsed.  Without a peer address there is none to resolve either.
        if self.rate_limit is None or peer is None:
            return peer
        return self.trusted_proxies.resolve(peer, forwarded, x_forwarded_for)

    def _enter(self, flight: Flight[_Verdict], flight_key: bytes, key: ParsedKey) -> Ticket:
        """A place in the argon2 queue for *flight*, or its refusal, landed for
        every request that joined it."""
        ticket = self._gate.enter()
        if ticket is None:
            error = self._overloaded(key.key_id)
            self._flights.start(flight)  # answered now: never queued, never withdrawn
            self._flights.land(flight_key, flight, error=error)
            raise error
        return ticket

    def _admit(self, client: str | None, key_id: str | None) -> None:
        assert self.rate_limit is not None
        try:
            self.rate_limit.admit(client, key_id)
        except RateLimited:
            raise
        except Exception as exc:
            raise _limiter_failed(exc) from None

    def _limit_failure(self, client: str | None, key_id: str | None) -> RateLimited | None:
        assert self.rate_limit is not None
        if client is None and key_id is None:
            return None  # nothing to count (no client address, no key id)
        try:
            return self.rate_limit.failed(client, key_id)
        except Exception as exc:
            raise _limiter_failed(exc) from None

    async def _in_thread_if(self, blocking: bool, func: Callable[..., _T], *args: Any) -> _T:
        if not blocking:
            return func(*args)
        return await asyncio.get_running_loop().run_in_executor(None, func, *args)

    def _replace_hash(self, key_id: str, old: str, new: str) -> None:
        try:
            self.store.replace_hash(key_id, old, new)
        except Exception as exc:
            # The key verified; an upgrade can wait for the next cold verify.
            log.warning("key %s: hash upgrade failed: %s", key_id, exc)

    # -- the asynchronous driver ------------------------------------------

    def authenticate_nowait(
        self,
        authorization: str | bytes | None,
        method: str | None = None,
        path: str | None = None,
        client: str | None = None,
        forwarded: str | None = None,
        x_forwarded_for: str | None = None,
        user_agent: str | bytes | None = None,
    ) -> Principal | None:
        """:meth:`authenticate_async` for an answer that needs no waiting.

        Returns the :class:`Principal` or raises, exactly as
        :meth:`authenticate_async` would, when that takes neither I/O nor
        argon2: a key that verified before, on a store that does no I/O or
        whose ``peek`` has the record in its cache.  Returns ``None``
        otherwise, and for an invalid key when a failure limiter must count
        it; then await :meth:`authenticate_async`.  ASGI middleware calls
        this first, so a warm request costs no coroutine.

        The client facts are recorded in usage history only: a key whose
        policy needs the client (an IP allowlist) gets ``None`` here, and
        :meth:`authenticate_async` decides.  A call that returns ``None`` is
        not counted (the :meth:`authenticate_async` that follows is).

        The arguments may be given by position, in this order: middleware
        does so on its warm path, where keyword matching is a measurable
        share of the call.
        """
        if not self._nowait:
            return None
        cache = self._cache
        # The usual header, "Bearer " and a key, looked up as it arrived: a
        # hit means this very token verified before, so parsing the header
        # would give it too.  Anything else is parsed first.
        if isinstance(authorization, bytes):
            known = cache.lookup(authorization[7:]) if authorization[:7] == b"Bearer " else None
        elif isinstance(authorization, str) and authorization[:7] == "Bearer ":
            known = cache.get(cache.digest(authorization[7:]))
        else:
            known = None
        try:
            if known is None:
                known = cache.get(cache.digest(self._token(authorization)))
                if known is None:
                    return None
            # _read() and the first lane of _warm() written out: a warm
            # plain key is decided in this frame.
            peek = self._peek
            if peek is not None:
                record = peek(known.key_id)
                if record is None:
                    return None  # not in the store's cache: only I/O can tell
            else:
                try:
                    read = self._store_get  # read first: see _accept
                    record = read(known.key_id)
                except AQNTError:
                    raise
                except Exception as exc:
                    raise _store_failed(exc) from None
            if record is known.accepted and record is not None:
                clock = self._clock
                now = clock()
                if now < record.ends_at:
                    principal = _new_principal(Principal)
                    principal._record = record
                    hit = self._hit
                    if hit is not None:
                        hit(record.id, now, path, client, forwarded, x_forwarded_for,
                            user_agent)
                        if self._forbid is not None:
                            principal._usage = (self._forbid, now)
                    return principal
            return self._warm(known, record, method, path, client, forwarded, x_forwarded_for,
                              user_agent, False, True)
        except (_NeedsClient, _NeedsIO):
            # The key's policy needs the client, or I/O: authenticate_async
            # has the one and does the other in a thread.
            return None
        except InvalidAPIKey as exc:
            if self.rate_limit is not None:
                return None  # authenticate_async counts the failure against the client
            if self._fail is not None:
                self._count(exc)
            raise
        except AQNTError as exc:
            if self._fail is not None:
                self._count(exc)
            raise

    async def authenticate_async(
        self,
        authorization: str | bytes | None,
        *,
        method: str | None = None,
        path: str | None = None,
        client: str | None = None,
        forwarded: str | None = None,
        x_forwarded_for: str | None = None,
        user_agent: str | bytes | None = None,
        disconnected: Disconnected | None = None,
    ) -> Principal:
        """:meth:`authenticate` for event loops: never blocks the loop.

        argon2 runs in a bounded worker pool; a blocking store is called in
        worker threads; a store that does no I/O is called inline, so a warm
        request on it never leaves the loop.  Cancelling the call while it
        waits for argon2 withdraws its verification (not run if no other
        request waits for it).  *disconnected*, if given, is awaited only
        while argon2 is awaited, and returns when the client has gone away:
        the verification is then withdrawn and :class:`ClientDisconnected`
        raised.
        """
        answer: Any = None
        try:
            try:
                token = self._token(authorization)
                digest = self._cache.digest(token)
                known = self._cache.get(digest)
                if known is not None and self._inline_store:
                    try:
                        principal = self._warm(known, self._read(known.key_id), method, path,
                                               client, forwarded, x_forwarded_for, user_agent,
                                               aio=True)
                    except _NeedsFlow:
                        principal = None
                    if principal is not None:
                        return principal
                flow = self._flow(token, digest, known, method, path,
                                  self._client(client, forwarded, x_forwarded_for),
                                  (client, forwarded, x_forwarded_for, user_agent), aio=True)
                while True:
                    op = flow.send(answer)
                    if type(op) is str:
                        if self._store_blocking or self._has_native_async:
                            answer = await self._load_async(op)
                        else:
                            answer = self._read(op)
                    elif op[0] == _VERIFY:
                        answer = await self._verify_once_async(
                            *op[1:], client=self._client(client, forwarded, x_forwarded_for),
                            disconnected=disconnected)
                    elif op[0] == _QUOTA:
                        answer = await self._charge_async(*op[1:])
                    elif op[0] == _ADMIT:
                        answer = await self._in_thread_if(self._limiter_blocking, self._admit,
                                                          op[1], op[2])
                    else:
                        await self._replace_hash_async(*op[1:])
                        answer = None
            except StopIteration as stop:
                return stop.value  # type: ignore[no-any-return]
            except _NeedsIO as need:
                # The key verified and passed every check before its rate
                # limits; count them in a thread, then decide with the result.
                record = need.record
                try:
                    limited = await self._in_thread_if(True, self.key_rate_limiter.hit, record)
                except AQNTError as exc:
                    exc.key_id = record.id
                    raise
                principal = self._accept(record, need.mode, method, path, client, forwarded,
                                         x_forwarded_for, user_agent, limited=limited,
                                         quota=False)
                if record.metered:  # charged last, off the loop too
                    now = self._clock()
                    _settle(await self._charge_async(record.id, now), now, record.id)
                    self._counted(principal, now, path, client, forwarded, x_forwarded_for,
                                  user_agent)
                return principal
            except InvalidAPIKey as exc:
                if self.rate_limit is not None:
                    refusal = await self._in_thread_if(
                        self._limiter_blocking, self._limit_failure,
                        self._client(client, forwarded, x_forwarded_for), _failed_id(exc),
                    )
                    if refusal is not None:
                        raise _refused(refusal, exc) from None
                raise
            except Overloaded as exc:
                if self.rate_limit is not None:
                    await self._in_thread_if(self._limiter_blocking, self._admit,
                                             self._client(client, forwarded, x_forwarded_for),
                                             exc.key_id)
                raise
        except AQNTError as exc:
            if self._fail is not None:
                self._count(exc)
            raise

    @property
    def async_store(self) -> AsyncKeyStore:
        """The store as async callers use it (its native twin, or threads)."""
        if self._astore is None:
            self._astore = to_async(self.store)
        return self._astore

    async def _load_async(self, key_id: str) -> KeyRecord | None:
        try:
            return await self.async_store.get(key_id)
        except AQNTError:
            raise
        except Exception as exc:
            raise _store_failed(exc) from None

    def _pool(self) -> ThreadPoolExecutor:
        if self._hash_pool is None:
            with self._pool_lock:
                if self._hash_pool is None:
                    self._hash_pool = ThreadPoolExecutor(
                        self.max_concurrent_hashes,
                        thread_name_prefix="aqnt-argon2",
                        initializer=_yield_to_the_loop,
                    )
        return self._hash_pool

    async def _verify_once_async(self, hasher: Hasher, stored: str, key: ParsedKey,
                                 digest: bytes, *, client: str | None,
                                 disconnected: Disconnected | None) -> _Verdict:
        flight_key = digest + stored.encode()
        flight, leader = self._flights.join(flight_key)
        if leader:
            ticket = self._enter(flight, flight_key, key)
            self._pool().submit(self._lead, flight, flight_key, hasher, stored, key, digest,
                                ticket, client)
        if disconnected is None:
            return await self._await_flight(flight)
        waiter = asyncio.ensure_future(self._await_flight(flight))
        gone = asyncio.ensure_future(disconnected())
        try:
            await asyncio.wait((waiter, gone), return_when=asyncio.FIRST_COMPLETED)
        finally:
            answered = waiter.done()
            if not answered:
                waiter.cancel()  # leaves the flight
            if gone.done():
                gone.exception()  # retrieved: a watch that failed means "gone" too
            else:
                gone.cancel()
        if not answered:
            raise ClientDisconnected("the client went away while argon2 was awaited")
        return waiter.result()

    async def _await_flight(self, flight: Flight[_Verdict]) -> _Verdict:
        try:
            return await _wait(flight)
        except asyncio.CancelledError:
            if self._flights.leave(flight):
                self._gate.leave()  # withdrawn before it started
            raise

    async def _replace_hash_async(self, key_id: str, old: str, new: str) -> None:
        try:
            await self.async_store.replace_hash(key_id, old, new)
        except Exception as exc:
            log.warning("key %s: hash upgrade failed: %s", key_id, exc)

    # -- errors, usage, lifecycle -------------------------------------------

    def render_error(self, error: AQNTError) -> ErrorResponse:
        """The HTTP answer (status, headers, JSON body) for *error*, with this realm."""
        return render_error(error, self.realm)

    @property
    def cache(self) -> VerificationCache:
        """The verification cache (for inspection and tests)."""
        return self._cache

    def pending_usage(self) -> dict[str, int]:
        """Request counts not yet flushed to the store, per key id."""
        return self._usage.pending() if self._usage is not None else {}

    def flush_usage(self) -> bool:
        """Write buffered usage counts now; whether that succeeded."""
        return self._usage.flush() if self._usage is not None else True

    def _write_usage(self, usage: Mapping[str, UsageDelta]) -> None:
        self.store.record_usage(usage)

    def _write_usage_history(self, rows: Sequence[UsageRow], prune_before: int | None) -> None:
        self.store.record_usage_history(rows, prune_before=prune_before)  # type: ignore[attr-defined]

    def _count(self, error: AQNTError) -> None:
        """Count a request that ended in *error* (once, at the driver's exit)."""
        assert self._fail is not None
        outcome = error.outcome
        if outcome is None:
            # Errors that name no outcome are counted by code (or not at
            # all: outages and hang-ups say nothing about a key).
            outcome = OUTCOME_BY_CODE.get(error.code)
            if outcome is None:
                return
        self._fail(outcome, error.key_id or NO_KEY, self._clock())

    def close(self) -> None:
        """Flush usage counts, stop worker threads and close the store.  Idempotent."""
        if self._usage is not None:
            self._usage.close()
        if self._hash_pool is not None:
            self._hash_pool.shutdown(wait=True)
            self._hash_pool = None
        if self.quota_counter is not None:
            self.quota_counter.close()
        self.store.close()

    async def aclose(self) -> None:
        """:meth:`close`, run in a worker thread so the event loop stays free."""
        await asyncio.get_running_loop().run_in_executor(None, self.close)

    def __enter__(self) -> Authenticator:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    async def __aenter__(self) -> Authenticator:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.aclose()


def make_authenticator(
    store: KeyStore | str | None,
    authenticator: Authenticator | None,
    options: AuthenticatorOptions,
) -> Authenticator:
    """The authenticator an adapter is configured with.

    Either *authenticator* (shared, owned by the caller) or a new one built
    on *store* with *options*; both is a :class:`ConfigurationError`.  With
    neither, the store is :data:`DEFAULT_STORE_URL`, the CLI's and Flask's
    default, so a key made by ``aqnt-auth keys create`` works with no flags.
    Every adapter takes ``store=``, ``authenticator=`` and the options the
    same way through this.
    """
    if authenticator is not None:
        if store is not None or options:
            raise ConfigurationError(
                "pass either authenticator= or a store (with Authenticator options), not both"
            )
        return authenticator
    return Authenticator(DEFAULT_STORE_URL if store is None else store, **options)


#: How much lower the argon2 worker threads run than the event loop's thread.
ARGON2_NICENESS: Final = 10


def _yield_to_the_loop() -> None:
    """Lower the calling argon2 worker thread's CPU priority.

    argon2 releases the GIL, so with ``max_concurrent_hashes`` equal to the
    core count a flood of wrong secrets would compete with the event loop
    for every core, and exempt or warm requests would queue behind it.  At a
    lower priority the workers still use every idle cycle, but the loop's
    thread wins when both want a core.  Linux applies a thread id given to
    ``setpriority`` to that thread alone; elsewhere this does nothing.
    """
    with contextlib.suppress(AttributeError, OSError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), ARGON2_NICENESS)


#: Makes a principal without running ``__init__``: one C call, no Python
#: frame, on the warm path.
_new_principal = object.__new__


def _limiter_failed(exc: Exception) -> StoreUnavailable:
    # Without its counters the limiter cannot protect argon2: fail closed.
    log.error("rate limiter storage failed: %s: %s", type(exc).__name__, exc)
    return StoreUnavailable(f"rate limiter failed: {type(exc).__name__}")


def _no_quota_support(store: KeyStore) -> StoreUnavailable:
    # A key with a quota on a store that cannot count it: refuse (fail
    # closed) rather than let the quota be ignored.
    log.error("key store %r has no consume_quota: keys with a quota are refused", store)
    return StoreUnavailable("the key store cannot enforce quotas")


def _matching(record: KeyRecord | None, mode: str, prefix: str) -> KeyRecord:
    """*record*, if it is the key the token names (same mode and prefix)."""
    if record is None or record.mode != mode or record.prefix != prefix:
        raise _unknown_key()
    return record


def _settle(use: QuotaUse | None, now: float, key_id: str) -> None:
    """:func:`refused`, with the refusal counted under *key_id* (a key
    deleted meanwhile counts as unknown)."""
    try:
        refused(use, now)
    except InvalidAPIKey as exc:
        exc.outcome = UNKNOWN_KEY
        raise
    except AQNTError as exc:
        exc.key_id = key_id
        raise


def _unknown_key() -> InvalidAPIKey:
    error = InvalidAPIKey("unknown key id")
    error.outcome = UNKNOWN_KEY
    return error


def _failed_id(error: InvalidAPIKey) -> str | None:
    """The key id the failure limiter counts an invalid key against: the id
    of a wrong secret; ``None`` (the client alone) otherwise."""
    return error.key_id if error.outcome == INVALID_SECRET else None


def _refused(refusal: RateLimited, error: InvalidAPIKey) -> RateLimited:
    # The attempt was checked before the limiter refused it: it counts as
    # what it was (a wrong secret...), not as a throttled request.
    refusal.outcome, refusal.key_id = error.outcome, error.key_id
    return refusal


def _store_failed(exc: Exception) -> StoreUnavailable:
    # A store that broke its contract by raising something else: still a
    # 503, never a 401 or a 500 with a traceback.
    log.error("key store failed: %s: %s", type(exc).__name__, exc)
    return StoreUnavailable(f"key store failed: {type(exc).__name__}")


async def _wait(flight: Future[_Verdict]) -> _Verdict:
    """Await a shared flight without letting one cancelled waiter cancel it
    for everyone (``asyncio.wrap_future`` would propagate the cancel)."""
    loop = asyncio.get_running_loop()
    waiter: asyncio.Future[_Verdict] = loop.create_future()

    def copy(done: Future[_Verdict]) -> None:
        if waiter.cancelled():
            return
        exc = done.exception()
        if exc is not None:
            waiter.set_exception(exc)
        else:
            waiter.set_result(done.result())

    def on_done(done: Future[_Verdict]) -> None:
        # The loop may have closed meanwhile (RuntimeError): nobody is waiting.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(copy, done)

    flight.add_done_callback(on_done)
    return await waiter
