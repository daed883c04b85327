"""Every hostile case against every adapter: the exact answer, what it cost,
that the endpoint did not run, and that no key leaked anywhere."""

from __future__ import annotations

import pytest

from aqnt_auth import FailureLimiter
from tests import bodies

from .cases import ADAPTERS, CASES, ORIGIN, Case
from .driver import Driver, Outcome, Request, open_driver
from .leaks import (
    ExceptionTrap,
    assert_no_leak,
    authorization_values,
    debug_everywhere,
    exception_texts,
    outcome_texts,
)

_DJANGO = pytest.mark.django_db


def _params() -> list[object]:
    return [
        pytest.param(case, adapter, id=f"{case.name}-{adapter}",
                     marks=_DJANGO if adapter in ("django", "drf") else ())
        for case in CASES
        for adapter in ADAPTERS
    ]


def check(case: Case, outcome: Outcome) -> None:
    """The shared assertion: exactly *case*'s answer."""
    assert outcome.escaped is None, f"the app raised {outcome.escaped!r}"
    assert outcome.status == case.status
    assert outcome.close_code == case.close_code
    if case.cors:
        assert outcome.header("access-control-allow-origin") == ORIGIN
    check_rate_limit_headers(case, outcome)
    if case.body is None:
        assert outcome.endpoint == case.endpoint
        assert outcome.header("www-authenticate") is None
        return
    assert outcome.endpoint is None, "the endpoint ran"
    assert outcome.body == (b"" if case.stripped else case.body)
    if case.status is None:
        return
    assert outcome.header("content-type") == "application/json"
    assert outcome.header("content-length") == str(len(case.body))
    assert outcome.header("www-authenticate") == case.challenge
    retry_after = outcome.header("retry-after")
    if case.status in (429, 503) and case.retry_after:
        assert retry_after is not None
        assert 1 <= int(retry_after) <= 60
    else:
        assert retry_after is None


def check_rate_limit_headers(case: Case, outcome: Outcome) -> None:
    """The RateLimit headers (one policy): exactly the case's policy and
    remaining count, and an effective window within the policy's."""
    if case.ratelimit is None:
        assert outcome.header("ratelimit-policy") is None
        assert outcome.header("ratelimit") is None
        return
    policy, remaining = case.ratelimit
    assert outcome.header("ratelimit-policy") == policy
    value = outcome.header("ratelimit")
    assert value is not None
    name = policy.split(";", 1)[0]
    head, _, t = value.rpartition(";t=")
    assert head == f"{name};r={remaining}"
    window = int(policy.rpartition(";w=")[2])
    assert window - 30 <= int(t) <= window
    if case.status == 429:
        assert outcome.header("retry-after") == t


def _principal_id(principal: object) -> str | None:
    return getattr(principal, "id", None) if principal is not None else None


@pytest.mark.parametrize(("case", "adapter"), _params())
def test_hostile_request(case: Case, adapter: str, caplog: pytest.LogCaptureFixture) -> None:
    expected = case.for_adapter(adapter)
    if expected is None:
        pytest.skip(case.reason(adapter))
    limiter = FailureLimiter(per_key="100/minute", per_client="2/minute") \
        if expected.rate_limit else None
    with open_driver(adapter, rate_limit=limiter, cors=expected.cors,
                     trusted_proxies=expected.trusted_proxies) as driver:
        # Keys are issued first: the check covers requests, not key management.
        request = Request.of(expected, driver.keys)
        with debug_everywhere(caplog):
            _send(expected, request, driver, caplog)


def _send(expected: Case, request: Request, driver: Driver,
          caplog: pytest.LogCaptureFixture) -> None:
    earlier_request = Request.earlier(expected, driver.keys)
    for _ in range(expected.attempts - 1):
        earlier = driver.send(earlier_request)
        check(Case("earlier attempt", 401, bodies.INVALID, bodies.INVALID_CHALLENGE), earlier)
    for _ in range(expected.warmups):
        assert driver.send(request).status == 200
    _run(expected, request, driver, caplog)


def _run(expected: Case, request: Request, driver: Driver,
         caplog: pytest.LogCaptureFixture) -> None:
    driver.reset_cost()
    if expected.store_down:
        driver.break_store()
    with ExceptionTrap() as trap:
        outcome = driver.send(request)
    check(expected, outcome)
    assert driver.cost() == expected.cost, "(store reads, argon2 verifications)"
    expected_principal = (driver.keys.id_of(expected.principal)
                          if expected.principal is not None else None)
    assert _principal_id(outcome.principal) == expected_principal
    assert_no_leak(driver.keys, [
        ("log", caplog.text), *outcome_texts(outcome),
        *exception_texts(trap.escaped),
    ], also=authorization_values(request.headers))
