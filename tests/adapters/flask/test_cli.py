"""``flask aqnt-keys``: the core CLI's actions and output, on the app's store."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskCliRunner

from aqnt_auth import IssuedKey, MemoryKeyStore
from aqnt_auth._cli import (
    format_changed,
    format_created,
    format_records,
    format_revoked,
    format_rotated,
)
from tests import bodies
from tests.stores.contract import make_record

from ..wsgi._support import bearer


@pytest.fixture
def runner(app: Flask) -> FlaskCliRunner:
    return app.test_cli_runner()


def create(runner: FlaskCliRunner, *args: str) -> tuple[dict[str, Any], str]:
    """Run ``create --json``; return the record and the key it printed."""
    result = runner.invoke(args=["aqnt-keys", "create", "--json", *args])
    assert result.exit_code == 0, result.output
    created = json.loads(result.output)
    return created["record"], created["key"]


def printed_key(output: str) -> str:
    # The plaintext is on its own indented line, as format_created prints it.
    return next(line.strip() for line in output.splitlines() if line.startswith("    sk_"))


class TestCreate:
    def test_json(self, runner: FlaskCliRunner, app: Flask, memory_store: MemoryKeyStore
                  ) -> None:
        """The key lands in the app's configured store and works against the app."""
        record, key = create(runner, "--name", "billing", "--scope", "refunds:write",
                             "--owner", "acct_1")
        assert memory_store.get(record["id"]) is not None
        assert record["scopes"] == ["refunds:write"]
        assert record["owner"] == "acct_1"
        assert key.startswith("sk_live_")
        client = app.test_client()
        assert client.post("/refunds", headers=bearer(key)).status_code == 200

    def test_text_is_the_core_clis(self, runner: FlaskCliRunner,
                                   memory_store: MemoryKeyStore) -> None:
        """The text output is format_created's, byte for byte."""
        result = runner.invoke(args=["aqnt-keys", "create", "--name", "ci", "--test",
                                     "--expires-in", "30d"])
        assert result.exit_code == 0, result.output
        key = printed_key(result.output)
        assert key.startswith("sk_test_")
        (record,) = memory_store.list()
        assert result.output == format_created(IssuedKey(key, record), store="memory://") + "\n"
        assert record.expires_at is not None

    def test_restrictions(self, runner: FlaskCliRunner, app: Flask) -> None:
        _, key = create(runner, "--name", "reader", "--read-only", "--allow-path", "/v1/charges")
        client = app.test_client()
        assert client.get("/v1/charges", headers=bearer(key)).status_code == 200
        assert client.post("/v1/charges", headers=bearer(key)).status_code == 403
        assert client.get("/", headers=bearer(key)).status_code == 403

    def test_hasher_choice(self, runner: FlaskCliRunner, memory_store: MemoryKeyStore) -> None:
        """Without --hasher, AQNT_AUTH_HASHER (here argon2 "cheapest") issues the key;
        --hasher argon2 uses --argon2-profile (default owasp)."""
        configured, _ = create(runner, "--name", "configured")
        explicit, _ = create(runner, "--name", "explicit", "--hasher", "argon2")
        configured_record = memory_store.get(configured["id"])
        explicit_record = memory_store.get(explicit["id"])
        assert configured_record is not None
        assert explicit_record is not None
        assert configured_record.hash.startswith("$argon2id$v=19$m=8,t=1,p=1$")
        assert explicit_record.hash.startswith("$argon2id$v=19$m=19456,t=2,p=1$")


