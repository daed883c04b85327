"""The aqnt-auth command line."""

from __future__ import annotations

import io
import json
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
        statuses = {r["id"]: r["status"] for r in json.loads(text)}
        assert statuses[key_id] == "revoked"

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


class TestErrors:
    @pytest.mark.parametrize(
        ("argv", "message"),
        [
            (["keys", "show", "nosuchkey123"], "no key with id"),
            (["keys", "revoke", "nosuchkey123"], "no key with id"),
            (["keys", "rotate", "nosuchkey123"], "no key with id"),
            (["keys", "create", "--name", "x", "--expires-in", "soon"], "bad duration"),
            (["keys", "list", "--store", "sqlite:////nonexistent-dir/x/keys.db"],
             "unavailable"),
            (["keys", "list", "--store", "nosuch://x"], "unknown store URL scheme"),
            (["keys", "create", "--name", "x", "--scope", "a b"], "scope"),
            (["verify"], "no key given"),
        ],
    )
    def test_one_line_no_traceback(self, store_url: str, capsys: pytest.CaptureFixture[str],
                                   argv: list[str], message: str) -> None:
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
