"""Flask benchmark: what AQNTAuth adds to a request, against Flask-HTTPAuth.

Run: ``python benchmarks/bench_flask.py [--repeats N]``.

One Flask app with one route returning "ok", called directly as a WSGI
callable with a prebuilt environ (no server, no socket), in four versions:
bare; Flask-HTTPAuth's ``HTTPTokenAuth(scheme="Bearer")`` with a dict-lookup
``verify_token``; AQNTAuth with a warm key on the memory store; the same on
the SQLite store.  The WSGI middleware in front of the bare app is measured
too.  Every figure is the median µs per request of interleaved repetitions
in this one run; "added" is the median, over rounds, of a variant's time
less the bare app's time in the same round.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from flask import Flask
from flask_httpauth import HTTPTokenAuth  # type: ignore[import-untyped]
from werkzeug.test import EnvironBuilder

from aqnt_auth import KeyManager, MemoryKeyStore, SQLiteKeyStore
from aqnt_auth.adapters.flask import AQNTAuth
from aqnt_auth.adapters.wsgi import APIKeyMiddleware

sys.path.insert(0, os.path.dirname(__file__))
from _util import paired_samples, print_table

if TYPE_CHECKING:
    from _typeshed.wsgi import WSGIApplication


def ok_app() -> Flask:
    app = Flask("bench")

    @app.get("/")
    def index() -> str:
        return "ok"

    return app


def httpauth_app(tokens: dict[str, str]) -> Flask:
    app = Flask("bench")
    auth = HTTPTokenAuth(scheme="Bearer")

    @auth.verify_token  # type: ignore[untyped-decorator]
    def verify_token(token: str) -> str | None:
        return tokens.get(token)

    @app.get("/")
    @auth.login_required  # type: ignore[untyped-decorator]
    def index() -> str:
        return "ok"

    return app


def ours_app(store: Any) -> Flask:
    app = ok_app()
    app.config["AQNT_AUTH_STORE"] = store
    AQNTAuth(app)
    return app


def request(app: WSGIApplication, authorization: str) -> Callable[[], str]:
    """One full request: call the app, drain and close its body; return the status."""
    environ = EnvironBuilder(path="/", headers=[("Authorization", authorization)]).get_environ()
    status = [""]

    def start_response(line: str, headers: Iterable[tuple[str, str]], *exc: Any) -> Any:
        status[0] = line

    def call() -> str:
        body = app(environ.copy(), start_response)
        for _ in body:
            pass
        close = getattr(body, "close", None)
        if close is not None:
            close()
        return status[0]

    return call


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=31, help="interleaved rounds")
    parser.add_argument("--number", type=int, default=500, help="requests per timed pass")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        run(args.repeats, args.number, os.path.join(tmp, "bench.db"))


def run(repeats: int, number: int, sqlite_path: str) -> None:
    memory = MemoryKeyStore()
    sqlite = SQLiteKeyStore(sqlite_path)
    mem_key = KeyManager(memory).create("bench").key
    sql_key = KeyManager(sqlite).create("bench").key
    token = "s3cr3t-token-of-the-same-length-as-a-key-000000000000"

    ours_memory, ours_sqlite = ours_app(memory), ours_app(sqlite)
    middleware = APIKeyMiddleware(ok_app(), memory)
    variants: list[tuple[str, WSGIApplication, str]] = [
        ("bare Flask", ok_app(), f"Bearer {mem_key}"),
        ("Flask-HTTPAuth HTTPTokenAuth", httpauth_app({token: "bench"}), f"Bearer {token}"),
        ("AQNTAuth, memory store", ours_memory, f"Bearer {mem_key}"),
        ("AQNTAuth, SQLite store", ours_sqlite, f"Bearer {sql_key}"),
        ("APIKeyMiddleware (WSGI), memory store", middleware, f"Bearer {mem_key}"),
    ]
    calls: dict[str, Callable[[], object]] = {}
    for name, app, authorization in variants:
        call = request(app, authorization)
        # A warm key: argon2 runs once, here; every timed request hits the cache.
        status = call()
        if status != "200 OK":
            raise SystemExit(f"{name}: expected 200 OK, got {status}")
        calls[name] = call
    samples = paired_samples(calls, repeats, number)

    added = {
        name: statistics.median(a - b for a, b in zip(values, samples["bare Flask"], strict=True))
        for name, values in samples.items()
    }
    httpauth = added["Flask-HTTPAuth HTTPTokenAuth"]
    rows = [("case", "median µs", "added µs", "added / Flask-HTTPAuth's")]
    for name, values in samples.items():
        extra = ("-", "-") if name == "bare Flask" else (
            f"{added[name]:.2f}", f"{added[name] / httpauth:.2f}")
        rows.append((name, f"{statistics.median(values):.2f}", *extra))
    print_table(
        f"Flask request: WSGI call with a prebuilt environ; median of {repeats} "
        f"interleaved rounds (each the best of 3 passes of {number} requests); "
        f"added = median of per-round differences from bare Flask",
        rows,
    )
    for name in ("AQNTAuth, memory store", "AQNTAuth, SQLite store"):
        ratio = added[name] / httpauth
        print(f"  target {name}: added <= Flask-HTTPAuth's added: {ratio:.2f} "
              f"{'MET' if ratio <= 1.0 else 'MISSED'}")
    # Write the usage counts while the SQLite file still exists.
    for app in (ours_memory, ours_sqlite):
        app.extensions["aqnt_auth"].close(app)
    middleware.close()


if __name__ == "__main__":
    main()
