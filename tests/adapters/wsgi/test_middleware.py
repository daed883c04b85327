"""APIKeyMiddleware in front of a plain WSGI function, driven by werkzeug's test client."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Final

import pytest
from flask import Flask, request
from werkzeug.test import Client, TestResponse

from aqnt_auth import (
    Argon2Hasher,
    Authenticator,
    ConfigurationError,
    FailureLimiter,
    KeyManager,
    MemoryKeyStore,
)
from aqnt_auth.adapters.wsgi import ENVIRON_KEY, APIKeyMiddleware
from tests import bodies

from ._support import BrokenStore, assert_limited_per_client, bearer
from ._support import assert_refused as check_refusal

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment


class Recorder:
    """A plain WSGI app that remembers every environ it was called with."""

    def __init__(self) -> None:
        self.calls: list[WSGIEnvironment] = []

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse
                 ) -> Iterable[bytes]:
        self.calls.append(environ)
        principal = environ[ENVIRON_KEY]
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"anonymous" if principal is None else principal.id.encode()]


@pytest.fixture
def inner() -> Recorder:
    return Recorder()


@pytest.fixture
def middleware(
    inner: Recorder, memory_store: MemoryKeyStore, cheap_hasher: Argon2Hasher
) -> Iterable[APIKeyMiddleware]:
    mw = APIKeyMiddleware(
        inner,
        memory_store,
        exempt_paths=["/health", "/docs/*", "/café"],
        hashers=[cheap_hasher],
    )
    yield mw
    mw.close()


@pytest.fixture
def client(middleware: APIKeyMiddleware) -> Client:
    return Client(middleware)


@pytest.fixture
def key(manager: KeyManager) -> str:
    return manager.create("test key").key


def assert_refused(response: TestResponse, inner: Recorder, status: int, body: bytes,
                   challenge: str | None) -> None:
    check_refusal(response, status, body, challenge)
    assert inner.calls == []


class TestRefusals:
    def test_missing_key(self, client: Client, inner: Recorder) -> None:
        """No Authorization header: 401 missing_api_key, the app never runs."""
        assert_refused(client.get("/"), inner, 401, bodies.MISSING, bodies.CHALLENGE)

    def test_other_scheme_is_missing(self, client: Client, inner: Recorder) -> None:
        """A Basic header is not an attempt at one of our keys."""
        response = client.get("/", headers={"Authorization": "Basic dXNlcjpwYXNz"})
        assert_refused(response, inner, 401, bodies.MISSING, bodies.CHALLENGE)

    def test_malformed_key(self, client: Client, inner: Recorder) -> None:
        """A token that is not a well-formed key: 401 invalid_api_key."""
        response = client.get("/", headers=bearer("sk_live_nope"))
        assert_refused(response, inner, 401, bodies.INVALID, bodies.INVALID_CHALLENGE)

    def test_wrong_secret(self, client: Client, inner: Recorder, manager: KeyManager) -> None:
        """A well-formed key of an unknown id: 401 invalid_api_key."""
        other = KeyManager(MemoryKeyStore(), hasher=manager.hasher).create("elsewhere").key
        assert_refused(client.get("/", headers=bearer(other)), inner, 401, bodies.INVALID,
                       bodies.INVALID_CHALLENGE)

    def test_revoked_key(self, client: Client, inner: Recorder, manager: KeyManager,
                         key: str) -> None:
        """A revoked key: 401 key_revoked."""
        manager.revoke(manager.list()[0].id)
        assert_refused(client.get("/", headers=bearer(key)), inner, 401, bodies.REVOKED,
                       bodies.INVALID_CHALLENGE)

    def test_comma_joined_headers(self, client: Client, inner: Recorder, key: str,
                                  manager: KeyManager) -> None:
        """Two Authorization headers, joined by the server: never "either one"."""
        second = manager.create("second").key
        for joined in (f"Bearer {key}, Bearer {second}", f"Bearer {key},Bearer {second}",
                       f"Basic dXNlcjpwYXNz, Bearer {key}", f"Bearer {key}, Basic eDp5"):
            response = client.get("/", headers={"Authorization": joined})
            assert_refused(response, inner, 401, bodies.INVALID, bodies.INVALID_CHALLENGE)

    def test_non_ascii_header(self, client: Client, inner: Recorder) -> None:
        """PEP 3333 gives headers as latin-1 text; anything non-ASCII is invalid."""
        environ = {"HTTP_AUTHORIZATION": "Bearer sk_live_\xe9t\xe9"}
        response = client.get("/", environ_overrides=environ)
        assert_refused(response, inner, 401, bodies.INVALID, bodies.INVALID_CHALLENGE)

    def test_read_only_key_cannot_post(self, client: Client, inner: Recorder,
                                       manager: KeyManager) -> None:
        """A read-only key's restriction is enforced on the request's method."""
        key = manager.create("reader", read_only=True).key
        assert_refused(client.post("/", headers=bearer(key)), inner, 403, bodies.FORBIDDEN,
                       bodies.READ_ONLY_CHALLENGE)
        assert client.get("/", headers=bearer(key)).status_code == 200

    def test_allowed_paths(self, client: Client, inner: Recorder, manager: KeyManager) -> None:
        """A key limited to /v1/charges is refused elsewhere, look-alikes included."""
        key = manager.create("charges only", allowed_paths=["/v1/charges"]).key
        for path in ("/v1/refunds", "/v1/chargesX", "/v1/charges/../refunds"):
            response = client.get(path, headers=bearer(key))
            assert_refused(response, inner, 403, bodies.FORBIDDEN, bodies.PATHS_CHALLENGE)
        assert client.get("/v1/charges/ch_1", headers=bearer(key)).status_code == 200

    def test_head_gets_no_body(self, client: Client, inner: Recorder) -> None:
        """A refused HEAD request has the headers of the GET and no body."""
        response = client.head("/")
        assert response.status_code == 401
        assert response.get_data() == b""
        assert response.headers["Content-Length"] == str(len(bodies.MISSING))
        assert response.headers["WWW-Authenticate"] == bodies.CHALLENGE
        assert inner.calls == []

    def test_store_failure_is_503(self, inner: Recorder, cheap_hasher: Argon2Hasher,
                                  manager: KeyManager, key: str) -> None:
        """A store that cannot answer: 503 auth_unavailable, never a 401 or a 500."""
        broken = BrokenStore()
        mw = APIKeyMiddleware(inner, broken, hashers=[cheap_hasher], track_usage=False)
        response = Client(mw).get("/", headers=bearer(key))
        assert_refused(response, inner, 503, bodies.UNAVAILABLE, None)
        assert response.headers["Retry-After"] == "1"


class TestRateLimit:
    def test_failures_are_limited_per_remote_addr(self, inner: Recorder, cheap_hasher: Argon2Hasher,
                                                  memory_store: MemoryKeyStore) -> None:
        """With a FailureLimiter, REMOTE_ADDR is the client it counts: 429 past the limit."""
        mw = APIKeyMiddleware(inner, memory_store, hashers=[cheap_hasher], track_usage=False,
                              rate_limit=FailureLimiter(per_key="9/minute",
                                                        per_client="2/minute"))
        strangers = KeyManager(MemoryKeyStore(), hasher=cheap_hasher)
        assert_limited_per_client(Client(mw), strangers, inner.calls)


class TestSuccess:
    def test_principal_in_environ(self, client: Client, inner: Recorder, key: str,
                                  manager: KeyManager) -> None:
        """The app gets the key's principal at environ["aqnt.api_key"]."""
        response = client.get("/", headers=bearer(key))
        assert response.status_code == 200
        record = manager.list()[0]
        assert response.get_data() == record.id.encode()
        assert inner.calls[0][ENVIRON_KEY].name == "test key"

    def test_usage_is_counted_and_flushed_at_close(self, middleware: APIKeyMiddleware,
                                                  client: Client, key: str,
                                                  manager: KeyManager) -> None:
        """Requests are counted in memory; close() writes the counts to the store."""
        for _ in range(3):
            client.get("/", headers=bearer(key))
        middleware.close()
        assert manager.list()[0].usage_count == 3

    def test_other_app_errors_propagate(self, memory_store: MemoryKeyStore,
                                        cheap_hasher: Argon2Hasher, key: str) -> None:
        """The middleware answers only its own refusals; the app's errors are the server's."""

        def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
            raise ZeroDivisionError

        mw = APIKeyMiddleware(app, memory_store, hashers=[cheap_hasher], track_usage=False)
        with pytest.raises(ZeroDivisionError):
            Client(mw).get("/", headers=bearer(key))


