"""APIKeyMiddleware over HTTP: through httpx's ASGITransport and raw ASGI calls."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from typing import Any, ClassVar

import httpx
import pytest

from aqnt_auth import (
    Argon2Hasher,
    Authenticator,
    ConfigurationError,
    KeyManager,
    MemoryKeyStore,
    SQLiteKeyStore,
)
from aqnt_auth.adapters.asgi import APIKeyAuth, APIKeyMiddleware
from tests import bodies

from ._support import (
    BrokenStore,
    Keys,
    Recorder,
    assert_refused,
    assert_sent_refusal,
    bearer,
    call,
    http_scope,
    status_of,
)

pytestmark = pytest.mark.anyio

MakeClient = Callable[..., httpx.AsyncClient]

PREFLIGHT: dict[str, str] = {"Origin": "https://app.example",
                             "Access-Control-Request-Method": "POST"}


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def app(recorder: Recorder, authenticator: Authenticator) -> APIKeyMiddleware:
    return APIKeyMiddleware(recorder, authenticator=authenticator,
                            exempt_paths=["/health", "/docs/*"])


@pytest.fixture
async def client(app: APIKeyMiddleware) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://testserver") as c:
        yield c


class TestSuccess:
    async def test_valid_key_reaches_the_app_with_its_principal(
        self, client: httpx.AsyncClient, recorder: Recorder, keys: Keys
    ) -> None:
        """A valid key: 200, and the principal is in scope["state"]["api_key"]."""
        response = await client.get("/v1/charges", headers=bearer(keys.live))
        assert response.status_code == 200
        assert response.json() == {"path": "/v1/charges", "key": keys.live_id}

    async def test_starlette_conventions_are_filled(
        self, client: httpx.AsyncClient, recorder: Recorder, keys: Keys
    ) -> None:
        """scope["user"] is authenticated with the key id as identity; scope["auth"] has scopes."""
        await client.get("/", headers=bearer(keys.live))
        scope = recorder.scopes[0]
        auth = scope["user"]
        assert scope["auth"] is auth
        assert isinstance(auth, APIKeyAuth)
        assert auth.is_authenticated is True
        assert auth.identity == keys.live_id
        assert auth.display_name == "live"
        assert auth.scopes == ["charges:read"]
        assert auth.principal is scope["state"]["api_key"]
        assert auth.realm == "api"

    async def test_existing_lifespan_state_is_kept(
        self, app: APIKeyMiddleware, recorder: Recorder, keys: Keys
    ) -> None:
        """The server's per-request copy of lifespan state keeps its other entries."""
        scope = http_scope("/", headers=[(b"authorization", f"Bearer {keys.live}".encode())])
        scope["state"] = {"db": "pool"}
        assert status_of(await call(app, scope)) == 200
        assert recorder.scopes[0]["state"]["db"] == "pool"
        assert recorder.scopes[0]["state"]["api_key"].id == keys.live_id

    async def test_test_mode_key(self, client: httpx.AsyncClient, keys: Keys) -> None:
        """Test keys work wherever test mode is allowed (the default)."""
        response = await client.get("/", headers=bearer(keys.test))
        assert response.status_code == 200

    async def test_sqlite_store_url(self, recorder: Recorder, tmp_path: Any,
                                    cheap_hasher: Argon2Hasher) -> None:
        """A store URL works where a store does; a blocking store still answers."""
        url = f"sqlite:///{tmp_path / 'keys.db'}"
        issued = KeyManager(SQLiteKeyStore(tmp_path / "keys.db"), hasher=cheap_hasher).create("k")
        app = APIKeyMiddleware(recorder, store=url, hashers=[cheap_hasher])
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                     base_url="http://testserver") as c:
            for _ in range(2):  # cold, then warm
                response = await c.get("/", headers=bearer(issued.key))
                assert response.status_code == 200
        await app.aclose()


