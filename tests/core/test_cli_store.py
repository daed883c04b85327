"""The store a command talks to: named in every output, never created by a read."""

from __future__ import annotations

import json
import os
import sqlite3
import types
from pathlib import Path

import pytest

from aqnt_auth import (
    DEFAULT_STORE_URL,
    KeyFormat,
    SQLiteKeyStore,
    StoreNotFound,
    checksum,
    open_store,
)
from aqnt_auth._stores._open import store_url

from .test_cli import create, run


@pytest.fixture
def db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A store path in the test's directory, given as a relative URL from there."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("AQNT_AUTH_STORE", "sqlite:///keys.db")
    monkeypatch.delenv("AQNT_API_KEY", raising=False)
    return tmp_path / "keys.db"


def shown(path: Path) -> str:
    # What the commands print: the file's absolute path, as a URL.
    return f"sqlite:///{path.resolve()}"


class TestNamesTheStore:
    def test_create_text_and_json(self, db: Path) -> None:
        """create says where it wrote, with the absolute path of a relative URL."""
        code, text = run("keys", "create", "--name", "svc", "--argon2-profile", "cheapest")
        assert code == 0
        assert text.splitlines()[0].endswith(f"(svc) in {shown(db)}.")
        assert create()["store"] == shown(db)

    def test_list_and_show(self, db: Path) -> None:
        key_id = str(create()["record"]["id"])  # type: ignore[index]
        _, text = run("keys", "list")
        assert text.splitlines()[0] == f"Keys in {shown(db)}:"
        listed = json.loads(run("keys", "list", "--json")[1])
        assert listed["store"] == shown(db)
        assert [k["id"] for k in listed["keys"]] == [key_id]
        _, text = run("keys", "show", key_id)
        assert text.splitlines()[0].split() == ["store", shown(db)]
        assert json.loads(run("keys", "show", key_id, "--json")[1])["store"] == shown(db)

    def test_empty_list(self, db: Path) -> None:
        assert run("store", "init")[0] == 0
        assert run("keys", "list") == (0, f"No keys in {shown(db)}.\n")

    def test_verify(self, db: Path) -> None:
        key = str(create()["key"])
        code, text = run("verify", stdin=key)
        assert code == 0
        assert text.splitlines()[0].endswith(f"in {shown(db)}")
        assert json.loads(run("verify", "--json", stdin=key)[1])["store"] == shown(db)

    def test_password_is_redacted(self) -> None:
        url = "postgresql+psycopg://app:hunter2@db.internal/app"
        assert store_url(url) == "postgresql+psycopg://app:***@db.internal/app"
        assert store_url("memory://") == "memory://"
        assert store_url(open_store("sqlite:///:memory:")) == "sqlite:///:memory:"

    def test_one_default_everywhere(self) -> None:
        """The CLI, the demo and Flask all default to DEFAULT_STORE_URL."""
        from aqnt_auth._cli import build_parser

        assert DEFAULT_STORE_URL == "sqlite:///aqnt_keys.db"
        env = os.environ.pop("AQNT_AUTH_STORE", None)
        try:
            parser = build_parser()
            for argv in (["keys", "list"], ["verify"], ["store", "init"], ["scan"]):
                assert parser.parse_args(argv).store == DEFAULT_STORE_URL, argv
            assert parser.parse_args(["demo"]).demo_store == DEFAULT_STORE_URL
        finally:
            if env is not None:
                os.environ["AQNT_AUTH_STORE"] = env


