"""Usage history through the WSGI middleware and the Flask extension (#14):
a run of real requests of every outcome is counted exactly once each (by
the core), with the client and user agent of the valid ones."""

from __future__ import annotations

import json
from typing import Any

from flask import Flask
from werkzeug.test import Client

from aqnt_auth import Argon2Hasher, Authenticator, MemoryKeyStore
from aqnt_auth.adapters.flask import AQNTAuth
from aqnt_auth.adapters.wsgi import APIKeyMiddleware
from tests.usage_scenario import check, headers, make_run

ENVIRON = {"REMOTE_ADDR": "203.0.113.9"}


def _hello(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]


def test_wsgi_middleware_counts_every_outcome_once() -> None:
    store = MemoryKeyStore()
    run = make_run(store, "/v1/charges", "/v2/other")
    auth = Authenticator(store, rate_limit=None, usage_flush_interval=3600,
                         hashers=[Argon2Hasher("cheapest")])
    client = Client(APIKeyMiddleware(_hello, authenticator=auth))
    statuses = [client.get(r.path, headers=headers(r), environ_base=ENVIRON).status_code
                for r in run.requests]
    assert statuses == [r.status for r in run.requests]
    assert auth.flush_usage()
    rows = store.usage_rows(since=0, until=2**40)
    check(run, rows, "/v1/charges")
    assert {r.last_client for r in rows if r.key_id == run.good_id} == {"203.0.113.9"}
    auth.close()


def test_flask_extension_counts_every_outcome_once() -> None:
    store = MemoryKeyStore()
    run = make_run(store, "/v1/charges", "/v2/other", "/v1/scoped")
    app = Flask(__name__)
    app.config.update(AQNT_AUTH_STORE=store, AQNT_AUTH_HASHERS=[Argon2Hasher("cheapest")],
                      AQNT_AUTH_RATE_LIMIT=None, AQNT_AUTH_USAGE_FLUSH_INTERVAL=3600)
    ext = AQNTAuth(app)

    @app.get("/v1/charges")
    @app.get("/v2/other", endpoint="other")
    def charges() -> str:
        return "ok"

    @app.get("/v1/scoped")
    @ext.require_scopes("charges:write")
    def scoped() -> str:
        return "ok"

    client = app.test_client()
    statuses = [client.get(r.path, headers=headers(r), environ_base=ENVIRON).status_code
                for r in run.requests]
    assert statuses == [r.status for r in run.requests]
    auth = ext.get_authenticator(app)
    assert auth.flush_usage()
    rows = store.usage_rows(since=0, until=2**40)
    check(run, rows, "/v1/charges")
    assert {r.last_client for r in rows if r.key_id == run.good_id} == {"203.0.113.9"}


def test_flask_command(make_app: Any, manager: Any) -> None:
    """flask aqnt-keys usage [ID]: the core CLI's output, on the app's store."""
    app = make_app(AQNT_AUTH_RATE_LIMIT=None)
    issued = manager.create("flask key")
    client = app.test_client()
    for _ in range(2):
        assert client.get("/", headers={"Authorization": f"Bearer {issued.key}",
                                        "User-Agent": "cli-test"}).status_code == 200
    assert client.get("/").status_code == 401
    assert app.extensions["aqnt_auth"].get_authenticator(app).flush_usage()
    runner = app.test_cli_runner()
    result = runner.invoke(args=["aqnt-keys", "usage", issued.record.id, "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["totals"]["valid"] == 2
    assert data["last_user_agent"] == "cli-test"
    result = runner.invoke(args=["aqnt-keys", "usage"])
    assert result.exit_code == 0, result.output
    assert "Requests that named no existing key:" in result.output
    assert any(line.split()[:2] == ["missing", "1"] for line in result.output.splitlines()
               if line.strip())
