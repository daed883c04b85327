"""The console itself: routing, who the admin is, and the answer's headers.

One :class:`Console` serves every mount: it takes a :class:`Request` and
returns a :class:`Response`, and knows nothing of ASGI, WSGI or Django.  Its
views (the JSON API in :mod:`._api`, the HTML pages) register on its
:class:`Router` with the access they need, which :meth:`Console.handle`
checks before the view runs (the Django admin's per-view permissions).

Who is an admin, in the order asked:

* on ``/api/`` routes, a request with ``Authorization: Bearer <key>``: the
  key is checked by the core :class:`~aqnt_auth.Authenticator` (so failed
  attempts count towards the failure limiter) and must carry the admin scope
  (may change keys) or the read scope (may look);
* the host app's ``authorize(request)`` hook: an actor name (an admin who
  may change keys), an :class:`Admin` (to say read-only), or ``None``;
* the sign-in session, registered by the pages through
  :meth:`Console.add_authentication`.

Blocking: :meth:`Console.handle` calls the store and argon2 synchronously.
The ASGI mount runs it in a worker thread.
"""

from __future__ import annotations

import dataclasses
import html
import json
import logging
import re
import secrets
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, Final, Literal

from .._audit import check_actor
from .._authenticator import Authenticator, AuthenticatorOptions, make_authenticator
from .._errors import (
    AQNTError,
    ConfigurationError,
    MethodNotAllowed,
    MissingAPIKey,
    PermissionDenied,
    RouteNotFound,
    UnsupportedMediaType,
)
from .._hashers import Hasher
from .._manager import KeyManager
from .._response import render_error
from .._stores._protocol import KeyStore
from ._http import Request, Response
from ._session import ABSOLUTE_TIMEOUT, IDLE_TIMEOUT, Sessions

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = [
    "SAFE_METHODS",
    "Access",
    "Admin",
    "Authorize",
    "Call",
    "Console",
    "ConsoleOptions",
    "Route",
    "Router",
    "View",
    "json_response",
]

log = logging.getLogger("aqnt_auth.console")

SAFE_METHODS: Final = frozenset({"GET", "HEAD", "OPTIONS"})
#: Headers on every answer of the console, whatever the route or error.
BASE_HEADERS: Final = (("Cache-Control", "no-store"), ("X-Content-Type-Options", "nosniff"))
_JSON: Final = "application/json"
#: How a view may be reached: by anyone (the sign-in page, the OpenAPI
#: document), by any admin, or by an admin who may change keys.
Access = Literal["public", "read", "write"]


@dataclasses.dataclass(frozen=True)
class Admin:
    """Who is using the console, and whether they may change keys.

    *actor* is written to the audit log with every change (``key:<id>`` for
    an admin key, the host app's user name through ``authorize``).  *via*
    says how they were recognised: ``"key"`` (a Bearer admin key, which a
    browser never sends on its own), ``"hook"`` or ``"session"`` (cookies,
    which a browser does).
    """

    actor: str
    can_write: bool
    via: str = "hook"
    #: Headers for the answer: the ``RateLimit`` headers of an admin key
    #: with rate limits (sent on the API's answers).
    headers: tuple[tuple[str, str], ...] = dataclasses.field(default=(), compare=False,
                                                             repr=False)

    @property
    def by_cookie(self) -> bool:
        """Whether the browser may have sent the credential on its own (so a
        change needs proof that the request is not cross-site)."""
        return self.via != "key"


#: The host app's hook: the actor of a signed-in user (an admin who may
#: change keys), an :class:`Admin` (to say read-only), or ``None``.
Authorize = Callable[[Request], "str | Admin | None"]


class ConsoleOptions(AuthenticatorOptions, total=False):
    """The keyword options of the mounts (``asgi_app``, ``wsgi_app``,
    ``init_app``): :class:`Console`'s, with the Authenticator options."""

    authenticator: Authenticator | None
    secret_key: str | bytes | None
    admin_scope: str
    read_scope: str
    authorize: Authorize | None
    hasher: Hasher | None
    manager: KeyManager | None
    session_idle_timeout: float
    session_absolute_timeout: float
    secure_cookies: bool | None


@dataclasses.dataclass(frozen=True)
class Call:
    """What a view gets: the console, the request, the admin (``None`` on a
    public route) and the path parameters (``{"id": ...}``)."""

    console: Console
    request: Request
    admin: Admin | None
    params: Mapping[str, str]

    @property
    def api(self) -> bool:
        return is_api_path(self.request.path)


View = Callable[[Call], Response]


