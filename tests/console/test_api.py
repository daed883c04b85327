"""The JSON API under /api/: every route with every kind of credential, the
validation of bodies and parameters (exact error bodies), state conflicts,
and every answer checked against the console's own OpenAPI document."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from openapi_spec_validator import validate

from aqnt_auth import Argon2Hasher, KeyManager, MemoryKeyStore, SQLiteKeyStore
from aqnt_auth.console import Console, Response
from aqnt_auth.console._openapi import document
from tests.forged import wrong_secret

from .conftest import Keys, body_of, call, error, invalid

DOC = document()
UTC = dt.timezone.utc


def _operation(path: str, method: str) -> dict[str, Any] | None:
    for template, item in DOC["paths"].items():
        pattern = re.sub(r"\\\{(\w+)\\\}", r"[^/]+", re.escape(template))
        if re.fullmatch(pattern, path) and method.lower() in item:
            op: dict[str, Any] = item[method.lower()]
            return op
    return None


def conforms(method: str, path: str, response: Response) -> None:
    """*response* is documented for the operation, and its body fits the schema."""
    op = _operation(path, method)
    assert op is not None, f"{method} {path} is not documented"
    documented = op["responses"].get(str(response.status))
    assert documented is not None, f"{method} {path}: {response.status} is not documented"
    if "$ref" in documented:
        documented = DOC["components"]["responses"][documented["$ref"].rsplit("/", 1)[1]]
    schema = documented["content"]["application/json"]["schema"]
    jsonschema.validate(json.loads(response.body),
                        {"$schema": "https://json-schema.org/draft/2020-12/schema",
                         "components": DOC["components"], **schema})
    assert response.header("Cache-Control") == "no-store"
    assert response.header("X-Content-Type-Options") == "nosniff"


def api(console: Console, method: str, path: str, **kwargs: Any) -> Response:
    response = call(console, method, path, **kwargs)
    conforms(method, path, response)
    return response


class TestPermissions:
    """Every route, with no credential, an invalid key, a key with neither
    console scope, a read-only admin key and an admin key."""

    @staticmethod
    def routes(keys: Keys) -> list[tuple[str, str, Any, int]]:
        target = keys.plain_id
        return [
            ("GET", "/api/keys", None, 200),
            ("GET", "/api/audit", None, 200),
            ("GET", f"/api/keys/{target}/audit", None, 200),
            ("GET", "/api/hygiene", None, 200),
            ("GET", "/api/usage", None, 200),
            ("GET", f"/api/keys/{target}/usage", None, 200),
            ("POST", "/api/keys", {"name": "New"}, 201),
            ("GET", f"/api/keys/{target}", None, 200),
            ("PATCH", f"/api/keys/{target}", {"name": "Renamed"}, 200),
            ("POST", f"/api/keys/{target}/disable", None, 200),
            ("POST", f"/api/keys/{target}/enable", None, 200),
            ("POST", f"/api/keys/{target}/rotate", {"grace": "1h"}, 201),
            ("POST", f"/api/keys/{target}/revoke", None, 200),
        ]

    def test_no_credential(self, console: Console, keys: Keys) -> None:
        for method, path, body, _ in self.routes(keys):
            response = api(console, method, path, body=body)
            assert (response.status, body_of(response)) == (401, error("missing_api_key"))

    def test_invalid_key(self, console: Console, keys: Keys) -> None:
        for method, path, body, _ in self.routes(keys):
            response = api(console, method, path, body=body, key="sk_live_" + "x" * 50)
            assert (response.status, body_of(response)) == (401, error("invalid_api_key"))

    def test_key_without_console_scope(self, console: Console, keys: Keys) -> None:
        for method, path, body, _ in self.routes(keys):
            response = api(console, method, path, body=body, key=keys.plain)
            assert (response.status, body_of(response)) == (403, error("insufficient_scope"))

    def test_read_only_admin(self, console: Console, keys: Keys) -> None:
        for method, path, body, ok in self.routes(keys):
            response = api(console, method, path, body=body, key=keys.read)
            if method == "GET":
                assert response.status == ok
            else:
                assert (response.status, body_of(response)) == (
                    403, error("insufficient_scope"))
        assert console.manager.get(keys.plain_id).name == "Billing service"

    def test_admin(self, console: Console, keys: Keys) -> None:
        for method, path, body, ok in self.routes(keys):
            response = api(console, method, path, body=body, key=keys.admin)
            assert response.status == ok, (method, path, response.body)
        assert console.manager.get(keys.plain_id).revoked_at is not None

    def test_openapi_is_public(self, console: Console) -> None:
        response = call(console, "GET", "/api/openapi.json")
        assert response.status == 200
        assert body_of(response)["paths"].keys() == DOC["paths"].keys()
        assert response.header("Cache-Control") == "no-store"


class TestList:
    @pytest.fixture
    def more(self, console: Console) -> dict[str, str]:
        m = console.manager
        ids = {
            "test": m.create("Sandbox", mode="test", owner="acct_2").record.id,
            "revoked": m.create("Old", owner="acct_1").record.id,
            "disabled": m.create("Paused", owner="acct_1").record.id,
            "expiring": m.create("Temp", expires_in=dt.timedelta(days=1)).record.id,
        }
        m.revoke(ids["revoked"])
        m.disable(ids["disabled"])
        return ids

    def _ids(self, console: Console, keys: Keys, query: str) -> set[str]:
        response = api(console, "GET", "/api/keys", key=keys.read, query=query)
        assert response.status == 200, response.body
        data = body_of(response)
        assert data["count"] == len(data["data"])
        return {k["id"] for k in data["data"]}

    def test_all(self, console: Console, keys: Keys, more: dict[str, str]) -> None:
        assert self._ids(console, keys, "") == {keys.admin_id, keys.read_id, keys.plain_id,
                                                *more.values()}

    def test_filters(self, console: Console, keys: Keys, more: dict[str, str]) -> None:
        assert self._ids(console, keys, "status=revoked") == {more["revoked"]}
        assert self._ids(console, keys, "status=disabled,expiring") == {
            more["disabled"], more["expiring"]}
        assert self._ids(console, keys, "status=active&status=revoked") == {
            keys.admin_id, keys.read_id, keys.plain_id, more["test"], more["revoked"]}
        assert self._ids(console, keys, "mode=test") == {more["test"]}
        assert self._ids(console, keys, "owner=acct_1") == {more["revoked"], more["disabled"]}
        assert self._ids(console, keys, "q=BILLING") == {keys.plain_id}
        assert self._ids(console, keys, f"q={keys.plain_id[:6]}") == {keys.plain_id}
        assert self._ids(console, keys, "status=due_for_rotation") == set()

    def test_due_for_rotation(self, console: Console, keys: Keys,
                              memory_store: MemoryKeyStore) -> None:
        import dataclasses

        record = memory_store.get(keys.plain_id)
        assert record is not None
        old = dataclasses.replace(record, id="OldKey000001", name="Ancient",
                                  created_at=record.created_at - dt.timedelta(days=91))
        memory_store.add(old)
        assert self._ids(console, keys, "status=due_for_rotation") == {"OldKey000001"}
        listed = body_of(api(console, "GET", "/api/keys", key=keys.read, query="q=Ancient"))
        assert listed["data"][0]["due_for_rotation"] is True

    @pytest.mark.parametrize(("query", "message"), [
        ("status=gone", "Query parameter 'status' must be one or more of active, expiring, "
                        "expired, revoked, disabled, due_for_rotation"),
        ("mode=prod", "Query parameter 'mode' must be live or test"),
        ("limit=3", "Unknown query parameter 'limit'"),
        ("a%20b=1", "Unknown query parameter: use status, mode, owner or q"),
    ])
    def test_bad_query(self, console: Console, keys: Keys, query: str, message: str) -> None:
        response = api(console, "GET", "/api/keys", key=keys.read, query=query)
        assert (response.status, body_of(response)) == (400, invalid(message))


class TestCreate:
    def test_every_field(self, console: Console, keys: Keys) -> None:
        body = {"name": "Reporting", "mode": "test", "scopes": ["reports:read"],
                "read_only": True, "allowed_paths": ["/v1/reports"],
                "allowed_ips": ["10.0.0.0/8"], "expires_at": "2099-01-31T12:00:00Z",
                "owner": "acct_9", "metadata": {"team": "data"}}
        response = api(console, "POST", "/api/keys", key=keys.admin, body=body)
        assert response.status == 201
        created = body_of(response)
        assert created["key"].startswith("sk_test_")
        record = created["api_key"]
        assert {k: record[k] for k in body if k != "expires_at"} == {
            k: v for k, v in body.items() if k != "expires_at"}
        assert record["expires_at"] == "2099-01-31T12:00:00+00:00"
        assert record["status"] == "expiring"
        assert "hash" not in record
        assert console.authenticator.authenticate(
            f"Bearer {created['key']}", client="10.1.2.3").id == record["id"]

    def test_expires_in(self, console: Console, keys: Keys) -> None:
        for value in ("30d", 3600):
            response = api(console, "POST", "/api/keys", key=keys.admin,
                           body={"name": "Temp", "expires_in": value})
            record = body_of(response)["api_key"]
            expires = dt.datetime.fromisoformat(record["expires_at"])
            created = dt.datetime.fromisoformat(record["created_at"])
            assert expires - created == (dt.timedelta(days=30) if value == "30d"
                                         else dt.timedelta(hours=1))

    @pytest.mark.parametrize(("body", "message"), [
        ({}, "Field 'name' must be a non-empty string"),
        ({"name": " "}, "Field 'name' must be a non-empty string"),
        ({"name": 3}, "Field 'name' must be a non-empty string"),
        ({"name": "x", "mode": "prod"}, "Field 'mode' must be 'live' or 'test'"),
        ({"name": "x", "scopes": "a"}, "Field 'scopes' must be a list of strings"),
        ({"name": "x", "scopes": [1]}, "Field 'scopes' must be a list of strings"),
        ({"name": "x", "read_only": "yes"}, "Field 'read_only' must be true or false"),
        ({"name": "x", "owner": ""}, "Field 'owner' must be a non-empty string or null"),
        ({"name": "x", "metadata": []}, "Field 'metadata' must be a JSON object"),
        ({"name": "x", "expires_at": "tomorrow"},
         "Field 'expires_at' must be an ISO 8601 time with a UTC offset (2030-01-31T12:00:00Z)"),
        ({"name": "x", "expires_at": "2099-01-01T00:00:00"},
         "Field 'expires_at' must be an ISO 8601 time with a UTC offset (2030-01-31T12:00:00Z)"),
        ({"name": "x", "expires_in": "soon"},
         "Field 'expires_in' must be a duration: seconds, or a number and a unit "
         "(90d, 24h, 30m, 45s, 2w)"),
        ({"name": "x", "expires_in": -1},
         "Field 'expires_in' must be a duration: seconds, or a number and a unit "
         "(90d, 24h, 30m, 45s, 2w)"),
        ({"name": "x", "expires_in": True},
         "Field 'expires_in' must be a duration: seconds, or a number and a unit "
         "(90d, 24h, 30m, 45s, 2w)"),
        ({"name": "x", "expires_in": "1d", "expires_at": "2099-01-01T00:00:00Z"},
         "Give expires_at or expires_in, not both"),
        ({"name": "x", "scopes": ["two words"]},
         "Scope 'two words' must be non-empty printable ASCII without spaces or quotes"),
        ({"name": "x", "allowed_paths": ["v1"]}, "Path 'v1' must start with '/'"),
        ({"name": "x", "hash": "a"}, "Unknown field 'hash'"),
        ({"name": "x", "zz": 1, "key": "a"}, "Unknown fields 'key', 'zz'"),
        ({"name": "x", "bad field": 1}, "The body has unknown fields"),
    ])
    def test_invalid(self, console: Console, keys: Keys, body: dict[str, Any],
                     message: str) -> None:
        before = len(console.manager.list())
        response = api(console, "POST", "/api/keys", key=keys.admin, body=body)
        assert (response.status, body_of(response)) == (400, invalid(message))
        assert len(console.manager.list()) == before

    @pytest.mark.parametrize(("raw", "message"), [
        (b"{", "The body is not valid JSON"),
        (b"\xff", "The body is not valid JSON"),
        (b"[]", "The body must be a JSON object"),
        (b'"name"', "The body must be a JSON object"),
    ])
    def test_not_a_json_object(self, console: Console, keys: Keys, raw: bytes,
                               message: str) -> None:
        response = api(console, "POST", "/api/keys", key=keys.admin, raw=raw,
                       content_type="application/json")
        assert (response.status, body_of(response)) == (400, invalid(message))

    def test_not_json(self, console: Console, keys: Keys) -> None:
        response = api(console, "POST", "/api/keys", key=keys.admin, raw=b"name=x",
                       content_type="application/x-www-form-urlencoded")
        assert (response.status, body_of(response)) == (415, error("unsupported_media_type"))

    def test_body_too_large(self, console: Console, keys: Keys) -> None:
        raw = json.dumps({"name": "x", "metadata": {"a": "b" * 70000}}).encode()
        response = api(console, "POST", "/api/keys", key=keys.admin, raw=raw,
                       content_type="application/json")
        assert (response.status, body_of(response)) == (
            400, invalid("The body must be at most 65536 bytes"))

    def test_a_pasted_key_is_not_echoed(self, console: Console, keys: Keys) -> None:
        """A key pasted into a field the manager refuses is not in the answer."""
        response = api(console, "POST", "/api/keys", key=keys.admin,
                       body={"name": "x", "scopes": [f"a {keys.admin}"]})
        assert (response.status, body_of(response)) == (400, invalid("A value is invalid"))
        assert keys.admin.encode() not in response.body


class TestDetail:
    def test_detail_and_rotation_chain(self, console: Console, keys: Keys) -> None:
        rotated = body_of(api(console, "POST", f"/api/keys/{keys.plain_id}/rotate",
                              key=keys.admin, body={"grace": "1h"}))
        old = body_of(api(console, "GET", f"/api/keys/{keys.plain_id}", key=keys.read))
        assert old["rotated_to"] == [rotated["api_key"]["id"]]
        assert old["status"] == "expiring"
        new = body_of(api(console, "GET", f"/api/keys/{rotated['api_key']['id']}",
                          key=keys.read))
        assert (new["rotated_from"], new["rotated_to"]) == (keys.plain_id, [])
        assert "key" not in new

    def test_unknown(self, console: Console, keys: Keys) -> None:
        response = api(console, "GET", "/api/keys/NoSuchKey123", key=keys.read)
        assert (response.status, body_of(response)) == (404, error("key_not_found"))

    def test_a_whole_key_in_the_path(self, console: Console, keys: Keys) -> None:
        response = api(console, "GET", f"/api/keys/{keys.plain}", key=keys.read)
        assert response.status == 404
        assert body_of(response) == {"error": {"type": "invalid_request_error",
                                               "message": "No such API key",
                                               "code": "not_a_key_id"}}
        assert keys.plain.encode() not in response.body


class TestUpdate:
    def test_fields(self, console: Console, keys: Keys) -> None:
        response = api(console, "PATCH", f"/api/keys/{keys.plain_id}", key=keys.admin,
                       body={"name": "Billing v2", "scopes": ["a", "b"],
                             "allowed_ips": ["192.0.2.1"]})
        record = body_of(response)
        assert (record["name"], record["scopes"], record["allowed_ips"]) == (
            "Billing v2", ["a", "b"], ["192.0.2.1"])
        cleared = body_of(api(console, "PATCH", f"/api/keys/{keys.plain_id}", key=keys.admin,
                              body={"allowed_ips": []}))
        assert cleared["allowed_ips"] == []

    def test_expiry_moves_earlier_only(self, console: Console, keys: Keys) -> None:
        path = f"/api/keys/{keys.plain_id}"
        soon = (dt.datetime.now(UTC) + dt.timedelta(days=2)).replace(microsecond=0)
        record = body_of(api(console, "PATCH", path, key=keys.admin,
                             body={"expires_at": soon.isoformat()}))
        assert dt.datetime.fromisoformat(record["expires_at"]) == soon
        later = (soon + dt.timedelta(days=1)).isoformat()
        response = api(console, "PATCH", path, key=keys.admin, body={"expires_at": later})
        assert (response.status, body_of(response)) == (409, error("invalid_key_state"))

    def test_empty(self, console: Console, keys: Keys) -> None:
        response = api(console, "PATCH", f"/api/keys/{keys.plain_id}", key=keys.admin,
                       body={})
        assert (response.status, body_of(response)) == (
            400, invalid("Give at least one of: allowed_ips, expires_at, name, quota, "
                         "quota_refill, rate_limits, scopes, shared_limit"))

    @pytest.mark.parametrize(("body", "message"), [
        ({"mode": "test"}, "Unknown field 'mode'"),
        ({"name": ""}, "Field 'name' must be a non-empty string"),
        ({"allowed_ips": ["not an ip"]}, None),
        ({"expires_at": None},
         "Field 'expires_at' must be an ISO 8601 time with a UTC offset (2030-01-31T12:00:00Z)"),
    ])
    def test_invalid(self, console: Console, keys: Keys, body: dict[str, Any],
                     message: str | None) -> None:
        response = api(console, "PATCH", f"/api/keys/{keys.plain_id}", key=keys.admin,
                       body=body)
        assert response.status == 400
        if message is not None:
            assert body_of(response) == invalid(message)
        else:
            assert body_of(response)["error"]["code"] == "invalid_request"
        assert console.manager.get(keys.plain_id).name == "Billing service"

    def test_revoked(self, console: Console, keys: Keys) -> None:
        console.manager.revoke(keys.plain_id)
        response = api(console, "PATCH", f"/api/keys/{keys.plain_id}", key=keys.admin,
                       body={"name": "Again"})
        assert (response.status, body_of(response)) == (409, error("invalid_key_state"))

    def test_unknown(self, console: Console, keys: Keys) -> None:
        response = api(console, "PATCH", "/api/keys/NoSuchKey123", key=keys.admin,
                       body={"name": "x"})
        assert (response.status, body_of(response)) == (404, error("key_not_found"))


class TestRotate:
    def test_grace(self, console: Console, keys: Keys) -> None:
        response = api(console, "POST", f"/api/keys/{keys.plain_id}/rotate", key=keys.admin,
                       body={"grace": 600})
        out = body_of(response)
        assert out["api_key"]["rotated_from"] == keys.plain_id
        old_ends = dt.datetime.fromisoformat(out["rotated_from"]["expires_at"])
        new_created = dt.datetime.fromisoformat(out["api_key"]["created_at"])
        assert old_ends - new_created == dt.timedelta(seconds=600)
        # Both keys work during the grace period.
        for key in (keys.plain, out["key"]):
            console.authenticator.authenticate(f"Bearer {key}")

    def test_without_body_ends_the_old_key(self, console: Console, keys: Keys) -> None:
        out = body_of(api(console, "POST", f"/api/keys/{keys.plain_id}/rotate",
                          key=keys.admin))
        assert out["rotated_from"]["status"] == "expired"

    def test_twice_needs_force(self, console: Console, keys: Keys) -> None:
        path = f"/api/keys/{keys.plain_id}/rotate"
        api(console, "POST", path, key=keys.admin, body={"grace": "1d"})
        again = api(console, "POST", path, key=keys.admin, body={"grace": "1d"})
        assert (again.status, body_of(again)) == (409, error("invalid_key_state"))
        forced = api(console, "POST", path, key=keys.admin, body={"grace": "1h", "force": True})
        assert forced.status == 201

    @pytest.mark.parametrize(("body", "message"), [
        ({"grace": "-1h"}, "Field 'grace' must be a duration: seconds, or a number and a "
                           "unit (90d, 24h, 30m, 45s, 2w)"),
        ({"force": 1}, "Field 'force' must be true or false"),
        ({"name": "x"}, "Unknown field 'name'"),
    ])
    def test_invalid(self, console: Console, keys: Keys, body: dict[str, Any],
                     message: str) -> None:
        response = api(console, "POST", f"/api/keys/{keys.plain_id}/rotate", key=keys.admin,
                       body=body)
        assert (response.status, body_of(response)) == (400, invalid(message))

    def test_revoked(self, console: Console, keys: Keys) -> None:
        console.manager.revoke(keys.plain_id)
        response = api(console, "POST", f"/api/keys/{keys.plain_id}/rotate", key=keys.admin)
        assert (response.status, body_of(response)) == (409, error("invalid_key_state"))


class TestActions:
    def test_disable_enable_revoke(self, console: Console, keys: Keys) -> None:
        path = f"/api/keys/{keys.plain_id}"
        assert body_of(api(console, "POST", path + "/disable", key=keys.admin)
                       )["status"] == "disabled"
        with pytest.raises(Exception, match="disabled"):
            console.authenticator.authenticate(f"Bearer {keys.plain}")
        assert body_of(api(console, "POST", path + "/enable", key=keys.admin,
                           body={}))["status"] == "active"
        console.authenticator.authenticate(f"Bearer {keys.plain}")
        first = body_of(api(console, "POST", path + "/revoke", key=keys.admin))
        assert first["status"] == "revoked"
        again = body_of(api(console, "POST", path + "/revoke", key=keys.admin))
        assert again["revoked_at"] == first["revoked_at"]
        for action in ("enable", "disable"):
            response = api(console, "POST", f"{path}/{action}", key=keys.admin)
            assert (response.status, body_of(response)) == (409, error("invalid_key_state"))

    def test_unknown(self, console: Console, keys: Keys) -> None:
        for action in ("revoke", "disable", "enable", "rotate"):
            response = api(console, "POST", f"/api/keys/NoSuchKey123/{action}", key=keys.admin)
            assert (response.status, body_of(response)) == (404, error("key_not_found"))

    def test_body_must_be_empty(self, console: Console, keys: Keys) -> None:
        response = api(console, "POST", f"/api/keys/{keys.plain_id}/revoke", key=keys.admin,
                       body={"reason": "leaked"})
        assert (response.status, body_of(response)) == (400, invalid("Unknown field 'reason'"))
        assert console.manager.get(keys.plain_id).revoked_at is None


class TestOpenAPI:
    def test_valid(self) -> None:
        validate(document("/keys-admin"))

    def test_every_route_is_documented(self, console: Console) -> None:
        served = {(route.pattern, method.lower()) for route in console.router.routes
                  if route.pattern.startswith("/api/") for method in route.views}
        documented = {(path, method) for path, item in DOC["paths"].items()
                      for method in item}
        assert served == documented

    def test_every_protected_operation_documents_its_errors(self) -> None:
        for path, item in DOC["paths"].items():
            for method, op in item.items():
                if op.get("security") == []:
                    continue
                assert {"401", "403", "429", "503"} <= op["responses"].keys(), (path, method)
                if method != "get" or "{id}" in path:
                    assert ("404" in op["responses"]) == ("{id}" in path), (path, method)
                if "requestBody" in op or method in ("post", "patch"):
                    assert {"400", "415"} <= op["responses"].keys(), (path, method)

    def test_server_is_the_mount_point(self, console: Console) -> None:
        from aqnt_auth.console import Request

        response = console.handle(Request("GET", "/api/openapi.json", root_path="/keys-admin"))
        assert body_of(response)["servers"] == [
            {"url": "/keys-admin", "description": "The console's mount point."}]


class TestNoPlaintext:
    """A new key appears in the answer that issued it and nowhere else: not
    in the store's rows (SQLite file, every PostgreSQL table), the logs, or
    any other answer."""

    @pytest.fixture(params=["sqlite", "postgresql"])
    def stored(self, request: pytest.FixtureRequest, tmp_path: Path,
               cheap_hasher: Argon2Hasher) -> Iterator[tuple[Console, str, Callable[[], str]]]:
        if request.param == "sqlite":
            path = tmp_path / "keys.db"
            store: Any = SQLiteKeyStore(path)

            def dump() -> str:
                return b"".join(p.read_bytes() for p in tmp_path.iterdir()
                                if p.is_file()).decode("latin-1")
            schema = None
        else:
            from tests.stores.pg_support import pg_schema_fixture

            schemas = pg_schema_fixture()
            schema = next(schemas)
            from aqnt_auth.sql import SQLAlchemyKeyStore

            store = SQLAlchemyKeyStore(schema.url())

            def dump() -> str:
                assert schema is not None
                tables = schema.execute(
                    "SELECT table_name FROM information_schema.tables WHERE table_schema = %s",
                    (schema.name,))
                assert len(tables) >= 3  # keys, audit log, usage history
                return "\n".join(
                    str(row[0]) for (table,) in tables for row in schema.execute(
                        f'SELECT row_to_json(t)::text FROM "{table}" t'))  # noqa: S608
        admin = KeyManager(store, hasher=cheap_hasher).create("Admin", scopes=["aqnt:admin"])
        console = Console(store, secret_key="s" * 32, hashers=[cheap_hasher],
                          hasher=cheap_hasher)
        yield console, admin.key, dump
        console.close()
        if schema is not None:
            with contextlib.suppress(StopIteration):
                next(schemas)

    def test_scan(self, stored: tuple[Console, str, Callable[[], str]],
                  caplog: pytest.LogCaptureFixture) -> None:
        console, admin, dump = stored
        caplog.set_level(logging.DEBUG)
        created = call(console, "POST", "/api/keys", key=admin, body={"name": "Secret"})
        issued = body_of(created)
        new_key, key_id = issued["key"], issued["api_key"]["id"]
        assert created.header("Cache-Control") == "no-store"
        rotated = body_of(call(console, "POST", f"/api/keys/{key_id}/rotate", key=admin,
                               body={"grace": "1h"}))
        console.authenticator.authenticate(f"Bearer {new_key}", method="GET", path="/v1/x",
                                           client="192.0.2.1")
        answers = [
            call(console, "GET", "/api/keys", key=admin),
            call(console, "GET", f"/api/keys/{key_id}", key=admin),
            call(console, "PATCH", f"/api/keys/{key_id}", key=admin, body={"name": "S2"}),
            call(console, "POST", f"/api/keys/{key_id}/disable", key=admin),
            call(console, "POST", f"/api/keys/{key_id}/revoke", key=admin),
            call(console, "GET", f"/api/keys/{new_key}", key=admin),
            call(console, "GET", "/api/keys", key=f"{new_key}x"),
            call(console, "GET", "/api/audit", key=admin),
        ]
        console.authenticator.flush_usage()
        answers += [call(console, "GET", f"/api/keys/{key_id}/usage", key=admin),
                    call(console, "GET", "/api/usage", key=admin)]
        assert body_of(answers[-2])["totals"]["valid"] == 1
        secrets = [new_key, rotated["key"], new_key[-38:], rotated["key"][-38:], admin]
        rows = dump()
        assert key_id in rows  # the dump does hold the store's rows
        record = console.manager.get(key_id)
        for secret in secrets:
            assert secret not in rows
            assert secret not in caplog.text
            for answer in answers:
                assert secret.encode() not in answer.body
                assert all(secret not in v for _, v in answer.headers)
        for answer in answers:
            assert record.hash.encode() not in answer.body
        assert record.hash not in caplog.text


class TestQuota:
    def test_create_and_change(self, console: Console, keys: Keys) -> None:
        created = body_of(api(console, "POST", "/api/keys", key=keys.admin,
                              body={"name": "Metered", "quota_refill": "100/day"}))
        record = created["api_key"]
        assert (record["quota_remaining"], record["quota_refill"]) == (100, "100/day")
        path = f"/api/keys/{record['id']}"
        changed = body_of(api(console, "PATCH", path, key=keys.admin, body={"quota": 5}))
        assert (changed["quota_remaining"], changed["quota_refill"]) == (5, "100/day")
        cleared = body_of(api(console, "PATCH", path, key=keys.admin, body={"quota": None}))
        assert (cleared["quota_remaining"], cleared["quota_refill"]) == (None, None)

    @pytest.mark.parametrize(("body", "message"), [
        ({"quota": -1}, "Field 'quota' must be a whole number, 0 or more"),
        ({"quota": "5"}, "Field 'quota' must be a whole number, 0 or more"),
        ({"quota": None, "quota_refill": "1/day"},
         'Give a quota or remove it ("quota": null), not both'),
        ({"quota_refill": None},
         "Field 'quota_refill' must be a non-empty string: remove the quota with "
         '"quota": null'),
    ])
    def test_invalid(self, console: Console, keys: Keys, body: dict[str, Any],
                     message: str) -> None:
        response = api(console, "PATCH", f"/api/keys/{keys.plain_id}", key=keys.admin,
                       body=body)
        assert (response.status, body_of(response)) == (400, invalid(message))

    def test_bad_refill(self, console: Console, keys: Keys) -> None:
        response = api(console, "POST", "/api/keys", key=keys.admin,
                       body={"name": "x", "quota_refill": "lots"})
        assert response.status == 400
        assert body_of(response)["error"]["code"] == "invalid_request"


class TestAudit:
    def test_changes_name_the_admin(self, console: Console, keys: Keys) -> None:
        path = f"/api/keys/{keys.plain_id}"
        api(console, "PATCH", path, key=keys.admin, body={"name": "Billing v2"})
        api(console, "POST", path + "/disable", key=keys.admin)
        entries = body_of(api(console, "GET", path + "/audit", key=keys.read))["data"]
        assert [(e["event"], e["actor"]) for e in entries] == [
            ("disabled", f"key:{keys.admin_id}"), ("updated", f"key:{keys.admin_id}"),
            ("created", None)]
        assert (entries[1]["old"], entries[1]["new"]) == (
            {"name": "Billing service"}, {"name": "Billing v2"})

    def test_create_and_rotate(self, console: Console, keys: Keys) -> None:
        created = body_of(api(console, "POST", "/api/keys", key=keys.admin,
                              body={"name": "Audited"}))
        new_id = created["api_key"]["id"]
        rotated = body_of(api(console, "POST", f"/api/keys/{new_id}/rotate", key=keys.admin,
                              body={"grace": "1h"}))
        everything = body_of(api(console, "GET", "/api/audit", key=keys.read))
        events = [(e["event"], e["key_id"], e["related_key_id"]) for e in everything["data"]]
        successor = rotated["api_key"]["id"]
        assert ("created", new_id, None) in events
        assert ("rotated", new_id, successor) in events
        assert ("created", successor, new_id) in events
        assert all(e["actor"] == f"key:{keys.admin_id}" for e in everything["data"]
                   if e["key_id"] in (new_id, successor))
        text = json.dumps(everything)
        assert created["key"] not in text
        assert rotated["key"] not in text

    def test_hook_actor(self, memory_store: MemoryKeyStore, cheap_hasher: Argon2Hasher,
                        keys: Keys) -> None:
        console = Console(memory_store, secret_key="s" * 32, hashers=[cheap_hasher],
                          hasher=cheap_hasher, authorize=lambda r: "user:alice")
        api(console, "POST", f"/api/keys/{keys.plain_id}/revoke",
            content_type="application/json")
        (entry, *_) = body_of(api(console, "GET", f"/api/keys/{keys.plain_id}/audit"))["data"]
        assert (entry["event"], entry["actor"]) == ("revoked", "user:alice")
        console.close()

    def test_filters(self, console: Console, keys: Keys) -> None:
        for name in ("a", "b", "c"):
            api(console, "PATCH", f"/api/keys/{keys.plain_id}", key=keys.admin,
                body={"name": name})
        path = f"/api/keys/{keys.plain_id}/audit"
        data = body_of(api(console, "GET", path, key=keys.read, query="limit=2"))
        assert [e["new"]["name"] for e in data["data"]] == ["c", "b"]
        assert data["count"] == 2
        middle = data["data"][1]["at"]
        since = api(console, "GET", path, key=keys.read,
                    query="since=" + middle.replace("+", "%2B"))
        assert [e["new"]["name"] for e in body_of(since)["data"]] == ["c", "b"]
        unencoded = api(console, "GET", path, key=keys.read, query="until=" + middle)
        assert [e["event"] for e in body_of(unencoded)["data"]] == ["updated", "created"]

    def test_deleted_key_keeps_its_entries(self, console: Console, keys: Keys) -> None:
        console.manager.delete(keys.plain_id)
        data = body_of(api(console, "GET", f"/api/keys/{keys.plain_id}/audit", key=keys.read))
        assert [e["event"] for e in data["data"]] == ["deleted", "created"]

    def test_unknown_key(self, console: Console, keys: Keys) -> None:
        response = api(console, "GET", "/api/keys/NoSuchKey123/audit", key=keys.read)
        assert (response.status, body_of(response)) == (404, error("key_not_found"))

    @pytest.mark.parametrize(("query", "message"), [
        ("limit=0", "Query parameter 'limit' must be 1 to 1000"),
        ("limit=1001", "Query parameter 'limit' must be 1 to 1000"),
        ("limit=x", "Query parameter 'limit' must be 1 to 1000"),
        ("since=yesterday", "Query parameter 'since' must be an ISO 8601 time with a UTC "
                            "offset (2030-01-31T12:00:00Z)"),
        ("until=2030-01-01T00:00:00", "Query parameter 'until' must be an ISO 8601 time "
                                      "with a UTC offset (2030-01-31T12:00:00Z)"),
        ("key_id=x", "Unknown query parameter 'key_id'"),
    ])
    def test_bad_query(self, console: Console, keys: Keys, query: str, message: str) -> None:
        for path in ("/api/audit", f"/api/keys/{keys.plain_id}/audit"):
            response = api(console, "GET", path, key=keys.read, query=query)
            assert (response.status, body_of(response)) == (400, invalid(message))


class TestHygiene:
    def test_findings(self, console: Console, keys: Keys,
                      memory_store: MemoryKeyStore) -> None:
        import dataclasses

        m = console.manager
        fenced = m.create("Fenced", allowed_ips=["10.0.0.0/8"],
                          expires_in=dt.timedelta(days=30)).record.id
        m.revoke(m.create("Gone").record.id)
        record = memory_store.get(keys.plain_id)
        assert record is not None
        memory_store.add(dataclasses.replace(
            record, id="OldKey000001", name="Ancient",
            created_at=record.created_at - dt.timedelta(days=120)))
        data = body_of(api(console, "GET", "/api/hygiene", key=keys.read))
        ids = {name: {k["id"] for k in data[name]} for name in
               ("never_expire", "idle", "live_without_allowlist", "due_for_rotation")}
        live = {keys.admin_id, keys.read_id, keys.plain_id, "OldKey000001"}
        assert ids == {"never_expire": live, "idle": {"OldKey000001"},
                       "live_without_allowlist": live, "due_for_rotation": {"OldKey000001"}}
        assert fenced not in set().union(*ids.values())

    def test_no_query(self, console: Console, keys: Keys) -> None:
        response = api(console, "GET", "/api/hygiene", key=keys.read, query="x=1")
        assert (response.status, body_of(response)) == (
            400, invalid("This route takes no query parameters"))


class TestRateLimits:
    def test_create_change_clear(self, console: Console, keys: Keys) -> None:
        created = body_of(api(console, "POST", "/api/keys", key=keys.admin,
                              body={"name": "Limited", "owner": "acct_1",
                                    "rate_limits": ["100/minute"], "shared_limit": True}))
        record = created["api_key"]
        assert (record["rate_limits"], record["rate_limit_shared"]) == (["100/minute"], True)
        path = f"/api/keys/{record['id']}"
        changed = body_of(api(console, "PATCH", path, key=keys.admin,
                              body={"rate_limits": ["5/second", "1000/day"],
                                    "shared_limit": False}))
        assert (changed["rate_limits"], changed["rate_limit_shared"]) == (
            ["5/second", "1000/day"], False)
        clears: list[list[str] | None] = [None, []]
        for clear in clears:
            api(console, "PATCH", path, key=keys.admin, body={"rate_limits": ["1/second"]})
            cleared = body_of(api(console, "PATCH", path, key=keys.admin,
                                  body={"rate_limits": clear}))
            assert cleared["rate_limits"] == []

    @pytest.mark.parametrize(("body", "message"), [
        ({"rate_limits": "100/minute"}, "Field 'rate_limits' must be a list of strings"),
        ({"shared_limit": "yes"}, "Field 'shared_limit' must be true or false"),
        ({"shared_limit": True}, "A rate limit shared per owner needs a key with an owner"),
    ])
    def test_invalid(self, console: Console, keys: Keys, body: dict[str, Any],
                     message: str) -> None:
        response = api(console, "POST", "/api/keys", key=keys.admin,
                       body={"name": "x", **body})
        assert (response.status, body_of(response)) == (400, invalid(message))

    def test_bad_limit(self, console: Console, keys: Keys) -> None:
        response = api(console, "PATCH", f"/api/keys/{keys.plain_id}", key=keys.admin,
                       body={"rate_limits": ["lots"]})
        assert response.status == 400
        assert body_of(response)["error"]["code"] == "invalid_request"

    def test_a_limited_admin_key(self, console: Console, keys: Keys) -> None:
        """An admin key's own rate limit applies to the console, with its headers."""
        console.manager.update(keys.admin_id, rate_limits=["2/minute"])
        first = api(console, "GET", "/api/keys", key=keys.admin)
        assert first.status == 200
        assert first.header("RateLimit-Policy") is not None
        assert first.header("RateLimit") is not None
        api(console, "GET", "/api/keys", key=keys.admin)
        third = api(console, "GET", "/api/keys", key=keys.admin)
        assert third.status == 429
        assert body_of(third) == {"error": {"type": "rate_limit_error",
                                            "message": "Rate limit exceeded for this API key",
                                            "code": "rate_limit_exceeded"}}
        assert third.header("Retry-After") is not None
        # Unlimited keys carry no RateLimit headers.
        assert api(console, "GET", "/api/keys", key=keys.read).header("RateLimit") is None

    def test_an_admin_key_out_of_quota(self, console: Console, keys: Keys) -> None:
        console.manager.update(keys.admin_id, quota=1)
        assert api(console, "GET", "/api/keys", key=keys.admin).status == 200
        spent = api(console, "GET", "/api/keys", key=keys.admin)
        assert (spent.status, body_of(spent)) == (429, {"error": {
            "type": "rate_limit_error", "message": "API key usage quota exhausted",
            "code": "quota_exceeded"}})



