"""Flask extension: every route of an app requires an API key.

.. code-block:: python

    from aqnt_auth.adapters.flask import AQNTAuth, current_api_key

    auth = AQNTAuth()

    def create_app() -> Flask:
        app = Flask(__name__)
        app.config["AQNT_AUTH_STORE"] = "sqlite:///aqnt_keys.db"
        app.config["AQNT_AUTH_EXEMPT_PATHS"] = ["/health"]
        auth.init_app(app)
        return app

    @bp.post("/charges")
    @auth.require_scopes("charges:write")
    def create_charge() -> dict[str, bool]:
        return {"livemode": current_api_key.livemode}

The check runs as the app's first ``before_request`` function, which Flask
calls before it raises routing errors, so an unknown path or a wrong
method is a 401 before it is a 404 or a 405.  Errors are returned as
responses, never raised, so the app's own error handlers cannot turn them
into HTML.  Keys are managed with ``flask aqnt-keys``.
"""

from __future__ import annotations

import difflib
import functools
import inspect
import weakref
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, Final, TypeVar, cast

from flask import Flask, Request, Response, after_this_request, current_app, g, request
from werkzeug.local import LocalProxy

from aqnt_auth import (
    DEFAULT_STORE_URL,
    AQNTError,
    Authenticator,
    AuthError,
    ConfigurationError,
    MissingAPIKey,
    PathRules,
    PermissionDenied,
    Principal,
    QuotaExceeded,
    RateLimited,
    RateLimitExceeded,
    StoreUnavailable,
    is_cors_preflight,
    require_scopes,
)
from aqnt_auth.adapters._flask_cli import keys_group

if TYPE_CHECKING:
    from flask.typing import ResponseReturnValue

__all__ = ["CONFIG_DEFAULTS", "EXTENSION_KEY", "REFUSALS", "AQNTAuth", "current_api_key"]

#: The key of the extension in ``app.extensions``.
EXTENSION_KEY: Final = "aqnt_auth"

#: Errors a view may raise itself (``aqnt_auth.require_scopes`` inline)
#: that are answered as the request check answers them.
REFUSALS: Final = (AuthError, PermissionDenied, RateLimited, RateLimitExceeded, QuotaExceeded,
                   StoreUnavailable)

# Flask config key -> Authenticator keyword argument.
_AUTHENTICATOR_OPTIONS: Final = {
    "AQNT_AUTH_PREFIXES": "prefixes",
    "AQNT_AUTH_ALLOWED_MODES": "allowed_modes",
    "AQNT_AUTH_REALM": "realm",
    "AQNT_AUTH_HASHERS": "hashers",
    "AQNT_AUTH_CACHE_SIZE": "cache_size",
    "AQNT_AUTH_CACHE_TTL": "cache_ttl",
    "AQNT_AUTH_MAX_CONCURRENT_HASHES": "max_concurrent_hashes",
    "AQNT_AUTH_MAX_QUEUED_HASHES": "max_queued_hashes",
    "AQNT_AUTH_MAX_HASH_WAIT": "max_hash_wait",
    "AQNT_AUTH_MAX_HASH_MEMORY_MIB": "max_hash_memory_mib",
    "AQNT_AUTH_USAGE_FLUSH_INTERVAL": "usage_flush_interval",
    "AQNT_AUTH_TRACK_USAGE": "track_usage",
    "AQNT_AUTH_USAGE_HISTORY": "usage_history",
    "AQNT_AUTH_USAGE_RETENTION_DAYS": "usage_retention_days",
    "AQNT_AUTH_REHASH": "rehash",
    "AQNT_AUTH_RATE_LIMIT": "rate_limit",
    "AQNT_AUTH_KEY_RATE_LIMIT_STORAGE": "key_rate_limit_storage",
    "AQNT_AUTH_KEY_RATE_LIMIT_STRATEGY": "key_rate_limit_strategy",
    "AQNT_AUTH_KEY_RATE_LIMIT_FAIL_OPEN": "key_rate_limit_fail_open",
    "AQNT_AUTH_TRUSTED_PROXIES": "trusted_proxies",
    "AQNT_AUTH_QUOTA_STORAGE": "quota_storage",
}

