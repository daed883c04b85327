"""``aqnt-auth scan`` over files, directories and stdin: output, exit status, skips."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from aqnt_auth._scan_files import parse_size, scan_paths

from ._support import assert_no_key, bad_checksum, cli, new_key

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def tree(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, list[str]]:
    """A project with keys in a source file, a binary file and a UTF-16 file."""
    monkeypatch.chdir(tmp_path)
    keys = [new_key(), new_key("test"), new_key(prefix="rk"), new_key()]
    (tmp_path / "src" / "app").mkdir(parents=True)
    (tmp_path / "src" / "app" / "settings.py").write_text(
        f"DEBUG = True\nAPI_KEY = '{keys[0]}'\nOTHER = '{bad_checksum(keys[1])}'\n"
    )
    (tmp_path / "src" / "clean.txt").write_text("nothing here\n" * 10)
    (tmp_path / "data.bin").write_bytes(b"\x00\x01\xff" * 3000 + b"\n" + keys[1].encode()
                                        + b"\x00")
    (tmp_path / "notes.txt").write_bytes(f"token\r\n{keys[2]}\r\n".encode("utf-16"))
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "config").write_text(keys[3])
    return tmp_path, keys


class TestCommand:
    def test_findings_output_and_exit_1(self, tree: tuple[Path, list[str]],
                                        capsys: pytest.CaptureFixture[str]) -> None:
        _, keys = tree
        code, out, err = cli(capsys, "scan")
        assert code == 1
        assert out.splitlines() == [
            f"data.bin:2: sk_test_...{keys[1][-4:]} (id {keys[1][8:20]}, test)",
            f"notes.txt:2: rk_live_...{keys[2][-4:]} (id {keys[2][8:20]}, live)",
            f"src/app/settings.py:2: sk_live_...{keys[0][-4:]} (id {keys[0][8:20]}, live)",
        ]
        assert "found 3 keys with a valid checksum in 3 places" in err
        assert_no_key(out + err, *keys)

    def test_nothing_found_exit_0(self, tree: tuple[Path, list[str]],
                                  capsys: pytest.CaptureFixture[str]) -> None:
        assert cli(capsys, "scan", "src/clean.txt") == (0, "", "")

    def test_json(self, tree: tuple[Path, list[str]],
                  capsys: pytest.CaptureFixture[str]) -> None:
        _, keys = tree
        code, out, err = cli(capsys, "scan", "--json", "src")
        assert code == 1
        data = json.loads(out)
        assert data == {
            "findings": [{
                "path": "src/app/settings.py", "line": 2, "commit": None,
                "hint": f"sk_live_...{keys[0][-4:]}", "key_id": keys[0][8:20],
                "mode": "live", "prefix": "sk",
            }],
            "skipped": [],
        }
        assert_no_key(out + err, *keys)

    def test_pre_commit_style_filenames(self, tree: tuple[Path, list[str]],
                                        capsys: pytest.CaptureFixture[str]) -> None:
        """pre-commit passes the staged files as arguments."""
        assert cli(capsys, "scan", "src/clean.txt", "notes.txt")[0] == 1
        assert cli(capsys, "scan", "src/clean.txt", "src/clean.txt")[0] == 0

    def test_stdin(self, tree: tuple[Path, list[str]],
                   capsys: pytest.CaptureFixture[str]) -> None:
        key = new_key()
        code, out, _ = cli(capsys, "scan", "-", stdin=f"log line\nAuthorization: Bearer {key}\n"
                           .encode())
        assert code == 1
        assert out == f"<stdin>:2: sk_live_...{key[-4:]} (id {key[8:20]}, live)\n"
        assert cli(capsys, "scan", "-", stdin=b"clean\n")[0] == 0

    def test_prefix_option(self, tree: tuple[Path, list[str]],
                           capsys: pytest.CaptureFixture[str]) -> None:
        code, out, _ = cli(capsys, "scan", "--prefix", "rk")
        assert code == 1
        assert [line.split(":")[0] for line in out.splitlines()] == ["notes.txt"]

    def test_exclude(self, tree: tuple[Path, list[str]],
                     capsys: pytest.CaptureFixture[str]) -> None:
        code, out, _ = cli(capsys, "scan", "--exclude", "*.bin", "--exclude", "src/app")
        assert code == 1
        assert [line.split(":")[0] for line in out.splitlines()] == ["notes.txt"]

    @pytest.mark.parametrize(
        ("argv", "message"),
        [
            (["scan", "no-such-file"], "no such file or directory: no-such-file"),
            (["scan", "--git", "src"], "not inside a git repository"),
            (["scan", "--git", "-"], "--git needs a PATH"),
            (["scan", "--max-size", "lots"], "not a size"),
            (["scan", "--prefix", "SK"], "key prefix must be"),
        ],
    )
    def test_usage_errors_exit_2(self, tree: tuple[Path, list[str]],
                                 capsys: pytest.CaptureFixture[str], argv: list[str],
                                 message: str) -> None:
        code, out, err = cli(capsys, *argv)
        assert code == 2
        assert out == ""
        assert message in err
        assert "Traceback" not in err


class TestSkips:
    def test_git_dir_and_symlinks_are_not_walked(self, tree: tuple[Path, list[str]]) -> None:
        root, keys = tree
        (root / "link.py").symlink_to(root / "src" / "app" / "settings.py")
        (root / "linkdir").symlink_to(root / "src")
        report = scan_paths(["."])
        assert sorted(f.path for f in report.findings) == [
            "data.bin", "notes.txt", "src/app/settings.py",
        ]
        # Named explicitly, a symlink is read.
        assert [f.key_id for f in scan_paths(["link.py"]).findings] == [keys[0][8:20]]

    def test_large_file_skipped_and_reported(self, tree: tuple[Path, list[str]],
                                             capsys: pytest.CaptureFixture[str]) -> None:
        root, keys = tree
        (root / "big.log").write_bytes(b"x" * 5000 + keys[0].encode())
        code, out, err = cli(capsys, "scan", "--max-size", "4K", "big.log", "src/clean.txt")
        assert (code, out) == (0, "")
        assert err == "aqnt-auth: skipped big.log: 5058 bytes, over --max-size 4096\n"

    def test_large_file_scanned_in_chunks(self, tmp_path: Path) -> None:
        """Over a chunk (1 MiB): keys across the chunk boundary and at the end are found."""
        keys = [new_key() for _ in range(3)]
        boundary = 1 << 20
        line = b"z" * 99 + b"\n"
        head = line * (boundary // 100) + b"k" * (boundary % 100 - 30)
        data = head + keys[0].encode() + b"\n" + line * 20000 + keys[1].encode() + b" " \
            + keys[2].encode()
        big = tmp_path / "big.txt"
        big.write_bytes(data)
        for max_size in (0, len(data)):
            report = scan_paths([str(big)], max_size=max_size)
            assert [(f.line, f.key_id) for f in report.findings] == [
                (10486, keys[0][8:20]), (30487, keys[1][8:20]), (30487, keys[2][8:20]),
            ]
            assert report.skipped == []
        assert scan_paths([str(big)], max_size=len(data) - 1).findings == []

    @pytest.mark.parametrize(("text", "size"), [
        ("0", 0), ("4096", 4096), ("512K", 512 << 10), ("10MiB", 10 << 20), ("1g", 1 << 30),
        ("2 MB", 2 << 20),
    ])
    def test_parse_size(self, text: str, size: int) -> None:
        assert parse_size(text) == size


def test_entry_point_in_a_real_process(tmp_path: Path) -> None:
    """What pre-commit runs: the installed command, filenames as arguments."""
    key = new_key()
    (tmp_path / "a.env").write_text(f"KEY={key}\n")
    (tmp_path / "b.txt").write_text("clean\n")
    found = subprocess.run([sys.executable, "-m", "aqnt_auth", "scan", "a.env", "b.txt"],
                           cwd=tmp_path, capture_output=True, text=True, check=False)
    assert found.returncode == 1
    assert found.stdout == f"a.env:1: sk_live_...{key[-4:]} (id {key[8:20]}, live)\n"
    assert_no_key(found.stdout + found.stderr, key)
    clean = subprocess.run([sys.executable, "-m", "aqnt_auth", "scan", "b.txt"],
                           cwd=tmp_path, capture_output=True, text=True, check=False)
    assert (clean.returncode, clean.stdout, clean.stderr) == (0, "", "")


def test_pre_commit_hook_manifest() -> None:
    """.pre-commit-hooks.yaml runs the console script on every staged file."""
    manifest = (ROOT / ".pre-commit-hooks.yaml").read_text()
    entries = [line.strip() for line in manifest.splitlines()
               if line.strip() and not line.lstrip().startswith("#")]
    fields = dict(line.lstrip("- ").split(": ", 1) for line in entries)
    assert fields["id"] == "aqnt-auth-scan"
    assert fields["entry"] == "aqnt-auth scan"
    assert fields["language"] == "python"
    assert fields["pass_filenames"] == "true"
    assert fields["types"] == "[file]"
    assert 'aqnt-auth = "aqnt_auth._cli:main"' in (ROOT / "pyproject.toml").read_text()
