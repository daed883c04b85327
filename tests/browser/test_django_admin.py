"""The Django admin in a real browser: a key is shown once, in the page that
created it, and revoking asks first.  Django runs under ``manage.py
runserver`` on an SQLite file; the browser logs in as a user would."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest

from tests import bodies

from ._server import ROOT, serve
from .conftest import Shoot

if TYPE_CHECKING:
    from playwright.sync_api import Page

try:
    from playwright.sync_api import Error as PlaywrightError
except ImportError:  # the browser fixture skips (or fails in CI) with the reason
    PlaywrightError = Exception  # type: ignore[assignment,misc]

pytestmark = pytest.mark.slow

KEY = re.compile(r"sk_(?:live|test)_[0-9A-Za-z]{50}")
PASSWORD = "browser-test-password"  # a throwaway superuser of a throwaway database
KEYS = "/admin/aqnt_auth/apikey/"


def _manage(env: dict[str, str], *args: str) -> None:
    done = subprocess.run([sys.executable, "-m", "django", *args], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr


@pytest.fixture(scope="module")
def django_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """runserver on a migrated SQLite file with one superuser, ``admin``."""
    database = tmp_path_factory.mktemp("browser-django") / "db.sqlite3"
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    env.update(DJANGO_SETTINGS_MODULE="tests.browser.django_settings",
               AQNT_TEST_DATABASE=str(database), PYTHONPATH=str(ROOT),
               DJANGO_SUPERUSER_PASSWORD=PASSWORD)
    _manage(env, "migrate", "--noinput", "-v", "0")
    _manage(env, "createsuperuser", "--noinput", "--username", "admin",
            "--email", "admin@example.com")
    with serve(lambda port: [sys.executable, "-m", "django", "runserver", "--noreload",
                             "--insecure", f"127.0.0.1:{port}"], env, "/health") as base:
        yield base


def _log_in(page: Page, base: str) -> None:
    page.goto(f"{base}/admin/login/?next={KEYS}")
    page.fill("#id_username", "admin")
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")
    page.wait_for_url(f"{base}{KEYS}")


def _whoami(base: str, key: str) -> httpx.Response:
    return httpx.get(f"{base}/v1/whoami", headers={"Authorization": f"Bearer {key}"},
                     timeout=10)


def _create(page: Page, base: str, name: str) -> str:
    page.goto(f"{base}{KEYS}add/")
    page.fill("#id_name", name)
    page.click("input[name=_save]")
    field = page.locator(".issued-key-value")
    field.wait_for()
    key = field.input_value()
    assert KEY.fullmatch(key), "the page shows a whole key"
    return key


def _select(page: Page, name: str) -> None:
    row = page.locator("#result_list tbody tr", has_text=name)
    row.locator("input.action-select").check()


def test_create_shows_key_once(django_server: str, page: Page, shoot: Shoot) -> None:
    """The key is on the page that answers "Save", works at once, and is in
    no cookie, nor on any page after it, nor on going back and forward."""
    base = django_server
    _log_in(page, base)
    key = _create(page, base, "Browser key")
    shoot("created")
    assert "will not be shown again" in page.content()
    assert _whoami(base, key).status_code == 200
    for cookie in page.context.cookies():
        assert key not in cookie["value"]
    # The key's own page and the list show its hint, never the key.
    page.click(f"text={key[8:20]}")
    page.wait_for_url(re.compile(rf".*{key[8:20]}/change/$"))
    assert key not in page.content()
    assert key[-4:] in page.content()
    page.goto(f"{base}{KEYS}")
    assert "Browser key" in page.content()
    assert KEY.search(page.content()) is None
    # History: going back to the answer to the POST (sent no-store) finds no
    # copy in any cache; Chromium refuses to show it without posting again.
    page.go_back()
    with pytest.raises(PlaywrightError, match="ERR_CACHE_MISS"):
        page.go_back()
    page.wait_for_load_state()
    assert KEY.search(page.locator("body").inner_text()) is None
    shoot("after-going-back")
    for cookie in page.context.cookies():
        assert key not in cookie["value"]


def test_revoke_asks_for_confirmation(django_server: str, page: Page, shoot: Shoot) -> None:
    """Revoke from the list shows a confirmation page; "No" keeps the key
    working, "Yes" revokes it; the key's page then offers no Revoke button."""
    base = django_server
    _log_in(page, base)
    key = _create(page, base, "To revoke")
    page.goto(f"{base}{KEYS}")
    _select(page, "To revoke")
    page.select_option("select[name=action]", "revoke_keys")
    page.click("button[name=index]")
    page.wait_for_selector("text=Are you sure you want to revoke this API key?")
    shoot("confirm")
    page.click("text=No, take me back")
    page.wait_for_url(re.compile(rf".*{KEYS}(\?.*)?$"))
    assert _whoami(base, key).status_code == 200

    _select(page, "To revoke")
    page.select_option("select[name=action]", "revoke_keys")
    page.click("button[name=index]")
    page.click("input[value='Yes, revoke']")
    page.wait_for_selector("text=Revoked 1 API key(s).")
    shoot("revoked")
    refused = _whoami(base, key)
    assert (refused.status_code, refused.content) == (401, bodies.REVOKED)
    # Hidden by the default filter, listed under "revoked".
    assert "To revoke" not in page.locator("#changelist").inner_text()
    page.goto(f"{base}{KEYS}?status=revoked")
    assert "To revoke" in page.locator("#result_list").inner_text()
    # Its page is read-only, with no Revoke button.
    page.goto(f"{base}{KEYS}{key[8:20]}/change/")
    assert page.locator("a.revokelink").count() == 0
    assert page.locator("#id_name").count() == 0


def test_revoke_button_on_the_key_page(django_server: str, page: Page, shoot: Shoot) -> None:
    """The key's page has a Revoke button that also asks first."""
    base = django_server
    _log_in(page, base)
    key = _create(page, base, "Button key")
    page.goto(f"{base}{KEYS}{key[8:20]}/change/")
    page.click("a.revokelink")
    page.wait_for_selector("text=Revocation is final")
    assert _whoami(base, key).status_code == 200
    page.click("input[value='Yes, revoke']")
    page.wait_for_selector("text=Revoked 1 API key(s).")
    shoot("revoked")
    assert _whoami(base, key).status_code == 401


def test_screenshots_are_kept(django_server: str, page: Page, shoot: Shoot) -> None:
    """The run leaves its screenshots where CI keeps artifacts."""
    _log_in(page, django_server)
    saved: Path = shoot("list")
    assert saved.stat().st_size > 0