def is_api_path(path: str) -> bool:
    return path == "/api" or path.startswith("/api/")


@dataclasses.dataclass(frozen=True)
class Route:
    """One path pattern, and per method the view and the access it needs."""

    pattern: str
    regex: re.Pattern[str]
    views: dict[str, tuple[View, Access]]

    @property
    def methods(self) -> tuple[str, ...]:
        return tuple(sorted(self.views))


_PARAM: Final = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


def _compile(pattern: str) -> re.Pattern[str]:
    if not pattern.startswith("/"):
        raise ConfigurationError(f"route {pattern!r} must start with '/'")
    out, last = [], 0
    for match in _PARAM.finditer(pattern):
        out.append(re.escape(pattern[last:match.start()]))
        out.append(f"(?P<{match.group(1)}>[^/]+)")
        last = match.end()
    out.append(re.escape(pattern[last:]))
    return re.compile("".join(out))


class Router:
    """Method + path pattern (``/keys/{id}/rotate``) to view.

    A path that matches no pattern is :class:`RouteNotFound` (404); one that
    matches with another method :class:`MethodNotAllowed` (405, naming the
    methods it takes).  ``HEAD`` is answered by the ``GET`` view.
    """

    def __init__(self) -> None:
        self.routes: list[Route] = []
        self._by_pattern: dict[str, Route] = {}

    def add(self, method: str | Iterable[str], pattern: str, view: View, *,
            access: Access | None = None) -> None:
        """Register *view* for *method* (or methods) at *pattern*.

        *access* defaults to ``"read"`` for safe methods and ``"write"``
        otherwise; a second view for the same method and pattern is refused.
        """
        methods = (method,) if isinstance(method, str) else tuple(method)
        route = self._by_pattern.get(pattern)
        if route is None:
            route = Route(pattern, _compile(pattern), {})
            self._by_pattern[pattern] = route
            self.routes.append(route)
        for name in methods:
            name = name.upper()
            if name in route.views:
                raise ConfigurationError(f"{name} {pattern} is registered twice")
            route.views[name] = (view, access or ("read" if name in SAFE_METHODS else "write"))

    def match(self, method: str, path: str) -> tuple[View, Access, dict[str, str]]:
        allowed: set[str] = set()
        for route in self.routes:
            found = route.regex.fullmatch(path)
            if found is None:
                continue
            entry = route.views.get(method) or (
                route.views.get("GET") if method == "HEAD" else None)
            if entry is not None:
                return entry[0], entry[1], found.groupdict()
            allowed.update(route.views)
        if allowed:
            if "GET" in allowed:
                allowed.add("HEAD")
            raise MethodNotAllowed(allowed=tuple(sorted(allowed)))
        raise RouteNotFound()


def json_response(data: Any, status: int = 200,
                  headers: Iterable[tuple[str, str]] = ()) -> Response:
    body = json.dumps(data).encode()
    return Response(status, [("Content-Type", _JSON), *headers], body)


_secret_warned = False
_secret_lock = threading.Lock()


def _warn_random_secret() -> None:
    global _secret_warned
    with _secret_lock:
        if _secret_warned:
            return
        _secret_warned = True
    log.warning(
        "aqnt-auth console: no secret_key given, so a random one was made for this process: "
        "console sign-ins end when it restarts and do not work across several workers. "
        "Pass secret_key= (at least 32 random characters, kept out of the code), or for "
        "`aqnt-auth console` set AQNT_AUTH_CONSOLE_SECRET_KEY."
    )


def _secret(secret_key: str | bytes | None) -> bytes:
    if secret_key is None:
        _warn_random_secret()
        return secrets.token_bytes(32)
    key = secret_key.encode() if isinstance(secret_key, str) else bytes(secret_key)
    if len(key) < 16:
        raise ConfigurationError("the console's secret_key must be at least 16 bytes long")
    return key