class TestRefusals:
    @pytest.mark.parametrize(
        ("headers", "body", "challenge"),
        [
            ({}, bodies.MISSING, bodies.CHALLENGE),
            ({"Authorization": ""}, bodies.MISSING, bodies.CHALLENGE),
            ({"Authorization": "Basic dXNlcjpwYXNz"}, bodies.MISSING, bodies.CHALLENGE),
            ({"Authorization": "Bearer sk_live_garbage"}, bodies.INVALID, bodies.INVALID_CHALLENGE),
            ({"Authorization": "Bearer " + "x" * 5000}, bodies.INVALID, bodies.INVALID_CHALLENGE),
        ],
        ids=["none", "empty", "basic", "garbage", "huge"],
    )
    async def test_bad_headers(self, client: httpx.AsyncClient, recorder: Recorder,
                               headers: dict[str, str], body: bytes, challenge: str) -> None:
        """No, empty, foreign or malformed credentials: 401 and the app never runs."""
        assert_refused(await client.get("/v1/charges", headers=headers), 401, body, challenge)
        assert not recorder.ran

    @pytest.mark.parametrize(
        ("attr", "body"), [("revoked", bodies.REVOKED), ("expired", bodies.REVOKED)]
    )
    async def test_revoked_and_expired(self, client: httpx.AsyncClient, recorder: Recorder,
                                       keys: Keys, attr: str, body: bytes) -> None:
        """A revoked or expired key: 401 key_revoked."""
        response = await client.get("/", headers=bearer(getattr(keys, attr)))
        assert_refused(response, 401, body, bodies.INVALID_CHALLENGE)
        assert not recorder.ran

    async def test_unknown_key_of_valid_format(self, client: httpx.AsyncClient,
                                               recorder: Recorder, keys: Keys) -> None:
        """A well-formed key the store does not hold: 401 invalid_api_key."""
        other = KeyManager(MemoryKeyStore(), hasher=Argon2Hasher("cheapest")).create("x")
        response = await client.get("/", headers=bearer(other.key))
        assert_refused(response, 401, bodies.INVALID, bodies.INVALID_CHALLENGE)
        assert not recorder.ran

    async def test_several_authorization_headers(
        self, app: APIKeyMiddleware, recorder: Recorder, keys: Keys
    ) -> None:
        """Two Authorization headers, even both valid: 401, never "any one matches"."""
        value = f"Bearer {keys.live}".encode()
        scope = http_scope("/", headers=[(b"authorization", value), (b"authorization", value)])
        assert_sent_refusal(await call(app, scope), 401, bodies.INVALID, bodies.INVALID_CHALLENGE)
        assert not recorder.ran

    async def test_mode_not_allowed(self, recorder: Recorder, memory_store: MemoryKeyStore,
                                    cheap_hasher: Argon2Hasher, keys: Keys) -> None:
        """allowed_modes=["live"]: a test key is refused as invalid."""
        app = APIKeyMiddleware(recorder, store=memory_store, hashers=[cheap_hasher],
                               allowed_modes=["live"])
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                     base_url="http://testserver") as c:
            assert_refused(await c.get("/", headers=bearer(keys.test)), 401, bodies.INVALID,
                           bodies.INVALID_CHALLENGE)
            assert (await c.get("/", headers=bearer(keys.live))).status_code == 200
        assert len(recorder.scopes) == 1

    async def test_realm(self, recorder: Recorder, memory_store: MemoryKeyStore,
                         cheap_hasher: Argon2Hasher) -> None:
        """The realm option reaches WWW-Authenticate."""
        app = APIKeyMiddleware(recorder, store=memory_store, hashers=[cheap_hasher],
                               realm="payments")
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                     base_url="http://testserver") as c:
            assert_refused(await c.get("/"), 401, bodies.MISSING, 'Bearer realm="payments"')
        assert not recorder.ran


