"""Every route of a Flask app needs a key; errors are the core's exact answers."""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask, g
from flask.testing import FlaskClient
from flask.views import MethodView
from werkzeug.test import TestResponse

from aqnt_auth import Argon2Hasher, FailureLimiter, KeyManager, MemoryKeyStore, require_scopes
from aqnt_auth.adapters.flask import AQNTAuth, current_api_key
from tests import bodies

from ..wsgi._support import BrokenStore, assert_limited_per_client, assert_refused, bearer
from .conftest import AppFactory

# Every route of the test app, with the method that reaches it.
PROTECTED = [
    ("GET", "/"),
    ("GET", "/async"),
    ("GET", "/v1/charges"),
    ("POST", "/v1/charges"),
    ("GET", "/report"),
    ("GET", "/items"),
    ("POST", "/refunds"),
    ("POST", "/async-refunds"),
    ("GET", "/static/logo.txt"),
    ("GET", "/slash"),  # a redirect to /slash/ is still a response about the app
    ("GET", "/no/such/route"),  # 404 for a keyed request
    ("DELETE", "/"),  # 405 for a keyed request
    ("GET", "/health"),  # exempt path, but no such route
]


PREFLIGHT = {"Origin": "https://app.example", "Access-Control-Request-Method": "POST"}


def refused(response: TestResponse, calls: list[str], status: int, body: bytes,
            challenge: str | None) -> None:
    assert_refused(response, status, body, challenge)
    assert calls == []


class TestEveryRouteIsProtected:
    @pytest.mark.parametrize(("method", "path"), [p for p in PROTECTED if p[1] != "/health"])
    def test_missing_key(self, client: FlaskClient, calls: list[str], method: str,
                         path: str) -> None:
        """No key: 401 before the view, the static file, a redirect, a 404 or a 405."""
        response = client.open(path, method=method)
        refused(response, calls, 401, bodies.MISSING, bodies.CHALLENGE)

    @pytest.mark.parametrize(("method", "path"), PROTECTED[:6])
    def test_invalid_key(self, client: FlaskClient, calls: list[str], method: str,
                         path: str) -> None:
        response = client.open(path, method=method, headers=bearer("sk_live_garbage"))
        refused(response, calls, 401, bodies.INVALID, bodies.INVALID_CHALLENGE)

    def test_revoked_key(self, client: FlaskClient, calls: list[str], key: str,
                         manager: KeyManager) -> None:
        manager.revoke(manager.list()[0].id)
        refused(client.get("/", headers=bearer(key)), calls, 401, bodies.REVOKED,
                bodies.INVALID_CHALLENGE)

    def test_with_a_key_routing_errors_are_the_apps(self, client: FlaskClient, key: str
                                                     ) -> None:
        """With a valid key, unknown paths and methods get Flask's own 404 and 405."""
        assert client.get("/no/such/route", headers=bearer(key)).status_code == 404
        assert client.delete("/", headers=bearer(key)).status_code == 405
        assert client.get("/slash", headers=bearer(key)).status_code == 308

    @pytest.mark.parametrize(
        ("method", "path", "view"),
        [
            ("GET", "/", "index"),
            ("GET", "/async", "async"),
            ("GET", "/v1/charges", "charges"),
            ("POST", "/v1/charges", "charges"),
        ],
    )
    def test_valid_key(self, client: FlaskClient, calls: list[str], key: str,
                       manager: KeyManager, method: str, path: str, view: str) -> None:
        """A valid key reaches plain, async and blueprint views, as g.api_key."""
        response = client.open(path, method=method, headers=bearer(key))
        assert response.status_code == 200
        assert response.get_json() == {"key": manager.list()[0].id}
        assert calls == [view]

    def test_class_based_view(self, client: FlaskClient, calls: list[str], key: str) -> None:
        assert client.get("/report", headers=bearer(key)).get_data() == b"report"
        assert calls == ["report"]

    def test_static_file(self, client: FlaskClient, key: str) -> None:
        # A file response holds the file open until closed.
        with client.get("/static/logo.txt", headers=bearer(key)) as response:
            assert response.get_data() == b"logo"

    def test_head(self, client: FlaskClient, calls: list[str]) -> None:
        """A refused HEAD has the GET's headers and no body."""
        response = client.head("/")
        assert response.status_code == 401
        assert response.get_data() == b""
        assert response.headers["WWW-Authenticate"] == bodies.CHALLENGE
        assert calls == []

    def test_store_failure(self, make_app: AppFactory, calls: list[str], key: str) -> None:
        """A store that cannot answer: 503 auth_unavailable with Retry-After."""
        client = make_app(AQNT_AUTH_STORE=BrokenStore()).test_client()
        response = client.get("/", headers=bearer(key))
        refused(response, calls, 503, bodies.UNAVAILABLE, None)
        assert response.headers["Retry-After"] == "1"

    def test_comma_joined_authorization(self, client: FlaskClient, calls: list[str], key: str
                                        ) -> None:
        response = client.get("/", headers=bearer(f"{key}, Bearer {key}"))
        refused(response, calls, 401, bodies.INVALID, bodies.INVALID_CHALLENGE)


