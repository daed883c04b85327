"""A headless chromium for every browser test (the Django admin today, the
key console later), driven with Playwright's sync API.

The browser is the system's (``apt-get install chromium``; ``.ci/run``
installs it when missing), never one Playwright downloads.  Without a
browser or without Playwright the tests skip with the reason, and fail
instead when ``CI`` is set.  Screenshots go to :data:`ARTIFACTS`
(``test-artifacts/browser/``, ignored by git; ``AQNT_TEST_ARTIFACTS``
moves it): each test's own shots, and one of the page when a test fails.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import pytest

from tests.conftest import IN_CI

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = Path(os.environ.get("AQNT_TEST_ARTIFACTS") or ROOT / "test-artifacts") / "browser"
#: Where Debian's and Ubuntu's packages put it, then whatever is on PATH.
CHROMIUM_PATHS = ("/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]

Shoot = Callable[[str], Path]


def find_chromium() -> str | None:
    """``AQNT_TEST_CHROMIUM``, else the first chromium found."""
    chosen = os.environ.get("AQNT_TEST_CHROMIUM")
    if chosen:
        return chosen if os.access(chosen, os.X_OK) else None
    for path in CHROMIUM_PATHS:
        if os.access(path, os.X_OK):
            return path
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    return None


def _missing(reason: str) -> NoReturn:
    if IN_CI:
        pytest.fail(f"{reason}, and CI is set: the browser tests must run in CI")
    pytest.skip(reason)


@pytest.fixture(scope="package")
def browser() -> Iterator[Browser]:
    """One headless chromium for this package's tests.  Not for the whole run:
    while Playwright's sync API is open its event loop counts as running in
    the main thread, and the rest of the suite runs event loops of its own."""
    path = find_chromium()
    if path is None:
        _missing("no chromium found (apt-get install chromium, or set AQNT_TEST_CHROMIUM)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("Playwright is not installed (pip install -e '.[dev]')")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=path, args=CHROMIUM_ARGS,
                                              headless=True)
        try:
            yield launched
        finally:
            launched.close()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    if report.when == "call":
        item.stash[_FAILED] = report.failed
    return report


_FAILED = pytest.StashKey[bool]()


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-")


@pytest.fixture
def page(browser: Browser, request: pytest.FixtureRequest) -> Iterator[Page]:
    """A fresh context (no cookies) and page; a screenshot if the test fails."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(15_000)
    opened = context.new_page()
    try:
        yield opened
        if request.node.stash.get(_FAILED, False):
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            opened.screenshot(path=ARTIFACTS / f"{_slug(request.node.name)}-FAILED.png",
                              full_page=True)
    finally:
        context.close()


@pytest.fixture
def shoot(page: Page, request: pytest.FixtureRequest) -> Shoot:
    """``shoot("step")`` saves the page as ``<test>-<step>.png`` in :data:`ARTIFACTS`."""

    def save(step: str) -> Path:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        target = ARTIFACTS / f"{_slug(request.node.name)}-{_slug(step)}.png"
        page.screenshot(path=target, full_page=True)
        return target

    return save
