"""The Django REST framework authentication class and ``HasScopes``.

``/drf/*`` is exempt from the middleware in the test settings, so the DRF
class authenticates those requests on its own; ``/v1/drf/whoami`` goes
through both.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from django.conf import settings
from django.db import OperationalError, connections
from django.test import Client
from django.test.utils import CaptureQueriesContext, override_settings

from aqnt_auth import KeyManager, Principal
from aqnt_auth.adapters.django.rest_framework import APIKeyUser
from aqnt_auth.adapters.django.store import DjangoKeyStore
from tests import bodies

from ._support import assert_error, bearer, issue, on_databases
from .views import CALLS

EXACT_BODIES = {**settings.REST_FRAMEWORK,
                "EXCEPTION_HANDLER": "aqnt_auth.adapters.django.rest_framework.exception_handler"}


def _assert_json_error(response: Any, status: int, body: bytes, challenge: str | None) -> None:
    # DRF's own renderer: the same JSON document, serialised compactly.
    assert response.status_code == status
    assert response["Content-Type"] == "application/json"
    assert response.json() == json.loads(body)
    if challenge is not None:
        assert response["WWW-Authenticate"] == challenge


@pytest.fixture(params=["drf-renderer", "exact-bytes"])
def exact(request: pytest.FixtureRequest) -> Iterator[bool]:
    """Run a test with DRF's exception handler and with ours."""
    if request.param == "drf-renderer":
        yield False
        return
    with override_settings(REST_FRAMEWORK=EXACT_BODIES):
        yield True


def check(response: Any, exact: bool, status: int, body: bytes, challenge: str | None) -> None:
    if exact:
        assert_error(response, status, body, challenge)
    else:
        _assert_json_error(response, status, body, challenge)


class TestAuthentication:
    @pytest.mark.parametrize("alias", on_databases())
    def test_valid_key(self, client: Client, alias: str) -> None:
        """request.user is an APIKeyUser, request.auth the principal."""
        issued = issue(alias, name="Billing")
        with override_settings(AQNT_AUTH={**settings.AQNT_AUTH, "DATABASE": alias}):
            response = client.get("/drf/whoami", headers=bearer(issued.key))
        assert response.status_code == 200
        assert response.json() == {
            "user": f"API key {issued.record.id} (Billing)",
            "api_key": {"id": issued.record.id, "name": "Billing", "mode": "live"},
        }

    @pytest.mark.django_db
    def test_missing_key_is_401(self, client: Client, exact: bool) -> None:
        """No key: DRF answers 401 with our challenge (not 403); with our
        exception handler, the body is missing_api_key too."""
        response = client.get("/drf/whoami")
        assert response.status_code == 401
        assert response["WWW-Authenticate"] == bodies.CHALLENGE
        if exact:
            assert_error(response, 401, bodies.MISSING, bodies.CHALLENGE)
        assert CALLS == []

    @pytest.mark.django_db
    def test_errors_keep_our_bodies(self, client: Client, exact: bool) -> None:
        """Invalid, revoked and read-only refusals keep the core's answers."""
        issued, revoked, read_only = issue(), issue(), issue(read_only=True)
        KeyManager(DjangoKeyStore()).revoke(revoked.record.id)
        check(client.get("/drf/whoami", HTTP_AUTHORIZATION="Bearer sk_live_nope"), exact,
              401, bodies.INVALID, bodies.INVALID_CHALLENGE)
        # The last character changed for certain (a key may end in any letter).
        typo = issued.key[:-1] + ("x" if issued.key[-1] != "x" else "y")
        check(client.get("/drf/whoami", headers=bearer(typo)), exact,
              401, bodies.INVALID, bodies.INVALID_CHALLENGE)
        check(client.get("/drf/whoami", headers=bearer(revoked.key)), exact,
              401, bodies.REVOKED, bodies.INVALID_CHALLENGE)
        check(client.post("/drf/whoami", headers=bearer(read_only.key)), exact,
              403, bodies.FORBIDDEN, bodies.READ_ONLY_CHALLENGE)
        assert CALLS == []

    @pytest.mark.django_db
    def test_bare_key_is_explained(self, client: Client, exact: bool) -> None:
        """A key without Bearer: DRF's "not authenticated" 401 keeps the
        explanation in its challenge, with either exception handler."""
        response = client.get("/drf/whoami", HTTP_AUTHORIZATION=issue().key)
        assert response.status_code == 401
        assert response["WWW-Authenticate"] == bodies.BARE_KEY_CHALLENGE
        if exact:
            assert_error(response, 401, bodies.MISSING, bodies.BARE_KEY_CHALLENGE)
        assert CALLS == []

    @pytest.mark.django_db
    def test_database_failure(self, client: Client, exact: bool) -> None:
        """A database failure is 503 with Retry-After inside DRF too."""
        issued = issue()

        def fail(*args: Any) -> Any:
            raise OperationalError("could not connect to server")

        with connections["default"].execute_wrapper(fail):
            response = client.get("/drf/whoami", headers=bearer(issued.key))
        check(response, exact, 503, bodies.UNAVAILABLE, None)
        assert response["Retry-After"] == "1"
        assert CALLS == []

    @pytest.mark.django_db
    def test_allow_any_view(self, client: Client) -> None:
        """Without a key an AllowAny view runs unauthenticated; with one, authenticated."""
        assert client.get("/drf/open").json() == {"authenticated": False}
        issued = issue()
        assert client.get("/drf/open", headers=bearer(issued.key)).json() == {"authenticated": True}

    @pytest.mark.django_db
    def test_reuses_the_middlewares_principal(self, client: Client) -> None:
        """Behind the middleware, the DRF class reuses its principal: one lookup."""
        issued = issue()
        client.get("/v1/drf/whoami", headers=bearer(issued.key))  # warms the cache
        with CaptureQueriesContext(connections["default"]) as queries:
            response = client.get("/v1/drf/whoami", headers=bearer(issued.key))
        assert response.status_code == 200
        assert response.json()["api_key"]["id"] == issued.record.id
        assert len(queries) == 1

    @pytest.mark.django_db
    def test_post_needs_no_csrf_token(self) -> None:
        """API-key requests are not subject to DRF's session CSRF check."""
        issued = issue()
        client = Client(enforce_csrf_checks=True)
        assert client.post("/drf/whoami", headers=bearer(issued.key)).status_code == 201