class TestRestrictions:
    async def test_read_only_key(self, client: httpx.AsyncClient, recorder: Recorder,
                                 keys: Keys) -> None:
        """A read-only key may GET; a POST gets 403 insufficient_scope."""
        assert (await client.get("/v1/charges", headers=bearer(keys.read_only))).status_code == 200
        response = await client.post("/v1/charges", headers=bearer(keys.read_only))
        assert_refused(response, 403, bodies.FORBIDDEN, bodies.READ_ONLY_CHALLENGE)
        assert [s["method"] for s in recorder.scopes] == ["GET"]

    async def test_path_limited_key(self, client: httpx.AsyncClient, recorder: Recorder,
                                    keys: Keys) -> None:
        """A key limited to /v1/charges may use it and below, nothing else."""
        ok = await client.get("/v1/charges/ch_1", headers=bearer(keys.charges_only))
        assert ok.status_code == 200
        for path in ("/v1/customers", "/v1/chargesX"):
            response = await client.get(path, headers=bearer(keys.charges_only))
            assert_refused(response, 403, bodies.FORBIDDEN, bodies.PATHS_CHALLENGE)
        assert [s["path"] for s in recorder.scopes] == ["/v1/charges/ch_1"]

    async def test_path_limit_is_judged_relative_to_root_path(
        self, app: APIKeyMiddleware, recorder: Recorder, keys: Keys
    ) -> None:
        """Under a mount, the key's path limits apply to the path the router sees."""
        header = [(b"authorization", f"Bearer {keys.charges_only}".encode())]
        ok = http_scope("/api/v1/charges", root_path="/api", headers=header)
        assert status_of(await call(app, ok)) == 200
        outside = http_scope("/api/v1/customers", root_path="/api", headers=header)
        assert_sent_refusal(await call(app, outside), 403, bodies.FORBIDDEN, bodies.PATHS_CHALLENGE)
        assert len(recorder.scopes) == 1


class TestExemptPaths:
    @pytest.mark.parametrize("path", ["/health", "/docs", "/docs/openapi.json"])
    async def test_exempt(self, client: httpx.AsyncClient, recorder: Recorder,
                          path: str) -> None:
        """Exact exempt paths and explicit prefixes pass without a key, as anonymous."""
        response = await client.get(path)
        assert response.status_code == 200
        assert response.json() == {"path": path, "key": None}
        anonymous = recorder.scopes[0]["user"]
        assert anonymous.is_authenticated is False
        assert (anonymous.identity, anonymous.display_name, anonymous.scopes) == ("", "", [])
        assert recorder.scopes[0]["auth"] is anonymous

    @pytest.mark.parametrize(
        "path",
        [
            "/healthz",
            "/health-admin",
            "/health/",
            "/health/x",
            "/health/../admin",
            "//health",
            "/HEALTH",
            "/health;x",
            "/%68ealth",  # decoded from /%2568ealth: routes to "/%68ealth", not /health
            "/docsx",
            "/docs/../admin",
            "/docs//x",
        ],
    )
    async def test_look_alikes_need_a_key(self, app: APIKeyMiddleware, recorder: Recorder,
                                          path: str) -> None:
        """Paths that only look like an exempt one need a key (raw ASGI: no URL cleanup)."""
        assert_sent_refusal(await call(app, http_scope(path)), 401, bodies.MISSING,
                            bodies.CHALLENGE)
        assert not recorder.ran

    async def test_decision_is_on_the_decoded_path(self, app: APIKeyMiddleware,
                                                   recorder: Recorder) -> None:
        """/%68ealth decodes to /health, which the router serves: exempt, like /health."""
        assert status_of(await call(app, http_scope("/health", raw_path=b"/%68ealth"))) == 200
        assert_sent_refusal(await call(app, http_scope("/admin", raw_path=b"/health")), 401,
                            bodies.MISSING, bodies.CHALLENGE)
        assert [s["path"] for s in recorder.scopes] == ["/health"]

    async def test_host_header_plays_no_part(self, app: APIKeyMiddleware,
                                             recorder: Recorder) -> None:
        """Only the path decides: a Host header cannot make a path exempt."""
        scope = http_scope("/admin", headers=[(b"host", b"example.com/health")])
        assert_sent_refusal(await call(app, scope), 401, bodies.MISSING, bodies.CHALLENGE)
        assert not recorder.ran

    @pytest.mark.parametrize(
        ("path", "root_path", "status"),
        [
            ("/api/health", "/api", 200),
            ("/api/healthz", "/api", 401),
            ("/api-v2/health", "/api", 401),  # a mount look-alike
            ("/apihealth", "/api", 401),
            ("/api//health", "/api", 401),
            ("/health", "/api", 200),  # a server that leaves root_path out of path
        ],
    )
    async def test_relative_to_root_path(self, app: APIKeyMiddleware, recorder: Recorder,
                                         path: str, root_path: str, status: int) -> None:
        """Exemptions apply to the path relative to root_path, as the router sees it."""
        sent = await call(app, http_scope(path, root_path=root_path))
        if status == 200:
            assert status_of(sent) == 200
        else:
            assert_sent_refusal(sent, 401, bodies.MISSING, bodies.CHALLENGE)
        assert recorder.ran == (status == 200)

    async def test_existing_user_is_kept_on_exempt_paths(self, app: APIKeyMiddleware,
                                                         recorder: Recorder) -> None:
        """An outer middleware's user survives an exempt path."""
        scope = http_scope("/health")
        scope["user"] = "someone"
        await call(app, scope)
        assert recorder.scopes[0]["user"] == "someone"

    async def test_bad_rule(self, recorder: Recorder, authenticator: Authenticator) -> None:
        """A rule that does not start with "/" is a configuration error."""
        with pytest.raises(ConfigurationError):
            APIKeyMiddleware(recorder, authenticator=authenticator, exempt_paths=["health"])


