"""The ASGI mount in FastAPI (its mount, beside the API-key middleware or an
app-wide APIKey dependency).  Run by the FastAPI nox sessions too."""

from __future__ import annotations

from fastapi import FastAPI
from starlette.testclient import TestClient

from aqnt_auth import Argon2Hasher, KeyManager, MemoryKeyStore
from aqnt_auth.adapters.asgi import APIKeyMiddleware as ASGIMiddleware
from aqnt_auth.console import Console, asgi_app

from ._mounts import PREFIX, check_console, mounted_console  # noqa: F401 (the console fixture)
from .conftest import Keys
from .test_mount_asgi import _asgi_calls


class TestFastAPI:
    def test_fastapi_mount(self, console: Console, keys: Keys, manager: KeyManager,
                           memory_store: MemoryKeyStore, cheap_hasher: Argon2Hasher) -> None:
        api = FastAPI()

        @api.get("/v1/ping")
        def ping() -> dict[str, str]:
            return {"pong": "yes"}

        api.mount(PREFIX, asgi_app(console=console))
        api.add_middleware(ASGIMiddleware, store=memory_store, hashers=[cheap_hasher],
                           exempt_paths=[PREFIX + "/*"])
        with TestClient(api) as client:
            check_console(*_asgi_calls(client), keys, manager, "/v1/ping")

    def test_fastapi_app_wide_dependency(
            self, console: Console, keys: Keys, manager: KeyManager,
            memory_store: MemoryKeyStore, cheap_hasher: Argon2Hasher) -> None:
        """An app-wide APIKey dependency guards the app's routes, not a mount."""
        from fastapi import Depends

        from aqnt_auth.adapters.fastapi import APIKey, add_error_handlers

        api = FastAPI(dependencies=[Depends(APIKey(memory_store, hashers=[cheap_hasher]))])
        add_error_handlers(api)

        @api.get("/v1/ping")
        def ping() -> dict[str, str]:
            return {"pong": "yes"}

        api.mount(PREFIX, asgi_app(console=console))
        with TestClient(api) as client:
            check_console(*_asgi_calls(client), keys, manager, "/v1/ping")
