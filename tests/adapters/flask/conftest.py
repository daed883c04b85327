"""A Flask app with every kind of route, protected by AQNTAuth."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from flask import Blueprint, Flask, g
from flask.testing import FlaskClient
from flask.views import MethodView, View

from aqnt_auth import Argon2Hasher, KeyManager, MemoryKeyStore
from aqnt_auth.adapters.flask import AQNTAuth, current_api_key

AppFactory = Callable[..., Flask]


def build_app(auth: AQNTAuth, calls: list[str], static: Path, **config: Any) -> Flask:
    """An app with a plain view, a blueprint, class-based views, an async view,
    static files, an exempt view and scoped views; each view records its name."""
    app = Flask(__name__, static_folder=str(static))
    app.config.update(config)

    def who() -> dict[str, Any]:
        principal = g.api_key
        return {"key": None if principal is None else principal.id}

    @app.get("/")
    def index() -> dict[str, Any]:
        calls.append("index")
        return who()

    @app.get("/public")
    @auth.exempt
    def public() -> dict[str, Any]:
        calls.append("public")
        return {"key": current_api_key.id if current_api_key else None}

    @app.get("/slash/")
    def slash() -> str:
        calls.append("slash")
        return "slash"

    @app.get("/async")
    async def async_view() -> dict[str, Any]:
        calls.append("async")
        return who()

    @app.post("/refunds")
    @auth.require_scopes("refunds:write")
    def refunds() -> dict[str, Any]:
        calls.append("refunds")
        return who()

    @app.post("/async-refunds")
    @auth.require_scopes("refunds:write", "refunds:read")
    async def async_refunds() -> dict[str, Any]:
        calls.append("async-refunds")
        return who()

    charges = Blueprint("charges", __name__, url_prefix="/v1/charges")

    @charges.route("", methods=["GET", "POST"])
    def charges_index() -> dict[str, Any]:
        calls.append("charges")
        return who()

    app.register_blueprint(charges)

    class Report(View):
        def dispatch_request(self) -> str:
            calls.append("report")
            return "report"

    @auth.exempt
    class Status(View):
        def dispatch_request(self) -> str:
            calls.append("status")
            return "status"

    @auth.exempt
    class OpenPage(MethodView):
        def get(self) -> str:
            calls.append("open-page")
            return "open"

    class PrivatePage(OpenPage):  # never marked: inherits the code, not the exemption
        def get(self) -> str:
            calls.append("private-page")
            return "private"

    class Items(MethodView):
        decorators = [auth.require_scopes("items:write")]  # noqa: RUF012 - Flask's API

        def get(self) -> str:
            calls.append("items-get")
            return "items"

    app.add_url_rule("/report", view_func=Report.as_view("report"))
    app.add_url_rule("/status", view_func=Status.as_view("status"))
    app.add_url_rule("/items", view_func=Items.as_view("items"))
    app.add_url_rule("/open-page", view_func=OpenPage.as_view("open-page"))
    app.add_url_rule("/private-page", view_func=PrivatePage.as_view("private-page"))
    auth.init_app(app)
    return app


@pytest.fixture
def calls() -> list[str]:
    return []


@pytest.fixture
def static_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "static"
    folder.mkdir()
    (folder / "logo.txt").write_text("logo")
    return folder


@pytest.fixture
def auth() -> AQNTAuth:
    return AQNTAuth()


@pytest.fixture
def make_app(auth: AQNTAuth, calls: list[str], static_dir: Path, memory_store: MemoryKeyStore,
             cheap_hasher: Argon2Hasher) -> AppFactory:
    def make(**config: Any) -> Flask:
        settings: dict[str, Any] = {
            "AQNT_AUTH_STORE": memory_store,
            "AQNT_AUTH_HASHERS": [cheap_hasher],
            "AQNT_AUTH_HASHER": cheap_hasher,
            "AQNT_AUTH_EXEMPT_PATHS": ["/health"],
        }
        settings.update(config)
        return build_app(auth, calls, static_dir, **settings)

    return make


@pytest.fixture
def app(make_app: AppFactory) -> Flask:
    return make_app()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def key(manager: KeyManager) -> str:
    return manager.create("flask key", scopes=["refunds:write"]).key