class TestRateLimit:
    def test_failures_are_limited_per_client(self, make_app: AppFactory, calls: list[str],
                                             cheap_hasher: Argon2Hasher) -> None:
        """AQNT_AUTH_RATE_LIMIT counts failures per REMOTE_ADDR: 429 past the limit."""
        app = make_app(AQNT_AUTH_RATE_LIMIT=FailureLimiter(per_key="9/minute",
                                                           per_client="2/minute"))
        strangers = KeyManager(MemoryKeyStore(), hasher=cheap_hasher)
        assert_limited_per_client(app.test_client(), strangers, calls)


class TestKeyRestrictions:
    def test_read_only(self, client: FlaskClient, calls: list[str], manager: KeyManager
                       ) -> None:
        """A read-only key may GET but not POST, on every route."""
        key = manager.create("reader", read_only=True).key
        refused(client.post("/v1/charges", headers=bearer(key)), calls, 403, bodies.FORBIDDEN,
                bodies.READ_ONLY_CHALLENGE)
        refused(client.post("/nowhere", headers=bearer(key)), calls, 403, bodies.FORBIDDEN,
                bodies.READ_ONLY_CHALLENGE)
        assert client.get("/v1/charges", headers=bearer(key)).status_code == 200

    def test_allowed_paths(self, client: FlaskClient, calls: list[str], manager: KeyManager
                           ) -> None:
        """A key limited to /v1/charges cannot reach other routes or static files."""
        key = manager.create("charges", allowed_paths=["/v1/charges"]).key
        for path in ("/", "/report", "/static/logo.txt", "/v1/chargesX"):
            refused(client.get(path, headers=bearer(key)), calls, 403, bodies.FORBIDDEN,
                    bodies.PATHS_CHALLENGE)
        assert client.get("/v1/charges", headers=bearer(key)).status_code == 200


