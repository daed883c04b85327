"""System checks and the ``AQNT_AUTH`` setting."""

from __future__ import annotations

from typing import Any, ClassVar

import pytest
from django.conf import settings
from django.core.checks import run_checks
from django.core.exceptions import ImproperlyConfigured
from django.core.handlers.wsgi import WSGIHandler
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from django.http import HttpResponse
from django.test.utils import override_settings

from aqnt_auth import Argon2Hasher, Authenticator, ConfigurationError
from aqnt_auth.adapters.django import APIKeyMiddleware
from aqnt_auth.adapters.django.settings import (
    DEFAULTS,
    SettingError,
    get_authenticator,
    get_settings,
    load_settings,
    runtime,
)

from ._support import auth_settings

SECURITY = "django.middleware.security.SecurityMiddleware"
OURS = "aqnt_auth.adapters.django.APIKeyMiddleware"
FETCH = "django.middleware.cache.FetchFromCacheMiddleware"


def ids(**overrides: Any) -> list[str]:
    with override_settings(**overrides):
        return sorted(m.id for m in run_checks() if m.id and m.id.startswith("aqnt_auth"))


class TestCORSPreflightCheck:
    CORS = "corsheaders.middleware.CorsMiddleware"

    def test_preflights_let_through_to_nothing(self) -> None:
        """ALLOW_CORS_PREFLIGHT with no CORS middleware after ours: W002."""
        assert ids(AQNT_AUTH=auth_settings(ALLOW_CORS_PREFLIGHT=True)) == ["aqnt_auth.W002"]
        before = [self.CORS, *settings.MIDDLEWARE]
        assert ids(AQNT_AUTH=auth_settings(ALLOW_CORS_PREFLIGHT=True),
                   MIDDLEWARE=before) == ["aqnt_auth.W002"]

    def test_cors_middleware_after_ours(self) -> None:
        middleware = list(settings.MIDDLEWARE)
        middleware.insert(middleware.index(OURS) + 1, self.CORS)
        assert ids(AQNT_AUTH=auth_settings(ALLOW_CORS_PREFLIGHT=True),
                   MIDDLEWARE=middleware) == []

    def test_off_by_default(self) -> None:
        assert ids(MIDDLEWARE=[self.CORS, *settings.MIDDLEWARE]) == []


class TestSettingsCheck:
    def test_project_settings_pass(self) -> None:
        """The test project is clean (and manage.py check says so)."""
        assert ids() == []
        call_command("check", verbosity=0)

    @pytest.mark.parametrize("paths", [["health"], "/health", ["/a/../b/*"], [3]])
    def test_exempt_paths(self, paths: Any) -> None:
        """Exempt paths that are not path rules are aqnt_auth.E005."""
        assert ids(AQNT_AUTH={"EXEMPT_PATHS": paths}) == ["aqnt_auth.E005"]

    @pytest.mark.parametrize("value", [
        {"ALLOWED_MODES": ["prod"]},
        {"ALLOWED_MODES": []},
        {"REALM": 'a"b'},
        {"REALM": 3},
        {"PREFIXES": ["SK"]},
        {"CACHE_SIZE": -1},
        {"CACHE_TTL": "5"},
        {"MAX_CONCURRENT_HASHES": 0},
        {"MAX_QUEUED_HASHES": -1},
        {"MAX_HASH_WAIT": "1"},
        {"MAX_HASH_MEMORY_MIB": 0},
        {"USAGE_FLUSH_INTERVAL": 0},
        {"TRACK_USAGE": "yes"},
        {"HASHERS": []},
        {"HASHERS": ["argon2"]},
        {"HASHER": "argon2"},
        {"DATABASE": "nope"},
        {"RATE_LIMIT": "10/minute"},
        {"KEY_RATE_LIMIT_STORAGE": "nope://"},
        {"KEY_RATE_LIMIT_STORAGE": None},
        {"KEY_RATE_LIMIT_STRATEGY": "leaky-bucket"},
        {"KEY_RATE_LIMIT_FAIL_OPEN": "yes"},
        {"TRUSTED_PROXIES": ["proxy.internal"]},
        {"TRUSTED_PROXIES": "10.0.0.1"},
        {"QUOTA_STORAGE": "memory://"},
        {"QUOTA_STORAGE": 6379},
        {"RECORD_CACHE": "yes"},
        {"EXEMPT_PATH": ["/health"]},
    ])
    def test_invalid_settings(self, value: dict[str, Any]) -> None:
        """Each kind of mistake is aqnt_auth.E001, naming the key, and manage.py refuses."""
        assert ids(AQNT_AUTH=value) == ["aqnt_auth.E001"]
        with override_settings(AQNT_AUTH=value), pytest.raises(ConfigurationError) as info:
            load_settings()
        key = next(iter(value))
        assert key in str(info.value)
        with override_settings(AQNT_AUTH=value), pytest.raises(SystemCheckError):
            call_command("check", verbosity=0)

    def test_every_bad_value_at_once(self) -> None:
        """One run of manage.py check lists every mistake, each naming its key."""
        bad = {"EXEMPT_PATHS": ["health"], "REALM": 3, "CACHE_SIZE": -1,
               "PREFIXES": ["SK"], "RATE_LIMIT": "10/minute", "EXEMPT_PATH": ["/x"]}
        with override_settings(AQNT_AUTH=bad):
            messages = [m for m in run_checks() if m.id and m.id.startswith("aqnt_auth")]
            with pytest.raises(SettingError) as info:
                load_settings()
        assert sorted(m.id for m in messages if m.id) == ["aqnt_auth.E001"] * 5 + [
            "aqnt_auth.E005"]
        text = [m.msg for m in messages]
        for start in ("AQNT_AUTH['EXEMPT_PATHS']", "AQNT_AUTH['REALM']",
                      "AQNT_AUTH['CACHE_SIZE']", "AQNT_AUTH['PREFIXES']",
                      "AQNT_AUTH['RATE_LIMIT']", "AQNT_AUTH has unknown keys ['EXEMPT_PATH']"):
            assert sum(line.startswith(start) for line in text) == 1, start
        assert str(info.value).startswith("AQNT_AUTH has 6 problems: ")
        assert [str(e) for e in info.value.errors] == [m.msg for m in messages]

    def test_one_bad_value_is_one_error(self) -> None:
        with override_settings(AQNT_AUTH={"REALM": 3}), pytest.raises(SettingError) as info:
            load_settings()
        assert str(info.value) == "AQNT_AUTH['REALM'] must be a string, not 3"
        assert info.value.errors == [info.value]

    def test_not_a_dict(self) -> None:
        assert ids(AQNT_AUTH=["/health"]) == ["aqnt_auth.E001"]


