"""``aqnt-auth scan --git``: keys anywhere in a repository's history."""

from __future__ import annotations

import json
from pathlib import Path
from typing import NamedTuple

import pytest

from aqnt_auth._scan_files import scan_paths
from aqnt_auth._scan_git import git_dir, scan_history

from ._support import assert_no_key, bad_checksum, cli, git, needs_git, new_key

pytestmark = needs_git


class Repo(NamedTuple):
    path: Path
    keys: dict[str, str]
    commits: dict[str, str]


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Repo:
    """Keys committed then deleted, on a side branch, in a merge, a binary, a big blob."""
    path = tmp_path_factory.mktemp("repo")
    keys = {name: new_key() for name in ("deleted", "branch", "merge", "binary", "big",
                                         "renamed", "tagged", "tree")}
    commits: dict[str, str] = {}

    def commit(name: str, *files: str) -> None:
        git(path, "add", "--", *files)
        git(path, "commit", "-q", "-m", name)
        commits[name] = git(path, "rev-parse", "HEAD")

    git(path, "init", "-q", "-b", "main")
    (path / "README").write_text("project\n")
    commit("root", "README")
    (path / "config").mkdir()
    (path / "config" / "prod.env").write_text(f"A=1\nB=2\nKEY={keys['deleted']}\n")
    (path / "lookalike.txt").write_text(bad_checksum(new_key()) + "\n")
    (path / "asset.bin").write_bytes(b"\x00\xff" * 100 + keys["binary"].encode() + b"\x00")
    (path / "dump.log").write_bytes(b"y\n" * 3000 + keys["big"].encode())
    (path / "old.txt").write_text(f"{keys['renamed']}\n")
    commit("add", "config/prod.env", "lookalike.txt", "asset.bin", "dump.log", "old.txt")
    git(path, "rm", "-q", "config/prod.env", "asset.bin", "dump.log")
    git(path, "mv", "old.txt", "new.txt")
    git(path, "commit", "-q", "-m", "remove")
    commits["remove"] = git(path, "rev-parse", "HEAD")

    git(path, "checkout", "-q", "-b", "side")
    (path / "side.py").write_text(f"\n\nX = '{keys['branch']}'\n")
    commit("side", "side.py")
    git(path, "checkout", "-q", "main")
    # A merge that adds content of its own, found in no parent.
    git(path, "merge", "-q", "--no-ff", "--no-commit", "side")
    (path / "merged.cfg").write_text(f"k={keys['merge']}\n")
    commit("merge", "merged.cfg")
    git(path, "rm", "-q", "side.py", "merged.cfg")
    git(path, "commit", "-q", "-m", "cleanup")
    # A blob that a tag points at, in no commit's tree.
    (path / "blob.txt").write_text(f"{keys['tagged']}\n")
    commits["blob"] = git(path, "hash-object", "-w", "blob.txt")
    git(path, "tag", "loose", commits["blob"])
    (path / "blob.txt").unlink()
    (path / "current.txt").write_text(f"{keys['tree']}\n")  # never committed
    return Repo(path, keys, commits)


def test_history_findings(repo: Repo) -> None:
    findings, skipped = scan_history(git_dir(str(repo.path)), max_size=4096)
    got = {(f.commit, f.path, f.line, f.key_id) for f in findings}
    keys, commits = repo.keys, repo.commits
    assert got == {
        (commits["add"], "config/prod.env", 3, keys["deleted"][8:20]),
        (commits["add"], "asset.bin", 1, keys["binary"][8:20]),
        (commits["add"], "old.txt", 1, keys["renamed"][8:20]),  # once, not again as new.txt
        (commits["side"], "side.py", 3, keys["branch"][8:20]),
        (commits["merge"], "merged.cfg", 1, keys["merge"][8:20]),
        (None, f"<blob {commits['blob'][:12]}>", 1, keys["tagged"][8:20]),
    }
    (skip,) = skipped
    assert (skip.path, skip.reason) == ("dump.log", "6058 bytes, over --max-size 4096")
    assert skip.blob is not None
    assert str(skip) == f"skipped dump.log (blob {skip.blob[:12]}): 6058 bytes, over " \
                        "--max-size 4096"
    with_big, skipped = scan_history(git_dir(str(repo.path)), max_size=0)
    assert skipped == []
    (big,) = [f for f in with_big if f.path == "dump.log"]
    assert (big.line, big.commit) == (3001, commits["add"])


def test_working_tree_alone_misses_history(repo: Repo) -> None:
    report = scan_paths([str(repo.path)])
    assert [f.key_id for f in report.findings] == [
        repo.keys["tree"][8:20], repo.keys["renamed"][8:20],
    ]


def test_cli_git(repo: Repo, capsys: pytest.CaptureFixture[str],
                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(repo.path)
    code, out, err = cli(capsys, "scan", "--git", "--max-size", "0")
    assert code == 1
    lines = out.splitlines()
    assert lines[0] == (f"current.txt:1: sk_live_...{repo.keys['tree'][-4:]} "
                        f"(id {repo.keys['tree'][8:20]}, live)")
    side = repo.keys["branch"]
    assert f"{repo.commits['side'][:12]}:side.py:3: sk_live_...{side[-4:]} " \
           f"(id {side[8:20]}, live)" in lines
    assert len(lines) == 9  # the renamed file's key is in the tree and in history
    assert "found 8 keys with a valid checksum in 9 places" in err
    assert_no_key(out + err, *repo.keys.values())

    code, out, err = cli(capsys, "scan", "--git", "--json", "--exclude", "*.bin",
                         "--max-size", "4K", "current.txt")
    assert code == 1
    data = json.loads(out)
    paths = {(f["path"], f["commit"]) for f in data["findings"]}
    assert paths == {
        ("current.txt", None),
        ("config/prod.env", repo.commits["add"]),
        ("old.txt", repo.commits["add"]),
        ("side.py", repo.commits["side"]),
        ("merged.cfg", repo.commits["merge"]),
        (f"<blob {repo.commits['blob'][:12]}>", None),
    }
    assert [s["path"] for s in data["skipped"]] == ["dump.log"]
    assert_no_key(out + err, *repo.keys.values())


def test_empty_repository(tmp_path: Path) -> None:
    git(tmp_path, "init", "-q")
    assert scan_history(git_dir(str(tmp_path)), max_size=0) == ([], [])