class TestManage:
    def test_list(self, runner: FlaskCliRunner, memory_store: MemoryKeyStore) -> None:
        """Text and JSON listings, with revoked keys only under --all."""
        keep, _ = create(runner, "--name", "kept")
        gone, _ = create(runner, "--name", "gone")
        runner.invoke(args=["aqnt-keys", "revoke", gone["id"]])
        listed = json.loads(runner.invoke(args=["aqnt-keys", "list", "--json"]).output)
        assert listed["store"] == "memory://"
        assert [r["id"] for r in listed["keys"]] == [keep["id"]]
        every = json.loads(runner.invoke(args=["aqnt-keys", "list", "--all", "--json"]).output)
        assert [r["status"] for r in every["keys"]] == ["active", "revoked"]
        text = runner.invoke(args=["aqnt-keys", "list"]).output
        assert text.splitlines()[0] == "Keys in memory://:"
        assert text.splitlines()[1].split() == ["ID", "NAME", "MODE", "HINT", "CREATED", "AGE",
                                                "LAST", "USED", "REQUESTS", "STATUS", "POLICIES"]
        assert keep["id"] in text
        assert gone["id"] not in text

    def test_list_empty(self, runner: FlaskCliRunner) -> None:
        result = runner.invoke(args=["aqnt-keys", "list"])
        assert result.output == format_records([], store="memory://") + "\n"

    def test_show(self, runner: FlaskCliRunner) -> None:
        record, _ = create(runner, "--name", "shown", "--scope", "a")
        result = runner.invoke(args=["aqnt-keys", "show", record["id"], "--json"])
        shown = json.loads(result.output)
        assert shown["id"] == record["id"]
        assert shown["scopes"] == ["a"]
        assert "hash" not in shown

    def test_revoke(self, runner: FlaskCliRunner, app: Flask,
                    memory_store: MemoryKeyStore) -> None:
        """Revocation through the CLI takes effect on the running app at once."""
        record, key = create(runner, "--name", "doomed")
        result = runner.invoke(args=["aqnt-keys", "revoke", record["id"]])
        assert result.exit_code == 0
        revoked = memory_store.get(record["id"])
        assert revoked is not None
        assert result.output == format_revoked(revoked) + "\n"
        response = app.test_client().get("/", headers=bearer(key))
        assert response.get_data() == bodies.REVOKED

    def test_disable_enable_update(self, runner: FlaskCliRunner, app: Flask,
                                   memory_store: MemoryKeyStore) -> None:
        """disable takes effect on the running app at once (key_disabled), enable
        restores the key; update renames it; the output is the core CLI's."""
        record, key = create(runner, "--name", "paused")
        client = app.test_client()
        assert client.get("/", headers=bearer(key)).status_code == 200
        result = runner.invoke(args=["aqnt-keys", "disable", record["id"]])
        assert result.exit_code == 0, result.output
        disabled = memory_store.get(record["id"])
        assert disabled is not None
        assert result.output == format_changed(disabled, "disable") + "\n"
        response = client.get("/", headers=bearer(key))
        assert (response.status_code, response.get_data()) == (401, bodies.DISABLED)
        result = runner.invoke(args=["aqnt-keys", "enable", record["id"], "--json"])
        assert json.loads(result.output)["status"] == "active"
        assert client.get("/", headers=bearer(key)).status_code == 200
        result = runner.invoke(args=["aqnt-keys", "update", record["id"], "--name", "resumed",
                                     "--scope", "x", "--json"])
        assert result.exit_code == 0, result.output
        assert (json.loads(result.output)["name"], json.loads(result.output)["scopes"]) == (
            "resumed", ["x"])
        result = runner.invoke(args=["aqnt-keys", "update", record["id"]])
        assert result.exit_code == 1
        assert "nothing to update" in result.output

    def test_allow_ip(self, runner: FlaskCliRunner, app: Flask) -> None:
        """--allow-ip on create and update: the app refuses the key from elsewhere."""
        record, key = create(runner, "--name", "office", "--allow-ip", "192.0.2.0/24")
        assert record["allowed_ips"] == ["192.0.2.0/24"]
        client = app.test_client()
        inside = client.get("/", headers=bearer(key), environ_base={"REMOTE_ADDR": "192.0.2.5"})
        assert inside.status_code == 200
        outside = client.get("/", headers=bearer(key))  # from 127.0.0.1
        assert (outside.status_code, outside.get_data()) == (403, bodies.IP_NOT_ALLOWED)
        result = runner.invoke(args=["aqnt-keys", "update", record["id"], "--clear-allow-ips",
                                     "--json"])
        assert json.loads(result.output)["allowed_ips"] == []
        assert client.get("/", headers=bearer(key)).status_code == 200

    def test_quota(self, runner: FlaskCliRunner, app: Flask) -> None:
        """--quota on create and update, --clear-quota: the app answers 429
        quota_exceeded once the quota is used up."""
        record, key = create(runner, "--name", "metered", "--quota", "1")
        assert record["quota"]["remaining"] == 1
        client = app.test_client()
        assert client.get("/", headers=bearer(key)).status_code == 200
        used_up = client.get("/", headers=bearer(key))
        assert (used_up.status_code, used_up.get_data()) == (429, bodies.QUOTA_EXCEEDED)
        assert "Retry-After" not in used_up.headers  # no refill: no retry helps
        result = runner.invoke(args=["aqnt-keys", "update", record["id"], "--quota", "2",
                                     "--refill", "2/hour", "--json"])
        assert json.loads(result.output)["quota"]["remaining"] == 2
        assert client.get("/", headers=bearer(key)).status_code == 200
        result = runner.invoke(args=["aqnt-keys", "update", record["id"], "--clear-quota",
                                     "--json"])
        assert json.loads(result.output)["quota"] is None
        assert client.get("/", headers=bearer(key)).status_code == 200

    def test_rate_limit(self, runner: FlaskCliRunner, app: Flask) -> None:
        """--rate-limit on create and update: the app counts the key's requests,
        with the RateLimit headers, and refuses it past the limit."""
        record, key = create(runner, "--name", "metered", "--rate-limit", "2/hour",
                             "--owner", "acme", "--shared-limit")
        assert (record["rate_limits"], record["rate_limit_shared"]) == (["2/hour"], True)
        client = app.test_client()
        first = client.get("/", headers=bearer(key))
        assert first.headers["RateLimit-Policy"] == '"2/hour";q=2;w=3600'
        assert first.headers["RateLimit"].startswith('"2/hour";r=1;t=')
        assert client.get("/", headers=bearer(key)).status_code == 200
        refused = client.get("/", headers=bearer(key))
        assert (refused.status_code, refused.get_data()) == (429, bodies.RATE_LIMIT_EXCEEDED)
        result = runner.invoke(args=["aqnt-keys", "update", record["id"], "--rate-limit",
                                     "5/hour", "--per-key-limit", "--json"])
        assert (json.loads(result.output)["rate_limits"],
                json.loads(result.output)["rate_limit_shared"]) == (["5/hour"], False)
        result = runner.invoke(args=["aqnt-keys", "update", record["id"],
                                     "--clear-rate-limits", "--json"])
        assert json.loads(result.output)["rate_limits"] == []
        plain = client.get("/", headers=bearer(key))
        assert plain.status_code == 200
        assert "RateLimit" not in plain.headers

    def test_rotate(self, runner: FlaskCliRunner, app: Flask,
                    memory_store: MemoryKeyStore) -> None:
        """The new key works, the old one stops (grace 0), the output is the core CLI's."""
        old, old_key = create(runner, "--name", "rotating")
        result = runner.invoke(args=["aqnt-keys", "rotate", old["id"], "--grace", "0"])
        assert result.exit_code == 0, result.output
        new_key = printed_key(result.output)
        new = next(r for r in memory_store.list() if r.rotated_from == old["id"])
        old_record = memory_store.get(old["id"])
        assert old_record is not None
        assert result.output == format_rotated(old_record, IssuedKey(new_key, new)) + "\n"
        client = app.test_client()
        assert client.get("/", headers=bearer(new_key)).status_code == 200
        assert client.get("/", headers=bearer(old_key)).get_data() == bodies.REVOKED

    def test_rotate_with_grace(self, runner: FlaskCliRunner, app: Flask) -> None:
        old, old_key = create(runner, "--name", "graceful")
        result = runner.invoke(args=["aqnt-keys", "rotate", old["id"], "--grace", "1h",
                                     "--json"])
        rotated = json.loads(result.output)
        assert rotated["replaced"]["status"] == "expiring"
        client = app.test_client()
        assert client.get("/", headers=bearer(old_key)).status_code == 200
        assert client.get("/", headers=bearer(rotated["key"])).status_code == 200


