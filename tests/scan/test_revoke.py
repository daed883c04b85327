"""``aqnt-auth scan --revoke`` and revoke_leaked: only a store's own keys, proven."""

from __future__ import annotations

import json
import re
import secrets
from pathlib import Path

import pytest

from aqnt_auth import (
    Argon2Hasher,
    ConfigurationError,
    HMACHasher,
    KeyManager,
    KeyRecord,
    MemoryKeyStore,
    SQLiteKeyStore,
    checksum,
)
from aqnt_auth._audit import default_actor
from aqnt_auth._format import ALPHABET
from aqnt_auth._scan import LeakFinding, find_keys, revoke_leaked

from ._support import assert_no_key, cli, forge, new_key


def look_alike(key_id: str) -> str:
    """A key with a valid checksum that names *key_id* but is not that key."""
    head = "sk_live_" + key_id + "".join(secrets.choice(ALPHABET) for _ in range(32))
    return head + checksum(head)


def leaked(*keys: str) -> list[LeakFinding]:
    return list(find_keys("\n".join(keys), "leak.txt", keep_keys=True))


class TestCommand:
    @pytest.fixture
    def setup(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
              cheap_hasher: Argon2Hasher) -> tuple[KeyManager, list[str]]:
        monkeypatch.chdir(tmp_path)
        monkeypatch.setenv("AQNT_AUTH_STORE", f"sqlite:///{tmp_path}/keys.db")
        monkeypatch.delenv("AQNT_AUTH_PEPPER", raising=False)
        manager = KeyManager(SQLiteKeyStore(str(tmp_path / "keys.db")), hasher=cheap_hasher)
        mine = [manager.create("a").key, manager.create("b", mode="test").key]
        stranger = new_key()
        fake = look_alike(mine[0][8:20])
        (tmp_path / "src").mkdir()
        (tmp_path / "src" / "a.py").write_text(f"A = '{mine[0]}'\nB = '{mine[0]}'\n")
        (tmp_path / "src" / "b.txt").write_text(f"{mine[1]}\n")
        (tmp_path / "src" / "c.txt").write_text(f"{stranger}\n{fake}\n")
        return manager, [*mine, stranger, fake]

    def test_revoke(self, setup: tuple[KeyManager, list[str]],
                    capsys: pytest.CaptureFixture[str]) -> None:
        manager, keys = setup
        mine, stranger, fake = keys[:2], keys[2], keys[3]
        code, out, err = cli(capsys, "scan", "--revoke", "src")
        assert code == 1  # still: the keys leaked, their users need new ones
        hint = [k[:8] + "..." + k[-4:] for k in keys]
        assert out.splitlines()[5:] == [
            f"key {mine[0][8:20]} ({hint[0]}): revoked",
            f"key {mine[1][8:20]} ({hint[1]}): revoked",
            f"key {stranger[8:20]} ({hint[2]}): not in this store",
            f"key {fake[8:20]} ({hint[3]}): not revoked: the id is in this store, "
            "but the key found is not its key",
        ]
        assert "found 4 keys with a valid checksum in 5 places" in err
        assert_no_key(out + err, *keys)
        assert [manager.get(k[8:20]).status() for k in mine] == ["revoked", "revoked"]
        # Audited as the scanner's revocations, by who ran it.
        revoked = [(e.event, e.key_id, e.actor) for e in manager.audit()
                   if e.event != "created"]
        assert sorted(revoked) == sorted(
            ("scanner_revoked", k[8:20], default_actor()) for k in mine)

        code, out, _ = cli(capsys, "scan", "--revoke", "--json", "src/a.py")
        assert code == 1
        data = json.loads(out)
        assert data["revocations"] == [
            {"key_id": mine[0][8:20], "hint": hint[0], "outcome": "already_revoked",
             "detail": ""},
        ]
        assert data["revocation_error"] is None
        assert_no_key(out, *keys)

    def test_without_revoke_nothing_changes(self, setup: tuple[KeyManager, list[str]],
                                            capsys: pytest.CaptureFixture[str]) -> None:
        manager, keys = setup
        code, out, _ = cli(capsys, "scan", "src")
        assert code == 1
        assert "revoked" not in out
        assert manager.get(keys[0][8:20]).status() == "active"

    def test_store_failure_still_reports(self, setup: tuple[KeyManager, list[str]],
                                         capsys: pytest.CaptureFixture[str]) -> None:
        code, out, err = cli(capsys, "scan", "--revoke", "--store",
                             "sqlite:////nonexistent-dir/x/keys.db", "src/b.txt")
        assert code == 1
        assert out.startswith("src/b.txt:1: sk_test_...")
        assert "aqnt-auth: error: revocation failed:" in err
        assert "Traceback" not in err


