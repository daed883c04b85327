"""The ``AQNT_AUTH`` setting, and the one authenticator built from it.

Every key is optional; these are the defaults::

    AQNT_AUTH = {
        # Paths that need no key: exact ("/health") or, ending in "/*", a
        # prefix on segment boundaries ("/docs/*"), matched on request.path_info.
        "EXEMPT_PATHS": [],
        # Let CORS preflights through without a key, for a CORS middleware
        # *after* this one to answer.  Off: django-cors-headers' CorsMiddleware
        # belongs before it (as high as possible), where it answers preflights
        # itself; with nothing to answer them, they would reach views.
        "ALLOW_CORS_PREFLIGHT": False,
        # Key modes accepted; a key of another mode gets invalid_api_key.
        "ALLOWED_MODES": ["live", "test"],
        # The realm of WWW-Authenticate.
        "REALM": "api",
        # Key prefixes accepted; the first is the one new keys get.
        "PREFIXES": ["sk"],
        # Hashers able to verify stored hashes (None: argon2id, plus
        # HMAC-SHA256 when AQNT_AUTH_PEPPER is set).
        "HASHERS": None,
        # The hasher new keys are issued with by the admin and manage.py
        # (None: argon2id, OWASP profile).
        "HASHER": None,
        "CACHE_SIZE": 10_000,          # argon2 verifications remembered
        "CACHE_TTL": 300.0,            # seconds one stays remembered
        "MAX_CONCURRENT_HASHES": None, # argon2 runs at once (None: CPU count)
        "MAX_QUEUED_HASHES": None,     # cold verifications waiting (None: 32 per run)
        "MAX_HASH_WAIT": 1.0,          # seconds one may wait before a 503
        "MAX_HASH_MEMORY_MIB": None,   # argon2 memory per process (None: see the core)
        "USAGE_FLUSH_INTERVAL": 10.0,  # seconds between usage-count writes
        "TRACK_USAGE": True,           # count requests and last use per key
        "USAGE_HISTORY": True,         # and usage history per key and hour (#14)
        "USAGE_RETENTION_DAYS": 90,    # days of usage history kept (None: all)
        "REHASH": True,                # upgrade outdated hashes on use
        # Throttling of failed attempts per client (REMOTE_ADDR) and per
        # (key id, client): a FailureLimiter, or the storage URI of one with
        # the default limits ("redis://host:6379" to share counters between
        # servers); None: no throttling.
        "RATE_LIMIT": "memory://",
        # Where keys' own rate limits (manage.py aqnt_keys create
        # --rate-limit) are counted: "memory://" (per process),
        # "redis://host:6379" (shared by every server) or a KeyRateLimiter;
        # the limits library's strategy; and whether a failing storage
        # admits limited keys (True) or answers 503 (False).
        "KEY_RATE_LIMIT_STORAGE": "memory://",
        "KEY_RATE_LIMIT_STRATEGY": "fixed-window",
        "KEY_RATE_LIMIT_FAIL_OPEN": False,
        # Addresses or networks of reverse proxies whose Forwarded /
        # X-Forwarded-For headers are believed: past them, the client the
        # limiter counts is the rightmost address that is not a proxy.
        "TRUSTED_PROXIES": [],
        # Where the usage quotas of keys that have one are counted: None, the
        # key table (one atomic UPDATE per request); "redis://host:6379/0",
        # a counter per key in Redis (see the README for the trade-off).
        "QUOTA_STORAGE": None,
        # Database alias of the key table (None: ask the database routers).
        "DATABASE": None,
        # Cache key records in each process, kept exact by the database's
        # change signal (None: on an SQLite file, and on PostgreSQL with
        # psycopg 3 outside Django's test environment; False: read the key's
        # row on every request).
        "RECORD_CACHE": None,
    }

The setting is read once, validated, and re-read whenever Django sends
``setting_changed`` for it (so ``override_settings`` works in tests), as
django-rest-knox does with its ``REST_KNOX`` setting.  The middleware, the
DRF authentication class and ``manage.py aqnt_keys`` share one
:class:`~aqnt_auth.Authenticator`, so they share its verification cache and
usage counts; :func:`get_authenticator` returns it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from functools import partial
from types import MappingProxyType
from typing import Any, Final, NamedTuple, cast

from django.conf import settings as django_settings
from django.core.signals import setting_changed

from aqnt_auth import (
    Authenticator,
    AuthenticatorOptions,
    ConfigurationError,
    FailureLimiter,
    Hasher,
    KeyRateLimiter,
    MemoryKeyStore,
    Mode,
    PathRules,
)

__all__ = [
    "DEFAULTS",
    "SETTING",
    "AuthSettings",
    "Runtime",
    "SettingError",
    "get_authenticator",
    "get_settings",
    "load_settings",
    "reload",
    "runtime",
]

#: The name of the Django setting.
SETTING: Final = "AQNT_AUTH"

#: The documented defaults the user's ``AQNT_AUTH`` dict is layered over.
DEFAULTS: Final[Mapping[str, Any]] = MappingProxyType(
    {
        "EXEMPT_PATHS": (),
        "ALLOW_CORS_PREFLIGHT": False,
        "ALLOWED_MODES": ("live", "test"),
        "REALM": "api",
        "PREFIXES": ("sk",),
        "HASHERS": None,
        "HASHER": None,
        "CACHE_SIZE": 10_000,
        "CACHE_TTL": 300.0,
        "MAX_CONCURRENT_HASHES": None,
        "MAX_QUEUED_HASHES": None,
        "MAX_HASH_WAIT": 1.0,
        "MAX_HASH_MEMORY_MIB": None,
        "USAGE_FLUSH_INTERVAL": 10.0,
        "TRACK_USAGE": True,
        "USAGE_HISTORY": True,
        "USAGE_RETENTION_DAYS": 90,
        "REHASH": True,
        "RATE_LIMIT": "memory://",
        "KEY_RATE_LIMIT_STORAGE": "memory://",
        "KEY_RATE_LIMIT_STRATEGY": "fixed-window",
        "KEY_RATE_LIMIT_FAIL_OPEN": False,
        "TRUSTED_PROXIES": (),
        "QUOTA_STORAGE": None,
        "DATABASE": None,
        "RECORD_CACHE": None,
    }
)

# Settings that change what the runtime is built from (the time zone ones
# change how the store reads dates, and it remembers what it read).
_WATCHED: Final = frozenset({SETTING, "DATABASES", "DATABASE_ROUTERS", "USE_TZ", "TIME_ZONE"})


class AuthSettings(NamedTuple):
    """``AQNT_AUTH``, validated and layered over :data:`DEFAULTS`."""

    exempt_paths: PathRules
    allow_cors_preflight: bool
    allowed_modes: tuple[Mode, ...]
    realm: str
    prefixes: tuple[str, ...]
    hashers: tuple[Hasher, ...] | None
    hasher: Hasher | None
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
    trusted_proxies: tuple[str, ...]
    quota_storage: str | None
    database: str | None
    record_cache: bool | None

    def authenticator_options(self) -> AuthenticatorOptions:
        """Keyword arguments of :class:`~aqnt_auth.Authenticator`: every
        setting named as one of its options, as it is."""
        return cast(AuthenticatorOptions,
                    {name: getattr(self, name) for name in _AUTHENTICATOR_OPTIONS})


#: The settings that are options of the authenticator, by the same name.
_AUTHENTICATOR_OPTIONS: Final = tuple(
    name for name in AuthSettings._fields if name in AuthenticatorOptions.__optional_keys__
)


class SettingError(ConfigurationError):
    """A bad ``AQNT_AUTH`` value; :attr:`key` names it (``None``: the whole dict).

    :attr:`errors` lists every bad value found (this one alone, or each of
    several).
    """

    def __init__(self, detail: str, key: str | None = None, *,
                 errors: list[SettingError] | None = None) -> None:
        super().__init__(detail)
        self.key = key
        self.errors: list[SettingError] = errors if errors is not None else [self]


def _fail(key: str, problem: str) -> SettingError:
    return SettingError(f"{SETTING}[{key!r}] {problem}", key)


def _strings(key: str, value: object) -> tuple[str, ...]:
    # A bare string would be iterated character by character.
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise _fail(key, f"must be a list of strings, not {value!r}")
    return tuple(value)


def _flag(key: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise _fail(key, f"must be True or False, not {value!r}")
    return value


def _number(key: str, value: object, *, minimum: float, integer: bool = False,
            optional: bool = False, inclusive: bool = True) -> Any:
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int if integer else (int, float)):
        raise _fail(key, f"must be a {'whole ' if integer else ''}number, not {value!r}")
    if value < minimum or (not inclusive and value == minimum):
        relation = "at least" if inclusive else "more than"
        raise _fail(key, f"must be {relation} {minimum}, not {value!r}")
    return value


def _hasher(key: str, value: object) -> Hasher | None:
    if value is not None and not isinstance(value, Hasher):
        raise _fail(key, f"must be a hasher such as aqnt_auth.Argon2Hasher(), not {value!r}")
    return value


def load_settings(raw: Mapping[str, Any] | None = None) -> AuthSettings:
    """Validate *raw* (default: ``settings.AQNT_AUTH``) over :data:`DEFAULTS`.

    Raises :class:`SettingError` (a :class:`~aqnt_auth.ConfigurationError`)
    naming the bad key, or, when several are bad, naming each (every one
    is in :attr:`SettingError.errors`, so ``manage.py check`` lists them all
    at once).  The prefixes, modes and realm are checked by the core itself.
    """
    if raw is None:
        raw = getattr(django_settings, SETTING, None) or {}
    if not isinstance(raw, Mapping):
        raise SettingError(f"{SETTING} must be a dict, not {type(raw).__name__}")
    errors: list[SettingError] = []
    unknown = sorted(set(raw) - set(DEFAULTS))
    if unknown:
        errors.append(SettingError(
            f"{SETTING} has unknown keys {unknown}; the keys are {sorted(DEFAULTS)}"
        ))
    merged = {**DEFAULTS, **{k: v for k, v in raw.items() if k in DEFAULTS}}

    def valid(key: str, check: Callable[[Any], Any], fallback: Any = None) -> Any:
        # A bad value is noted and replaced by a valid stand-in, so that the
        # other keys are still checked.
        try:
            return check(merged[key])
        except SettingError as exc:
            errors.append(exc)
            return DEFAULTS[key] if fallback is None else fallback

    loaded = AuthSettings(
        exempt_paths=valid("EXEMPT_PATHS", _exempt_paths, PathRules(())),
        allow_cors_preflight=valid("ALLOW_CORS_PREFLIGHT", partial(_flag, "ALLOW_CORS_PREFLIGHT")),
        allowed_modes=valid("ALLOWED_MODES", partial(_strings, "ALLOWED_MODES")),
        realm=valid("REALM", _realm),
        prefixes=valid("PREFIXES", partial(_strings, "PREFIXES")),
        hashers=valid("HASHERS", _hashers),
        hasher=valid("HASHER", partial(_hasher, "HASHER")),
        cache_size=valid("CACHE_SIZE", partial(_number, "CACHE_SIZE", minimum=0, integer=True)),
        cache_ttl=valid("CACHE_TTL", partial(_number, "CACHE_TTL", minimum=0)),
        max_concurrent_hashes=valid("MAX_CONCURRENT_HASHES", partial(
            _number, "MAX_CONCURRENT_HASHES", minimum=1, integer=True, optional=True)),
        max_queued_hashes=valid("MAX_QUEUED_HASHES", partial(
            _number, "MAX_QUEUED_HASHES", minimum=0, integer=True, optional=True)),
        max_hash_wait=valid("MAX_HASH_WAIT", partial(_number, "MAX_HASH_WAIT", minimum=0)),
        max_hash_memory_mib=valid("MAX_HASH_MEMORY_MIB", partial(
            _number, "MAX_HASH_MEMORY_MIB", minimum=1, integer=True, optional=True)),
        usage_flush_interval=valid("USAGE_FLUSH_INTERVAL", partial(
            _number, "USAGE_FLUSH_INTERVAL", minimum=0, inclusive=False)),
        track_usage=valid("TRACK_USAGE", partial(_flag, "TRACK_USAGE")),
        usage_history=valid("USAGE_HISTORY", partial(_flag, "USAGE_HISTORY")),
        usage_retention_days=valid("USAGE_RETENTION_DAYS", partial(
            _number, "USAGE_RETENTION_DAYS", minimum=0, inclusive=False, optional=True)),
        rehash=valid("REHASH", partial(_flag, "REHASH")),
        rate_limit=valid("RATE_LIMIT", _rate_limit),
        key_rate_limit_storage=valid("KEY_RATE_LIMIT_STORAGE", _key_rate_limit_storage),
        key_rate_limit_strategy=valid("KEY_RATE_LIMIT_STRATEGY", partial(
            _core_choice, "KEY_RATE_LIMIT_STRATEGY", "key_rate_limit_strategy")),
        key_rate_limit_fail_open=valid("KEY_RATE_LIMIT_FAIL_OPEN",
                                       partial(_flag, "KEY_RATE_LIMIT_FAIL_OPEN")),
        trusted_proxies=valid("TRUSTED_PROXIES", partial(_strings, "TRUSTED_PROXIES")),
        quota_storage=valid("QUOTA_STORAGE", _quota_storage),
        database=valid("DATABASE", _database),
        record_cache=valid("RECORD_CACHE", _record_cache),
    )
    for key, option in (("PREFIXES", "prefixes"), ("ALLOWED_MODES", "allowed_modes"),
                        ("REALM", "realm"), ("TRUSTED_PROXIES", "trusted_proxies")):
        try:
            _core_check(key, **{option: getattr(loaded, option)})
        except SettingError as exc:
            errors.append(exc)
    if len(errors) == 1:
        raise errors[0]
    if errors:
        raise SettingError(
            f"{SETTING} has {len(errors)} problems: " + "; ".join(map(str, errors)),
            errors[0].key, errors=errors,
        )
    return loaded


def _exempt_paths(value: object) -> PathRules:
    try:
        return PathRules(_strings("EXEMPT_PATHS", value))
    except SettingError:
        raise
    except ConfigurationError as exc:
        raise _fail("EXEMPT_PATHS", f"is invalid: {exc}") from None


def _realm(value: object) -> str:
    if not isinstance(value, str):
        raise _fail("REALM", f"must be a string, not {value!r}")
    return value


def _hashers(value: object) -> tuple[Hasher, ...] | None:
    if value is None:
        return None
    if not isinstance(value, (list, tuple)) or not value:
        raise _fail("HASHERS", "must be None or a non-empty list of hashers")
    return tuple(_hasher("HASHERS", h) for h in value)  # type: ignore[misc]


def _database(value: object) -> str | None:
    if value is not None and value not in django_settings.DATABASES:
        raise _fail("DATABASE", f"names no database in DATABASES: {value!r}")
    return value


def _record_cache(value: object) -> bool | None:
    return None if value is None else _flag("RECORD_CACHE", value)


def _rate_limit(value: object) -> FailureLimiter | str | None:
    if value is not None and not isinstance(value, (FailureLimiter, str)):
        raise _fail("RATE_LIMIT", "must be None, a FailureLimiter or a storage URI, "
                                  f"not {value!r}")
    if isinstance(value, str):
        _core_check("RATE_LIMIT", rate_limit=value)
    return value


def _key_rate_limit_storage(value: object) -> KeyRateLimiter | str:
    if isinstance(value, KeyRateLimiter):
        return value
    if not isinstance(value, str):
        raise _fail("KEY_RATE_LIMIT_STORAGE", "must be a KeyRateLimiter or a storage URI, "
                                              f"not {value!r}")
    _core_check("KEY_RATE_LIMIT_STORAGE", key_rate_limit_storage=value)
    return value


def _core_choice(key: str, option: str, value: object) -> str:
    if not isinstance(value, str):
        raise _fail(key, f"must be a string, not {value!r}")
    _core_check(key, **{option: value})
    return value


def _quota_storage(value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise _fail("QUOTA_STORAGE", f"must be None or a redis:// URL, not {value!r}")
    _core_check("QUOTA_STORAGE", quota_storage=value)
    return value


def _core_check(key: str, **option: Any) -> None:
    # The core is the one place these rules live; an authenticator over an
    # empty memory store, without usage tracking, costs microseconds and
    # starts no thread.
    option.setdefault("rate_limit", None)
    try:
        Authenticator(MemoryKeyStore(), track_usage=False, **option).close()
    except ConfigurationError as exc:
        raise _fail(key, f"is invalid: {exc}") from None


class Runtime(NamedTuple):
    """What a request needs: the settings and the authenticator built from them."""

    settings: AuthSettings
    authenticator: Authenticator


_lock = threading.Lock()
_runtime: Runtime | None = None
_settings: AuthSettings | None = None


def get_settings() -> AuthSettings:
    """The current ``AQNT_AUTH``, validated (cached until the setting changes)."""
    global _settings
    loaded = _settings
    if loaded is None:
        loaded = _settings = load_settings()
    return loaded


def _build() -> Runtime:
    global _runtime
    with _lock:
        if _runtime is None:
            # Imported here: the store imports the model, which must wait for
            # the app registry, while this module is imported during app loading.
            from aqnt_auth.adapters.django.store import DjangoKeyStore

            conf = get_settings()
            store = DjangoKeyStore(using=conf.database, cache=conf.record_cache)
            _runtime = Runtime(conf, Authenticator(store, **conf.authenticator_options()))
        return _runtime


def runtime() -> Runtime:
    """The shared :class:`Runtime`, built on first use."""
    current = _runtime
    return current if current is not None else _build()


def get_authenticator() -> Authenticator:
    """The :class:`~aqnt_auth.Authenticator` the middleware and DRF class use."""
    return runtime().authenticator


def reload() -> None:
    """Forget the settings and the authenticator; the next request rebuilds them.

    The old authenticator is closed, which writes its pending usage counts.
    """
    global _runtime, _settings
    with _lock:
        old, _runtime, _settings = _runtime, None, None
    if old is not None:
        old.authenticator.close()


def _on_setting_changed(*, setting: str, **kwargs: Any) -> None:
    if setting in _WATCHED:
        reload()


setting_changed.connect(_on_setting_changed, dispatch_uid="aqnt_auth.adapters.django.settings")
