"""API-key authentication as pure ASGI 3 middleware, for any ASGI app.

Works under Starlette, FastAPI, Quart, Litestar or a bare ASGI callable:
nothing here imports a web framework.  What it leaves in the scope follows
Starlette's conventions (``scope["user"]``, ``scope["auth"]``,
``scope["state"]``), so ``request.user``, ``request.auth`` and
``request.state.api_key`` work there with no further glue.

The middleware only translates: every decision (which paths are exempt, what
a header means, whether a key is valid and may do this) is made by the core.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import TYPE_CHECKING, Any, Final

from aqnt_auth import (
    AQNTError,
    Authenticator,
    AuthenticatorOptions,
    ClientDisconnected,
    ClientFacts,
    KeyStore,
    PathRules,
    Principal,
    StoreOpenError,
    StoreUnavailable,
    authorization_and_agent,
    forwarded_headers,
    is_cors_preflight,
    make_authenticator,
    relative_path,
)
from aqnt_auth._stores._open import UnopenedStore

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = [
    "APIKeyAuth",
    "APIKeyMiddleware",
    "Exemptions",
    "ResponseHeadersMiddleware",
    "admit",
    "authenticate_scope",
    "principal_of",
    "route_path",
    "with_headers",
]

log = logging.getLogger("aqnt_auth.asgi")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class APIKeyAuth:
    """``request.user`` and ``request.auth`` at once, shaped like Starlette's
    ``BaseUser`` and ``AuthCredentials``: one object, because on the warm
    path every allocation shows.

    :attr:`principal` is the key's :class:`~aqnt_auth.Principal`, or ``None``
    where no key was checked (an exempt path, a CORS preflight); then
    :attr:`is_authenticated` is false.  The :attr:`identity` is the key id,
    and :attr:`scopes` lists the key's scopes, so Starlette's ``@requires``
    works.  :attr:`authenticator` is the one that checked (or would have
    checked) the request: route-level checks answer with its :attr:`realm`,
    and can authenticate an exempt request on demand.
    """

    __slots__ = ("_scopes", "authenticator", "principal")
    #: The sorted scopes, unset until :attr:`scopes` is first read.
    _scopes: list[str]

    def __init__(self, principal: Principal | None, authenticator: Authenticator) -> None:
        self.principal = principal
        self.authenticator = authenticator

    def __repr__(self) -> str:
        return f"APIKeyAuth({self.principal!r})"

    @property
    def is_authenticated(self) -> bool:
        return self.principal is not None

    @property
    def identity(self) -> str:
        return self.principal.id if self.principal is not None else ""

    @property
    def display_name(self) -> str:
        return self.principal.name if self.principal is not None else ""

    @property
    def scopes(self) -> list[str]:
        if self.principal is None:
            return []  # a fresh list: the anonymous object is shared
        # Built on first use: most requests never look at it.
        try:
            return self._scopes
        except AttributeError:
            scopes = self._scopes = sorted(self.principal.scopes)
            return scopes

    @property
    def realm(self) -> str:
        return self.authenticator.realm


#: Makes an :class:`APIKeyAuth` without running ``__init__`` (the warm path).
_new_auth = object.__new__


def route_path(scope: Scope) -> str:
    """The decoded path as the app's router sees it: relative to ``root_path``."""
    root_path = scope.get("root_path")
    return relative_path(scope["path"], root_path) if root_path else scope["path"]


def principal_of(scope: Scope) -> Principal | None:
    """The principal an adapter put in *scope* (``scope["state"]["api_key"]``)."""
    state = scope.get("state")
    return state.get("api_key") if state is not None else None


def admit(scope: Scope, principal: Principal, authenticator: Authenticator) -> APIKeyAuth:
    """Record a successful authentication in *scope*, the way Starlette expects it."""
    state = scope.get("state")
    if state is None:
        state = scope["state"] = {}
    state["api_key"] = principal
    scope["user"] = scope["auth"] = auth = APIKeyAuth(principal, authenticator)
    return auth


def with_headers(send: Send, headers: tuple[tuple[str, str], ...]) -> Send:
    """*send*, adding *headers* (a principal's ``response_headers``: the
    RateLimit headers of a limited key) to the response it starts."""
    raw = [(_RAW_NAMES.get(name) or _raw_name(name), value.encode("latin-1"))
           for name, value in headers]

    # Not a coroutine: it returns *send*'s own awaitable, so the app's sends
    # cost no extra coroutine each.
    def send_with_headers(message: Message) -> Awaitable[None]:
        if message["type"] in _STARTS:
            # A new list in the app's message, as Starlette's own middleware
            # changes a response's headers.
            message["headers"] = [*message.get("headers", ()), *raw]
        return send(message)

    return send_with_headers


