"""``APIKeyMiddleware`` through Django's test clients, sync and async."""

from __future__ import annotations

import datetime as dt
import json
import logging
from typing import Any

import psycopg
import pytest
from asgiref.sync import async_to_sync, iscoroutinefunction
from django.conf import settings
from django.core.handlers.asgi import ASGIHandler
from django.db import OperationalError, close_old_connections, connections
from django.http import HttpRequest, HttpResponse, HttpResponseBase
from django.test import AsyncClient, Client
from django.test.utils import override_settings

from aqnt_auth import FailureLimiter, KeyManager, Principal, checksum
from aqnt_auth.adapters.django import APIKeyMiddleware, get_authenticator
from aqnt_auth.adapters.django.models import APIKey
from aqnt_auth.adapters.django.store import DjangoKeyStore
from tests import bodies

from ._support import (
    assert_error,
    auth_settings,
    bearer,
    issue,
    on_databases,
    postgres_mark,
    wrong_secret,
)
from .views import CALLS

ORIGIN = "https://app.example"
PREFLIGHT = {"Origin": ORIGIN, "Access-Control-Request-Method": "POST"}
CORS_MIDDLEWARE = "corsheaders.middleware.CorsMiddleware"


def _fail(*args: Any) -> Any:
    raise OperationalError("could not connect to server")


def _on(alias: str) -> Any:
    return override_settings(AQNT_AUTH=auth_settings(DATABASE=alias))


class SyncOnly:
    """A middleware that can only run synchronously (the control case)."""

    sync_capable = True
    async_capable = False

    def __init__(self, get_response: Any) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> Any:
        return self.get_response(request)