_PARAMETERS = inspect.signature(Authenticator).parameters

#: Every config key the extension reads, with its default.  The
#: authenticator's defaults are taken from :class:`~aqnt_auth.Authenticator`
#: itself, so the two cannot drift apart.
CONFIG_DEFAULTS: Final[Mapping[str, Any]] = {
    "AQNT_AUTH_STORE": DEFAULT_STORE_URL,
    "AQNT_AUTH_EXEMPT_PATHS": (),
    "AQNT_AUTH_ALLOW_CORS_PREFLIGHT": False,
    "AQNT_AUTH_HASHER": None,
    **{key: _PARAMETERS[arg].default for key, arg in _AUTHENTICATOR_OPTIONS.items()},
}

# Set on view functions (and View classes) by the decorators; functools.wraps
# copies it to any decorator stacked on top.
_EXEMPT: Final = "_aqnt_auth_exempt"
_SCOPES: Final = "_aqnt_auth_scopes"

V = TypeVar("V")
F = TypeVar("F", bound=Callable[..., Any])


def _names(value: str | Iterable[str]) -> tuple[str, ...]:
    # Config from the environment (``FLASK_AQNT_AUTH_...``) may be one
    # comma-separated string rather than a list.
    if isinstance(value, str):
        return tuple(part.strip() for part in value.split(",") if part.strip())
    return tuple(value)


def _principal() -> Principal | None:
    return cast("Principal | None", g.get("api_key"))


#: The :class:`~aqnt_auth.Principal` of the current request, as a proxy.
#: Falsy on exempt views and CORS preflights, which carry no key (a proxy is
#: never ``None``: test it with ``if current_api_key:``).
current_api_key: Principal = LocalProxy(_principal)  # type: ignore[assignment]


class _AppState:
    """One app's authenticator and rules, resolved once at ``init_app``."""

    __slots__ = ("allow_cors_preflight", "authenticator", "exempt", "exempt_endpoints")

    def __init__(self, authenticator: Authenticator, exempt: PathRules,
                 allow_cors_preflight: bool) -> None:
        self.authenticator = authenticator
        self.exempt = exempt
        self.allow_cors_preflight = allow_cors_preflight
        # endpoint -> whether its view is exempt.  Flask forbids adding
        # routes once requests are served, so an answer never goes stale.
        self.exempt_endpoints: dict[str, bool] = {}

    def error(self, exc: AQNTError) -> Response:
        rendered = self.authenticator.render_error(exc)
        response: Response = current_app.response_class(
            rendered.body, rendered.status, list(rendered.headers)
        )
        return response

    def endpoint_exempt(self, endpoint: str) -> bool:
        view = current_app.view_functions.get(endpoint)
        view_class = getattr(view, "view_class", None)
        exempt = self.exempt_endpoints[endpoint] = bool(
            getattr(view, _EXEMPT, False)
            # The class's own mark only: a subclass inherits a marked class's
            # attributes, never its exemption.
            or (view_class is not None and vars(view_class).get(_EXEMPT, False))
        )
        return exempt

    def make_guard(self) -> Callable[[], ResponseReturnValue | None]:
        """The ``before_request`` function: authenticate, or answer the error.

        A closure over what it needs, as this runs on every request.
        """
        authenticate = self.authenticator.authenticate
        is_exempt_path = self.exempt.is_exempt if self.exempt else None
        exempt_endpoints = self.exempt_endpoints
        endpoint_exempt = self.endpoint_exempt
        allow_cors_preflight = self.allow_cors_preflight
        proxied = bool(self.authenticator.trusted_proxies)
        error = self.error

        def aqnt_auth_guard() -> ResponseReturnValue | None:
            # One context lookup each, rather than one per attribute via the proxies.
            req: Request = request._get_current_object()  # type: ignore[attr-defined]
            app_globals = g._get_current_object()
            path = req.path
            method = req.method
            environ = req.environ
            rule = req.url_rule
            if rule is not None:
                exempt = exempt_endpoints.get(rule.endpoint)
                if exempt is None:
                    exempt = endpoint_exempt(rule.endpoint)
            else:
                exempt = False
            if exempt or (is_exempt_path is not None and is_exempt_path(path)):
                app_globals.api_key = None
                return None
            if (
                method == "OPTIONS"
                and allow_cors_preflight
                and rule is not None
                # Set by Flask's add_url_rule; werkzeug's Rule does not declare it.
                and getattr(rule, "provide_automatic_options", False)
                and is_cors_preflight(
                    method,
                    environ.get("HTTP_ORIGIN"),
                    environ.get("HTTP_ACCESS_CONTROL_REQUEST_METHOD"),
                )
            ):
                # Flask would answer this OPTIONS itself, without the view;
                # answer it here, so that no other before_request function
                # runs either.  after_request functions (flask-cors) still
                # add their headers.
                app_globals.api_key = None
                return current_app.make_default_options_response()
            try:
                if proxied:
                    principal = authenticate(
                        environ.get("HTTP_AUTHORIZATION"), method=method, path=path,
                        client=environ.get("REMOTE_ADDR"),
                        user_agent=environ.get("HTTP_USER_AGENT"),
                        forwarded=environ.get("HTTP_FORWARDED"),
                        x_forwarded_for=environ.get("HTTP_X_FORWARDED_FOR"),
                    )
                else:
                    principal = authenticate(
                        environ.get("HTTP_AUTHORIZATION"), method=method, path=path,
                        client=environ.get("REMOTE_ADDR"),
                        user_agent=environ.get("HTTP_USER_AGENT"),
                    )
            except AQNTError as exc:
                return error(exc)
            app_globals.api_key = principal
            if principal.response_headers:  # a key with rate limits: their headers
                after_this_request(_adding(principal.response_headers))
            return None

        return aqnt_auth_guard


