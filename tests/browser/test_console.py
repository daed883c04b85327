"""The key console in a real browser, mounted in an ASGI app (Starlette
under uvicorn), a Flask app (under gunicorn) and Django (runserver), each
beside a route the API-key middleware protects, on an SQLite file.

One walk through a key's life per framework: sign in, create a key and copy
it from the page, use it, see it gone after a reload, rotate it with a
grace period, disable and enable it, revoke it after the confirmation.
Screenshots of each step go to test-artifacts/browser/.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest

from aqnt_auth import Argon2Hasher, KeyManager

from ._server import ROOT, serve
from .conftest import ARTIFACTS, Shoot

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

pytestmark = pytest.mark.slow

KEY = re.compile(r"sk_(?:live|test)_[0-9A-Za-z]{50}")
PREFIX = "/keys-admin"
FRAMEWORKS = ("asgi", "flask", "django")


def _env(store: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    env.update(PYTHONPATH=str(ROOT), AQNT_TEST_STORE=store,
               AQNT_TEST_SECRET=secrets.token_urlsafe(32))
    return env


def _admin_key(store: str) -> str:
    with KeyManager(store, hasher=Argon2Hasher("cheapest")) as manager:
        return manager.create("Console admin", scopes=["aqnt:admin"]).key


@pytest.fixture(scope="module", params=FRAMEWORKS)
def server(request: pytest.FixtureRequest,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str, str]]:
    """(framework, base URL, admin key) of a real server of each framework."""
    framework: str = request.param
    folder = tmp_path_factory.mktemp(f"console-{framework}")
    if framework == "django":
        with _django(folder) as (base, admin):
            yield framework, base, admin
        return
    store = f"sqlite:///{folder / 'keys.db'}"
    admin = _admin_key(store)
    if framework == "asgi":
        def command(port: int) -> list[str]:
            return [sys.executable, "-m", "uvicorn", "--factory",
                    "tests.browser.console_apps:asgi", "--port", str(port),
                    "--log-level", "warning", "--no-access-log"]
    else:
        def command(port: int) -> list[str]:
            return [sys.executable, "-m", "gunicorn", "-b", f"127.0.0.1:{port}", "-w", "1",
                    "--threads", "4", "--log-level", "warning",
                    "tests.browser.console_apps:flask()"]
    with serve(command, _env(store), PREFIX + "/sign-in") as base:
        yield framework, base, admin


@contextmanager
def _django(folder: Path) -> Iterator[tuple[str, str]]:
    """runserver on a migrated SQLite file, and an admin key made with
    ``manage.py aqnt_keys``."""
    env = _env("")
    env.update(DJANGO_SETTINGS_MODULE="tests.browser.django_settings",
               AQNT_TEST_DATABASE=str(folder / "db.sqlite3"))

    def manage(*args: str) -> str:
        done = subprocess.run([sys.executable, "-m", "django", *args], env=env, cwd=ROOT,
                              capture_output=True, text=True, timeout=120, check=False)
        assert done.returncode == 0, done.stderr
        return done.stdout

    manage("migrate", "--noinput", "-v", "0")
    created = json.loads(manage("aqnt_keys", "create", "--name", "Console admin",
                                "--scope", "aqnt:admin", "--argon2-profile", "cheapest",
                                "--json"))
    with serve(lambda port: [sys.executable, "-m", "django", "runserver", "--noreload",
                             f"127.0.0.1:{port}"], env, "/health") as base:
        yield base, created["key"]


def _whoami(base: str, key: str) -> httpx.Response:
    return httpx.get(f"{base}/v1/whoami", headers={"Authorization": f"Bearer {key}"},
                     timeout=10)


def _code(response: httpx.Response) -> str:
    code: str = response.json()["error"]["code"]
    return code


def _sign_in(page: Page, base: str, key: str) -> None:
    page.goto(f"{base}{PREFIX}/keys")
    page.wait_for_url(re.compile(re.escape(f"{base}{PREFIX}/sign-in") + r"\?next="))
    page.get_by_label("Admin API key").fill(key)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{base}{PREFIX}/keys")


def test_key_life(server: tuple[str, str, str], page: Page, shoot: Shoot) -> None:
    framework, base, admin_key = server
    console = base + PREFIX
    page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=base)

    # 1. Sign in with the admin key.
    _sign_in(page, base, admin_key)
    assert admin_key not in page.content()
    shoot("1-signed-in")

    # 2. Create a key and copy it from the page.
    page.get_by_role("link", name="Create key").click()
    page.get_by_label("Name").fill(f"Browser key ({framework})")
    page.get_by_label("Scopes").fill("orders:read")
    page.get_by_role("button", name="Create key").click()
    field = page.locator("#new-key")
    key = field.input_value()
    assert KEY.fullmatch(key)
    page.get_by_role("button", name="Copy").click()
    page.get_by_text("Copied to the clipboard.").wait_for()
    assert page.evaluate("navigator.clipboard.readText()") == key
    shoot("2-created")

    # 3. Use it against the protected route of the same app.
    used = _whoami(base, key)
    assert used.status_code == 200, used.text

    # 4. Gone after a reload (which repeats the POST) and from every other page.
    page.reload()
    assert key not in page.content()
    assert "already submitted" in page.content()
    shoot("4-reloaded")
    page.goto(f"{console}/keys")
    assert key not in page.content()
    cookies = page.context.cookies()
    assert cookies
    assert all(key not in c["value"] for c in cookies)

    # 5. Rotate with a grace period: both keys work during it.
    page.get_by_role("link", name=f"Browser key ({framework})").click()
    page.get_by_label("Grace period for the old key").fill("1h")
    page.get_by_role("button", name="Rotate").click()
    new_key = page.locator("#new-key").input_value()
    assert KEY.fullmatch(new_key)
    assert new_key != key
    assert "keeps working until" in page.content()
    shoot("5-rotated")
    assert _whoami(base, key).status_code == 200
    assert _whoami(base, new_key).status_code == 200
    page.get_by_role("link", name="Go to the key's page").click()
    assert "(predecessor)" in page.content()

    # 6. Disable it and enable it.
    page.get_by_role("button", name="Disable").click()
    page.get_by_text("The key was disabled.").wait_for()
    shoot("6-disabled")
    refused = _whoami(base, new_key)
    assert (refused.status_code, _code(refused)) == (401, "key_disabled")
    page.get_by_role("button", name="Enable").click()
    page.get_by_text("The key was enabled.").wait_for()
    assert _whoami(base, new_key).status_code == 200

    # 7. Revoke it after the confirmation, which names it.
    page.get_by_role("link", name="Revoke…").click()
    heading = page.get_by_role("heading", level=1).inner_text()
    assert f"Browser key ({framework})" in heading
    shoot("7-confirm-revoke")
    page.get_by_role("button", name=re.compile("^Yes, revoke")).click()
    page.get_by_text("The key was revoked.").wait_for()
    revoked = _whoami(base, new_key)
    assert (revoked.status_code, _code(revoked)) == (401, "key_revoked")
    shoot("7-revoked")

    # 8. After a flush, the usage chart counts those requests by outcome:
    # valid after the rotation and after enabling, one disabled, one revoked.
    assert httpx.post(f"{base}/_flush", timeout=10).status_code == 200
    page.reload()
    totals = page.locator("#key-usage-totals")
    counts = {cell.get_attribute("data-outcome"): int(cell.inner_text())
              for cell in totals.locator("td[data-outcome]").all()}
    assert counts == {"valid": 2, "disabled": 1, "revoked": 1, "total": 4}
    chart = page.get_by_role("img", name=re.compile("Requests of Browser key"))
    assert chart.locator("rect.o-valid").count() >= 1
    assert chart.locator("rect.o-revoked").count() == 1
    shoot("8-usage")
    page.goto(f"{console}/")
    overview = {cell.get_attribute("data-outcome"): int(cell.inner_text())
                for cell in page.locator("#all-usage-totals td[data-outcome]").all()}
    assert overview["revoked"] == 1
    assert overview["valid"] >= 4  # the first key's and the rotated key's
    shoot("8-overview")
    # Every change above is in the audit log, made by the signed-in admin key.
    page.get_by_role("link", name="Audit log").click()
    log = page.locator("table.audit tbody")
    for event in ("created", "rotated", "disabled", "enabled", "revoked"):
        assert log.locator(f".event-{event}").count() >= 1, event
    assert log.locator("td[data-label=By] code").first.inner_text().startswith("key:")
    shoot("8-audit")


@pytest.mark.parametrize("server", ["asgi"], indirect=True)
def test_phone_width(server: tuple[str, str, str], browser: Browser) -> None:
    """The pages fit a phone's width (the layout is the console's own,
    whatever the mount: checked once)."""
    framework, base, admin_key = server
    context = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True)
    try:
        phone = context.new_page()
        _sign_in(phone, base, admin_key)
        for path in ("/keys", "/", "/keys/new"):
            phone.goto(f"{base}{PREFIX}{path}")
            wide = phone.evaluate("document.documentElement.scrollWidth")
            assert wide <= 390, (path, wide)
        phone.goto(f"{base}{PREFIX}/keys")
        phone.get_by_role("link", name="Console admin").click()
        assert phone.evaluate("document.documentElement.scrollWidth") <= 390
        phone.screenshot(path=_artifact(f"{framework}-phone-detail"), full_page=True)
        phone.goto(f"{base}{PREFIX}/keys")
        phone.screenshot(path=_artifact(f"{framework}-phone-keys"), full_page=True)
    finally:
        context.close()


def _artifact(name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS / f"test_console-{name}.png"