class TestHasScopes:
    @pytest.mark.django_db
    def test_required_scopes(self, client: Client, exact: bool) -> None:
        """The view's required_scopes: 403 naming them, or the view runs."""
        without = issue(scopes=["charges:read"])
        with_scope = issue(scopes=["charges:read", "charges:write"])
        check(client.get("/drf/charges", headers=bearer(without.key)), exact, 403, bodies.FORBIDDEN,
              'Bearer realm="api", error="insufficient_scope", scope="charges:write"')
        assert CALLS == []
        assert client.get("/drf/charges", headers=bearer(with_scope.key)).status_code == 200
        assert CALLS == ["drf_charges"]

    @pytest.mark.django_db
    def test_no_key(self, client: Client, exact: bool) -> None:
        """HasScopes without a key answers missing_api_key."""
        check(client.get("/drf/charges"), exact, 401, bodies.MISSING, bodies.CHALLENGE)
        assert CALLS == []

    @pytest.mark.django_db
    def test_of(self, client: Client) -> None:
        """HasScopes.of() builds a permission class requiring its scopes."""
        assert_error_scope = 'Bearer realm="api", error="insufficient_scope", scope="refunds:write"'
        response = client.get("/drf/refunds", headers=bearer(issue().key))
        assert response.status_code == 403
        assert response["WWW-Authenticate"] == assert_error_scope
        ok = client.get("/drf/refunds", headers=bearer(issue(scopes=["refunds:write"]).key))
        assert ok.status_code == 200
        assert CALLS == ["drf_refunds"]


class TestAPIKeyUser:
    @pytest.mark.django_db
    def test_user_like(self) -> None:
        """It passes IsAuthenticated, has no permissions, and its pk is the key id."""
        issued = issue(name="Reporting")
        principal = Principal(issued.record)
        user = APIKeyUser(principal)
        assert user.is_authenticated
        assert user.is_active
        assert (user.is_anonymous, user.is_staff, user.is_superuser) == (False, False, False)
        assert user.pk == user.id == user.get_username() == issued.record.id
        assert not user.has_perm("aqnt_auth.change_apikey")
        assert not user.has_perms(["x"])
        assert not user.has_module_perms("aqnt_auth")
        assert user == APIKeyUser(Principal(issued.record))
        assert hash(user) == hash(principal)
        assert issued.key not in repr(user) + str(user)