def _adding(headers: tuple[tuple[str, str], ...]) -> Callable[[Response], Response]:
    def add_headers(response: Response) -> Response:
        # Whatever answers the request (the view, an error handler).
        response.headers.extend(headers)
        return response

    return add_headers


class AQNTAuth:
    """Requires an API key on every route of a Flask app.

    ``AQNTAuth(app)``, or ``auth = AQNTAuth()`` then ``auth.init_app(app)``
    in an app factory (one instance may serve several apps).  Every route is
    protected: blueprints, class-based views, static files, and unknown
    paths and methods (a 401 comes before any 404 or 405).  Exempt views
    with :meth:`exempt` or paths with ``AQNT_AUTH_EXEMPT_PATHS``.  The
    key's principal is ``flask.g.api_key`` and :data:`current_api_key`.

    Config keys, read at :meth:`init_app` (defaults are set with
    ``setdefault``, so ``app.config`` shows what is in effect):

    ``AQNT_AUTH_STORE``
        A store URL or a :class:`~aqnt_auth.KeyStore`
        (default ``"sqlite:///aqnt_keys.db"``).
    ``AQNT_AUTH_EXEMPT_PATHS``
        Paths that need no key: exact, or a prefix ending in ``/*``.  Static
        files are protected unless exempted, e.g. ``["/static/*"]``.
    ``AQNT_AUTH_ALLOWED_MODES``
        ``["live", "test"]`` (default both); a key of another mode is invalid.
    ``AQNT_AUTH_REALM``
        The ``realm`` of ``WWW-Authenticate`` (default ``"api"``).
    ``AQNT_AUTH_ALLOW_CORS_PREFLIGHT``
        Answer CORS preflights without a key, as Flask answers ``OPTIONS``
        itself, so that flask-cors adds its headers (default ``False``).
        Only for routes whose ``OPTIONS`` Flask answers automatically: a
        view that handles ``OPTIONS`` itself still needs a key.
    ``AQNT_AUTH_PREFIXES``, ``AQNT_AUTH_HASHERS``, ``AQNT_AUTH_CACHE_SIZE``,
    ``AQNT_AUTH_CACHE_TTL``, ``AQNT_AUTH_MAX_CONCURRENT_HASHES``,
    ``AQNT_AUTH_MAX_QUEUED_HASHES``, ``AQNT_AUTH_MAX_HASH_WAIT``, ``AQNT_AUTH_MAX_HASH_MEMORY_MIB``,
    ``AQNT_AUTH_USAGE_FLUSH_INTERVAL``, ``AQNT_AUTH_TRACK_USAGE``, ``AQNT_AUTH_USAGE_HISTORY``,
    ``AQNT_AUTH_USAGE_RETENTION_DAYS``, ``AQNT_AUTH_REHASH``,
    ``AQNT_AUTH_RATE_LIMIT``, ``AQNT_AUTH_KEY_RATE_LIMIT_STORAGE``,
    ``AQNT_AUTH_KEY_RATE_LIMIT_STRATEGY``, ``AQNT_AUTH_KEY_RATE_LIMIT_FAIL_OPEN``,
    ``AQNT_AUTH_TRUSTED_PROXIES``, ``AQNT_AUTH_QUOTA_STORAGE``
        The :class:`~aqnt_auth.Authenticator` options of the same names,
        with its defaults (``RATE_LIMIT`` takes a
        :class:`~aqnt_auth.FailureLimiter` or a storage URI, default
        ``"memory://"``, ``None`` to turn it off; the client is ``REMOTE_ADDR``,
        or past a trusted proxy the client it forwarded for;
        ``KEY_RATE_LIMIT_STORAGE`` is where keys' own rate limits are
        counted, ``"memory://"`` or ``"redis://host:6379"``).
    ``AQNT_AUTH_HASHER``
        The hasher ``flask aqnt-keys`` issues keys with (default argon2id).

    Usage counts are flushed every ``AQNT_AUTH_USAGE_FLUSH_INTERVAL``
    seconds and when the process exits.
    """

    def __init__(self, app: Flask | None = None) -> None:
        self._states: weakref.WeakKeyDictionary[Flask, _AppState] = weakref.WeakKeyDictionary()
        if app is not None:
            self.init_app(app)

    def __repr__(self) -> str:
        return f"<AQNTAuth apps={len(self._states)}>"

    def init_app(self, app: Flask) -> None:
        """Protect *app*: open its store and install the request check.

        Raises :class:`~aqnt_auth.ConfigurationError` for an ``AQNT_AUTH_*``
        key it does not know (naming the known ones) and a bad value, and
        :class:`~aqnt_auth.StoreOpenError` for a store URL that is malformed
        or cannot be opened, so the app fails where it starts.
        """
        if EXTENSION_KEY in app.extensions:
            raise ConfigurationError(
                f"aqnt-auth is already registered on the app {app.name!r}: use the "
                "AQNTAuth instance that registered it instead of initialising another"
            )
        config = app.config
        _check_keys(config)
        for key, default in CONFIG_DEFAULTS.items():
            config.setdefault(key, default)
        options = {arg: config[key] for key, arg in _AUTHENTICATOR_OPTIONS.items()}
        options["prefixes"] = _names(options["prefixes"])
        options["allowed_modes"] = _names(options["allowed_modes"])
        options["trusted_proxies"] = _names(options["trusted_proxies"])
        exempt = PathRules(_names(config["AQNT_AUTH_EXEMPT_PATHS"]))
        state = _AppState(
            Authenticator(config["AQNT_AUTH_STORE"], **options),
            exempt,
            bool(config["AQNT_AUTH_ALLOW_CORS_PREFLIGHT"]),
        )
        self._states[app] = state
        app.extensions[EXTENSION_KEY] = self
        # First, so no other before_request function runs for a request
        # that has no valid key.
        app.before_request_funcs.setdefault(None, []).insert(0, state.make_guard())
        # More specific than any handler of the app's own for Exception or
        # 500, so a refusal a view raises is never rendered as HTML.
        for refusal in REFUSALS:
            app.register_error_handler(refusal, state.error)
        app.cli.add_command(keys_group)

    def _state(self, app: Flask | None = None) -> _AppState:
        if app is None:
            app = cast("Flask", current_app._get_current_object())  # type: ignore[attr-defined]
        try:
            return self._states[app]
        except KeyError:
            raise RuntimeError(
                f"AQNTAuth is not registered on the app {app.name!r}. "
                "Did you forget to call init_app?"
            ) from None

    def get_authenticator(self, app: Flask | None = None) -> Authenticator:
        """The :class:`~aqnt_auth.Authenticator` of *app* (default: the current app)."""
        return self._state(app).authenticator

    @property
    def authenticator(self) -> Authenticator:
        """The :class:`~aqnt_auth.Authenticator` of the current app."""
        return self._state().authenticator

    def close(self, app: Flask | None = None) -> None:
        """Flush usage counts and close *app*'s store (at shutdown, not per request).

        Not needed for usage counts alone: those are also flushed at an
        interval and when the process exits.
        """
        self._state(app).authenticator.close()

    @staticmethod
    def exempt(view: V) -> V:
        """Mark a view function or a class-based view as needing no key.

        Its ``g.api_key`` is ``None``.  A class's mark covers that class
        alone: a subclass needs a mark of its own.  The mark travels with the function,
        so it holds whichever :class:`AQNTAuth` protects the app.
        """
        if getattr(view, _SCOPES, None):
            raise ConfigurationError(
                f"{_view_name(view)} requires scopes; it cannot also be exempt"
            )
        setattr(view, _EXEMPT, True)
        return view

    def require_scopes(self, *scopes: str) -> Callable[[F], F]:
        """Decorate a view so that its key must carry every one of *scopes*.

        Otherwise the answer is the core's 403 ``insufficient_scope``, naming
        the scopes in ``WWW-Authenticate``.  Works on async views, and on
        class-based views through their ``decorators`` list.
        """
        if not scopes or not all(isinstance(s, str) and s for s in scopes):
            raise ConfigurationError("require_scopes needs one or more non-empty scope names")
        needed = tuple(scopes)

        def decorator(view: F) -> F:
            if getattr(view, _EXEMPT, False):
                raise ConfigurationError(
                    f"{_view_name(view)} is exempt; it cannot also require scopes"
                )
            # Flask's ensure_sync is the identity for a plain function; only
            # an async view needs it.
            is_async = inspect.iscoroutinefunction(view)

            @functools.wraps(view)
            def scoped(*args: Any, **kwargs: Any) -> Any:
                principal = g.get("api_key", _UNSET)
                if principal is _UNSET:
                    self._state()  # raises "did you forget init_app?" when so
                    raise RuntimeError("the aqnt-auth request check did not run")
                try:
                    if principal is None:
                        raise MissingAPIKey()
                    require_scopes(principal, needed)
                except AQNTError as exc:
                    return self._state().error(exc)
                if is_async:
                    return current_app.ensure_sync(view)(*args, **kwargs)
                return view(*args, **kwargs)

            setattr(scoped, _SCOPES, needed)
            return cast("F", scoped)

        return decorator


