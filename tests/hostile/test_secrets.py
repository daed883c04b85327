"""Keys never leak: not into debug pages, not into refusals made in debug
mode, not through the chain of a refusal's exception.

(The hostile table checks every one of its requests for leaks as well.)
"""

from __future__ import annotations

import pytest

from aqnt_auth import InvalidAPIKey, bearer_token

from .cases import ADAPTERS, ASGI_FAMILY, CASES, Case, auth
from .driver import BOOM, Request, open_driver
from .leaks import (
    ExceptionTrap,
    assert_no_leak,
    authorization_values,
    debug_everywhere,
    exception_texts,
    outcome_texts,
)
from .test_table import check

_DJANGO = pytest.mark.django_db
_ADAPTERS = [pytest.param(a, marks=_DJANGO if a in ("django", "drf") else ()) for a in ADAPTERS]
#: Refusals re-run with the framework's debug mode on: the answers must not change.
_IN_DEBUG = ("wrong_secret", "crlf_injection", "latin1_byte_after_key", "header_64kb",
             "two_headers_valid_first", "key_in_query_string", "store_down", "revoked")


def test_non_ascii_header_refusal_carries_no_header() -> None:
    """The refusal of a non-ASCII header has no chained decode error: that
    error would hold the whole header, key included."""
    key = "sk_live_" + "A" * 50
    with pytest.raises(InvalidAPIKey) as refused:
        bearer_token(f"Bearer {key}\xe9".encode("latin-1"))
    assert refused.value.__context__ is None
    assert refused.value.__cause__ is None
    assert key not in repr(refused.value)


@pytest.mark.parametrize("adapter", _ADAPTERS)
def test_debug_error_page_shows_no_key(adapter: str, caplog: pytest.LogCaptureFixture) -> None:
    """A view failing after a valid key, with the framework's debug page on:
    the traceback page and the logged error show no key."""
    with open_driver(adapter, debug=True) as driver:
        request = Request.of(Case("boom", 500, None, path="/boom",
                                  headers=auth(b"Bearer {live}")), driver.keys)
        with debug_everywhere(caplog), ExceptionTrap() as trap:
            outcome = driver.send(request)
    assert outcome.status == 500
    assert outcome.endpoint == "boom"
    page = outcome.body.decode("utf-8", "replace")
    assert BOOM in page, "not the debug page"
    if adapter in ("django", "drf"):
        assert "HTTP_AUTHORIZATION" in page, "the request's headers are on the page, masked"
    if adapter in ASGI_FAMILY:
        # Starlette renders the page, then re-raises for the server to log.
        assert isinstance(outcome.escaped, RuntimeError)
    else:
        assert outcome.escaped is None
    assert_no_leak(driver.keys, [("log", caplog.text), *outcome_texts(outcome),
                                 *exception_texts(trap.escaped)])


@pytest.mark.parametrize("adapter", _ADAPTERS)
@pytest.mark.parametrize("case", [c for c in CASES if c.name in _IN_DEBUG], ids=str)
def test_refusals_in_debug_mode(case: Case, adapter: str,
                                caplog: pytest.LogCaptureFixture) -> None:
    """Debug mode changes nothing in the adapters' own refusals."""
    expected = case.for_adapter(adapter)
    assert expected is not None
    with open_driver(adapter, debug=True) as driver:
        request = Request.of(expected, driver.keys)
        if expected.store_down:
            driver.break_store()
        with debug_everywhere(caplog), ExceptionTrap() as trap:
            outcome = driver.send(request)
    check(expected, outcome)
    assert_no_leak(driver.keys, [("log", caplog.text), *outcome_texts(outcome),
                                 *exception_texts(trap.escaped)],
                   also=authorization_values(request.headers))