class TestDecisions:
    """Each outcome, with the exact answer; the view runs only on success."""

    @pytest.mark.parametrize("alias", on_databases())
    def test_valid_key(self, client: Client, alias: str) -> None:
        """A valid key reaches the view, with its principal on request.api_key."""
        issued = issue(alias, name="Production Server")
        with _on(alias):
            response = client.get("/v1/whoami", headers=bearer(issued.key))
        assert response.status_code == 200
        assert response.json() == {"api_key": {"id": issued.record.id,
                                               "name": "Production Server", "mode": "live"}}
        assert CALLS == ["whoami"]

    @pytest.mark.parametrize("alias", on_databases())
    def test_missing_key(self, client: Client, alias: str) -> None:
        """No Authorization header: missing_api_key, without invalid_token."""
        with _on(alias):
            assert_error(client.get("/v1/whoami"), 401, bodies.MISSING, bodies.CHALLENGE)
        assert CALLS == []

    @pytest.mark.parametrize("header", ["Basic dXNlcjpwYXNz", "Bearer", "", "Token abc"])
    @pytest.mark.django_db
    def test_other_schemes_are_missing(self, client: Client, header: str) -> None:
        """Another scheme or an empty Bearer is not an attempt at one of our keys."""
        assert_error(client.get("/v1/whoami", HTTP_AUTHORIZATION=header), 401, bodies.MISSING,
                     bodies.CHALLENGE)
        assert CALLS == []

    @pytest.mark.parametrize("alias", on_databases())
    def test_invalid_keys(self, client: Client, alias: str) -> None:
        """Garbage, an unknown id and a wrong secret are all invalid_api_key."""
        issued = issue(alias)
        unknown = issue(alias).key
        KeyManager(DjangoKeyStore(using=alias)).delete(unknown[8:20])
        with _on(alias):
            for header in (
                "Bearer not-a-key",
                f"Bearer {issued.key[:-1]}",
                f"Bearer {unknown}",
                f"Bearer {wrong_secret(issued.key)}",
                f"Bearer {issued.key}, Bearer {issued.key}",
                f"Bearer {issued.key} extra",
            ):
                response = client.get("/v1/whoami", HTTP_AUTHORIZATION=header)
                assert_error(response, 401, bodies.INVALID, bodies.INVALID_CHALLENGE)
        assert CALLS == []

    @pytest.mark.parametrize("alias", on_databases())
    def test_revoked_and_expired(self, client: Client, alias: str) -> None:
        """A revoked or expired key is key_revoked."""
        keys = KeyManager(DjangoKeyStore(using=alias))
        revoked, expired = issue(alias), issue(alias)
        keys.revoke(revoked.record.id)
        keys.expire(expired.record.id, dt.datetime.now(dt.timezone.utc) - dt.timedelta(1))
        with _on(alias):
            for issued in (revoked, expired):
                response = client.get("/v1/whoami", headers=bearer(issued.key))
                assert_error(response, 401, bodies.REVOKED, bodies.INVALID_CHALLENGE)
        assert CALLS == []

    @pytest.mark.parametrize("alias", on_databases())
    def test_database_failure_is_503(self, client: Client, alias: str) -> None:
        """A database that cannot answer gives 503 auth_unavailable, never 401."""
        issued = issue(alias)
        with _on(alias), connections[alias].execute_wrapper(_fail):
            response = client.get("/v1/whoami", headers=bearer(issued.key))
        assert_error(response, 503, bodies.UNAVAILABLE)
        assert response["Retry-After"] == "1"
        assert CALLS == []

    @postgres_mark(transaction=True)
    def test_database_restart_is_survived(self, client: Client) -> None:
        """A connection the server dropped gives one 503; Django closes it when
        that request ends, and the next request reconnects."""
        issued = issue("postgres")
        with _on("postgres"):
            assert client.get("/v1/whoami", headers=bearer(issued.key)).status_code == 200
            connection = connections["postgres"]
            pid = connection.connection.info.backend_pid
            conf = connection.settings_dict
            with psycopg.connect(host=conf["HOST"], port=conf["PORT"], user=conf["USER"],
                                 dbname=conf["NAME"], autocommit=True) as admin:
                admin.execute("SELECT pg_terminate_backend(%s)", [pid])
            response = client.get("/v1/whoami", headers=bearer(issued.key))
            assert_error(response, 503, bodies.UNAVAILABLE)
            # What request_finished does under a real server (the test client
            # leaves it out): close connections that failed.
            close_old_connections()
            assert client.get("/v1/whoami", headers=bearer(issued.key)).status_code == 200

    @pytest.mark.django_db
    def test_failures_are_rate_limited_per_client(self, client: Client) -> None:
        """With RATE_LIMIT, a client past its failures gets 429 with Retry-After,
        before any lookup; another client, and a proven key, still get through."""
        issued = issue()
        limiter = FailureLimiter(per_key="100/minute", per_client="2/minute")
        bad = wrong_secret(issued.key)
        with override_settings(AQNT_AUTH=auth_settings(RATE_LIMIT=limiter)):
            client.get("/v1/whoami", headers=bearer(issued.key))  # proven first
            for _ in range(2):
                assert_error(client.get("/v1/whoami", headers=bearer(bad)), 401, bodies.INVALID,
                             bodies.INVALID_CHALLENGE)
            refused = client.get("/v1/whoami", headers=bearer(bad))
            assert_error(refused, 429, bodies.RATE_LIMITED)
            assert int(refused["Retry-After"]) >= 1
            other = client.get("/v1/whoami", headers=bearer(bad), REMOTE_ADDR="10.0.0.9")
            assert_error(other, 401, bodies.INVALID, bodies.INVALID_CHALLENGE)
            assert client.get("/v1/whoami", headers=bearer(issued.key)).status_code == 200
        assert CALLS == ["whoami", "whoami"]

    @pytest.mark.django_db
    @pytest.mark.parametrize("setting", ["default", None])
    def test_failure_limiter_is_on_by_default(self, client: Client, setting: str | None
                                              ) -> None:
        """Without RATE_LIMIT, 11 wrong secrets for one id from one address
        make the 11th a 429 (ten a minute per id and client); the owner, from
        another address, gets in.  RATE_LIMIT None turns the limiter off."""
        issued = issue()
        conf = auth_settings() if setting == "default" else auth_settings(RATE_LIMIT=None)
        with override_settings(AQNT_AUTH=conf):
            assert isinstance(get_authenticator().rate_limit, FailureLimiter) is bool(setting)
            for n in range(11):
                head = issued.key[:20] + f"{n:032d}"  # the id, another secret
                bad = head + checksum(head)
                response = client.get("/v1/whoami", headers=bearer(bad), REMOTE_ADDR="10.6.6.6")
                if n < 10 or setting is None:
                    assert_error(response, 401, bodies.INVALID, bodies.INVALID_CHALLENGE)
                else:
                    assert_error(response, 429, bodies.RATE_LIMITED)
            owner = client.get("/v1/whoami", headers=bearer(issued.key), REMOTE_ADDR="10.1.1.1")
            assert owner.status_code == 200

    @pytest.mark.django_db
    def test_mode_not_allowed(self, client: Client) -> None:
        """With ALLOWED_MODES = ["live"], a test key is invalid_api_key."""
        issued = issue(mode="test")
        with override_settings(AQNT_AUTH=auth_settings(ALLOWED_MODES=["live"])):
            assert_error(client.get("/v1/whoami", headers=bearer(issued.key)), 401, bodies.INVALID,
                         bodies.INVALID_CHALLENGE)
        assert client.get("/v1/whoami", headers=bearer(issued.key)).status_code == 200

    @pytest.mark.django_db
    def test_realm_follows_override_settings(self, client: Client) -> None:
        """The setting is re-read on setting_changed, even mid-client."""
        assert_error(client.get("/v1/whoami"), 401, bodies.MISSING, bodies.CHALLENGE)
        with override_settings(AQNT_AUTH=auth_settings(REALM="payments")):
            assert_error(client.get("/v1/whoami"), 401, bodies.MISSING, 'Bearer realm="payments"')
        assert_error(client.get("/v1/whoami"), 401, bodies.MISSING, bodies.CHALLENGE)