class TestMethods:
    PREFLIGHT: ClassVar[dict[str, str]] = PREFLIGHT

    @pytest.mark.parametrize(
        "headers",
        [PREFLIGHT, {"Origin": "", "Access-Control-Request-Method": ""}],
        ids=["preflight", "empty-values"],
    )
    async def test_preflight_needs_a_key_by_default(self, client: httpx.AsyncClient,
                                                    recorder: Recorder,
                                                    headers: dict[str, str]) -> None:
        """With no CORS layer to answer it, a preflight is refused like any request:
        it never reaches the endpoint unauthenticated."""
        response = await client.options("/v1/charges", headers=headers)
        assert_refused(response, 401, bodies.MISSING, bodies.CHALLENGE)
        assert not recorder.ran

    async def test_preflight_passes_to_a_cors_layer_inside(self, recorder: Recorder,
                                                           authenticator: Authenticator
                                                           ) -> None:
        """allow_cors_preflight=True: the preflight goes on, keyless, to the
        CORS middleware inside, which answers it; the endpoint never runs."""
        from starlette.middleware.cors import CORSMiddleware

        inner = CORSMiddleware(recorder, allow_origins=["https://app.example"],
                               allow_methods=["POST"])
        app = APIKeyMiddleware(inner, authenticator=authenticator, allow_cors_preflight=True)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                     base_url="http://testserver") as c:
            response = await c.options("/v1/charges", headers=self.PREFLIGHT)
            assert response.status_code == 200
            assert response.headers["access-control-allow-origin"] == "https://app.example"
            assert not recorder.ran
            refused = await c.post("/v1/charges", headers={"Origin": "https://app.example"})
        assert_refused(refused, 401, bodies.MISSING, bodies.CHALLENGE)
        assert not recorder.ran

    @pytest.mark.parametrize(
        "headers",
        [{}, {"Origin": "https://app.example"}, {"Access-Control-Request-Method": "POST"}],
        ids=["bare", "origin-only", "method-only"],
    )
    async def test_other_options_need_a_key(self, client: httpx.AsyncClient,
                                            recorder: Recorder,
                                            headers: dict[str, str]) -> None:
        """An OPTIONS that is not a preflight needs a key."""
        assert_refused(await client.options("/v1/charges", headers=headers), 401, bodies.MISSING,
                       bodies.CHALLENGE)
        assert not recorder.ran

    @pytest.mark.parametrize("method", ["HEAD", "PROPFIND", "TRACE", "BREW"])
    async def test_every_other_method_needs_a_key(self, app: APIKeyMiddleware,
                                                  recorder: Recorder, method: str) -> None:
        """HEAD and unusual methods are authenticated like any other."""
        sent = await call(app, http_scope("/v1/charges", method=method))
        assert_sent_refusal(sent, 401, bodies.MISSING, bodies.CHALLENGE)
        assert not recorder.ran

    async def test_behind_starlette_cors_middleware(self, authenticator: Authenticator,
                                                    keys: Keys) -> None:
        """The documented position: Starlette's CORSMiddleware outside (first in
        the list) answers the preflight; real requests need a key."""
        from starlette.applications import Starlette
        from starlette.middleware import Middleware
        from starlette.middleware.cors import CORSMiddleware
        from starlette.responses import PlainTextResponse
        from starlette.routing import Route

        async def endpoint(request: Any) -> PlainTextResponse:
            return PlainTextResponse("ok")

        app = Starlette(
            routes=[Route("/v1/charges", endpoint, methods=["GET", "POST"])],
            middleware=[
                Middleware(CORSMiddleware, allow_origins=["https://app.example"],
                           allow_methods=["POST"], allow_headers=["Authorization"]),
                Middleware(APIKeyMiddleware, authenticator=authenticator),
            ],
        )
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                     base_url="http://testserver") as c:
            preflight = await c.options("/v1/charges", headers=self.PREFLIGHT)
            assert preflight.status_code == 200
            assert preflight.headers["access-control-allow-origin"] == "https://app.example"
            refused = await c.post("/v1/charges", headers={"Origin": "https://app.example"})
            assert refused.status_code == 401
            assert refused.content == bodies.MISSING
            ok = await c.post("/v1/charges", headers={**bearer(keys.live),
                                                      "Origin": "https://app.example"})
            assert ok.text == "ok"