class TestRevokeLeaked:
    def test_same_hint_wrong_secret_is_not_revoked(self, cheap_hasher: Argon2Hasher) -> None:
        """A planted look-alike with a stored key's id and hint revokes nothing."""
        store = MemoryKeyStore()
        fake = leaked(new_key())[0]
        assert fake.key is not None
        store.add(KeyRecord(id=fake.key_id, name="victim", mode="live", hint=fake.hint,
                            hash=cheap_hasher.hash("the real secret")))
        (result,) = revoke_leaked(store, [fake], hashers=[cheap_hasher])
        assert result.outcome == "mismatch"
        record = store.get(fake.key_id)
        assert record is not None
        assert record.revoked_at is None

    def test_hmac_key_needs_the_pepper(self) -> None:
        pepper = HMACHasher("p" * 32)
        manager = KeyManager(MemoryKeyStore(), hasher=pepper)
        key = manager.create("svc").key
        (result,) = revoke_leaked(manager.store, leaked(key), hashers=[Argon2Hasher("cheapest")])
        assert (result.outcome, result.detail.endswith("AQNT_AUTH_PEPPER")) == (
            "unverified", True)
        (result,) = revoke_leaked(manager.store, leaked(key), hashers=[pepper])
        assert result.outcome == "revoked"
        assert manager.get(key[8:20]).status() == "revoked"

    def test_unreadable_stored_hash(self) -> None:
        store = MemoryKeyStore()
        (finding,) = leaked(new_key())
        store.add(KeyRecord(id=finding.key_id, name="x", mode="live", hint=finding.hint,
                            hash="$argon2id$garbage"))
        (result,) = revoke_leaked(store, [finding], hashers=[Argon2Hasher("cheapest")])
        assert result.outcome == "unverified"

    def test_each_key_once(self, manager: KeyManager) -> None:
        key = manager.create("svc").key
        results = revoke_leaked(manager.store, leaked(key, key, key),
                                hashers=[Argon2Hasher("cheapest")])
        assert [r.outcome for r in results] == ["revoked"]
        assert revoke_leaked(manager.store, []) == []

    def test_needs_kept_keys(self, manager: KeyManager) -> None:
        findings = list(find_keys(new_key(), "x"))
        with pytest.raises(ConfigurationError, match="keep_keys"):
            revoke_leaked(manager.store, findings)


class CountingHasher(Argon2Hasher):
    """argon2's cheapest profile, counting verifications."""

    def __init__(self) -> None:
        super().__init__("cheapest")
        self.verified = 0

    def verify(self, stored: str, secret: str) -> bool:
        self.verified += 1
        return super().verify(stored, secret)


class TickingClock:
    """A clock that advances *step* seconds each time it is read."""

    def __init__(self, step: float) -> None:
        self.step = step
        self.now = 0.0

    def __call__(self) -> float:
        self.now += self.step
        return self.now


NOT_VERIFIED_PER_ID = ("3 other keys with this id were verified; at most 3 are, per id "
                       "and scan")