class TestFrameworks:
    def test_flask_wsgi_app(self, memory_store: MemoryKeyStore, cheap_hasher: Argon2Hasher,
                            key: str) -> None:
        """Flask's own WSGI app wrapped: its views read the principal from the environ."""
        app = Flask(__name__)
        ran: list[str] = []

        @app.get("/whoami")
        def whoami() -> str:
            ran.append("whoami")
            return str(request.environ[ENVIRON_KEY].name)

        mw = APIKeyMiddleware(app.wsgi_app, memory_store, hashers=[cheap_hasher],
                              track_usage=False)
        app.wsgi_app = mw  # type: ignore[method-assign]
        client = app.test_client()
        assert client.get("/whoami", headers=bearer(key)).get_data() == b"test key"
        check_refusal(client.get("/whoami"), 401, bodies.MISSING, bodies.CHALLENGE)
        check_refusal(client.get("/nope"), 401, bodies.MISSING, bodies.CHALLENGE)
        assert ran == ["whoami"]


class TestExemptions:
    @pytest.mark.parametrize("path", ["/health", "/docs", "/docs/", "/docs/api/v1"])
    def test_exempt(self, client: Client, inner: Recorder, path: str) -> None:
        """Exempt paths reach the app without a key; the principal is None."""
        response = client.get(path)
        assert response.status_code == 200
        assert response.get_data() == b"anonymous"
        assert inner.calls[0][ENVIRON_KEY] is None

    @pytest.mark.parametrize(
        "path",
        ["/healthz", "/health/", "//health", "/HEALTH", "/health;x", "/docsx",
         "/docs/../secret", "/docs//x", "/x/health", "/health%2F", "/"],
    )
    def test_look_alikes_need_a_key(self, client: Client, inner: Recorder, path: str) -> None:
        """Near misses of an exempt path are not exempt."""
        assert_refused(client.get(path), inner, 401, bodies.MISSING, bodies.CHALLENGE)

    def test_decided_on_path_info_not_script_name(self, client: Client, inner: Recorder
                                                   ) -> None:
        """Under a mount (SCRIPT_NAME=/api) rules apply to PATH_INFO only."""
        response = client.get("/api/health", environ_overrides={
            "SCRIPT_NAME": "/api", "PATH_INFO": "/health"})
        assert response.status_code == 200
        assert inner.calls[0]["SCRIPT_NAME"] == "/api"
        inner.calls.clear()
        response = client.get("/", environ_overrides={
            "SCRIPT_NAME": "/health", "PATH_INFO": "/secret"})
        assert_refused(response, inner, 401, bodies.MISSING, bodies.CHALLENGE)

    def test_empty_path_info_is_the_root(self, client: Client, inner: Recorder) -> None:
        """A request for the mount point itself (PATH_INFO "") is "/", which needs a key."""
        response = client.get("/", environ_overrides={"SCRIPT_NAME": "/api", "PATH_INFO": ""})
        assert_refused(response, inner, 401, bodies.MISSING, bodies.CHALLENGE)

    def test_non_ascii_path(self, client: Client, inner: Recorder) -> None:
        """PATH_INFO is latin-1-decoded bytes; UTF-8 percent-encoding matches "/café"."""
        response = client.get("/caf%C3%A9")
        assert response.status_code == 200
        assert inner.calls[0]["PATH_INFO"] == "/caf\xc3\xa9"

    def test_non_utf8_path_matches_no_rule(self, client: Client, inner: Recorder) -> None:
        """Bytes that are not UTF-8 (latin-1 "é" alone) never match a rule."""
        assert_refused(client.get("/caf%E9"), inner, 401, bodies.MISSING, bodies.CHALLENGE)

    def test_non_ascii_allowed_path(self, client: Client, inner: Recorder,
                                    manager: KeyManager) -> None:
        """A key's allowed paths are compared with the UTF-8-decoded path too."""
        key = manager.create("menu", allowed_paths=["/menu/café"]).key
        assert client.get("/menu/caf%C3%A9/1", headers=bearer(key)).status_code == 200
        inner.calls.clear()
        response = client.get("/menu/cafe", headers=bearer(key))
        assert_refused(response, inner, 403, bodies.FORBIDDEN, bodies.PATHS_CHALLENGE)


