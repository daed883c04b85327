"""The aqnt-auth command line."""

from __future__ import annotations

import datetime as dt
import io
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from aqnt_auth._cli import main


@pytest.fixture
def store_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    url = f"sqlite:///{tmp_path}/keys.db"
    monkeypatch.setenv("AQNT_AUTH_STORE", url)
    monkeypatch.delenv("AQNT_API_KEY", raising=False)
    return url


def run(*argv: str, stdin: str = "") -> tuple[int, str]:
    out = io.StringIO()
    old = sys.stdin
    sys.stdin = io.StringIO(stdin)
    try:
        code = main(list(argv), out=out)
    finally:
        sys.stdin = old
    return code, out.getvalue()


def create(*extra: str) -> dict[str, object]:
    code, text = run("keys", "create", "--name", "svc", "--argon2-profile", "cheapest", "--json",
                     *extra)
    assert code == 0
    data: dict[str, object] = json.loads(text)
    return data


class TestKeys:
    def test_create_shows_the_key_once_with_a_warning(self, store_url: str) -> None:
        code, text = run("keys", "create", "--name", "Production Server",
                         "--argon2-profile", "cheapest", "--scope", "charges:write",
                         "--allow-path", "/v1", "--read-only", "--expires-in", "90d",
                         "--owner", "acct_1")
        assert code == 0
        assert "will not be shown again" in text
        key = next(line.strip() for line in text.splitlines() if line.strip().startswith("sk_"))
        assert key.startswith("sk_live_")
        assert len(key) == 58
        # It is never shown again: not by list, not by show.
        _, listing = run("keys", "list", "--all")
        assert key not in listing
        assert key[-4:] in listing

    def test_create_test_key_json(self, store_url: str) -> None:
        data = create("--test")
        assert str(data["key"]).startswith("sk_test_")
        record = data["record"]
        assert isinstance(record, dict)
        assert record["mode"] == "test"
        assert "hash" not in record

    def test_list_show_revoke_rotate(self, store_url: str) -> None:
        key_id = str(create()["record"]["id"])  # type: ignore[index]
        code, text = run("keys", "list")
        assert code == 0
        assert key_id in text
        assert "STATUS" in text
        code, text = run("keys", "show", key_id)
        assert code == 0
        assert "active" in text
        code, text = run("keys", "rotate", key_id, "--grace", "24h", "--argon2-profile",
                         "cheapest")
        assert code == 0
        assert "keeps working until" in text
        code, text = run("keys", "revoke", key_id)
        assert code == 0
        assert "Revoked" in text
        _, text = run("keys", "list")
        assert key_id not in text
        _, text = run("keys", "list", "--all", "--json")
        statuses = {r["id"]: r["status"] for r in json.loads(text)["keys"]}
        assert statuses[key_id] == "revoked"

    def test_disable_enable_update(self, store_url: str) -> None:
        """disable answers key_disabled in verify, enable restores it; update
        changes name and scopes; show and list (text and JSON) say so."""
        data = create("--scope", "a")
        key, key_id = str(data["key"]), str(data["record"]["id"])  # type: ignore[index]
        code, text = run("keys", "disable", key_id)
        assert code == 0
        assert text.startswith(f"Disabled key {key_id} (svc). Requests with it now get "
                               "key_disabled")
        assert any(line.split() == ["status", "disabled"] for line in text.splitlines())
        code, text = run("verify", stdin=key + "\n")
        assert code == 1
        assert "invalid: key_disabled (API key is disabled)" in text
        _, text = run("keys", "list")  # listed: unlike a revoked key, it can come back
        row = next(line for line in text.splitlines() if line.startswith(key_id))
        assert "disabled" in row
        assert "POLICIES" in text
        _, text = run("keys", "show", key_id, "--json")
        shown = json.loads(text)
        assert shown["status"] == "disabled"
        assert shown["disabled_at"] is not None
        assert {"rate_limits", "quota_remaining", "quota_refill", "allowed_ips",
                "rate_limit_shared"} <= set(shown)
        code, text = run("keys", "enable", key_id, "--json")
        assert code == 0
        assert json.loads(text)["disabled_at"] is None
        assert run("verify", stdin=key + "\n")[0] == 0
        code, text = run("keys", "update", key_id, "--name", "renamed", "--scope", "b",
                         "--scope", "c", "--json")
        assert code == 0
        updated = json.loads(text)
        assert (updated["name"], updated["scopes"]) == ("renamed", ["b", "c"])
        _, text = run("keys", "update", key_id, "--clear-scopes")
        assert text.startswith(f"Updated key {key_id} (renamed).")
        assert json.loads(run("keys", "show", key_id, "--json")[1])["scopes"] == []

    def test_allow_ip(self, store_url: str, capsys: pytest.CaptureFixture[str]) -> None:
        """--allow-ip on create and update (replacing), --clear-allow-ips; shown
        by show and list; a bad network is refused without writing anything."""
        data = create("--allow-ip", "10.0.0.0/8", "--allow-ip", "2001:db8::1")
        record = data["record"]
        assert isinstance(record, dict)
        key_id = str(record["id"])
        assert record["allowed_ips"] == ["10.0.0.0/8", "2001:db8::1"]
        _, text = run("keys", "list")
        row = next(line for line in text.splitlines() if line.startswith(key_id))
        assert row.endswith("2 allowed IPs")
        _, text = run("keys", "show", key_id)
        assert '["10.0.0.0/8", "2001:db8::1"]' in text
        code, text = run("keys", "update", key_id, "--allow-ip", "192.0.2.0/24", "--json")
        assert code == 0
        assert json.loads(text)["allowed_ips"] == ["192.0.2.0/24"]
        assert run("keys", "update", key_id, "--allow-ip", "192.0.2.1/24")[0] == 1
        assert "host bits set" in capsys.readouterr().err
        assert run("keys", "create", "--name", "x", "--allow-ip", "nope",
                   "--argon2-profile", "cheapest")[0] == 1
        assert len(json.loads(run("keys", "list", "--json")[1])["keys"]) == 1
        code, text = run("keys", "update", key_id, "--clear-allow-ips", "--json")
        assert json.loads(text)["allowed_ips"] == []
        assert run("keys", "update", key_id, "--allow-ip", "::1", "--clear-allow-ips")[0] == 1

    def test_quota(self, store_url: str, capsys: pytest.CaptureFixture[str]) -> None:
        """--quota and --refill on create and update, --clear-quota; show and
        list (text and --json) give the quota and its remaining count; a bad
        refill or count is refused without writing anything."""
        data = create("--quota", "1000", "--refill", "1000/day")
        record = data["record"]
        assert isinstance(record, dict)
        key_id = str(record["id"])
        assert (record["quota_remaining"], record["quota_refill"]) == (1000, "1000/day")
        assert record["quota"]["remaining"] == 1000
        assert record["quota"]["refills_at"] is not None
        _, text = run("keys", "list")
        row = next(line for line in text.splitlines() if line.startswith(key_id))
        assert row.endswith("quota 1000 left (refill 1000/day)")
        _, text = run("keys", "show", key_id)
        assert re.search(r"^quota_remaining\s+1000$", text, re.M)
        code, text = run("keys", "update", key_id, "--quota", "5", "--json")
        assert code == 0
        shown = json.loads(text)
        assert (shown["quota"]["remaining"], shown["quota_refill"]) == (5, "1000/day")
        listed = json.loads(run("keys", "list", "--json")[1])["keys"][0]
        assert listed["quota"]["remaining"] == 5
        assert run("keys", "update", key_id, "--refill", "10/fortnight")[0] == 1
        assert "must be COUNT/PERIOD" in capsys.readouterr().err
        assert run("keys", "update", key_id, "--quota", "-1")[0] == 1
        assert "quota must be a whole number" in capsys.readouterr().err
        assert run("keys", "create", "--name", "x", "--refill", "0/day",
                   "--argon2-profile", "cheapest")[0] == 1
        assert len(json.loads(run("keys", "list", "--json")[1])["keys"]) == 1
        assert run("keys", "update", key_id, "--quota", "1", "--clear-quota")[0] == 1
        code, text = run("keys", "update", key_id, "--clear-quota", "--json")
        assert (json.loads(text)["quota"], json.loads(text)["quota_remaining"]) == (None, None)
        # A refill alone gives a key without a quota one of its COUNT.
        code, text = run("keys", "update", key_id, "--refill", "50/hour", "--json")
        assert json.loads(text)["quota"]["remaining"] == 50

    def test_rate_limit(self, store_url: str, capsys: pytest.CaptureFixture[str]) -> None:
        """--rate-limit (repeatable) and --shared-limit on create; update
        replaces, --clear-rate-limits removes, --per-key-limit unshares; show
        and list (text and JSON) show them; a bad limit writes nothing."""
        data = create("--rate-limit", "5000/hour", "--rate-limit", "100 per minute",
                      "--owner", "acme", "--shared-limit")
        record = data["record"]
        assert isinstance(record, dict)
        key_id = str(record["id"])
        assert (record["rate_limits"], record["rate_limit_shared"]) == (
            ["100/minute", "5000/hour"], True)
        _, text = run("keys", "list")
        row = next(line for line in text.splitlines() if line.startswith(key_id))
        assert row.endswith("100/minute, 5000/hour per owner")
        _, text = run("keys", "show", key_id)
        assert '["100/minute", "5000/hour"]' in text
        listed = json.loads(run("keys", "list", "--json")[1])["keys"]
        assert listed[0]["rate_limits"] == ["100/minute", "5000/hour"]
        code, text = run("keys", "update", key_id, "--rate-limit", "10/second",
                         "--per-key-limit", "--json")
        assert code == 0
        assert (json.loads(text)["rate_limits"], json.loads(text)["rate_limit_shared"]) == (
            ["10/second"], False)
        assert run("keys", "update", key_id, "--rate-limit", "10/fortnight")[0] == 1
        assert "is not LIMIT/PERIOD" in capsys.readouterr().err
        assert run("keys", "create", "--name", "x", "--rate-limit", "1/second",
                   "--shared-limit", "--argon2-profile", "cheapest")[0] == 1
        assert "needs a key with an owner" in capsys.readouterr().err
        assert len(json.loads(run("keys", "list", "--json")[1])["keys"]) == 1
        assert run("keys", "update", key_id, "--rate-limit", "1/second",
                   "--clear-rate-limits")[0] == 1
        code, text = run("keys", "update", key_id, "--clear-rate-limits", "--json")
        assert json.loads(text)["rate_limits"] == []

    def test_update_needs_something_and_revoked_keys_stay(
            self, store_url: str, capsys: pytest.CaptureFixture[str]) -> None:
        key_id = str(create()["record"]["id"])  # type: ignore[index]
        assert run("keys", "update", key_id)[0] == 1
        assert "nothing to update" in capsys.readouterr().err
        assert run("keys", "update", key_id, "--scope", "a", "--clear-scopes")[0] == 1
        run("keys", "revoke", key_id)
        for action in (("disable",), ("enable",), ("update", "--name", "x")):
            assert run("keys", action[0], key_id, *action[1:])[0] == 1
            assert "revocation is final" in capsys.readouterr().err

    def test_verify_reads_env_or_stdin(self, store_url: str,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
        key = str(create()["key"])
        code, text = run("verify", stdin=key + "\n")
        assert code == 0
        assert text.startswith("valid: live key")
        monkeypatch.setenv("AQNT_API_KEY", key[:-1] + ("x" if key[-1] != "x" else "y"))
        code, text = run("verify")
        assert code == 1
        assert "invalid_api_key" in text


def test_rotation_footnote_names_this_command(store_url: str) -> None:
    """A key due for rotation is flagged, with aqnt-auth's own rotate command."""
    from aqnt_auth import open_store
    from tests.stores.contract import make_record

    store = open_store(store_url)
    store.add(make_record(created_at=dt.datetime(2020, 1, 1, tzinfo=dt.timezone.utc),
                          expires_at=None, revoked_at=None))
    store.close()
    _, text = run("keys", "list")
    assert text.splitlines()[-1].endswith("(aqnt-auth keys rotate ID --grace 24h)")


class TestErrors:
    @pytest.mark.parametrize(
        ("argv", "message"),
        [
            (["keys", "show", "nosuchkey123"], "no key with id"),
            (["keys", "revoke", "nosuchkey123"], "no key with id"),
            (["keys", "rotate", "nosuchkey123"], "no key with id"),
            (["keys", "create", "--name", "x", "--expires-in", "soon"], "bad duration"),
            (["keys", "create", "--name", "x", "--store", "sqlite:////nonexistent-dir/x/keys.db"],
             "the directory '/nonexistent-dir/x' does not exist"),
            (["keys", "list", "--store", "nosuch://x"], "unknown store URL scheme"),
            (["keys", "create", "--name", "x", "--scope", "a b"], "scope"),
            (["verify"], "no key given"),
        ],
    )
    def test_one_line_no_traceback(self, store_url: str, capsys: pytest.CaptureFixture[str],
                                   argv: list[str], message: str) -> None:
        assert run("store", "init")[0] == 0
        capsys.readouterr()
        code, _ = run(*argv)
        err = capsys.readouterr().err
        assert code == 1
        assert message in err
        assert "Traceback" not in err
        assert len(err.strip().splitlines()) == 1

    def test_usage_error(self, capsys: pytest.CaptureFixture[str]) -> None:
        with pytest.raises(SystemExit) as info:
            main(["keys", "frobnicate"])
        assert info.value.code == 2


def test_module_entry_point(tmp_path: Path) -> None:
    """python -m aqnt_auth works and prints its help."""
    result = subprocess.run([sys.executable, "-m", "aqnt_auth", "--help"], capture_output=True,
                            text=True, cwd=tmp_path, check=False)
    assert result.returncode == 0
    assert "keys" in result.stdout
    assert "demo" in result.stdout


class TestRotationRules:
    def test_successor_keeps_the_old_expiry(self, store_url: str) -> None:
        """A key created with --expires-in 7d gets a successor expiring then too;
        --expires-in on rotate sets another."""
        old = create("--expires-in", "7d")["record"]
        code, text = run("keys", "rotate", old["id"], "--grace", "1h", "--json",  # type: ignore[index]
                         "--argon2-profile", "cheapest")
        assert code == 0
        assert json.loads(text)["record"]["expires_at"] == old["expires_at"]  # type: ignore[index]
        code, text = run("keys", "rotate", json.loads(text)["record"]["id"], "--json",
                         "--expires-in", "30d", "--argon2-profile", "cheapest")
        assert code == 0
        assert json.loads(text)["record"]["expires_at"] > old["expires_at"]  # type: ignore[index]

    def test_expired_revoked_and_rotated_keys(self, store_url: str,
                                              capsys: pytest.CaptureFixture[str]) -> None:
        """An expired or revoked key cannot be rotated, and a key in its grace
        period only with --force: one line on stderr, exit status 1."""
        cheap = ("--argon2-profile", "cheapest", "--json")
        expired = str(create()["record"]["id"])  # type: ignore[index]
        assert run("keys", "rotate", expired, *cheap)[0] == 0  # grace 0: expired now
        revoked = str(create()["record"]["id"])  # type: ignore[index]
        run("keys", "revoke", revoked)
        graced = str(create()["record"]["id"])  # type: ignore[index]
        code, text = run("keys", "rotate", graced, "--grace", "24h", *cheap)
        successor = json.loads(text)["record"]["id"]
        until = json.loads(text)["replaced"]["expires_at"]
        capsys.readouterr()
        for key_id, message in (
            (expired, f"aqnt-auth: error: key {expired} expired at "),
            (revoked, f"aqnt-auth: error: key {revoked} was revoked at "),
            (graced, f"aqnt-auth: error: key {graced} was already rotated: its successor is "
                     f"{successor}, and {graced} stops working at {until[:19]}"),
        ):
            code, text = run("keys", "rotate", key_id, *cheap)
            err = capsys.readouterr().err
            assert (code, text) == (1, "")
            assert err.startswith(message)
            assert len(err.strip().splitlines()) == 1
        code, text = run("keys", "rotate", graced, "--force", *cheap)
        assert code == 0
        assert json.loads(text)["record"]["rotated_from"] == graced


class TestKeyGivenForId:
    @pytest.mark.parametrize("action", ["show", "revoke", "rotate"])
    def test_never_echoed(self, store_url: str, capsys: pytest.CaptureFixture[str],
                          action: str) -> None:
        """A whole key where an id belongs is refused, named by its id, never printed."""
        created = create()
        key, key_id = str(created["key"]), str(created["record"]["id"])  # type: ignore[index]
        code, out = run("keys", action, key)
        err = capsys.readouterr().err
        assert code == 2
        assert out == ""
        assert err == (f"aqnt-auth: error: that is an API key, not a key id: use its id "
                       f"{key_id} (a key is secret; never pass one as an argument)\n")
        assert key[20:] not in err
        _, text = run("keys", "show", key_id, "--json")
        assert json.loads(text)["status"] == "active"


class TestMemoryBudget:
    def test_a_profile_over_the_budget_is_refused(self, store_url: str,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
        """rfc9106-high-memory (2 GiB a hash) is over the default budget: an
        error saying so, and no key in the store (nothing hashed)."""
        code, text = run("keys", "create", "--name", "big", "--argon2-profile",
                         "rfc9106-high-memory")
        assert code == 1
        assert text == ""
        assert "2048 MiB" in capsys.readouterr().err
        code, listed = run("keys", "list", "--json")
        assert (code, json.loads(listed)["keys"]) == (0, [])

    def test_the_budget_is_an_option(self, store_url: str,
                                     capsys: pytest.CaptureFixture[str]) -> None:
        code, _ = run("keys", "create", "--name", "k", "--max-hash-memory", "1")
        assert code == 1  # the default profile needs 19 MiB
        assert "budget of 1 MiB" in capsys.readouterr().err
        code, _ = run("keys", "create", "--name", "k", "--argon2-profile", "cheapest",
                      "--max-hash-memory", "1")
        assert code == 0


class TestAudit:
    def test_changes_are_audited_with_the_os_user_or_actor(self, store_url: str) -> None:
        """Every key command writes its entry, by user@host or --actor;
        `audit` prints them newest first, filtered by key, time and count."""
        from aqnt_auth._audit import default_actor

        created = create()
        record = created["record"]
        assert isinstance(record, dict)
        key_id = record["id"]
        other = create()["record"]
        assert isinstance(other, dict)
        assert run("keys", "update", key_id, "--name", "renamed", "--scope", "a:b")[0] == 0
        assert run("keys", "disable", key_id, "--actor", "ci-bot")[0] == 0
        assert run("keys", "enable", key_id)[0] == 0
        assert run("keys", "revoke", key_id, "--actor", "alice")[0] == 0
        code, text = run("audit")
        assert code == 0
        lines = text.splitlines()
        assert lines[0] == f"Audit log of {store_url}, newest first (times in UTC):"
        assert lines[1].split() == ["WHEN", "EVENT", "KEY", "BY", "CHANGE"]
        events = [(line.split()[2], line.split()[3], line.split()[4]) for line in lines[2:]]
        me = default_actor()
        assert events == [("revoked", key_id, "alice"), ("enabled", key_id, me),
                          ("disabled", key_id, "ci-bot"), ("updated", key_id, me),
                          ("created", other["id"], me), ("created", key_id, me)]
        assert 'name: "svc" -> "renamed"; scopes: [] -> ["a:b"]' in text
        assert str(created["key"]) not in text
        code, text = run("audit", "--key", key_id, "--since", "1h", "--limit", "2", "--json")
        assert code == 0
        data = json.loads(text)
        assert data["store"] == store_url
        assert [(e["event"], e["actor"]) for e in data["entries"]] == [
            ("revoked", "alice"), ("enabled", me)]
        assert data["entries"][0]["old"] == {"revoked_at": None}
        assert run("audit", "--key", other["id"], "--json")[1].count('"event"') == 1

    def test_audit_refuses_bad_options(self, store_url: str,
                                       capsys: pytest.CaptureFixture[str]) -> None:
        create()
        assert run("audit", "--since", "soon")[0] == 1
        assert "bad duration" in capsys.readouterr().err
        assert run("audit", "--limit", "0")[0] == 1
        assert "--limit" in capsys.readouterr().err
        key = create()["key"]
        assert isinstance(key, str)
        code = run("audit", "--key", key)[0]
        assert code == 2
        err = capsys.readouterr().err
        assert "not a key id" in err
        assert key not in err

    def test_bad_actor_is_refused(self, store_url: str,
                                  capsys: pytest.CaptureFixture[str]) -> None:
        code, _ = run("keys", "create", "--name", "svc", "--argon2-profile", "cheapest",
                      "--actor", "a\tb")
        assert code == 1
        assert "actor must be printable" in capsys.readouterr().err
        assert run("audit", "--json")[1].count('"event"') == 0

    def test_no_entries(self, store_url: str) -> None:
        create()
        assert run("audit", "--key", "nosuchkey123") == (0, f"No audit entries in {store_url}.\n")


class TestHygiene:
    def test_findings(self, store_url: str) -> None:
        """A live key without expiry or allowlist is found twice; a test key
        with an expiry not at all; a revoked key never."""
        live = create()["record"]
        create("--test", "--expires-in", "30d")
        gone = create()["record"]
        assert isinstance(live, dict)
        assert isinstance(gone, dict)
        run("keys", "revoke", str(gone["id"]))
        code, text = run("keys", "hygiene")
        assert code == 0
        assert text.splitlines()[0] == (
            f"Key hygiene in {store_url} (keys neither revoked nor expired):")
        assert "Keys that never expire: 1" in text
        assert "Live keys without an IP allowlist: 1" in text
        assert "-> aqnt-auth keys update ID --allow-ip CIDR" in text
        assert "idle" not in text
        assert str(gone["id"]) not in text
        assert text.count(str(live["id"])) == 2
        code, text = run("keys", "hygiene", "--json")
        data = json.loads(text)
        assert [r["id"] for r in data["never_expire"]] == [live["id"]]
        assert [r["id"] for r in data["live_without_allowlist"]] == [live["id"]]
        assert data["idle"] == data["due_for_rotation"] == []
        assert "hash" not in text

    def test_nothing_found(self, store_url: str) -> None:
        create("--test", "--expires-in", "30d")
        code, text = run("keys", "hygiene")
        assert code == 0
        assert text.startswith(f"No findings in {store_url}")
