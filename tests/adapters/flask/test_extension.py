"""AQNTAuth: registration, configuration and decorator misuse."""

from __future__ import annotations

from pathlib import Path

import pytest
from flask import Flask

from aqnt_auth import (
    DEFAULT_STORE_URL,
    Argon2Hasher,
    Authenticator,
    ConfigurationError,
    KeyManager,
    MemoryKeyStore,
    SQLiteKeyStore,
    StoreOpenError,
)
from aqnt_auth.adapters.flask import CONFIG_DEFAULTS, EXTENSION_KEY, AQNTAuth
from tests import bodies

from ..wsgi._support import assert_refused, bearer
from .conftest import AppFactory


def bare_app(**config: object) -> Flask:
    app = Flask(__name__)
    app.config.update(config)

    @app.get("/")
    def index() -> str:
        return "ok"

    return app


class TestRegistration:
    def test_registers_itself(self, app: Flask, auth: AQNTAuth) -> None:
        assert app.extensions[EXTENSION_KEY] is auth

    def test_constructor_with_app(self) -> None:
        app = bare_app(AQNT_AUTH_STORE="memory://")
        auth = AQNTAuth(app)
        assert app.extensions["aqnt_auth"] is auth
        assert app.test_client().get("/").status_code == 401

    def test_second_registration_is_refused(self, app: Flask, auth: AQNTAuth) -> None:
        """init_app twice, or a second AQNTAuth on the same app, is an error."""
        with pytest.raises(ConfigurationError, match="already registered"):
            auth.init_app(app)
        with pytest.raises(ConfigurationError, match="already registered"):
            AQNTAuth(app)
        assert app.extensions[EXTENSION_KEY] is auth

    def test_one_instance_many_apps(self, auth: AQNTAuth) -> None:
        """An app factory's module-level instance serves each app with its own store."""
        first, second = MemoryKeyStore(), MemoryKeyStore()
        app1 = bare_app(AQNT_AUTH_STORE=first)
        app2 = bare_app(AQNT_AUTH_STORE=second, AQNT_AUTH_REALM="two")
        auth.init_app(app1)
        auth.init_app(app2)
        assert auth.get_authenticator(app1).store is first
        assert auth.get_authenticator(app2).store is second
        with app2.app_context():
            assert auth.authenticator.realm == "two"
        response = app2.test_client().get("/")
        assert response.headers["WWW-Authenticate"] == 'Bearer realm="two"'

    def test_not_registered(self, auth: AQNTAuth) -> None:
        """Asking for the authenticator of an app never initialised says what is missing."""
        app = bare_app()
        with pytest.raises(RuntimeError, match="Did you forget to call init_app"):
            auth.get_authenticator(app)
        with app.app_context(), pytest.raises(RuntimeError, match="Did you forget"):
            _ = auth.authenticator

    def test_scoped_view_without_init_app(self, auth: AQNTAuth) -> None:
        """A scoped view on an app without the extension fails loudly, never open."""
        app = bare_app()
        app.testing = True

        @app.get("/scoped")
        @auth.require_scopes("x")
        def scoped() -> str:
            return "should not run"

        with pytest.raises(RuntimeError, match="Did you forget to call init_app"):
            app.test_client().get("/scoped")

    def test_close(self, make_app: AppFactory, auth: AQNTAuth, manager: KeyManager) -> None:
        """close() writes pending usage counts (at shutdown, never per request)."""
        key = manager.create("closing").key
        app = make_app()
        app.test_client().get("/", headers=bearer(key))
        auth.close(app)
        assert manager.list()[0].usage_count == 1