class TestRestrictions:
    """Key restrictions answer 403 insufficient_scope."""

    @pytest.mark.parametrize("alias", on_databases())
    def test_read_only_key(self, alias: str) -> None:
        """A read-only key may GET but not POST."""
        issued = issue(alias, read_only=True)
        client = Client(enforce_csrf_checks=True)
        with _on(alias):
            assert client.get("/v1/charges", headers=bearer(issued.key)).status_code == 201
            response = client.post("/v1/charges", headers=bearer(issued.key))
        assert_error(response, 403, bodies.FORBIDDEN, bodies.READ_ONLY_CHALLENGE)
        assert CALLS == ["charges GET"]

    @pytest.mark.django_db
    def test_allowed_paths(self, client: Client) -> None:
        """A key limited to /v1/charges reaches it and what is below, nothing else."""
        issued = issue(allowed_paths=["/v1/charges"])
        assert client.get("/v1/charges", headers=bearer(issued.key)).status_code == 201
        assert client.get("/v1/charges/ch_1", headers=bearer(issued.key)).status_code == 201
        assert_error(client.get("/v1/whoami", headers=bearer(issued.key)), 403, bodies.FORBIDDEN,
                     bodies.PATHS_CHALLENGE)
        assert CALLS == ["charges GET", "charges GET"]


