"""What the mount tests share: the host app's stand-in sign-in, the checks
every mount must pass, and the console fixture (a test module imports
``mounted_console``: its ``console`` replaces conftest's, adding the hook)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from aqnt_auth import Argon2Hasher, KeyManager, MemoryKeyStore
from aqnt_auth.console import Admin, Console, Request

from .conftest import Keys, error

PREFIX = "/keys-admin"


def host_user(request: Request) -> str | Admin | None:
    """The host app's own sign-in, as a test stands it in: a header."""
    user = request.header("x-test-user")
    if user == "reader":
        return Admin("user:reader", False)
    return f"user:{user}" if user else None


def check_console(get: Any, post: Any, keys: Keys, manager: KeyManager,
                   protected: str) -> None:
    """The same checks through any mount: *get(path, headers)* and
    *post(path, body, headers)* return (status, headers, body bytes)."""
    admin = {"authorization": f"Bearer {keys.admin}"}
    # The API under the prefix, with an admin key.
    status, headers, body = get(PREFIX + "/api/keys", admin)
    assert status == 200
    assert headers["cache-control"] == "no-store"
    assert headers["x-content-type-options"] == "nosniff"
    assert {k["id"] for k in json.loads(body)["data"]} == {
        keys.admin_id, keys.read_id, keys.plain_id}
    # Exact error bodies through the mount.
    status, headers, body = get(PREFIX + "/api/keys", {})
    assert (status, json.loads(body)) == (401, error("missing_api_key"))
    status, _, body = get(PREFIX + "/api/keys/nope", admin)
    assert (status, json.loads(body)) == (404, error("key_not_found"))
    # A change with the host app's sign-in (cookie-like: JSON only).
    status, _, body = post(PREFIX + "/api/keys", {"name": "Mounted"},
                           {"x-test-user": "alice"})
    assert status == 201
    created = json.loads(body)
    assert manager.get(created["api_key"]["id"]).name == "Mounted"
    status, _, body = post(PREFIX + "/api/keys", {"name": "No"}, {"x-test-user": "reader"})
    assert (status, json.loads(body)) == (403, error("insufficient_scope"))
    # The new key works on the protected app beside the console.
    status, _, _ = get(protected, {"authorization": f"Bearer {created['key']}"})
    assert status == 200
    status, _, body = get(protected, {})
    assert (status, json.loads(body)) == (401, error("missing_api_key"))
    # Outside the prefix nothing is the console's, and a look-alike prefix
    # is not exempt.
    status, _, body = get(PREFIX + "x/api/keys", {"x-test-user": "alice"})
    assert status in (401, 404)


@pytest.fixture(name="console")
def mounted_console(memory_store: MemoryKeyStore, cheap_hasher: Argon2Hasher,
            keys: Keys) -> Iterator[Console]:
    built = Console(memory_store, secret_key="s" * 32, hashers=[cheap_hasher],
                    hasher=cheap_hasher, authorize=host_user)
    yield built
    built.close()