class TestExemptions:
    def test_exempt_view(self, client: FlaskClient, calls: list[str]) -> None:
        """@auth.exempt: no key needed; g.api_key is None and current_api_key falsy."""
        response = client.get("/public")
        assert response.status_code == 200
        assert response.get_json() == {"key": None}
        assert calls == ["public"]

    def test_exempt_view_ignores_bad_keys(self, client: FlaskClient) -> None:
        assert client.get("/public", headers=bearer("sk_live_garbage")).status_code == 200

    def test_exempt_class_based_view(self, client: FlaskClient, calls: list[str]) -> None:
        """@auth.exempt on a View class exempts the view as_view() makes of it."""
        assert client.get("/status").get_data() == b"status"
        assert calls == ["status"]

    def test_exemption_is_not_inherited(self, client: FlaskClient, calls: list[str],
                                        key: str) -> None:
        """@auth.exempt on a MethodView exempts that class, not its unmarked subclasses."""
        assert client.get("/open-page").get_data() == b"open"
        assert calls == ["open-page"]
        calls.clear()
        refused(client.get("/private-page"), calls, 401, bodies.MISSING, bodies.CHALLENGE)
        assert client.get("/private-page", headers=bearer(key)).get_data() == b"private"

    def test_a_marked_subclass_is_exempt(self, make_app: AppFactory, calls: list[str]) -> None:
        """Marking a subclass exempts it alone; its base stays protected."""
        app = make_app()

        class Base(MethodView):
            def get(self) -> str:
                calls.append("base")
                return "base"

        @AQNTAuth.exempt
        class Child(Base):
            pass

        app.add_url_rule("/base", view_func=Base.as_view("base"))
        app.add_url_rule("/child", view_func=Child.as_view("child"))
        client = app.test_client()
        assert client.get("/child").get_data() == b"base"
        calls.clear()
        refused(client.get("/base"), calls, 401, bodies.MISSING, bodies.CHALLENGE)

    def test_exempt_only_for_its_methods(self, client: FlaskClient, calls: list[str]) -> None:
        """The exemption is the view's: a method it does not serve has no view, so it
        needs a key before its 405."""
        refused(client.post("/public"), calls, 401, bodies.MISSING, bodies.CHALLENGE)

    def test_exempt_static_files_by_path(self, make_app: AppFactory) -> None:
        client = make_app(AQNT_AUTH_EXEMPT_PATHS=["/static/*"]).test_client()
        with client.get("/static/logo.txt") as response:
            assert response.get_data() == b"logo"
        assert client.get("/").status_code == 401

    @pytest.mark.parametrize("path", ["/publicx", "/public/", "/PUBLIC", "/static/"])
    def test_look_alikes(self, client: FlaskClient, calls: list[str], path: str) -> None:
        refused(client.get(path), calls, 401, bodies.MISSING, bodies.CHALLENGE)

    def test_collapsed_slashes_follow_the_router(self, client: FlaskClient, calls: list[str]
                                                 ) -> None:
        """Flask routes //public to the /public view: exemption follows the route."""
        response = client.get("/", environ_overrides={"PATH_INFO": "//public"})
        assert response.status_code == 200
        assert calls == ["public"]

    @pytest.mark.parametrize(
        "headers", [PREFLIGHT, {"Origin": "", "Access-Control-Request-Method": ""}],
        ids=["preflight", "empty-values"],
    )
    def test_cors_preflight_needs_a_key_by_default(self, client: FlaskClient, calls: list[str],
                                                   headers: dict[str, str]) -> None:
        """Without AQNT_AUTH_ALLOW_CORS_PREFLIGHT a preflight is refused like any request."""
        refused(client.options("/v1/charges", headers=headers), calls, 401, bodies.MISSING,
                bodies.CHALLENGE)

    def test_flask_cors_answers_the_preflight(self, make_app: AppFactory,
                                              calls: list[str]) -> None:
        """flask-cors in its documented place (CORS(app)) with the setting on: the
        preflight gets Flask's automatic OPTIONS answer with the CORS headers, and
        neither the view nor any other before_request function runs."""
        from flask_cors import CORS

        app = make_app(AQNT_AUTH_ALLOW_CORS_PREFLIGHT=True)
        CORS(app, origins=["https://app.example"])
        app.before_request(lambda: calls.append("before_request"))
        client = app.test_client()
        response = client.options("/v1/charges", headers=PREFLIGHT)
        assert response.status_code == 200
        assert response.headers["Access-Control-Allow-Origin"] == "https://app.example"
        assert calls == []
        refused_ = client.post("/v1/charges", headers={"Origin": "https://app.example"})
        refused(refused_, calls, 401, bodies.MISSING, bodies.CHALLENGE)
        assert refused_.headers["Access-Control-Allow-Origin"] == "https://app.example"

    def test_a_view_answering_options_itself_needs_a_key(self, make_app: AppFactory,
                                                         calls: list[str]) -> None:
        """Even with the setting on, a preflight to a view that handles OPTIONS
        itself would run that view: it needs a key."""
        app = make_app(AQNT_AUTH_ALLOW_CORS_PREFLIGHT=True)

        @app.route("/manual", methods=["GET", "OPTIONS"])
        def manual() -> str:
            calls.append("manual")
            return "manual"

        response = app.test_client().options("/manual", headers=PREFLIGHT)
        refused(response, calls, 401, bodies.MISSING, bodies.CHALLENGE)

    def test_plain_options_needs_a_key(self, client: FlaskClient, calls: list[str]) -> None:
        response = client.options("/v1/charges", headers={"Origin": "https://app.example"})
        refused(response, calls, 401, bodies.MISSING, bodies.CHALLENGE)


class TestRequireScopes:
    def test_scope_present(self, client: FlaskClient, calls: list[str], key: str) -> None:
        assert client.post("/refunds", headers=bearer(key)).status_code == 200
        assert calls == ["refunds"]

    def test_scope_missing(self, client: FlaskClient, calls: list[str], manager: KeyManager
                           ) -> None:
        """403 with the core's body, naming the scopes in WWW-Authenticate."""
        key = manager.create("no scopes").key
        refused(client.post("/refunds", headers=bearer(key)), calls, 403, bodies.FORBIDDEN,
                'Bearer realm="api", error="insufficient_scope", scope="refunds:write"')

    def test_async_view(self, client: FlaskClient, calls: list[str], key: str,
                        manager: KeyManager) -> None:
        """An async scoped view: refused without every scope, run with them."""
        refused(client.post("/async-refunds", headers=bearer(key)), calls, 403, bodies.FORBIDDEN,
                'Bearer realm="api", error="insufficient_scope", '
                'scope="refunds:write refunds:read"')
        both = manager.create("both", scopes=["refunds:write", "refunds:read"]).key
        response = client.post("/async-refunds", headers=bearer(both))
        assert response.status_code == 200
        assert calls == ["async-refunds"]

    def test_class_based_view(self, client: FlaskClient, calls: list[str], key: str,
                              manager: KeyManager) -> None:
        """Through MethodView.decorators."""
        refused(client.get("/items", headers=bearer(key)), calls, 403, bodies.FORBIDDEN,
                'Bearer realm="api", error="insufficient_scope", scope="items:write"')
        writer = manager.create("writer", scopes=["items:write"]).key
        assert client.get("/items", headers=bearer(writer)).get_data() == b"items"

    def test_realm_is_the_apps(self, make_app: AppFactory, calls: list[str],
                               manager: KeyManager) -> None:
        client = make_app(AQNT_AUTH_REALM="payments").test_client()
        key = manager.create("no scopes").key
        response = client.post("/refunds", headers=bearer(key))
        assert response.headers["WWW-Authenticate"] == (
            'Bearer realm="payments", error="insufficient_scope", scope="refunds:write"'
        )

    def test_wraps_the_view(self, auth: AQNTAuth) -> None:
        def charge() -> str:
            """Create a charge."""
            return "ok"

        scoped = auth.require_scopes("charges:write")(charge)
        assert scoped.__name__ == "charge"
        assert scoped.__doc__ == "Create a charge."