_UNSET: Final = object()

_PREFIX: Final = "AQNT_AUTH_"


def _check_keys(config: Mapping[str, Any]) -> None:
    """Refuse ``AQNT_AUTH_*`` config keys the extension does not read: a
    typo (``AQNT_AUTH_STOR``) would otherwise leave the default in effect."""
    unknown = sorted(k for k in config if k.startswith(_PREFIX) and k not in CONFIG_DEFAULTS)
    if not unknown:
        return
    problems = []
    for key in unknown:
        if key == "AQNT_AUTH_PEPPER":
            problems.append(f"{key} (the pepper is read from the process environment, "
                            "never from app.config)")
            continue
        # Compared without the prefix, which every key shares.
        close = difflib.get_close_matches(
            key[len(_PREFIX):], [k[len(_PREFIX):] for k in CONFIG_DEFAULTS], n=1)
        problems.append(f"{key} (did you mean {_PREFIX}{close[0]}?)" if close else key)
    raise ConfigurationError(
        f"unknown aqnt-auth config key{'s' if len(unknown) > 1 else ''}: "
        f"{', '.join(problems)}. The keys are: {', '.join(CONFIG_DEFAULTS)}"
    )


def _view_name(view: object) -> str:
    return getattr(view, "__qualname__", None) or repr(view)