_STARTS: Final = frozenset({"http.response.start", "websocket.http.response.start"})
#: Header names as raw ASGI wants them, encoded once.
_RAW_NAMES: dict[str, bytes] = {"RateLimit-Policy": b"ratelimit-policy",
                                "RateLimit": b"ratelimit"}


def _raw_name(name: str) -> bytes:
    raw = name.lower().encode("latin-1")
    if len(_RAW_NAMES) < 64:
        _RAW_NAMES[name] = raw
    return raw


class ResponseHeadersMiddleware:
    """Adds the authenticated key's response headers (the RateLimit headers
    of a key with rate limits) to every response, for apps whose keys are
    checked by something that cannot touch the response: Starlette's
    ``AuthenticationMiddleware`` with
    :class:`~aqnt_auth.adapters.starlette.APIKeyBackend`.  Put it outside
    (before) that middleware.  :class:`APIKeyMiddleware` adds them itself.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                # Read when the response starts: the principal is in the
                # scope by then, put there by the middleware inside.
                principal = principal_of(scope)
                if principal is not None and principal.response_headers:
                    message["headers"] = [*message.get("headers", ()), *(
                        (_RAW_NAMES.get(name) or _raw_name(name), value.encode("latin-1"))
                        for name, value in principal.response_headers)]
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _client_facts(authenticator: Authenticator, scope: Scope,
                  user_agent: bytes | None = None) -> ClientFacts:
    """What the failure limiter, a key's IP allowlist and its usage history
    know the client by: the peer address, the user agent and, when proxies
    are trusted, the raw forwarded headers (the core decides)."""
    client = scope.get("client")
    facts: ClientFacts = {"client": client[0] if client else None, "user_agent": user_agent}
    if authenticator.trusted_proxies:
        facts["forwarded"], facts["x_forwarded_for"] = forwarded_headers(scope["headers"])
    return facts


async def authenticate_scope(authenticator: Authenticator, scope: Scope) -> Principal:
    """Authenticate an ``http`` or ``websocket`` scope, key restrictions
    included; the client's address goes to the authenticator's failure limiter.

    A WebSocket handshake is a ``GET`` (RFC 6455 §4.1): that is the method
    a read-only key is judged by.
    """
    header, agent = authorization_and_agent(scope["headers"])
    method = scope.get("method", "GET")
    path = route_path(scope)
    facts = _client_facts(authenticator, scope, agent)
    principal = authenticator.authenticate_nowait(header, method=method, path=path, **facts)
    if principal is None:
        principal = await authenticator.authenticate_async(
            header, method=method, path=path, **facts
        )
    return principal


class Exemptions:
    """Which requests go through without a key: exempt paths, and CORS
    preflights when *allow_cors_preflight*.  Built once, asked per request."""

    __slots__ = ("_is_exempt", "allow_cors_preflight", "paths")

    def __init__(self, exempt_paths: Iterable[str] = (), allow_cors_preflight: bool = False
                 ) -> None:
        self.paths = PathRules(exempt_paths)
        self._is_exempt = self.paths.is_exempt if self.paths else None
        self.allow_cors_preflight = allow_cors_preflight

    def __repr__(self) -> str:
        return f"Exemptions({self.paths!r}, allow_cors_preflight={self.allow_cors_preflight})"

    def __call__(self, scope: Scope, method: str, path: str) -> bool:
        """Whether the request (its *method* and router *path*) skips authentication."""
        if self._is_exempt is not None and self._is_exempt(path):
            return True
        return method == "OPTIONS" and self.allow_cors_preflight and _is_preflight(scope)


def _is_preflight(scope: Scope) -> bool:
    origin = request_method = None
    for name, value in scope["headers"]:
        if name == b"origin":
            origin = value
        elif name == b"access-control-request-method":
            request_method = value
    return is_cors_preflight("OPTIONS", origin, request_method)


class _Watch:
    """Reads ``receive`` to notice a client that hangs up, while its key waits
    for argon2, and replays what it read to the app afterwards."""

    __slots__ = ("messages", "receive")

    #: Request body kept for the app while watching; past it, stop watching.
    LIMIT = 64 * 1024

    def __init__(self, receive: Receive) -> None:
        self.receive = receive
        self.messages: list[Message] = []

    async def until_disconnect(self) -> None:
        size = 0
        complete = False
        while size <= self.LIMIT:
            message = await self.receive()
            self.messages.append(message)
            if message["type"] == "http.disconnect":
                return
            if complete:
                # Only a disconnect may follow a complete request: a receive
                # that answers anything else at once would keep this loop
                # from ever yielding.
                break
            size += len(message.get("body", b""))
            complete = not message.get("more_body", False)
        await asyncio.get_running_loop().create_future()  # until cancelled

    async def replay(self) -> Message:
        if self.messages:
            return self.messages.pop(0)
        return await self.receive()


class APIKeyMiddleware:
    """Require a valid API key on every ``http`` and ``websocket`` request.

    :param app: the ASGI app to protect.
    :param store: a :class:`~aqnt_auth.KeyStore` or a store URL (default
        ``"sqlite:///aqnt_keys.db"``, the CLI's).  The middleware owns the
        :class:`~aqnt_auth.Authenticator` it builds on it and closes it at
        lifespan shutdown.
    :param authenticator: an :class:`~aqnt_auth.Authenticator` to use instead
        of *store*.  Its owner closes it; the middleware flushes its usage
        counts at shutdown.
    :param exempt_paths: paths served without a key: exact (``"/health"``) or
        segment-boundary prefixes written ``"/docs/*"``, matched against the
        decoded path relative to ``root_path``, as the router sees it.
    :param allow_cors_preflight: let CORS preflights (``OPTIONS`` with
        ``Origin`` and ``Access-Control-Request-Method``) through without a
        key, for a CORS middleware *inside* this one to answer (default
        ``False``: with nothing there to answer it, a preflight would reach
        the endpoint unauthenticated).  Starlette's ``CORSMiddleware`` belongs
        outside this middleware, where it answers preflights before they
        arrive here and needs no such pass.
    :param options: passed with *store* to :class:`~aqnt_auth.Authenticator`
        (``allowed_modes``, ``realm``, ``prefixes``, ``hashers``...).

    On success the :class:`~aqnt_auth.Principal` is at
    ``scope["state"]["api_key"]`` (``request.state.api_key``), and an
    :class:`APIKeyAuth` at ``scope["user"]`` and ``scope["auth"]``.
    Otherwise the app never sees the request: it gets the core's error
    response, and a WebSocket is refused with that response (the
    ``websocket.http.response`` extension) or, without the extension,
    closed with code 1008.

    A store URL that is malformed or cannot be opened does not raise here
    (Starlette builds its middleware on the app's first call, so raising
    would make every request a plain 500 where the server runs no lifespan
    start-up): the lifespan start-up fails with the message, and without
    one every request, exempt paths included, is answered 503
    ``auth_unavailable`` and the reason is logged once.
    :attr:`startup_error` holds it.
    """

    def __init__(
        self,
        app: ASGIApp,
        store: KeyStore | str | None = None,
        *,
        authenticator: Authenticator | None = None,
        exempt_paths: Iterable[str] = (),
        allow_cors_preflight: bool = False,
        **options: Unpack[AuthenticatorOptions],
    ) -> None:
        self.app = app
        self.startup_error: StoreOpenError | None = None
        try:
            self.authenticator = make_authenticator(store, authenticator, options)
        except StoreOpenError as exc:
            self.startup_error = exc
            # Never accepts a key: every read raises StoreUnavailable.
            self.authenticator = make_authenticator(UnopenedStore(exc), None, options)
        self._startup_error_logged = False
        self._owns_authenticator = authenticator is None
        self.exemptions = Exemptions(exempt_paths, allow_cors_preflight)
        # Without exempt paths or preflights, no request is asked about them.
        self._exempt = self.exemptions if self.exemptions.paths or allow_cors_preflight else None
        self._authenticate = self.authenticator.authenticate_async
        self._authenticate_nowait = self.authenticator.authenticate_nowait
        # Past trusted proxies the client is in the forwarded headers.
        self._proxied = bool(self.authenticator.trusted_proxies)
        self._anonymous = APIKeyAuth(None, self.authenticator)

    def __repr__(self) -> str:
        return f"APIKeyMiddleware(authenticator={self.authenticator!r}, {self.exemptions!r})"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind != "http" and kind != "websocket":
            if kind == "lifespan":
                if self.startup_error is not None:
                    await self._fail_startup(receive, send)
                    return
                send = self._on_shutdown(send)
            await self.app(scope, receive, send)
            return
        # The warm path: route_path() and admit() written out, as every call
        # here costs a measurable share of the whole request.
        root_path = scope.get("root_path")
        path = relative_path(scope["path"], root_path) if root_path else scope["path"]
        method = scope.get("method", "GET")
        if self._exempt is not None and self._exempt(scope, method, path):
            if self.startup_error is not None:
                # Not even /health may look healthy on a store that never opened.
                await self._refuse(self.startup_error, scope, receive, send)
                return
            scope.setdefault("user", self._anonymous)
            scope.setdefault("auth", self._anonymous)
            await self.app(scope, receive, send)
            return
        try:
            # authenticate_scope(), written out: a warm key on a store that
            # does no I/O is decided without creating a coroutine.
            header, agent = authorization_and_agent(scope["headers"])
            if self._proxied:
                facts = _client_facts(self.authenticator, scope, agent)
                principal = self._authenticate_nowait(header, method=method, path=path,
                                                      **facts)
            else:
                # The peer and user agent, for usage history only; by position
                # (header, method, path, client, Forwarded, X-Forwarded-For,
                # user agent), as keyword matching costs on every request.
                peer = scope.get("client")
                nowait = self._authenticate_nowait
                principal = nowait(header, method, path, peer[0] if peer else None, None, None,
                                   agent)
            if principal is None:  # a cold key, a store that does I/O...
                if kind != "http":
                    # A handshake's messages are not watched: a cancelled
                    # watch could take websocket.connect from the app.
                    principal = await self._authenticate(
                        header, method=method, path=path,
                        **_client_facts(self.authenticator, scope, agent),
                    )
                else:
                    # While argon2 is awaited, a client that hangs up withdraws it.
                    watch = _Watch(receive)
                    try:
                        principal = await self._authenticate(
                            header, method=method, path=path,
                            **_client_facts(self.authenticator, scope, agent),
                            disconnected=watch.until_disconnect,
                        )
                    finally:
                        if watch.messages:
                            receive = watch.replay
        except ClientDisconnected:
            return
        except AQNTError as exc:
            await self._refuse(exc, scope, receive, send)
            return
        state = scope.get("state")
        if state is None:
            state = scope["state"] = {}
        state["api_key"] = principal
        # APIKeyAuth(principal, authenticator) written out: no __init__ frame.
        auth = _new_auth(APIKeyAuth)
        auth.principal = principal
        auth.authenticator = self.authenticator
        scope["user"] = scope["auth"] = auth
        if principal.response_headers:  # a key with rate limits: their headers
            send = with_headers(send, principal.response_headers)
        await self.app(scope, receive, send)

    async def _refuse(self, error: AQNTError, scope: Scope, receive: Receive, send: Send) -> None:
        if self.startup_error is not None:
            # Whatever the header said: the store never opened.
            error = self._unopened(self.startup_error)
        answer = self.authenticator.render_error(error)
        if scope["type"] == "http":
            await send({"type": "http.response.start", "status": answer.status,
                        "headers": answer.raw_headers})
            await send({"type": "http.response.body", "body": answer.body})
            return
        # The handshake request arrives as websocket.connect; answer it.
        await receive()
        if "websocket.http.response" in (scope.get("extensions") or {}):
            await send({"type": "websocket.http.response.start", "status": answer.status,
                        "headers": answer.raw_headers})
            await send({"type": "websocket.http.response.body", "body": answer.body})
        else:
            # 1008: policy violation (RFC 6455 §7.4.1); the reason is the error code.
            await send({"type": "websocket.close", "code": 1008, "reason": error.code})

    def _unopened(self, reason: StoreOpenError) -> StoreUnavailable:
        if not self._startup_error_logged:
            self._startup_error_logged = True
            log.error("aqnt-auth: %s; every request is answered 503 auth_unavailable until "
                      "this is fixed and the app restarted", reason)
        return StoreUnavailable(str(reason))

    async def _fail_startup(self, receive: Receive, send: Send) -> None:
        # The server reports the message and stops (uvicorn does so with
        # --lifespan on and auto alike); the app's own start-up never runs.
        # Then raise, as Starlette's router does after a failed start-up:
        # servers expect the lifespan to end so, and say nothing more.
        assert self.startup_error is not None
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.failed",
                        "message": f"aqnt-auth: {self.startup_error}"})
        raise self.startup_error

    def _on_shutdown(self, send: Send) -> Send:
        # Flush and close after the app's own shutdown, which may still use keys.
        async def lifespan_send(message: Message) -> None:
            if message["type"] in ("lifespan.shutdown.complete", "lifespan.shutdown.failed"):
                await self.aclose()
            await send(message)

        return lifespan_send

    async def aclose(self) -> None:
        """Flush usage counts, and close the authenticator if this middleware built it."""
        if self._owns_authenticator:
            await self.authenticator.aclose()
        else:
            await asyncio.get_running_loop().run_in_executor(
                None, self.authenticator.flush_usage
            )