class TestMiddlewareCheck:
    def test_order(self) -> None:
        """After SecurityMiddleware, before cache fetching, listed once."""
        assert ids(MIDDLEWARE=[SECURITY, OURS, FETCH]) == []
        assert ids(MIDDLEWARE=[OURS, SECURITY]) == ["aqnt_auth.E003"]
        assert ids(MIDDLEWARE=[SECURITY, FETCH, OURS]) == ["aqnt_auth.E004"]
        assert ids(MIDDLEWARE=[SECURITY, OURS, OURS]) == ["aqnt_auth.E002"]
        long_path = "aqnt_auth.adapters.django.middleware.APIKeyMiddleware"
        assert ids(MIDDLEWARE=[SECURITY, long_path]) == []

    def test_nothing_authenticates(self) -> None:
        """Neither the middleware nor the DRF class: a warning."""
        assert ids(MIDDLEWARE=[SECURITY], REST_FRAMEWORK={}) == ["aqnt_auth.W001"]
        drf = {"DEFAULT_AUTHENTICATION_CLASSES": [
            "aqnt_auth.adapters.django.rest_framework.APIKeyAuthentication"]}
        assert ids(MIDDLEWARE=[SECURITY], REST_FRAMEWORK=drf) == []


class TestLayeredSettings:
    def test_defaults(self) -> None:
        """An absent or empty AQNT_AUTH is the documented defaults."""
        with override_settings(AQNT_AUTH={}):
            conf = get_settings()
        assert conf.exempt_paths.exact == frozenset()
        assert conf.allow_cors_preflight is False
        assert conf.allowed_modes == ("live", "test")
        assert (conf.realm, conf.prefixes, conf.database) == ("api", ("sk",), None)
        assert set(DEFAULTS) == {f.upper() for f in conf._fields}

    def test_authenticator_options(self) -> None:
        """Every setting that is an Authenticator option reaches it, the others do not."""
        with override_settings(AQNT_AUTH=auth_settings(REALM="billing", CACHE_TTL=7.5)):
            options = get_settings().authenticator_options()
        assert set(options) == {
            "prefixes", "allowed_modes", "realm", "hashers", "cache_size", "cache_ttl",
            "max_concurrent_hashes", "usage_flush_interval", "track_usage", "rehash",
            "rate_limit", "trusted_proxies", "max_queued_hashes", "max_hash_wait",
            "max_hash_memory_mib", "key_rate_limit_storage", "key_rate_limit_strategy",
            "key_rate_limit_fail_open", "quota_storage", "usage_history", "usage_retention_days",
        }
        assert (options["realm"], options["cache_ttl"]) == ("billing", 7.5)

    def test_layered_and_reloaded(self) -> None:
        """Given keys override the defaults; setting_changed rebuilds the runtime."""
        before = runtime()
        with override_settings(AQNT_AUTH=auth_settings(REALM="billing", CACHE_SIZE=5)):
            inside = runtime()
            assert inside is not before
            assert inside.settings.realm == "billing"
            assert inside.authenticator.realm == "billing"
            assert inside.settings.prefixes == ("sk",)
            assert inside.authenticator.cache.maxsize == 5
        after = get_authenticator()
        assert after is not inside.authenticator
        assert after.realm == "api"

    def test_hashers_reach_the_authenticator(self) -> None:
        hasher = Argon2Hasher("cheapest")
        with override_settings(AQNT_AUTH={"HASHERS": [hasher]}):
            authenticator = get_authenticator()
        assert isinstance(authenticator, Authenticator)
        assert authenticator.hashers == (hasher,)


class TestAppNotInstalled:
    """The middleware without the app: refused where the server loads it,
    with the fix, instead of a 500 on every request."""

    APPS: ClassVar[list[str]] = [a for a in settings.INSTALLED_APPS
                                 if a != "aqnt_auth.adapters.django"]

    def test_middleware_refuses_to_load(self) -> None:
        with override_settings(INSTALLED_APPS=self.APPS), \
                pytest.raises(ImproperlyConfigured) as info:
            APIKeyMiddleware(lambda request: HttpResponse())
        assert str(info.value) == (
            'APIKeyMiddleware is in MIDDLEWARE but "aqnt_auth.adapters.django" is not in '
            "INSTALLED_APPS: add it there (its key table, admin and checks live in it), then "
            "run manage.py migrate"
        )

    def test_handler_does_not_start(self) -> None:
        """Django loads MIDDLEWARE when its handler starts (runserver, a WSGI
        or ASGI server's worker): that start fails with the message."""
        with override_settings(INSTALLED_APPS=self.APPS), \
                pytest.raises(ImproperlyConfigured, match="not in INSTALLED_APPS"):
            WSGIHandler()

    def test_installed_loads(self) -> None:
        assert APIKeyMiddleware(lambda request: HttpResponse()).get_response is not None