PREFLIGHT: Final = {"Origin": "https://app.example", "Access-Control-Request-Method": "POST"}


class TestCORSPreflight:
    @pytest.mark.parametrize(
        "headers", [PREFLIGHT, {"Origin": "", "Access-Control-Request-Method": ""}],
        ids=["preflight", "empty-values"],
    )
    def test_preflight_needs_a_key_by_default(self, client: Client, inner: Recorder,
                                              headers: dict[str, str]) -> None:
        """With nothing to answer it, a preflight would reach the app's views
        unauthenticated: by default it is refused like any request."""
        response = client.options("/v1/charges", headers=headers)
        assert_refused(response, inner, 401, bodies.MISSING, bodies.CHALLENGE)

    @pytest.mark.parametrize("header", ["Origin", "Access-Control-Request-Method"])
    def test_plain_options_needs_a_key(self, inner: Recorder, memory_store: MemoryKeyStore,
                                       header: str) -> None:
        """OPTIONS without both preflight headers is an ordinary request, whatever the option."""
        mw = APIKeyMiddleware(inner, memory_store, allow_cors_preflight=True)
        response = Client(mw).options("/v1/charges", headers={header: PREFLIGHT[header]})
        assert_refused(response, inner, 401, bodies.MISSING, bodies.CHALLENGE)

    def test_preflight_passes_to_flask_cors_inside(self, memory_store: MemoryKeyStore) -> None:
        """allow_cors_preflight=True: the preflight reaches the wrapped Flask app,
        where Flask answers OPTIONS itself and flask-cors adds its headers; the
        view never runs."""
        from flask_cors import CORS

        app = Flask("cors")
        CORS(app, origins=["https://app.example"])
        ran: list[object] = []

        @app.post("/v1/charges")
        def charges() -> str:
            ran.append(request.environ[ENVIRON_KEY])
            return "charged"

        client = Client(APIKeyMiddleware(app, memory_store, allow_cors_preflight=True))
        response = client.options("/v1/charges", headers=PREFLIGHT)
        assert response.status_code == 200
        assert response.headers["Access-Control-Allow-Origin"] == "https://app.example"
        assert ran == []
        refused = client.post("/v1/charges", headers={"Origin": "https://app.example"})
        assert refused.status_code == 401
        assert refused.get_data() == bodies.MISSING
        assert ran == []


