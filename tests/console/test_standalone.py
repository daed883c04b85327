"""``aqnt-auth console``: the console alone, as a real process on
127.0.0.1, served by uvicorn and by wsgiref; other addresses are refused."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from aqnt_auth import Argon2Hasher, KeyManager, SQLiteKeyStore
from aqnt_auth.console._serve import is_loopback
from tests._servers import ROOT, _free_port, poll

pytestmark = pytest.mark.slow


def _run(*argv: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("AQNT_AUTH_CONSOLE_SECRET_KEY", None)
    return subprocess.Popen([sys.executable, "-m", "aqnt_auth", "console", *argv], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.parametrize("server", ["uvicorn", "wsgiref"])
def test_serves_the_api_on_loopback(tmp_path: Path, server: str) -> None:
    url = f"sqlite:///{tmp_path / 'keys.db'}"
    with KeyManager(url, hasher=Argon2Hasher("cheapest")) as keys:
        admin = keys.create("Console admin", scopes=["aqnt:admin"])
    port = _free_port()
    proc = _run("--store", url, "--port", str(port), "--server", server,
                "--argon2-profile", "cheapest")
    base = f"http://127.0.0.1:{port}"
    auth = {"authorization": f"Bearer {admin.key}"}
    try:
        def ready() -> bool:
            try:
                return httpx.get(base + "/api/keys", headers=auth).status_code == 200
            except httpx.TransportError:
                assert proc.poll() is None, proc.communicate()
                return False

        poll(ready, f"aqnt-auth console ({server})")
        listed = httpx.get(base + "/api/keys", headers=auth)
        assert [k["id"] for k in listed.json()["data"]] == [admin.record.id]
        assert listed.headers["cache-control"] == "no-store"
        created = httpx.post(base + "/api/keys", json={"name": "Standalone"}, headers=auth)
        assert created.status_code == 201
        missing = httpx.get(base + "/api/keys")
        assert missing.status_code == 401
        assert missing.json()["error"]["code"] == "missing_api_key"
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert f"aqnt-auth console on http://127.0.0.1:{port}/ ({server})" in out
    # No secret key given: one warning, and no key anywhere in the output.
    assert err.count("no secret_key given") == 1
    new_key = created.json()["key"]
    assert admin.key not in out + err
    assert new_key not in out + err
    store = SQLiteKeyStore(url.removeprefix("sqlite:///"))
    assert store.get(created.json()["api_key"]["id"]) is not None
    store.close()


def test_refuses_a_remote_address(tmp_path: Path) -> None:
    proc = _run("--store", f"sqlite:///{tmp_path / 'keys.db'}", "--host", "0.0.0.0",
                "--server", "wsgiref")
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 1
    assert "not a loopback address" in err
    assert "--allow-remote" in err
    assert out == ""


@pytest.mark.parametrize(("host", "loopback"), [
    ("127.0.0.1", True), ("127.1.2.3", True), ("::1", True), ("[::1]", True),
    ("localhost", True), ("0.0.0.0", False), ("::", False), ("10.0.0.1", False),
    ("example.com", False),
])
def test_is_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback
