"""``manage.py aqnt_keys``: the options and output of ``aqnt-auth keys``."""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import io
import json
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from aqnt_auth import IssuedKey, KeyRecord
from aqnt_auth._cli import (
    build_parser,
    format_changed,
    format_created,
    format_record,
    format_records,
    format_revoked,
)
from aqnt_auth.adapters.django.management.commands.aqnt_keys import COMMAND, Command
from aqnt_auth.adapters.django.store import DjangoKeyStore
from tests.stores.contract import make_record

from ._support import bearer

UTC = dt.timezone.utc
# Long ago, so ages print in whole days and cannot tick between two calls.
LONG_AGO = dt.datetime(2020, 5, 17, 12, 0, 0, 500000, tzinfo=UTC)
# Where the command says the keys are: the project's database.
WHERE = "Django database 'default'"


def run(*args: str) -> str:
    out = io.StringIO()
    call_command("aqnt_keys", *args, stdout=out)
    return out.getvalue()


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    raise AssertionError("no sub-commands")


def _options(parser: argparse.ArgumentParser) -> set[str]:
    return {s for a in parser._actions for s in a.option_strings} - {"-h", "--help"}


def _positionals(parser: argparse.ArgumentParser) -> list[str]:
    return [a.dest for a in parser._actions if not a.option_strings]


def _record(**changes: Any) -> KeyRecord:
    return make_record(created_at=LONG_AGO, expires_at=None, **changes)


class TestOptions:
    def test_same_options_as_the_cli(self) -> None:
        """Every action takes the CLI's options and arguments, less --store
        (the database is the project's)."""
        top = _subparsers(build_parser())
        # audit is `aqnt-auth audit` there, `manage.py aqnt_keys audit` here.
        cli = {**_subparsers(top["keys"]), "audit": top["audit"]}
        ours = _subparsers(Command().create_parser("manage.py", "aqnt_keys"))
        assert set(ours) == set(cli)
        for name, parser in cli.items():
            assert _options(ours[name]) == _options(parser) - {"--store"}, name
            assert _positionals(ours[name]) == _positionals(parser), name


class TestHints:
    @pytest.mark.django_db
    def test_rotation_footnote_names_manage_py(self) -> None:
        """The hint under a key due for rotation is this front end's command."""
        DjangoKeyStore().add(_record(revoked_at=None))
        text = run("list")
        assert text.splitlines()[-1].endswith(
            "(python manage.py aqnt_keys rotate ID --grace 24h)")
        assert "aqnt-auth" not in text

    def test_help_examples_name_manage_py(self) -> None:
        for name, parser in _subparsers(Command().create_parser("manage.py", "aqnt_keys")
                                        ).items():
            examples = parser.format_help().split("examples:\n", 1)[1]
            assert f"python manage.py aqnt_keys {name}" in examples, name
            assert "aqnt-auth" not in examples, name