class TestHints:
    def test_rotation_footnote_names_flask_aqnt_keys(self, runner: FlaskCliRunner,
                                                     memory_store: MemoryKeyStore) -> None:
        """The hint under a key due for rotation is this front end's command."""
        old = make_record(created_at=dt.datetime(2020, 1, 1, tzinfo=dt.timezone.utc),
                          expires_at=None, revoked_at=None)
        memory_store.add(old)
        text = runner.invoke(args=["aqnt-keys", "list"]).output
        assert text.splitlines()[-1].endswith("(flask aqnt-keys rotate ID --grace 24h)")
        assert "aqnt-auth" not in text


    @pytest.mark.parametrize("name", ["create", "list", "show", "revoke", "rotate"])
    def test_help_examples_name_flask_aqnt_keys(self, runner: FlaskCliRunner,
                                                name: str) -> None:
        text = runner.invoke(args=["aqnt-keys", name, "--help"]).output
        examples = text.split("examples:\n", 1)[1]
        assert f"  flask aqnt-keys {name}" in examples
        assert "aqnt-auth" not in examples


class TestErrors:
    @pytest.mark.parametrize(
        "args",
        [
            ["show", "nosuchkeyid0"],
            ["revoke", "nosuchkeyid0"],
            ["rotate", "nosuchkeyid0"],
            ["create", "--name", "x", "--expires-in", "soon"],
            ["create", "--name", "x", "--allow-path", "relative"],
            ["create", "--name", "x", "--prefix", "zz"],
            ["create", "--name", "   "],
        ],
    )
    def test_one_line_and_exit_1(self, runner: FlaskCliRunner, args: list[str]) -> None:
        """Bad input: one line on stderr, exit status 1, no traceback."""
        result = runner.invoke(args=["aqnt-keys", *args])
        assert result.exit_code == 1
        assert result.output.startswith("Error: ")
        assert len(result.output.strip().splitlines()) == 1
        assert "Traceback" not in result.output

    def test_hmac_without_pepper(self, runner: FlaskCliRunner,
                                 monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.delenv("AQNT_AUTH_PEPPER", raising=False)
        result = runner.invoke(args=["aqnt-keys", "create", "--name", "x", "--hasher", "hmac"])
        assert result.exit_code == 1
        assert "AQNT_AUTH_PEPPER" in result.output

    def test_usage_error(self, runner: FlaskCliRunner) -> None:
        result = runner.invoke(args=["aqnt-keys", "create"])
        assert result.exit_code == 2
        assert "--name" in result.output

    def test_rotating_a_revoked_key(self, runner: FlaskCliRunner) -> None:
        record, _ = create(runner, "--name", "final")
        runner.invoke(args=["aqnt-keys", "revoke", record["id"]])
        result = runner.invoke(args=["aqnt-keys", "rotate", record["id"]])
        assert result.exit_code == 1
        assert "revoked" in result.output

    def test_app_without_the_extension(self) -> None:
        """The group is only added by init_app, so an app without it has no such command."""
        app = Flask(__name__)
        result = app.test_cli_runner().invoke(args=["aqnt-keys", "list"])
        assert result.exit_code == 2


class TestKeyGivenForId:
    @pytest.mark.parametrize("action", ["show", "revoke", "rotate"])
    def test_never_echoed(self, runner: FlaskCliRunner, memory_store: MemoryKeyStore,
                          action: str) -> None:
        """A whole key where an id belongs: the core's message, naming the id, and
        the key appears nowhere in the output."""
        record, key = create(runner, "--name", "pasted")
        result = runner.invoke(args=["aqnt-keys", action, key])
        assert result.exit_code == 2
        assert result.output == (
            f"Error: that is an API key, not a key id: use its id {record['id']} "
            "(a key is secret; never pass one as an argument)\n")
        assert key[20:] not in result.output
        stored = memory_store.get(record["id"])
        assert stored is not None
        assert stored.status() == "active"
        assert len(memory_store.list()) == 1


class TestRotationRules:
    def test_rotating_again_needs_force(self, runner: FlaskCliRunner,
                                        memory_store: MemoryKeyStore) -> None:
        record, _ = create(runner, "--name", "twice", "--expires-in", "7d")
        first = runner.invoke(args=["aqnt-keys", "rotate", record["id"], "--grace", "1h",
                                    "--json"])
        successor = json.loads(first.output)["record"]
        assert successor["expires_at"] == record["expires_at"]
        again = runner.invoke(args=["aqnt-keys", "rotate", record["id"]])
        assert again.exit_code == 1
        assert again.output.startswith(
            f"Error: key {record['id']} was already rotated: its successor is "
            f"{successor['id']}, and {record['id']} stops working at ")
        forced = runner.invoke(args=["aqnt-keys", "rotate", record["id"], "--force",
                                     "--expires-in", "30d", "--json"])
        assert forced.exit_code == 0, forced.output
        assert json.loads(forced.output)["record"]["expires_at"] > record["expires_at"]
        assert len(memory_store.list()) == 3


class TestAuditAndHygiene:
    def test_changes_are_audited_as_the_os_user(self, runner: FlaskCliRunner,
                                                memory_store: MemoryKeyStore) -> None:
        """The commands pass user@host (or --actor); `audit` prints the core CLI's table."""
        from aqnt_auth._audit import default_actor
        from aqnt_auth._cli import format_audit

        record, key = create(runner, "--name", "billing")
        result = runner.invoke(args=["aqnt-keys", "revoke", record["id"], "--actor", "ci-bot"])
        assert result.exit_code == 0, result.output
        entries = memory_store.audit_entries()
        assert [(e.event, e.actor) for e in entries] == [("revoked", "ci-bot"),
                                                          ("created", default_actor())]
        result = runner.invoke(args=["aqnt-keys", "audit", "--key", record["id"]])
        assert result.exit_code == 0, result.output
        assert result.output == format_audit(entries, store="memory://") + "\n"
        assert key not in result.output
        result = runner.invoke(args=["aqnt-keys", "audit", "--since", "1h", "--limit", "1",
                                     "--json"])
        assert [e["event"] for e in json.loads(result.output)["entries"]] == ["revoked"]
        result = runner.invoke(args=["aqnt-keys", "audit", "--since", "soon"])
        assert result.exit_code == 1
        assert "bad duration" in result.output

    def test_hygiene(self, runner: FlaskCliRunner, memory_store: MemoryKeyStore) -> None:
        record, _ = create(runner, "--name", "billing")
        result = runner.invoke(args=["aqnt-keys", "hygiene"])
        assert result.exit_code == 0, result.output
        assert "Live keys without an IP allowlist: 1" in result.output
        assert "-> flask aqnt-keys update ID --allow-ip CIDR" in result.output
        data = json.loads(runner.invoke(args=["aqnt-keys", "hygiene", "--json"]).output)
        assert [r["id"] for r in data["never_expire"]] == [record["id"]]