class TestStoreFailure:
    async def test_503_with_retry_after(self, recorder: Recorder, cheap_hasher: Argon2Hasher,
                                        keys: Keys) -> None:
        """A store that cannot answer: 503 auth_unavailable with Retry-After; never 401/200."""
        app = APIKeyMiddleware(recorder, store=BrokenStore(), hashers=[cheap_hasher])
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                     base_url="http://testserver") as c:
            response = await c.get("/", headers=bearer(keys.live))
        assert_refused(response, 503, bodies.UNAVAILABLE, None)
        assert response.headers["retry-after"] == "1"
        assert b"Traceback" not in response.content
        assert not recorder.ran


class TestConfiguration:
    def test_not_both(self, recorder: Recorder, authenticator: Authenticator) -> None:
        with pytest.raises(ConfigurationError, match="not both"):
            APIKeyMiddleware(recorder, store="memory://", authenticator=authenticator)
        with pytest.raises(ConfigurationError, match="not both"):
            APIKeyMiddleware(recorder, authenticator=authenticator, realm="x")

    def test_bad_option_reaches_the_authenticator(self, recorder: Recorder) -> None:
        with pytest.raises(ConfigurationError, match="allowed_modes"):
            APIKeyMiddleware(
                recorder, store="memory://", allowed_modes=["staging"]  # type: ignore[list-item]
            )

    def test_add_middleware_form(self, authenticator: Authenticator, keys: Keys) -> None:
        """Starlette's add_middleware(APIKeyMiddleware, store=..., ...) works."""
        from starlette.applications import Starlette
        from starlette.responses import PlainTextResponse
        from starlette.routing import Route
        from starlette.testclient import TestClient

        async def endpoint(request: Any) -> PlainTextResponse:
            return PlainTextResponse(request.state.api_key.id)

        app = Starlette(routes=[Route("/", endpoint), Route("/health", endpoint)])
        app.add_middleware(APIKeyMiddleware, store=authenticator.store,
                           hashers=authenticator.hashers, exempt_paths=["/health"])
        with TestClient(app) as client:
            assert client.get("/", headers=bearer(keys.live)).text == keys.live_id
            assert client.get("/").status_code == 401