class TestConfiguration:
    def test_store_url(self, inner: Recorder) -> None:
        """A store URL opens the store; close() closes what the middleware built."""
        mw = APIKeyMiddleware(inner, "memory://", realm="payments")
        response = Client(mw).get("/")
        assert response.headers["WWW-Authenticate"] == 'Bearer realm="payments"'
        mw.close()

    def test_shared_authenticator_is_not_closed(self, inner: Recorder,
                                                authenticator: Authenticator, key: str,
                                                manager: KeyManager) -> None:
        """An authenticator passed in belongs to its owner: close() only flushes usage."""
        mw = APIKeyMiddleware(inner, authenticator=authenticator)
        assert Client(mw).get("/", headers=bearer(key)).status_code == 200
        mw.close()
        assert manager.list()[0].usage_count == 1
        assert Client(mw).get("/", headers=bearer(key)).status_code == 200

    @pytest.mark.parametrize(
        "kwargs",
        [
            {"store": "memory://", "authenticator": "A"},
            {"authenticator": "A", "realm": "x"},
            {"store": "memory://", "exempt_paths": ["health"]},
            {"store": "memory://", "exempt_paths": ["/docs/../x/*"]},
            {"store": "memory://", "allowed_modes": ["prod"]},
        ],
    )
    def test_bad_options(self, inner: Recorder, authenticator: Authenticator,
                         kwargs: dict[str, Any]) -> None:
        """Misconfiguration fails at construction with ConfigurationError."""
        if kwargs.get("authenticator") == "A":
            kwargs["authenticator"] = authenticator
        with pytest.raises(ConfigurationError):
            APIKeyMiddleware(inner, **kwargs)

    def test_expired_key(self, inner: Recorder, manager: KeyManager,
                         memory_store: MemoryKeyStore, cheap_hasher: Argon2Hasher) -> None:
        """An expired key is answered like a revoked one."""
        issued = manager.create("short-lived")
        manager.expire(issued.record.id, dt.datetime(2000, 1, 1, tzinfo=dt.timezone.utc))
        mw = APIKeyMiddleware(inner, memory_store, hashers=[cheap_hasher], track_usage=False)
        response = Client(mw).get("/", headers=bearer(issued.key))
        assert_refused(response, inner, 401, bodies.REVOKED, bodies.INVALID_CHALLENGE)

