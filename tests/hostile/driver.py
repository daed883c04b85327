"""What every adapter driver shares: the raw request, the outcome, the counters.

A driver is an app protected by one adapter, configured through that
adapter's own options, with a counting store and a counting hasher, and a
way to send it a raw request exactly as a server would hand it over:
ASGI apps get a raw scope (repeated and non-ASCII header bytes intact),
WSGI apps a raw environ (repeated headers joined with ", ", bytes decoded
as latin-1, as PEP 3333 servers do).
"""

from __future__ import annotations

import abc
import contextlib
import dataclasses
import urllib.parse
from collections.abc import Iterator
from typing import Final

from aqnt_auth import FailureLimiter, KeyManager
from tests.core._support import CountingHasher, InstrumentedStore

from .cases import Case
from .keys import KeySet

#: Every method the test apps' endpoints accept.
METHODS: Final = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE",
                  "PROPFIND")
EXEMPT_PATHS: Final = ("/health",)
#: The protected endpoint that raises, for error pages.
BOOM: Final = "the view failed"
#: Only live keys are accepted: a valid test key shows the mode check.
ALLOWED_MODES: Final = ("live",)
HOST: Final = "testserver"
CLIENT: Final = "127.0.0.1"


@dataclasses.dataclass(frozen=True)
class Request:
    """A case with its templates filled in: what goes on the wire."""

    method: str
    path: str
    headers: tuple[tuple[bytes, bytes], ...]
    query: bytes
    root: str
    ws_extension: bool
    #: The peer address the server gives.
    peer: str = CLIENT

    @classmethod
    def of(cls, case: Case, keys: KeySet) -> Request:
        return cls(
            method=case.method,
            path=keys.fill(case.path.encode("ascii")).decode("ascii"),
            headers=tuple((name, keys.fill(value)) for name, value in case.headers),
            query=keys.fill(case.query),
            root=case.root,
            ws_extension=case.ws_extension,
            peer=case.peer,
        )

    @classmethod
    def earlier(cls, case: Case, keys: KeySet) -> Request:
        """The request of *case*'s earlier attempts."""
        headers = case.earlier_headers if case.earlier_headers is not None else case.headers
        return cls.of(dataclasses.replace(case, headers=headers,
                                          peer=case.earlier_peer or case.peer), keys)

    @property
    def decoded_path(self) -> bytes:
        """The path as servers decode it before handing it over (``%68`` is ``h``)."""
        return urllib.parse.unquote_to_bytes(self.path)

    def wsgi_paths(self) -> tuple[str, str]:
        """``(SCRIPT_NAME, PATH_INFO)``, latin-1 decoded, as PEP 3333 servers give them."""
        full = self.decoded_path.decode("latin-1")
        root = self.root
        if root and (full == root or full.startswith(root + "/")):
            return root, full[len(root):]
        return "", full


@dataclasses.dataclass
class Outcome:
    """What came back, and what ran."""

    status: int | None
    headers: list[tuple[str, str]]
    body: bytes
    #: The endpoint that ran ("protected", "health", "boom", "lifespan"), or None.
    endpoint: str | None
    #: What the endpoint was given as the request's key (a Principal, or None).
    principal: object | None = None
    close_code: int | None = None
    #: Anything the stack wrote to its error stream (wsgi.errors).
    errors: str = ""
    #: An exception that escaped the app (the server would answer 500).
    escaped: BaseException | None = None

    def header(self, name: str) -> str | None:
        """The one value of header *name* (case-insensitive); fails if repeated."""
        values = [v for k, v in self.headers if k.lower() == name]
        assert len(values) <= 1, f"{name} sent {len(values)} times"
        return values[0] if values else None


class Recorder:
    """The endpoints' log: which ran, with what principal."""

    def __init__(self) -> None:
        self.ran: list[tuple[str, object | None]] = []

    def __call__(self, endpoint: str, principal: object | None) -> None:
        self.ran.append((endpoint, principal))

    def take(self) -> tuple[str | None, object | None]:
        """The endpoint of the request just sent (at most one), and forget it."""
        ran, self.ran = self.ran, []
        assert len(ran) <= 1, f"several endpoints ran: {[name for name, _ in ran]}"
        return ran[0] if ran else (None, None)


class Driver(abc.ABC):
    """One adapter in front of a test app, and its counters."""

    name: str

    def __init__(self, keys: KeySet, hasher: CountingHasher) -> None:
        self.keys = keys
        self.hasher = hasher
        self.recorder = Recorder()

    @abc.abstractmethod
    def send(self, request: Request) -> Outcome:
        """Send *request* as a server would; return what came back."""

    @abc.abstractmethod
    def reads(self) -> int:
        """Store reads since :meth:`reset_cost`."""

    @abc.abstractmethod
    def break_store(self) -> None:
        """Make every store read fail, as a database outage would."""

    @abc.abstractmethod
    def repair_store(self) -> None:
        """End the outage."""

    def reset_cost(self) -> None:
        self.hasher.calls = 0
        self._reset_reads()

    @abc.abstractmethod
    def _reset_reads(self) -> None: ...

    def cost(self) -> tuple[int, int]:
        """(store reads, argon2 verifications) since :meth:`reset_cost`."""
        return self.reads(), self.hasher.calls


class MemoryDriver(Driver):
    """A driver over the counting memory store (every adapter but Django's)."""

    def __init__(self, store: InstrumentedStore, hasher: CountingHasher) -> None:
        super().__init__(KeySet(KeyManager(store, hasher=hasher)), hasher)
        self.store = store

    def reads(self) -> int:
        return self.store.gets

    def _reset_reads(self) -> None:
        self.store.gets = 0

    def break_store(self) -> None:
        self.store.failure = ConnectionRefusedError("connection refused")

    def repair_store(self) -> None:
        self.store.failure = None


@dataclasses.dataclass(frozen=True)
class Setup:
    """How a driver's app is configured, beyond the common options."""

    #: A failure limiter for the adapter.
    rate_limit: FailureLimiter | None = None
    #: The framework's debug mode: its error page shows tracebacks (Django's
    #: DEBUG page, Starlette's, werkzeug's debugger).
    debug: bool = False
    #: The framework's standard CORS layer, in its documented place, allowing
    #: :data:`~tests.hostile.cases.ORIGIN` (and, where the adapter needs it to
    #: pass preflights on to that layer, its setting for that).
    cors: bool = False
    #: Proxies whose forwarded headers the adapter believes.
    trusted_proxies: tuple[str, ...] = ()


@contextlib.contextmanager
def open_driver(adapter: str, *, rate_limit: FailureLimiter | None = None, debug: bool = False,
                cors: bool = False, trusted_proxies: tuple[str, ...] = ()) -> Iterator[Driver]:
    """The app protected by *adapter* ("asgi", "fastapi", ..., "drf"), configured
    through that adapter's own options, as :class:`Setup` describes."""
    hasher = CountingHasher()
    setup = Setup(rate_limit, debug, cors, trusted_proxies)
    if adapter in ("django", "drf"):
        from .django_drivers import open_django

        with open_django(adapter, hasher, setup) as driver:
            yield driver
        return
    store = InstrumentedStore()
    if adapter in ("asgi", "starlette", "fastapi"):
        from .asgi_drivers import open_asgi

        with open_asgi(adapter, store, hasher, setup) as driver:
            yield driver
        return
    from .wsgi_drivers import open_wsgi

    with open_wsgi(adapter, store, hasher, setup) as driver:
        yield driver