class TestAppErrorHandlers:
    """The app's handlers never turn an auth error into HTML."""

    @pytest.fixture
    def app(self, make_app: AppFactory) -> Flask:
        app = make_app()

        def html(error: Any) -> tuple[str, int]:
            return "<html>oops</html>", 500

        for code in (401, 403, 404, 405, 500, 503):
            app.register_error_handler(code, html)
        app.register_error_handler(Exception, html)
        return app

    def test_missing_key_stays_json(self, client: FlaskClient, calls: list[str]) -> None:
        refused(client.get("/"), calls, 401, bodies.MISSING, bodies.CHALLENGE)
        refused(client.get("/no/such/route"), calls, 401, bodies.MISSING, bodies.CHALLENGE)

    def test_scope_error_stays_json(self, client: FlaskClient, calls: list[str],
                                    manager: KeyManager) -> None:
        key = manager.create("no scopes").key
        response = client.post("/refunds", headers=bearer(key))
        assert response.get_data() == bodies.FORBIDDEN
        assert calls == []

    def test_store_failure_stays_json(self, make_app: AppFactory, calls: list[str], key: str
                                      ) -> None:
        broken = make_app(AQNT_AUTH_STORE=BrokenStore())
        broken.register_error_handler(Exception, lambda e: ("<html>oops</html>", 500))
        refused(broken.test_client().get("/", headers=bearer(key)), calls, 503, bodies.UNAVAILABLE,
                None)

    def test_refusal_raised_in_a_view(self, make_app: AppFactory, key: str) -> None:
        """A view that checks scopes inline with the core gets the same JSON 403."""
        app = make_app()
        app.register_error_handler(Exception, lambda e: ("<html>oops</html>", 500))

        @app.get("/inline")
        def inline() -> str:
            require_scopes(current_api_key, ["admin"])
            return "admin"

        response = app.test_client().get("/inline", headers=bearer(key))
        assert_refused(response, 403, bodies.FORBIDDEN,
                       'Bearer realm="api", error="insufficient_scope", scope="admin"')

    def test_after_request_still_runs(self, app: Flask, client: FlaskClient) -> None:
        """A refusal is a response: after_request hooks (CORS headers...) still apply."""

        @app.after_request
        def tag(response: Any) -> Any:
            response.headers["X-Tag"] = "seen"
            return response

        assert client.get("/").headers["X-Tag"] == "seen"


class TestHookOrder:
    def test_runs_before_hooks_registered_earlier(self, auth: AQNTAuth,
                                                  memory_store: MemoryKeyStore) -> None:
        """No other before_request function runs for a request without a valid key."""
        app = Flask(__name__)
        app.config["AQNT_AUTH_STORE"] = memory_store
        ran: list[str] = []

        @app.before_request
        def earlier() -> None:
            ran.append("earlier")

        auth.init_app(app)
        assert app.test_client().get("/").status_code == 401
        assert ran == []


class TestPrincipal:
    def test_g_and_proxy(self, app: Flask, key: str, manager: KeyManager) -> None:
        record = manager.list()[0]
        with app.test_request_context("/", headers=bearer(key)):
            app.preprocess_request()
            assert g.api_key.id == record.id
            assert current_api_key.id == record.id
            assert current_api_key.livemode is True
            assert current_api_key.has_scopes("refunds:write")

    def test_proxy_outside_a_request(self) -> None:
        """Outside a request the proxy is falsy and has no attributes, as Flask's own."""
        assert not current_api_key
        with pytest.raises(RuntimeError, match="application context"):
            _ = current_api_key.id

    def test_permission_denied_is_not_leaked(self, client: FlaskClient, manager: KeyManager
                                             ) -> None:
        """The 403 body never names the key or its scopes."""
        key = manager.create("secretive", scopes=["internal:thing"]).key
        response = client.post("/refunds", headers=bearer(key))
        assert key.encode() not in response.get_data()
        assert b"internal:thing" not in response.get_data()