@pytest.mark.django_db
class TestOutput:
    def test_create(self) -> None:
        """create prints the CLI's text, and the key works."""
        out = run("create", "--name", "Production Server")
        key = out.splitlines()[2].strip()
        record = DjangoKeyStore().get(key[8:20])
        assert record is not None
        assert out == format_created(IssuedKey(key, record), store=WHERE) + "\n"
        from django.test import Client

        assert Client().get("/v1/whoami", headers=bearer(key)).status_code == 200

    def test_create_every_option_json(self) -> None:
        """The create options reach the record; --json prints the CLI's JSON."""
        out = run("create", "--name", "Reporting", "--test", "--scope", "a:read", "--scope",
                  "b:write", "--read-only", "--allow-path", "/v1/reports", "--expires-in",
                  "30d", "--owner", "acct_9", "--json")
        data = json.loads(out)
        record = DjangoKeyStore().get(data["record"]["id"])
        assert record is not None
        assert data["key"].startswith("sk_test_")
        assert (record.mode, record.scopes, record.read_only, record.allowed_paths,
                record.owner) == ("test", ("a:read", "b:write"), True, ("/v1/reports",),
                                  "acct_9")
        assert record.expires_at is not None
        expected = json.loads(format_created(IssuedKey(data["key"], record), True, store=WHERE))
        for document in (data, expected):
            document["record"].pop("age_seconds")
        assert data == expected

    def test_list_and_show(self) -> None:
        """list (active, --all, --owner) and show print what the CLI prints."""
        store = DjangoKeyStore()
        active = _record(owner="acct_1")
        revoked = _record(owner="acct_2", revoked_at=LONG_AGO + dt.timedelta(days=1))
        store.add(active)
        store.add(revoked)
        assert run("list") == format_records([active], store=WHERE, command=COMMAND) + "\n"
        assert run("list", "--all") == format_records([active, revoked], store=WHERE,
                                                      command=COMMAND) + "\n"
        assert run("list", "--all", "--owner", "acct_2") == format_records(
            [revoked], store=WHERE, command=COMMAND) + "\n"
        listed = json.loads(run("list", "--all", "--json"))
        assert listed["store"] == WHERE
        assert [r["id"] for r in listed["keys"]] == [active.id, revoked.id]
        assert run("show", active.id) == format_record(active, store=WHERE) + "\n"
        assert json.loads(run("show", active.id, "--json"))["status"] == "active"

    def test_revoke(self) -> None:
        """revoke prints the CLI's confirmation; the key is revoked for good."""
        store = DjangoKeyStore()
        record = _record()
        store.add(record)
        out = run("revoke", record.id)
        revoked = store.get(record.id)
        assert revoked is not None
        assert revoked.revoked_at is not None
        assert out == format_revoked(revoked) + "\n"
        run("revoke", record.id)  # a second revoke keeps the first time
        assert store.get(record.id) == revoked

    def test_disable_enable_update(self) -> None:
        """disable, enable and update print the CLI's confirmation and change the row."""
        store = DjangoKeyStore()
        record = _record()
        store.add(record)
        out = run("disable", record.id)
        disabled = store.get(record.id)
        assert disabled is not None
        assert disabled.disabled_at is not None
        assert out == format_changed(disabled, "disable") + "\n"
        assert json.loads(run("enable", record.id, "--json"))["disabled_at"] is None
        data = json.loads(run("update", record.id, "--name", "new name", "--clear-scopes",
                              "--json"))
        assert (data["name"], data["scopes"]) == ("new name", [])
        assert store.get(record.id) == dataclasses.replace(record, name="new name", scopes=())
        with pytest.raises(CommandError, match="nothing to update"):
            run("update", record.id)
        data = json.loads(run("update", record.id, "--allow-ip", "10.0.0.0/8", "--json"))
        assert data["allowed_ips"] == ["10.0.0.0/8"]
        with pytest.raises(CommandError, match="host bits"):
            run("update", record.id, "--allow-ip", "10.0.0.1/8")
        created = json.loads(run("create", "--name", "ips", "--allow-ip", "::1", "--json"))
        assert created["record"]["allowed_ips"] == ["::1"]
        data = json.loads(run("update", record.id, "--rate-limit", "100 per minute",
                              "--rate-limit", "5/second", "--json"))
        assert (data["rate_limits"], data["rate_limit_shared"]) == (
            ["5/second", "100/minute"], False)
        with pytest.raises(CommandError, match="LIMIT/PERIOD"):
            run("update", record.id, "--rate-limit", "lots")
        data = json.loads(run("update", record.id, "--clear-rate-limits", "--json"))
        assert data["rate_limits"] == []
        created = json.loads(run("create", "--name", "metered", "--rate-limit", "1/second",
                                 "--owner", "acme", "--shared-limit", "--json"))
        assert (created["record"]["rate_limits"], created["record"]["rate_limit_shared"]) == (
            ["1/second"], True)

    def test_quota(self) -> None:
        """--quota/--refill on create and update, --clear-quota, as aqnt-auth keys."""
        created = json.loads(run("create", "--name", "metered", "--quota", "3", "--refill",
                                 "3/day", "--json"))
        assert created["record"]["quota"]["remaining"] == 3
        key_id = created["record"]["id"]
        data = json.loads(run("update", key_id, "--quota", "9", "--json"))
        assert (data["quota_remaining"], data["quota_refill"]) == (9, "3/day")
        assert "quota 9 left (refill 3/day)" in run("list")
        with pytest.raises(CommandError, match="must be COUNT/PERIOD"):
            run("update", key_id, "--refill", "3/fortnight")
        assert json.loads(run("update", key_id, "--clear-quota", "--json"))["quota"] is None

    def test_rotate(self) -> None:
        """rotate issues a replacement and gives the old key a grace period."""
        store = DjangoKeyStore()
        record = _record(scopes=("charges:read",))
        store.add(record)
        out = run("rotate", record.id, "--grace", "24h")
        assert f"The old key {record.id} keeps working until " in out
        key = out.splitlines()[2].strip()
        new = store.get(key[8:20])
        assert new is not None
        assert (new.rotated_from, new.scopes) == (record.id, ("charges:read",))
        old = store.get(record.id)
        assert old is not None
        assert old.expires_at is not None
        data = json.loads(run("rotate", new.id, "--json"))
        assert data["replaced"]["id"] == new.id

    @pytest.mark.parametrize(("args", "message"), [
        (("revoke", "nosuchkey123"), "no key with id 'nosuchkey123'"),
        (("create", "--name", "x", "--expires-in", "soon"), "bad duration 'soon'"),
        (("create", "--name", "x", "--prefix", "rk"), "prefix 'rk' is not in"),
        (("create", "--name", "x", "--scope", 'a"b'), "must be non-empty printable ASCII"),
    ])
    def test_errors_are_one_line(self, args: tuple[str, ...], message: str) -> None:
        """Errors are a CommandError with the core's message, no traceback."""
        with pytest.raises(CommandError, match=message):
            run(*args)

    def test_rotating_a_revoked_key_is_refused(self) -> None:
        store = DjangoKeyStore()
        record = _record(revoked_at=LONG_AGO)
        store.add(record)
        with pytest.raises(CommandError, match="a revoked key cannot be rotated"):
            run("rotate", record.id)
        assert store.list() == [dataclasses.replace(record)]