class TestBoundedVerification:
    """Look-alikes with a stored key's id and hint are free to forge (CRC32 is
    linear); each would cost one argon2 verification."""

    @pytest.fixture
    def hasher(self) -> CountingHasher:
        return CountingHasher()

    @pytest.fixture
    def keys(self, hasher: CountingHasher) -> KeyManager:
        return KeyManager(MemoryKeyStore(), hasher=hasher)

    def test_at_most_three_candidates_per_id(self, keys: KeyManager,
                                             hasher: CountingHasher) -> None:
        """Forty planted look-alikes cost three verifications; the rest, even the
        real key behind them, are skipped and say why."""
        key = keys.create("victim").key
        planted = [forge(key) for _ in range(40)]
        assert all(f[-4:] == key[-4:] for f in planted)
        results = revoke_leaked(keys.store, leaked(*planted, key), hashers=[hasher])
        assert hasher.verified == 3
        assert [r.outcome for r in results] == ["mismatch"] * 3 + ["skipped"] * 38
        assert {r.detail for r in results[3:]} == {NOT_VERIFIED_PER_ID}
        assert keys.get(key[8:20]).status() == "active"

    def test_the_key_found_ends_the_search(self, keys: KeyManager,
                                           hasher: CountingHasher) -> None:
        """Once a text proved to be an id's key, the others for that id are not it."""
        key = keys.create("victim").key
        results = revoke_leaked(keys.store, leaked(key, *(forge(key) for _ in range(10))),
                                hashers=[hasher])
        assert hasher.verified == 1
        assert [r.outcome for r in results] == ["revoked"] + ["mismatch"] * 10

    def test_a_revoked_key_costs_no_verification(self, keys: KeyManager,
                                                 hasher: CountingHasher) -> None:
        key = keys.create("victim").key
        keys.revoke(key[8:20])
        results = revoke_leaked(keys.store, leaked(*(forge(key) for _ in range(10))),
                                hashers=[hasher])
        assert hasher.verified == 0
        assert {r.outcome for r in results} == {"already_revoked"}

    def test_time_limit(self, keys: KeyManager, hasher: CountingHasher) -> None:
        """Past the time limit nothing more is verified (the clock here advances
        10 s per reading: the start, then one reading before each verification)."""
        found = [keys.create(f"k{i}").key for i in range(5)]
        results = revoke_leaked(keys.store, leaked(*found), hashers=[hasher],
                                time_limit=25, clock=TickingClock(10))
        assert hasher.verified == 2
        assert [r.outcome for r in results] == ["revoked"] * 2 + ["skipped"] * 3
        assert results[2].detail == "the 25 s allowed for verifying were spent"
        unlimited = revoke_leaked(keys.store, leaked(*found[2:]), hashers=[hasher],
                                  time_limit=0, clock=TickingClock(10))
        assert [r.outcome for r in unlimited] == ["revoked"] * 3

    def test_bad_bounds(self, keys: KeyManager) -> None:
        with pytest.raises(ConfigurationError):
            revoke_leaked(keys.store, [], max_per_id=0)
        with pytest.raises(ConfigurationError):
            revoke_leaked(keys.store, [], time_limit=-1)


class TestBoundedCommand:
    def test_skipped_are_reported_and_the_time_printed(
            self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
            capsys: pytest.CaptureFixture[str], cheap_hasher: Argon2Hasher) -> None:
        monkeypatch.chdir(tmp_path)
        monkeypatch.setenv("AQNT_AUTH_STORE", f"sqlite:///{tmp_path}/keys.db")
        manager = KeyManager(SQLiteKeyStore(str(tmp_path / "keys.db")), hasher=cheap_hasher)
        key = manager.create("victim").key
        planted = [forge(key) for _ in range(6)]
        (tmp_path / "planted.txt").write_text("\n".join([*planted, key]) + "\n")
        code, out, err = cli(capsys, "scan", "--revoke", "planted.txt")
        assert code == 1
        lines = out.splitlines()[7:]
        assert lines[3:] == [f"key {key[8:20]} ({key[:8]}...{key[-4:]}): not revoked: not "
                             f"verified ({NOT_VERIFIED_PER_ID})"] * 4
        assert re.search(
            r"^aqnt-auth: revocation took \d+\.\d s; 4 keys for 1 id not verified \(at most 3 "
            r"per key id, 60 s in all\): if one is yours, revoke it with keys revoke ID$",
            err, re.MULTILINE)
        assert_no_key(out + err, key, *planted)

        code, out, err = cli(capsys, "scan", "--revoke", "--json", "--max-revoke-time", "0",
                             "planted.txt")
        data = json.loads(out)
        assert isinstance(data["revocation_seconds"], float)
        assert [r["outcome"] for r in data["revocations"]] == (
            ["mismatch"] * 3 + ["skipped"] * 4)
        assert "no time limit" in err

    def test_bad_time_is_a_usage_error(self, capsys: pytest.CaptureFixture[str]) -> None:
        code, _, err = cli(capsys, "scan", "--revoke", "--max-revoke-time", "soon", ".")
        assert code == 2
        assert "bad duration 'soon'" in err