class TestExemptions:
    """Exempt paths are decided on request.path_info by the core's rules."""

    @pytest.mark.django_db
    def test_exempt_path_needs_no_key(self, client: Client) -> None:
        """/health is exempt and gets request.api_key = None."""
        response = client.get("/health")
        assert response.status_code == 200
        assert response.json() == {"ok": True, "api_key": None}

    @pytest.mark.parametrize("path", ["/healthz", "/health/", "/HEALTH", "//health",
                                      "/health;x", "/adminx/", "/admi"])
    @pytest.mark.django_db
    def test_look_alikes_are_not_exempt(self, client: Client, path: str) -> None:
        """Paths that merely resemble an exempt one need a key."""
        assert_error(client.get(path), 401, bodies.MISSING, bodies.CHALLENGE)
        assert CALLS == []

    @pytest.mark.django_db
    def test_prefix_rule(self, client: Client) -> None:
        """"/admin/*" exempts the admin and everything below it."""
        response = client.get("/admin/login/")
        assert response.status_code == 200

    @pytest.mark.django_db
    def test_path_info_not_script_name(self, client: Client) -> None:
        """Under a mount point the rules see the path within the app."""
        response = client.get("/health", SCRIPT_NAME="/mount")
        assert response.status_code == 200
        assert_error(client.get("/mount/health", SCRIPT_NAME="/mount"), 401, bodies.MISSING,
                     bodies.CHALLENGE)

    @pytest.mark.django_db
    @pytest.mark.parametrize("headers", [PREFLIGHT, {"Origin": "",
                                                     "Access-Control-Request-Method": ""}],
                             ids=["preflight", "empty-values"])
    def test_cors_preflight_needs_a_key_by_default(self, client: Client,
                                                   headers: dict[str, str]) -> None:
        """The README's settings and no CORS package: a preflight (any values, even
        empty) is refused like any request, and never reaches a function view."""
        assert_error(client.options("/v1/charges", headers=headers), 401, bodies.MISSING,
                     bodies.CHALLENGE)
        assert_error(client.options("/v1/charges"), 401, bodies.MISSING, bodies.CHALLENGE)
        assert CALLS == []

    @pytest.mark.django_db
    def test_cors_middleware_in_its_documented_place(self, client: Client) -> None:
        """django-cors-headers' CorsMiddleware above ours (as high as possible, as
        it documents): it answers the preflight; a request without a key still gets
        the 401, with the CORS headers."""
        middleware = [CORS_MIDDLEWARE, *settings.MIDDLEWARE]
        with override_settings(MIDDLEWARE=middleware, CORS_ALLOWED_ORIGINS=[ORIGIN]):
            preflight = client.options("/v1/charges", headers=PREFLIGHT)
            refused = client.get("/v1/charges", headers={"Origin": ORIGIN})
        assert preflight.status_code == 200
        assert preflight.headers["Access-Control-Allow-Origin"] == ORIGIN
        assert_error(refused, 401, bodies.MISSING, bodies.CHALLENGE)
        assert refused.headers["Access-Control-Allow-Origin"] == ORIGIN
        assert CALLS == []

    @pytest.mark.django_db
    def test_cors_middleware_below_with_the_setting(self, client: Client) -> None:
        """CorsMiddleware below ours needs ALLOW_CORS_PREFLIGHT, which lets the
        preflight on to it; it answers, and the view never runs."""
        ours = settings.MIDDLEWARE.index("aqnt_auth.adapters.django.APIKeyMiddleware")
        middleware = list(settings.MIDDLEWARE)
        middleware.insert(ours + 1, CORS_MIDDLEWARE)
        with override_settings(MIDDLEWARE=middleware, CORS_ALLOWED_ORIGINS=[ORIGIN],
                               AQNT_AUTH=auth_settings(ALLOW_CORS_PREFLIGHT=True)):
            preflight = client.options("/v1/charges", headers=PREFLIGHT)
        assert preflight.status_code == 200
        assert preflight.headers["Access-Control-Allow-Origin"] == ORIGIN
        assert CALLS == []


class TestCSRF:
    @pytest.mark.django_db
    def test_key_requests_skip_csrf(self) -> None:
        """A POST authenticated by a key needs no CSRF token; without a key it
        gets 401, not Django's CSRF page."""
        client = Client(enforce_csrf_checks=True)
        issued = issue()
        assert client.post("/v1/charges", headers=bearer(issued.key)).status_code == 201
        assert_error(client.post("/v1/charges"), 401, bodies.MISSING, bodies.CHALLENGE)
        assert CALLS == ["charges POST"]


class TestUsage:
    @pytest.mark.parametrize("alias", on_databases())
    def test_requests_are_counted(self, client: Client, alias: str) -> None:
        """Each authenticated request is counted and written at the flush."""
        issued = issue(alias)
        with _on(alias):
            for _ in range(3):
                assert client.get("/v1/whoami", headers=bearer(issued.key)).status_code == 200
            assert get_authenticator().flush_usage() is True
        row = APIKey.objects.using(alias).get(pk=issued.record.id)
        assert row.usage_count == 3
        assert row.last_used_at is not None


