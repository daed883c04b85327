"""Keys never reach Django's debug pages, error reports or logs."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from django.http import HttpRequest, HttpResponse
from django.test import AsyncClient, Client, RequestFactory
from django.test.utils import override_settings
from django.views.debug import (
    ExceptionReporter,
    SafeExceptionReporterFilter,
    get_default_exception_reporter_filter,
)

from aqnt_auth import Argon2Hasher

from ._support import auth_settings, bearer, issue
from .views import CALLS


class AuthFreeFilter(SafeExceptionReporterFilter):
    """A project filter whose pattern does not catch HTTP_AUTHORIZATION (as
    Django's own did before it added AUTH)."""

    hidden_settings = re.compile("API|TOKEN|SECRET|PASS|SIGNATURE|HTTP_COOKIE", re.I)


class BrokenHasher(Argon2Hasher):
    """A hasher with a bug: its verify raises something the core does not expect."""

    def verify(self, stored: str, secret: str) -> bool:
        raise RuntimeError("hasher bug")


def _secret_parts(key: str) -> list[str]:
    # The whole key and its secret part (everything after the 12-character id).
    return [key, key[20:-6]]


def _assert_absent(text: str, key: str) -> None:
    for part in _secret_parts(key):
        assert part not in text


@pytest.fixture
def _uncached_filter() -> Iterator[None]:
    # Django caches the default filter for the process, whatever the settings.
    cached: Any = get_default_exception_reporter_filter
    cached.cache_clear()
    yield
    cached.cache_clear()


@pytest.mark.django_db
class TestDebugPage:
    @override_settings(DEBUG=True)
    def test_view_error_page_hides_the_key(self, caplog: pytest.LogCaptureFixture) -> None:
        """A view's exception renders the DEBUG page: the header is masked,
        the key appears nowhere, not in the log either."""
        issued = issue()
        client = Client(raise_request_exception=False)
        with caplog.at_level(logging.DEBUG):
            response = client.get("/v1/boom", headers=bearer(issued.key))
        assert response.status_code == 500
        page = response.content.decode()
        assert "the view failed" in page
        assert "HTTP_AUTHORIZATION" in page
        _assert_absent(page, issued.key)
        _assert_absent(caplog.text, issued.key)
        assert CALLS == ["boom"]

    @override_settings(
        DEBUG=True,
        DEFAULT_EXCEPTION_REPORTER_FILTER=f"{__name__}.AuthFreeFilter",
    )
    @pytest.mark.usefixtures("_uncached_filter")
    def test_filter_that_misses_the_header(self) -> None:
        """With a project filter that would show HTTP_AUTHORIZATION, the
        middleware masks it for its requests anyway."""
        issued = issue()
        probe = HttpRequest()
        probe.META["HTTP_AUTHORIZATION"] = "x"
        assert get_default_exception_reporter_filter().get_safe_request_meta(probe) == {
            "HTTP_AUTHORIZATION": "x"}
        response = Client(raise_request_exception=False).get("/v1/boom", headers=bearer(issued.key))
        assert response.status_code == 500
        page = response.content.decode()
        assert "HTTP_AUTHORIZATION" in page
        _assert_absent(page, issued.key)

    @override_settings(DEBUG=True)
    def test_bug_below_the_middleware(self, caplog: pytest.LogCaptureFixture) -> None:
        """Even a bug inside authentication (whose frames hold the key) gives a
        DEBUG page without the key: those frames are dropped."""
        issued = issue()
        with override_settings(AQNT_AUTH=auth_settings(HASHERS=[BrokenHasher("cheapest")])):
            client = Client(raise_request_exception=False)
            response = client.get("/v1/whoami", headers=bearer(issued.key))
        assert response.status_code == 500
        page = response.content.decode()
        assert "hasher bug" in page
        _assert_absent(page, issued.key)
        _assert_absent(caplog.text, issued.key)
        assert CALLS == []

    @override_settings(DEBUG=True)
    def test_bug_below_the_async_middleware(self) -> None:
        """The same under ASGI, where the middleware runs as a coroutine."""
        issued = issue()

        async def run() -> Any:
            client = AsyncClient(raise_request_exception=False)
            return await client.get("/v1/async-whoami", headers=bearer(issued.key))

        with override_settings(AQNT_AUTH=auth_settings(HASHERS=[BrokenHasher("cheapest")])):
            response = async_to_sync(run)()
        assert response.status_code == 500
        page = response.content.decode()
        assert "hasher bug" in page
        _assert_absent(page, issued.key)
        assert CALLS == []

    def test_error_report_hides_the_key(self) -> None:
        """With DEBUG off, the report mailed to ADMINS (frame variables
        included) has no key either."""
        issued = issue()
        request: Any = None
        with override_settings(AQNT_AUTH=auth_settings(HASHERS=[BrokenHasher("cheapest")])):
            from aqnt_auth.adapters.django.middleware import APIKeyMiddleware

            # Through the middleware, which gives the request the filter that
            # hides the header where the project's own does not (Django 4.2).
            request = RequestFactory().get("/v1/whoami", headers=bearer(issued.key))
            with pytest.raises(RuntimeError) as info:
                APIKeyMiddleware(lambda request: HttpResponse())(request)
        reporter = ExceptionReporter(request, RuntimeError, info.value,
                                     info.value.__traceback__, is_email=True)
        text = reporter.get_traceback_text()
        html = reporter.get_traceback_html()
        assert "hasher bug" in text
        for report in (text, html):
            _assert_absent(report, issued.key)