class Console:
    """The key console: HTML pages and a JSON API over one key store.

    :param store: a store URL, a :class:`~aqnt_auth.KeyStore`, or an
        :class:`~aqnt_auth.Authenticator` (shared with the app's middleware,
        so admin keys see its failure limiter); a store is opened with
        *options* as the adapters do.
    :param secret_key: signs the console's session cookies and CSRF tokens.
        Without one a random key is made per process (sessions then end on a
        restart and do not span workers) and a warning is logged once.
    :param admin_scope: the scope that makes a key an admin who may change
        keys (``aqnt:admin``).
    :param read_scope: the scope of a read-only admin (``aqnt:read``).
    :param authorize: the host app's hook, ``authorize(request) -> actor |
        Admin | None``; :attr:`Request.native` is the framework's request.
    :param hasher: hashes the keys the console issues (default: argon2id,
        OWASP profile, as :class:`~aqnt_auth.KeyManager`).
    :param manager: a :class:`~aqnt_auth.KeyManager` to change keys with,
        instead of one over the authenticator's store.
    :param session_idle_timeout: seconds a page session lasts without a
        request (15 minutes).
    :param session_absolute_timeout: seconds a page session lasts at most
        after signing in (8 hours).
    :param secure_cookies: mark the session cookie ``Secure`` always
        (``True``), never (``False``), or unless the request came over
        loopback (``None``, the default).
    """

    def __init__(
        self,
        store: Authenticator | KeyStore | str | None = None,
        *,
        authenticator: Authenticator | None = None,
        secret_key: str | bytes | None = None,
        admin_scope: str = "aqnt:admin",
        read_scope: str = "aqnt:read",
        authorize: Authorize | None = None,
        hasher: Hasher | None = None,
        manager: KeyManager | None = None,
        session_idle_timeout: float = IDLE_TIMEOUT,
        session_absolute_timeout: float = ABSOLUTE_TIMEOUT,
        secure_cookies: bool | None = None,
        **options: Unpack[AuthenticatorOptions],
    ) -> None:
        if isinstance(store, Authenticator):
            store, authenticator = None, store if authenticator is None else authenticator
        self._owns_authenticator = authenticator is None
        self.authenticator: Authenticator = make_authenticator(store, authenticator, options)
        if not admin_scope or not read_scope or admin_scope == read_scope:
            raise ConfigurationError("admin_scope and read_scope must be two different scopes")
        self.admin_scope = admin_scope
        self.read_scope = read_scope
        self.secret_key: bytes = _secret(secret_key)
        self.authorize = authorize
        self.manager: KeyManager = manager if manager is not None else KeyManager(
            self.authenticator.store, hasher=hasher, prefixes=self.authenticator.format.prefixes)
        self.router = Router()
        #: Further ways to recognise an admin (the sign-in session), asked
        #: after the Bearer key and the ``authorize`` hook.
        self.authentications: list[Callable[[Request], Admin | None]] = []
        #: Called on every response before it leaves (security headers).
        self.response_hooks: list[Callable[[Request, Response], None]] = []
        #: Answers an HTML route for a visitor who is not an admin (the pages
        #: set it to a redirect to the sign-in form).
        self.unauthenticated: Callable[[Request], Response] = self._unauthenticated
        #: Renders an error on an HTML route (the pages replace it).
        self.html_error: Callable[[Request, AQNTError], Response] = _plain_html_error
        from ._api import register as register_api

        try:
            from ._pages import register as register_pages
        except ImportError as exc:  # jinja2, for the pages' templates
            raise ConfigurationError(
                f"the key console needs its extra: pip install 'aqnt-auth[console]' ({exc})"
            ) from None

        register_api(self)
        try:
            sessions = Sessions(self.secret_key, idle_timeout=session_idle_timeout,
                                absolute_timeout=session_absolute_timeout,
                                secure=secure_cookies)
        except ValueError as exc:
            raise ConfigurationError(str(exc)) from None
        #: The HTML side: sign-in sessions, CSRF, the pages.
        self.pages = register_pages(self, sessions)

    def __repr__(self) -> str:
        return (f"Console(authenticator={self.authenticator!r}, "
                f"admin_scope={self.admin_scope!r}, read_scope={self.read_scope!r})")

    # -- who is asking --------------------------------------------------------

    def add_authentication(self, method: Callable[[Request], Admin | None]) -> None:
        """Add a way to recognise an admin (asked in the order added)."""
        self.authentications.append(method)

    def authenticate(self, request: Request, *, api: bool | None = None) -> Admin | None:
        """The admin making *request*, or ``None``.

        On an API route a Bearer credential decides alone: an invalid one
        raises the core's error (counted by the failure limiter), a valid key
        with neither console scope raises :class:`PermissionDenied`.
        """
        if api is None:
            api = is_api_path(request.path)
        if api and request.header("authorization") is not None:
            return self.key_admin(request)
        if self.authorize is not None:
            found = self.authorize(request)
            if isinstance(found, Admin):
                check_actor(found.actor)
                return found
            if found is not None:
                if not isinstance(found, str) or not found:
                    raise ConfigurationError(
                        "authorize() must return an actor name, an Admin or None")
                # A host app's bug (an actor the audit log cannot keep) is a
                # 500 here, not a 400 blamed on the admin's request later.
                return Admin(check_actor(found) or found, True, "hook")
        for method in self.authentications:
            admin = method(request)
            if admin is not None:
                return admin
        return None

    def key_admin(self, request: Request, authorization: str | None = None) -> Admin:
        """The admin of an API key (from *authorization*, by default the
        request's ``Authorization`` header), checked by the core.

        Raises the core's :class:`~aqnt_auth.AuthError` (failed attempts go
        through the failure limiter), :class:`~aqnt_auth.RateLimited` or
        :class:`PermissionDenied` when the key has neither console scope.
        The sign-in form calls this with ``"Bearer " + key``.
        """
        principal = self.authenticator.authenticate(
            authorization if authorization is not None else request.header("authorization"),
            method=request.method,
            path=(request.root_path + request.path) or "/",
            client=request.client,
            forwarded=request.header("forwarded"),
            x_forwarded_for=request.header("x-forwarded-for"),
            user_agent=request.header("user-agent"),
        )
        headers = principal.response_headers
        if principal.has_scopes(self.admin_scope):
            return Admin(f"key:{principal.id}", True, "key", headers)
        if principal.has_scopes(self.read_scope):
            return Admin(f"key:{principal.id}", False, "key", headers)
        raise PermissionDenied("not a console key", required_scopes=(self.read_scope,))

    def actor(self, admin: Admin | None) -> dict[str, Any]:
        """``{"actor": ...}``: the keyword the key manager's changes take, so
        the audit log names the admin."""
        if admin is None:
            return {}
        return {"actor": admin.actor}

    # -- answering ------------------------------------------------------------

    def handle(self, request: Request) -> Response:
        """Answer *request*: route, check the admin's access, run the view."""
        try:
            response = self._dispatch(request)
        except AQNTError as exc:
            response = self.error_response(request, exc)
        except Exception:
            # Never the request's contents: they may hold a key.
            log.exception("aqnt-auth console: %s %s failed", request.method, request.path)
            response = self.error_response(request, AQNTError())
        return self.finish(request, response)

    def finish(self, request: Request, response: Response) -> Response:
        """Add the headers every answer carries (the mounts call it for the
        answers they make themselves, such as a body too large)."""
        response.headers.extend(BASE_HEADERS)
        for hook in self.response_hooks:
            hook(request, response)
        if request.method == "HEAD":
            response.body = b""
        return response

    def _dispatch(self, request: Request) -> Response:
        path = request.path or "/"
        if path != request.path:
            return Response(308, [("Location", request.root_path + "/")])
        view, access, params = self.router.match(request.method, path)
        admin = None
        api = is_api_path(path)
        if access != "public":
            admin = self.authenticate(request, api=api)
            if admin is None:
                if api:
                    raise MissingAPIKey()
                return self.unauthenticated(request)
            if access == "write":
                if not admin.can_write:
                    raise PermissionDenied("read-only admin",
                                           required_scopes=(self.admin_scope,))
                if api and admin.by_cookie and not _is_json(request):
                    # A cross-site form can post with the browser's cookies,
                    # but only as a form or text: never as JSON.
                    raise UnsupportedMediaType()
        response = view(Call(self, request, admin, params))
        if admin is not None and admin.headers:
            response.headers.extend(admin.headers)
        return response

    def error_response(self, request: Request, error: AQNTError) -> Response:
        if not is_api_path(request.path or "/"):
            return self.html_error(request, error)
        rendered = render_error(error, self.authenticator.realm)
        headers = list(rendered.headers)
        if isinstance(error, MethodNotAllowed):
            headers.append(("Allow", ", ".join(error.allowed)))
        return Response(rendered.status, headers, rendered.body)

    def _unauthenticated(self, request: Request) -> Response:
        return self.html_error(request, MissingAPIKey())

    def close(self) -> None:
        """Flush usage and close the store, if the console opened them."""
        if self._owns_authenticator:
            self.authenticator.close()


def _is_json(request: Request) -> bool:
    ctype = (request.header("content-type") or "").split(";", 1)[0].strip().lower()
    return ctype == _JSON


def _plain_html_error(request: Request, error: AQNTError) -> Response:
    text = html.escape(error.message)
    body = (f"<!doctype html><html lang=\"en\"><meta charset=\"utf-8\">"
            f"<title>{error.status_code} {text}</title><h1>{text}</h1></html>").encode()
    headers = [("Content-Type", "text/html; charset=utf-8")]
    if isinstance(error, MethodNotAllowed):
        headers.append(("Allow", ", ".join(error.allowed)))
    return Response(error.status_code, headers, body)