class TestAsync:
    """Under ASGI the middleware runs as a coroutine: async views stay on the loop."""

    @pytest.mark.parametrize("alias", on_databases())
    def test_async_client(self, alias: str) -> None:
        """Valid, missing and revoked keys through the ASGI handler."""
        issued = issue(alias)
        revoked = issue(alias)
        KeyManager(DjangoKeyStore(using=alias)).revoke(revoked.record.id)
        client = AsyncClient()

        async def run() -> None:
            ok = await client.get("/v1/async-whoami", headers={
                "Authorization": f"Bearer {issued.key}"})
            assert ok.status_code == 200
            assert ok.json()["api_key"]["id"] == issued.record.id
            sync_view = await client.get("/v1/whoami", headers={
                "Authorization": f"Bearer {issued.key}"})
            assert sync_view.status_code == 200
            assert_error(await client.get("/v1/async-whoami"), 401, bodies.MISSING,
                         bodies.CHALLENGE)
            assert_error(await client.get("/v1/async-whoami", headers={
                "Authorization": f"Bearer {revoked.key}"}), 401, bodies.REVOKED,
                bodies.INVALID_CHALLENGE)

        with _on(alias):
            # async_to_sync runs Django's thread-sensitive calls on this thread,
            # which holds the test's transaction.
            async_to_sync(run)()
        assert CALLS == ["async_whoami", "whoami"]

    @pytest.mark.django_db
    def test_async_database_failure(self) -> None:
        """A database failure is 503 in async mode too."""
        issued = issue()

        async def run() -> HttpResponseBase:
            return await AsyncClient().get(
                "/v1/async-whoami", headers={"Authorization": f"Bearer {issued.key}"})

        with connections["default"].execute_wrapper(_fail):
            response = async_to_sync(run)()
        assert_error(response, 503, bodies.UNAVAILABLE)
        assert CALLS == []

    def test_capabilities(self) -> None:
        """The instance is a coroutine function exactly when the chain is async."""

        def sync_view(request: HttpRequest) -> HttpResponse:
            return HttpResponse()

        async def async_view(request: HttpRequest) -> HttpResponse:
            return HttpResponse()

        assert APIKeyMiddleware.sync_capable
        assert APIKeyMiddleware.async_capable
        assert not iscoroutinefunction(APIKeyMiddleware(sync_view))
        assert iscoroutinefunction(APIKeyMiddleware(async_view))

    def test_no_mode_switch_under_asgi(self, caplog: pytest.LogCaptureFixture) -> None:
        """Building the ASGI handler adapts no middleware to sync: with DEBUG on,
        Django logs each adaptation on django.request."""
        middleware = ["django.middleware.security.SecurityMiddleware",
                      "aqnt_auth.adapters.django.APIKeyMiddleware"]
        with override_settings(MIDDLEWARE=middleware, DEBUG=True), caplog.at_level(
                logging.DEBUG, logger="django.request"):
            ASGIHandler()
        assert "adapted for" not in caplog.text
        # The control: a sync-only middleware does make Django adapt.
        with override_settings(MIDDLEWARE=[*middleware, f"{__name__}.SyncOnly"], DEBUG=True), \
                caplog.at_level(logging.DEBUG, logger="django.request"):
            ASGIHandler()
        assert f"adapted for middleware {__name__}.SyncOnly" in caplog.text
        assert "adapted for middleware aqnt_auth" not in caplog.text


class TestRequestObject:
    @pytest.mark.django_db
    def test_principal_is_the_core_principal(self) -> None:
        """request.api_key is the core's Principal, with every field."""
        issued = issue(scopes=["charges:read"], owner="acct_1", metadata={"team": "x"})
        seen: list[Principal] = []

        def view(request: HttpRequest) -> HttpResponse:
            seen.append(request.api_key)  # type: ignore[attr-defined]
            return HttpResponse()

        request = HttpRequest()
        request.method = "GET"
        request.path_info = request.path = "/v1/anything"
        request.META["HTTP_AUTHORIZATION"] = f"Bearer {issued.key}"
        response = APIKeyMiddleware(view)(request)
        assert response.status_code == 200
        (principal,) = seen
        assert principal.to_dict()["scopes"] == ["charges:read"]
        assert principal.owner == "acct_1"
        assert json.loads(json.dumps(principal.to_dict()))["metadata"] == {"team": "x"}
