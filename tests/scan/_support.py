"""Keys made at run time, and a way to run the CLI with captured output."""

from __future__ import annotations

import io
import os
import random
import secrets
import shutil
import subprocess
import sys
import zlib
from pathlib import Path

import pytest

from aqnt_auth import KeyFormat
from aqnt_auth._cli import main
from aqnt_auth._format import ALPHABET, CHECKSUM_LENGTH, SECRET_LENGTH

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


def forge(key: str) -> str:
    """Another text with *key*'s prefix, mode, id and checksum, so its hint too:
    what anyone can write for a known id, since CRC32 is linear.

    A random secret, then some of its characters chosen (each ``a``, ``c``,
    ``e`` or ``g``: two bits) by solving for the CRC32 over GF(2).
    """
    head = key[:-CHECKSUM_LENGTH].encode()
    target = zlib.crc32(head)
    first = len(head) - SECRET_LENGTH
    while True:
        chars = bytearray(head)
        free = random.sample(range(first, len(head)), 24)
        for i in range(first, len(head)):
            chars[i] = ord("a") if i in free else ord(secrets.choice(ALPHABET))
        base = zlib.crc32(chars)
        columns: list[tuple[int, int]] = []  # (position, bit flipped)
        basis: dict[int, tuple[int, int]] = {}  # top bit -> (vector, columns used)
        for i in free:
            for delta in (2, 4):
                changed = bytearray(chars)
                changed[i] ^= delta
                vector, used = zlib.crc32(changed) ^ base, 1 << len(columns)
                columns.append((i, delta))
                vector, used = _reduce(vector, used, basis)
                if vector:
                    basis[vector.bit_length() - 1] = (vector, used)
        rest, used = _reduce(base ^ target, 0, basis)
        if rest:
            continue  # not solvable with these positions: draw others
        for j, (i, delta) in enumerate(columns):
            if used >> j & 1:
                chars[i] ^= delta
        forged = chars.decode() + key[-CHECKSUM_LENGTH:]
        if forged != key and FMT.is_key(forged):
            return forged


def _reduce(vector: int, used: int, basis: dict[int, tuple[int, int]]) -> tuple[int, int]:
    while vector:
        pivot = basis.get(vector.bit_length() - 1)
        if pivot is None:
            break
        vector, used = vector ^ pivot[0], used ^ pivot[1]
    return vector, used