class TestUsage:
    @pytest.fixture
    def traffic(self, console: Console, keys: Keys) -> None:
        """Requests with the billing key (two good, one with a wrong secret from
        its id) and a malformed one, flushed to the store."""
        auth = console.authenticator
        for path in ("/v1/charges", "/v1/charges", "/v1/refunds"):
            auth.authenticate(f"Bearer {keys.plain}", method="GET", path=path,
                              client="203.0.113.7")
        from aqnt_auth import AuthError

        for bad in (wrong_secret(keys.plain), "sk_live_garbage"):
            with pytest.raises(AuthError):
                auth.authenticate(f"Bearer {bad}", client="198.51.100.1")
        auth.flush_usage()

    def test_key_series(self, console: Console, keys: Keys, traffic: None) -> None:
        data = body_of(api(console, "GET", f"/api/keys/{keys.plain_id}/usage", key=keys.read))
        assert data["key_id"] == keys.plain_id
        assert (data["totals"]["valid"], data["totals"]["invalid_secret"]) == (3, 1)
        assert data["last_client"] == "203.0.113.7"  # of its last accepted request
        assert data["top_paths"][0] == {"path": "/v1/charges", "count": 2}
        assert data["bucket"] == "hour"
        assert len(data["buckets"]) in (24, 25)
        assert sum(b["valid"] for b in data["buckets"]) == 3

    def test_day_buckets_and_durations(self, console: Console, keys: Keys,
                                       traffic: None) -> None:
        path = f"/api/keys/{keys.plain_id}/usage"
        week = body_of(api(console, "GET", path, key=keys.read, query="since=7d&bucket=day"))
        assert week["bucket"] == "day"
        assert len(week["buckets"]) in (7, 8)
        assert week["totals"]["valid"] == 3

    def test_summary(self, console: Console, keys: Keys, traffic: None) -> None:
        data = body_of(api(console, "GET", "/api/usage", key=keys.read, query="top=1"))
        assert data["keyless"]["malformed"] == 1
        assert data["failures"]["invalid_secret"] == 1
        assert data["top_keys"] == [{"key_id": keys.plain_id, "name": "Billing service",
                                     "requests": 4, "valid": 3, "failures": 1}]

    def test_unknown_key(self, console: Console, keys: Keys) -> None:
        response = api(console, "GET", "/api/keys/NoSuchKey123/usage", key=keys.read)
        assert (response.status, body_of(response)) == (404, error("key_not_found"))

    @pytest.mark.parametrize(("query", "message"), [
        ("bucket=week", "Query parameter 'bucket' must be hour or day"),
        ("since=2030-01-02T00:00:00Z&until=2030-01-01T00:00:00Z",
         "Query parameter 'since' must not be after 'until'"),
        ("since=60d", "The range holds more than 1200 hour buckets: use a shorter range or "
                      "bucket=day"),
        ("since=5000d&bucket=day", "The range holds more than 1200 day buckets: use a "
                                   "shorter range"),
        ("since=soon", "Query parameter 'since' must be an ISO 8601 time with a UTC offset "
                       "(2030-01-31T12:00:00Z)"),
        ("limit=3", "Unknown query parameter 'limit'"),
    ])
    def test_bad_query(self, console: Console, keys: Keys, query: str, message: str) -> None:
        for path in ("/api/usage", f"/api/keys/{keys.plain_id}/usage"):
            response = api(console, "GET", path, key=keys.read, query=query)
            assert (response.status, body_of(response)) == (400, invalid(message))

    @pytest.mark.parametrize("top", ["0", "101", "x"])
    def test_bad_top(self, console: Console, keys: Keys, top: str) -> None:
        response = api(console, "GET", "/api/usage", key=keys.read, query=f"top={top}")
        assert (response.status, body_of(response)) == (
            400, invalid("Query parameter 'top' must be 1 to 100"))
