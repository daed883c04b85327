"""Fixtures of the console's tests: a memory store holding an admin key, a
read-only admin key and a key with neither console scope, and a console
over it (argon2's cheapest profile; the keys are made at run time)."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from typing import Any

import pytest

from aqnt_auth import Argon2Hasher, KeyManager, MemoryKeyStore
from aqnt_auth.console import Console, Request, Response


@dataclasses.dataclass
class Keys:
    admin: str
    read: str
    plain: str
    admin_id: str
    read_id: str
    plain_id: str


@pytest.fixture
def keys(memory_store: MemoryKeyStore, manager: KeyManager) -> Keys:
    admin = manager.create("Console admin", scopes=["aqnt:admin"])
    read = manager.create("Console reader", scopes=["aqnt:read"])
    plain = manager.create("Billing service", scopes=["charges:write"])
    return Keys(admin.key, read.key, plain.key, admin.record.id, read.record.id,
                plain.record.id)


@pytest.fixture
def console(memory_store: MemoryKeyStore, cheap_hasher: Argon2Hasher,
            keys: Keys) -> Iterator[Console]:
    built = Console(memory_store, secret_key="s" * 32, hashers=[cheap_hasher],
                    hasher=cheap_hasher)
    yield built
    built.close()


def call(console: Console, method: str, path: str, *, key: str | None = None,
         body: Any = None, raw: bytes | None = None, content_type: str | None = None,
         query: str = "", headers: dict[str, str] | None = None) -> Response:
    """One request to *console*, as a mount would hand it over."""
    sent = dict(headers or {})
    if key is not None:
        sent["authorization"] = f"Bearer {key}"
    data = b""
    if body is not None:
        data = json.dumps(body).encode()
        sent["content-type"] = "application/json"
    if raw is not None:
        data = raw
    if content_type is not None:
        sent["content-type"] = content_type
    return console.handle(Request(method, path, query, sent, data, client="127.0.0.1"))


def body_of(response: Response) -> Any:
    return json.loads(response.body)


def error(code: str) -> dict[str, Any]:
    """The exact JSON body of the error with *code*."""
    return {"error": ERRORS[code]}


ERRORS: dict[str, dict[str, str]] = {
    code: {"type": kind, "message": message, "code": code}
    for kind, message, code in (
        ("authentication_error", "No API key provided", "missing_api_key"),
        ("authentication_error", "Invalid API key provided", "invalid_api_key"),
        ("authentication_error", "API key has been revoked", "key_revoked"),
        ("permission_error", "This API key does not have the required permissions",
         "insufficient_scope"),
        ("invalid_request_error", "No such API key", "key_not_found"),
        ("invalid_request_error", "No such page or API route", "not_found"),
        ("invalid_request_error", "Method not allowed for this route", "method_not_allowed"),
        ("invalid_request_error", "The API key cannot be changed in its current state",
         "invalid_key_state"),
        ("invalid_request_error",
         "The request body must be JSON (Content-Type: application/json)",
         "unsupported_media_type"),
        ("rate_limit_error", "Too many failed authentication attempts", "rate_limited"),
    )
}


def invalid(message: str) -> dict[str, Any]:
    """The exact body of a 400 invalid_request saying *message*."""
    return {"error": {"type": "invalid_request_error", "message": message,
                      "code": "invalid_request"}}
