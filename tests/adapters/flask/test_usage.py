"""Usage counts reach the store at an interval and when the process exits."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
from pathlib import Path

from aqnt_auth import Argon2Hasher, KeyManager, SQLiteKeyStore

from ..wsgi._support import bearer
from .conftest import AppFactory


def test_flushed_at_an_interval(make_app: AppFactory, manager: KeyManager) -> None:
    """With a short interval the background flusher writes the counts unprompted."""
    issued = manager.create("counted")
    app = make_app(AQNT_AUTH_USAGE_FLUSH_INTERVAL=0.05)
    client = app.test_client()
    for _ in range(3):
        assert client.get("/", headers=bearer(issued.key)).status_code == 200

    def flushed() -> bool:
        record = manager.get(issued.record.id)
        return record.usage_count == 3 and record.last_used_at is not None

    # Waits for the flusher thread, up to a generous bound; no timing is asserted.
    pause = threading.Event()
    for _ in range(200):
        if flushed():
            break
        pause.wait(0.05)
    assert flushed()


CHILD = textwrap.dedent(
    """
    import sys

    from flask import Flask

    from aqnt_auth import Argon2Hasher
    from aqnt_auth.adapters.flask import AQNTAuth

    app = Flask(__name__)
    app.config.update(
        AQNT_AUTH_STORE="sqlite:///" + sys.argv[1],
        AQNT_AUTH_HASHERS=[Argon2Hasher("cheapest")],
        AQNT_AUTH_USAGE_FLUSH_INTERVAL=3600,
    )
    AQNTAuth(app)

    @app.get("/")
    def index():
        return "ok"

    client = app.test_client()
    headers = {"Authorization": "Bearer " + sys.argv[2]}
    for _ in range(4):
        assert client.get("/", headers=headers).status_code == 200
    # The process ends here, long before the hour-long interval: only the
    # exit hook can write the four requests.
    """
)


def test_flushed_at_process_exit(tmp_path: Path, cheap_hasher: Argon2Hasher) -> None:
    path = tmp_path / "keys.db"
    with KeyManager(SQLiteKeyStore(path), hasher=cheap_hasher) as keys:
        issued = keys.create("exiting")
    result = subprocess.run(
        [sys.executable, "-c", CHILD, str(path), issued.key],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert result.returncode == 0, result.stderr
    with KeyManager(SQLiteKeyStore(path)) as keys:
        assert keys.get(issued.record.id).usage_count == 4
