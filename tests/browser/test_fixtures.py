"""The shared browser fixtures' own rules: which chromium, and skip or fail."""

from __future__ import annotations

import sys

import pytest

from . import conftest


def test_chromium_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """AQNT_TEST_CHROMIUM names the browser; a path that is not an executable is none."""
    monkeypatch.setenv("AQNT_TEST_CHROMIUM", sys.executable)
    assert conftest.find_chromium() == sys.executable
    monkeypatch.setenv("AQNT_TEST_CHROMIUM", "/nonexistent/chromium")
    assert conftest.find_chromium() is None


@pytest.mark.parametrize(("in_ci", "outcome"), [
    (False, pytest.skip.Exception), (True, pytest.fail.Exception)])
def test_missing_browser_skips_or_fails_in_ci(monkeypatch: pytest.MonkeyPatch, in_ci: bool,
                                              outcome: type[BaseException]) -> None:
    """Without a browser the tests skip, with the reason; in CI they fail."""
    monkeypatch.setattr(conftest, "IN_CI", in_ci)
    with pytest.raises(outcome, match="no chromium"):
        conftest._missing("no chromium found")