@pytest.mark.django_db
class TestLifecycle:
    @pytest.mark.parametrize("action", ["show", "revoke", "rotate"])
    def test_key_given_for_id_is_never_echoed(self, action: str,
                                              capsys: pytest.CaptureFixture[str]) -> None:
        """A whole key where an id belongs: the core's message, naming the id."""
        out = run("create", "--name", "pasted", "--json")
        key, key_id = json.loads(out)["key"], json.loads(out)["record"]["id"]
        with pytest.raises(CommandError) as info:
            run(action, key)
        assert str(info.value) == (f"that is an API key, not a key id: use its id {key_id} "
                                   "(a key is secret; never pass one as an argument)")
        assert info.value.returncode == 2
        captured = capsys.readouterr()
        assert key[20:] not in captured.out + captured.err
        record = DjangoKeyStore().get(key_id)
        assert record is not None
        assert record.status() == "active"

    def test_rotation_rules(self) -> None:
        """The successor keeps the old expiry; rotating again needs --force; an
        expired key cannot be rotated."""
        store = DjangoKeyStore()
        soon = dt.datetime.now(UTC) + dt.timedelta(days=7)
        record = make_record(created_at=LONG_AGO, expires_at=soon)
        store.add(record)
        data = json.loads(run("rotate", record.id, "--grace", "1h", "--json"))
        assert dt.datetime.fromisoformat(data["record"]["expires_at"]) == soon
        with pytest.raises(CommandError, match=f"its successor is {data['record']['id']}"):
            run("rotate", record.id)
        run("rotate", record.id, "--force")
        with pytest.raises(CommandError, match=f"key {record.id} expired at"):
            run("rotate", record.id)


@pytest.mark.django_db
class TestAuditAndHygiene:
    def test_changes_are_audited_as_the_os_user(self) -> None:
        """The command passes user@host (or --actor); `audit` prints the CLI's table."""
        from aqnt_auth._audit import default_actor
        from aqnt_auth._cli import format_audit

        created = json.loads(run("create", "--name", "svc", "--json"))
        key_id = created["record"]["id"]
        run("disable", key_id, "--actor", "ci-bot")
        store = DjangoKeyStore()
        entries = store.audit_entries()
        assert [(e.event, e.actor) for e in entries] == [("disabled", "ci-bot"),
                                                          ("created", default_actor())]
        out = run("audit", "--key", key_id)
        assert out == format_audit(entries, store=WHERE) + "\n"
        assert created["key"] not in out
        data = json.loads(run("audit", "--since", "1h", "--limit", "1", "--json"))
        assert [e["event"] for e in data["entries"]] == ["disabled"]
        with pytest.raises(CommandError, match="bad duration"):
            run("audit", "--since", "soon")

    def test_hygiene(self) -> None:
        DjangoKeyStore().add(_record(revoked_at=None))
        out = run("hygiene")
        assert "Keys due for rotation (older than 90 days): 1" in out
        assert "-> python manage.py aqnt_keys rotate ID --grace 24h" in out
        data = json.loads(run("hygiene", "--json"))
        assert len(data["idle"]) == 1