class TestNoStoreIsCreated:
    @pytest.mark.parametrize("argv", [["keys", "list"], ["keys", "show", "3tHq0kR9xA2b"],
                                      ["keys", "revoke", "3tHq0kR9xA2b"], ["verify"],
                                      ["keys", "list", "--json"]])
    def test_missing_file(self, db: Path, capsys: pytest.CaptureFixture[str],
                          argv: list[str]) -> None:
        """A read says "no store at ..." and exits 2, leaving no file behind."""
        code, out = run(*argv, stdin="sk_test_whatever\n")
        err = capsys.readouterr().err
        assert code == 2
        assert out == ""
        assert err.startswith(f"aqnt-auth: error: no store at {shown(db)} ")
        assert "keys create" in err
        assert len(err.splitlines()) == 1
        assert os.listdir(db.parent) == []

    def test_someone_elses_database_is_left_alone(self, db: Path) -> None:
        """An existing SQLite file without our table is no store, and stays unchanged."""
        conn = sqlite3.connect(db)
        conn.execute("CREATE TABLE users (id INTEGER)")
        conn.commit()
        conn.close()
        before = db.read_bytes()
        assert run("keys", "list")[0] == 2
        assert db.read_bytes() == before
        assert sorted(os.listdir(db.parent)) == ["keys.db"]

    @pytest.mark.parametrize("argv", [["store", "init"],
                                      ["keys", "create", "--name", "x", "--argon2-profile",
                                       "cheapest"]])
    def test_create_and_init_create_it(self, db: Path, argv: list[str]) -> None:
        assert run(*argv)[0] == 0
        assert db.is_file()
        assert run("keys", "list")[0] == 0

    def test_scan_revoke_does_not_create_it(self, db: Path, capsys: pytest.CaptureFixture[str]
                                            ) -> None:
        leaked = KeyFormat().generate("test").raw
        (db.parent / "leak.txt").write_text(f"token = {leaked}\n")
        code, out = run("scan", "--revoke", "leak.txt")
        assert code == 1
        assert "revocation failed: no store at" in capsys.readouterr().err
        assert leaked not in out
        assert not db.exists()

    def test_sqlite_store_create_false(self, tmp_path: Path) -> None:
        path = tmp_path / "k.db"
        with pytest.raises(StoreNotFound):
            SQLiteKeyStore(path, create=False)
        assert not path.exists()
        SQLiteKeyStore(path).close()
        SQLiteKeyStore(path, create=False).close()

    def test_sql_store_url_is_redacted(self) -> None:
        """A SQL store object is named by its engine's URL, without the password."""
        sqlalchemy = pytest.importorskip("sqlalchemy")
        url = sqlalchemy.make_url("postgresql+psycopg://app:hunter2@db.internal/app")
        store = types.SimpleNamespace(engine=types.SimpleNamespace(url=url))
        assert store_url(store) == "postgresql+psycopg://app:***@db.internal/app"

    def test_sql_store_create_false(self, tmp_path: Path) -> None:
        """The SQL store opened for reading does not create its tables."""
        pytest.importorskip("sqlalchemy")
        url = f"sqlite+pysqlite:///{tmp_path / 'k.db'}"
        with pytest.raises(StoreNotFound):
            open_store(url, create=False)
        open_store(url).close()
        open_store(url, create=False).close()


class TestVerify:
    def test_unknown_id_names_the_store(self, db: Path) -> None:
        """A well-formed key whose id is not in the store says so, beside the verdict."""
        key = str(create()["key"])
        other = Path("other.db")
        assert run("store", "init", "--store", "sqlite:///other.db")[0] == 0
        code, text = run("verify", "--store", "sqlite:///other.db", stdin=key)
        assert code == 1
        assert text.splitlines() == [
            "invalid: invalid_api_key (Invalid API key provided)",
            f"id {key[8:20]} is not in {shown(other)}",
        ]
        assert key not in text

    def test_wrong_secret_does_not_blame_the_store(self, db: Path) -> None:
        key = str(create()["key"])
        parts = key[:20] + ("A" if key[20] != "A" else "B") + key[21:-6]
        forged = parts + checksum(parts)
        code, text = run("verify", stdin=forged)
        assert code == 1
        assert text == "invalid: invalid_api_key (Invalid API key provided)\n"

    def test_json_only(self, db: Path) -> None:
        """--json prints one JSON document and nothing else, valid or not."""
        key = str(create()["key"])
        code, text = run("verify", "--json", stdin=key)
        assert code == 0
        data = json.loads(text)
        assert data["valid"] is True
        assert data["key"]["id"] == key[8:20]
        assert key not in text
        typo = key[:-1] + ("x" if key[-1] != "x" else "y")
        code, text = run("verify", "--json", stdin=typo)
        assert code == 1
        data = json.loads(text)
        assert data["valid"] is False
        assert data["error"]["code"] == "invalid_api_key"
        assert data["store"] == shown(db)
        assert data["detail"] is None
        run("store", "init", "--store", "sqlite:///other.db")
        code, text = run("verify", "--json", "--store", "sqlite:///other.db", stdin=key)
        assert json.loads(text)["detail"] == f"id {key[8:20]} is not in {shown(Path('other.db'))}"