class CountingStore(MemoryKeyStore):
    """Counts usage flushes and closes."""

    def __init__(self) -> None:
        super().__init__()
        self.flushed: list[dict[str, int]] = []
        self.closed = 0

    def record_usage(self, usage: Any) -> None:
        self.flushed.append({k: d.count for k, d in usage.items()})
        super().record_usage(usage)

    def close(self) -> None:
        self.closed += 1


class TestLifespan:
    async def _lifespan(self, app: Any) -> list[str]:
        sent = await call(app, {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}},
                          [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}])
        return [m["type"] for m in sent]

    async def test_passes_through_then_flushes_and_closes(
        self, cheap_hasher: Argon2Hasher
    ) -> None:
        """lifespan reaches the app; at shutdown usage is flushed and the owned store closed."""
        store = CountingStore()
        issued = KeyManager(store, hasher=cheap_hasher).create("k")
        recorder = Recorder()
        app = APIKeyMiddleware(recorder, store=store, hashers=[cheap_hasher])
        await call(app, http_scope("/", headers=[(b"authorization",
                                                  f"Bearer {issued.key}".encode())]))
        assert await self._lifespan(app) == ["lifespan.startup.complete",
                                             "lifespan.shutdown.complete"]
        assert recorder.lifespan == ["lifespan.startup", "lifespan.shutdown"]
        assert store.flushed == [{issued.record.id: 1}]
        assert store.closed == 1

    async def test_given_authenticator_is_flushed_not_closed(
        self, cheap_hasher: Argon2Hasher
    ) -> None:
        """An authenticator passed in belongs to the caller: flushed, left open."""
        store = CountingStore()
        issued = KeyManager(store, hasher=cheap_hasher).create("k")
        authenticator = Authenticator(store, hashers=[cheap_hasher])
        app = APIKeyMiddleware(Recorder(), authenticator=authenticator)
        await call(app, http_scope("/", headers=[(b"authorization",
                                                  f"Bearer {issued.key}".encode())]))
        await self._lifespan(app)
        assert store.flushed == [{issued.record.id: 1}]
        assert store.closed == 0
        authenticator.close()
        assert store.closed == 1

    async def test_other_scope_types_pass_through(self, authenticator: Authenticator) -> None:
        """Scope types the middleware does not know are not its business."""
        seen: list[str] = []

        async def app(scope: Any, receive: Any, send: Any) -> None:
            seen.append(scope["type"])

        await APIKeyMiddleware(app, authenticator=authenticator)(
            {"type": "custom"}, _never, _never
        )
        assert seen == ["custom"]


async def _never(*args: Any) -> Any:
    raise AssertionError("not called")


def test_repr_shows_no_secret(authenticator: Authenticator) -> None:
    text = repr(APIKeyMiddleware(Recorder(), authenticator=authenticator,
                                 exempt_paths=["/health"]))
    assert "/health" in text
    assert "Authenticator(" in text


def test_json_bodies_are_the_contract() -> None:
    """The expected bodies themselves, spelled out once."""
    assert json.loads(bodies.MISSING) == {"error": {"type": "authentication_error",
                                             "message": "No API key provided",
                                             "code": "missing_api_key"}}