class TestConfig:
    def test_defaults_are_set(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """Every documented key is in app.config after init_app, with its default."""
        monkeypatch.chdir(tmp_path)
        app = bare_app()
        auth = AQNTAuth(app)
        for name, default in CONFIG_DEFAULTS.items():
            assert app.config[name] == default
        assert app.config["AQNT_AUTH_STORE"] == DEFAULT_STORE_URL
        store = auth.get_authenticator(app).store
        assert isinstance(store, SQLiteKeyStore)
        assert (tmp_path / "aqnt_keys.db").exists()
        auth.close(app)

    def test_unknown_key_names_the_known_ones(self, auth: AQNTAuth) -> None:
        """A typo is an error at init_app, with the likely key and the whole list."""
        app = bare_app(AQNT_AUTH_STOR="memory://")
        with pytest.raises(ConfigurationError) as info:
            auth.init_app(app)
        message = str(info.value)
        assert message.startswith("unknown aqnt-auth config key: AQNT_AUTH_STOR (did you mean "
                                  "AQNT_AUTH_STORE?). The keys are: AQNT_AUTH_STORE, ")
        assert all(key in message for key in CONFIG_DEFAULTS)
        assert EXTENSION_KEY not in app.extensions
        assert "AQNT_AUTH_STORE" not in app.config  # nothing was set up

    def test_every_unknown_key_at_once(self, auth: AQNTAuth) -> None:
        app = bare_app(AQNT_AUTH_STORE="memory://", AQNT_AUTH_EXEMPT=["/health"],
                       AQNT_AUTH_PEPPER="x" * 32, AQNT_AUTH_ZZZ=1)
        with pytest.raises(ConfigurationError) as info:
            auth.init_app(app)
        assert str(info.value).startswith(
            "unknown aqnt-auth config keys: AQNT_AUTH_EXEMPT (did you mean "
            "AQNT_AUTH_EXEMPT_PATHS?), AQNT_AUTH_PEPPER (the pepper is read from the process "
            "environment, never from app.config), AQNT_AUTH_ZZZ. The keys are: ")

    def test_other_keys_are_not_ours(self, auth: AQNTAuth) -> None:
        """Only the AQNT_AUTH_ prefix is checked."""
        auth.init_app(bare_app(AQNT_AUTH_STORE="memory://", AQNT_OTHER=1, SECRET_KEY="x"))

    @pytest.mark.parametrize(
        ("url", "reason"),
        [
            ("keys.db", "store URL 'keys.db' has no scheme (try sqlite:///aqnt_keys.db)"),
            ("sqlite:///{tmp}/nodir/keys.db",
             "the directory '{tmp}/nodir' does not exist: create it, or fix the path"),
        ],
    )
    def test_store_that_cannot_open_fails_init_app(self, auth: AQNTAuth, tmp_path: Path,
                                                   url: str, reason: str) -> None:
        """A malformed or unopenable store URL fails where the app starts,
        with the message, never per request."""
        url = url.format(tmp=tmp_path)
        app = bare_app(AQNT_AUTH_STORE=url)
        with pytest.raises(StoreOpenError) as info:
            auth.init_app(app)
        assert str(info.value) == f"cannot open the key store {url}: {reason.format(tmp=tmp_path)}"
        assert EXTENSION_KEY not in app.extensions

    def test_documented_keys(self) -> None:
        """The issue's keys and the core's options are all read."""
        assert {
            "AQNT_AUTH_STORE", "AQNT_AUTH_EXEMPT_PATHS", "AQNT_AUTH_ALLOWED_MODES",
            "AQNT_AUTH_REALM", "AQNT_AUTH_CACHE_SIZE", "AQNT_AUTH_CACHE_TTL",
            "AQNT_AUTH_USAGE_FLUSH_INTERVAL", "AQNT_AUTH_ALLOW_CORS_PREFLIGHT",
        } <= set(CONFIG_DEFAULTS)
        assert CONFIG_DEFAULTS["AQNT_AUTH_CACHE_SIZE"] == 10_000
        assert CONFIG_DEFAULTS["AQNT_AUTH_REALM"] == "api"

    def test_options_reach_the_authenticator(self, auth: AQNTAuth) -> None:
        app = bare_app(AQNT_AUTH_STORE="memory://", AQNT_AUTH_CACHE_SIZE=5,
                       AQNT_AUTH_CACHE_TTL=7.0, AQNT_AUTH_MAX_CONCURRENT_HASHES=1,
                       AQNT_AUTH_PREFIXES=["rk", "sk"], AQNT_AUTH_REALM="r",
                       AQNT_AUTH_TRUSTED_PROXIES="10.0.0.0/8, 192.0.2.1",
                       AQNT_AUTH_QUOTA_STORAGE="redis://127.0.0.1:6379/0")
        auth.init_app(app)
        authenticator: Authenticator = auth.get_authenticator(app)
        assert authenticator.quota_counter is not None  # no connection made yet
        assert authenticator.quota_counter.url == "redis://127.0.0.1:6379/0"
        assert authenticator.cache.maxsize == 5
        assert authenticator.cache.ttl == 7.0
        assert authenticator.max_concurrent_hashes == 1
        assert authenticator.format.prefixes == ("rk", "sk")
        assert authenticator.realm == "r"
        assert authenticator.client_address("10.1.1.1", None, "203.0.113.7") == "203.0.113.7"
        assert authenticator.client_address("192.0.2.1", None, "203.0.113.8") == "203.0.113.8"

    def test_allowed_modes(self, make_app: AppFactory, calls: list[str], manager: KeyManager
                           ) -> None:
        """A test-only app refuses live keys as invalid; a comma string works too."""
        live = manager.create("live").key
        test = manager.create("test", mode="test").key
        for modes in (["test"], "test", " test , "):
            client = make_app(AQNT_AUTH_ALLOWED_MODES=modes).test_client()
            assert_refused(client.get("/", headers=bearer(live)), 401, bodies.INVALID,
                           bodies.INVALID_CHALLENGE)
            assert calls == []
            assert client.get("/", headers=bearer(test)).status_code == 200
            calls.clear()

    def test_exempt_paths_as_a_string(self, make_app: AppFactory) -> None:
        """FLASK_AQNT_AUTH_EXEMPT_PATHS=/health,/docs/* style values are split on commas."""
        client = make_app(AQNT_AUTH_EXEMPT_PATHS="/public-a, /docs/*").test_client()
        assert client.get("/docs/x").status_code == 404
        assert client.get("/").status_code == 401

    def test_cors_preflight_is_off_by_default(self, make_app: AppFactory) -> None:
        app = make_app()
        assert app.config["AQNT_AUTH_ALLOW_CORS_PREFLIGHT"] is False
        response = app.test_client().options("/", headers={"Origin": "https://x.example",
                                                           "Access-Control-Request-Method": "GET"})
        assert response.status_code == 401

    @pytest.mark.parametrize(
        ("name", "value"),
        [
            ("AQNT_AUTH_EXEMPT_PATHS", ["health"]),
            ("AQNT_AUTH_ALLOWED_MODES", ["prod"]),
            ("AQNT_AUTH_REALM", 'a"b'),
            ("AQNT_AUTH_TRUSTED_PROXIES", ["proxy.internal"]),
            ("AQNT_AUTH_QUOTA_STORAGE", "memory://"),
            ("AQNT_AUTH_STORE", "nosuch://x"),
            ("AQNT_AUTH_CACHE_SIZE", -1),
            ("AQNT_AUTH_USAGE_FLUSH_INTERVAL", 0),
        ],
    )
    def test_bad_config(self, auth: AQNTAuth, name: str, value: object) -> None:
        """A bad value fails at init_app, and the app is left unregistered."""
        app = bare_app(AQNT_AUTH_STORE="memory://")
        app.config[name] = value
        with pytest.raises(ConfigurationError):
            auth.init_app(app)
        assert EXTENSION_KEY not in app.extensions


class TestDecoratorMisuse:
    def test_exempt_and_scoped(self, auth: AQNTAuth) -> None:
        """A view cannot be both public and scoped, whichever decorator comes first."""

        def view() -> str:
            return "x"

        with pytest.raises(ConfigurationError, match="cannot also require scopes"):
            auth.require_scopes("a")(auth.exempt(view))

        def other() -> str:
            return "x"

        with pytest.raises(ConfigurationError, match="cannot also be exempt"):
            auth.exempt(auth.require_scopes("a")(other))

    @pytest.mark.parametrize("scopes", [(), ("",), ("ok", "")])
    def test_bad_scopes(self, auth: AQNTAuth, scopes: tuple[str, ...]) -> None:
        with pytest.raises(ConfigurationError):
            auth.require_scopes(*scopes)


def test_hasher_config_is_used_for_verification(make_app: AppFactory, cheap_hasher: Argon2Hasher
                                                ) -> None:
    """AQNT_AUTH_HASHERS reaches the authenticator (the suite's cheap argon2 profile)."""
    app = make_app()
    authenticator = app.extensions[EXTENSION_KEY].get_authenticator(app)
    assert authenticator.hashers == (cheap_hasher,)


class TestKeyRateLimitConfig:
    """AQNT_AUTH_KEY_RATE_LIMIT_*: where keys' rate limits are counted, and
    whether a failing storage admits them (#13)."""

    @pytest.mark.parametrize(("fail_open", "status"), [(False, 503), (True, 200)])
    def test_storage_and_fail_open(self, fail_open: bool, status: int) -> None:
        store = MemoryKeyStore()
        hasher = Argon2Hasher("cheapest")
        key = KeyManager(store, hasher=hasher).create("k", rate_limits=["5/minute"]).key
        app = bare_app(AQNT_AUTH_STORE=store, AQNT_AUTH_HASHERS=[hasher],
                       AQNT_AUTH_KEY_RATE_LIMIT_STORAGE="redis://127.0.0.1:1",
                       AQNT_AUTH_KEY_RATE_LIMIT_FAIL_OPEN=fail_open)
        auth = AQNTAuth(app)
        limiter = auth.get_authenticator(app).key_rate_limiter
        assert (limiter.storage_uri, limiter.fail_open) == ("redis://127.0.0.1:1", fail_open)
        response = app.test_client().get("/", headers=bearer(key))
        assert response.status_code == status
        assert "RateLimit" not in response.headers
        if not fail_open:
            assert response.get_data() == bodies.RATE_LIMIT_UNAVAILABLE
        auth.close(app)

    def test_defaults_count_in_memory(self) -> None:
        assert (CONFIG_DEFAULTS["AQNT_AUTH_KEY_RATE_LIMIT_STORAGE"],
                CONFIG_DEFAULTS["AQNT_AUTH_KEY_RATE_LIMIT_STRATEGY"],
                CONFIG_DEFAULTS["AQNT_AUTH_KEY_RATE_LIMIT_FAIL_OPEN"]) == (
            "memory://", "fixed-window", False)
