"""Keys made at run time, and a way to run the CLI with captured output."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from aqnt_auth import KeyFormat
from aqnt_auth._cli import main
from aqnt_auth._format import ALPHABET

FMT = KeyFormat(("sk", "rk", "abcdefgh"))


def new_key(mode: str = "live", prefix: str = "sk") -> str:
    """A fresh key with a valid checksum; never a constant in the source."""
    assert mode in ("live", "test")
    return FMT.generate("live" if mode == "live" else "test", prefix).raw


def bad_checksum(key: str) -> str:
    """*key* with its last character changed: the same shape, a failing checksum."""
    last = ALPHABET[(ALPHABET.index(key[-1]) + 1) % len(ALPHABET)]
    return key[:-1] + last


def assert_no_key(text: str, *keys: str) -> None:
    """Neither a key nor its secret part appears in *text*."""
    for key in keys:
        assert key not in text
        assert key[-50:-4] not in text


def cli(capsys: pytest.CaptureFixture[str], *argv: str, stdin: bytes = b""
        ) -> tuple[int, str, str]:
    """Run ``aqnt-auth *argv``: (exit status, stdout, stderr)."""
    out = io.StringIO()
    old = sys.stdin
    sys.stdin = io.TextIOWrapper(io.BytesIO(stdin))
    try:
        code = main(list(argv), out=out)
    except SystemExit as exc:  # argparse's usage errors
        code = exc.code if isinstance(exc.code, int) else 1
    finally:
        sys.stdin = old
    return code, out.getvalue(), capsys.readouterr().err


GIT = shutil.which("git")
needs_git = pytest.mark.skipif(GIT is None, reason="git is not installed")


def git(repo: Path, *args: str) -> str:
    """Run git in *repo* with a fixed identity and no user or system config."""
    assert GIT is not None
    env = {
        **os.environ,
        "GIT_CONFIG_GLOBAL": os.devnull,
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@example.invalid",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@example.invalid",
    }
    result = subprocess.run([GIT, "-C", str(repo), *args], env=env, capture_output=True,
                            text=True, check=True)
    return result.stdout.strip()
