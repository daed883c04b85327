"""CLI habits: --version, help when bare, examples in every --help, quiet
closed pipes, and keys refused on the command line."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pytest

import aqnt_auth
from aqnt_auth import KeyFormat
from aqnt_auth._cli import BROKEN_PIPE_STATUS, build_parser, main

from .test_cli import run


def _children(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _every_command(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
                   ) -> list[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    found = [(path, parser)]
    for name, child in _children(parser).items():
        found += _every_command(child, (*path, name))
    return found


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out == f"aqnt-auth {aqnt_auth.__version__}\n"


@pytest.mark.parametrize("argv", [[], ["keys"], ["store"]])
def test_bare_command_prints_its_help(argv: list[str]) -> None:
    code, text = run(*argv)
    assert code == 0
    assert text.startswith(f"usage: aqnt-auth {' '.join(argv)}".rstrip() + " ")
    assert "examples:" in text


def test_every_help_has_an_example() -> None:
    """Each command's --help ends with examples that run this very command."""
    commands = _every_command(build_parser())
    assert {" ".join(path) for path, _ in commands} >= {
        "", "keys", "keys create", "keys list", "keys show", "keys revoke", "keys rotate",
        "verify", "demo", "scan", "store", "store init"}
    for path, parser in commands:
        text = parser.format_help()
        assert "\nexamples:\n" in text, path
        examples = text.split("\nexamples:\n", 1)[1].splitlines()
        assert examples, path
        command = " ".join(("aqnt-auth", *path))
        assert any(command in line for line in examples), (path, examples)


def _run_into_closed_pipe(argv: list[str], cwd: Path) -> subprocess.CompletedProcess[bytes]:
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader has gone, as after `| head` printed its lines
    try:
        return subprocess.run([sys.executable, "-m", "aqnt_auth", *argv], stdout=write_end,
                              stderr=subprocess.PIPE, cwd=cwd, check=False, timeout=60)
    finally:
        os.close(write_end)


@pytest.mark.parametrize(("argv", "status"), [
    # argparse's help ignores a failed write, so the help exits 0, quietly too.
    (["--help"], 0), ([], 0),
    (["store", "init", "--sql"], BROKEN_PIPE_STATUS),
    (["scan", "--export-rules", "gitleaks"], BROKEN_PIPE_STATUS),
])
def test_closed_pipe_exits_quietly(tmp_path: Path, argv: list[str], status: int) -> None:
    """No BrokenPipeError traceback: nothing on stderr, and the status of a
    process stopped by SIGPIPE."""
    result = _run_into_closed_pipe(argv, tmp_path)
    assert result.stderr == b""
    assert result.returncode == status


def test_closed_pipe_after_reading_the_store(tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path / 'keys.db'}"
    assert main(["store", "init", "--store", store]) == 0
    result = _run_into_closed_pipe(["keys", "list", "--store", store], tmp_path)
    assert result.stderr == b""
    assert result.returncode == BROKEN_PIPE_STATUS


class TestKeyOnTheCommandLine:
    @pytest.mark.parametrize("extra", [[], ["--json"], ["--store", "memory://"]])
    def test_refused_without_echo(self, capsys: pytest.CaptureFixture[str],
                                  monkeypatch: pytest.MonkeyPatch, extra: list[str]) -> None:
        key = KeyFormat().generate("live").raw
        monkeypatch.delenv("AQNT_API_KEY", raising=False)
        code, out = run("verify", *extra, key)
        err = capsys.readouterr().err
        assert code == 2
        assert out == ""
        assert key not in err
        assert key[8:20] not in err
        assert "AQNT_API_KEY" in err
        assert "stdin" in err

    def test_dash_reads_stdin(self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
        """`verify -` is the usual "read stdin", not a key, even with AQNT_API_KEY set."""
        store = f"sqlite:///{tmp_path / 'keys.db'}"
        assert main(["store", "init", "--store", store]) == 0
        monkeypatch.setenv("AQNT_API_KEY", "sk_test_from_the_environment")
        key = KeyFormat().generate("live").raw
        code, out = run("verify", "--store", store, "-", stdin=key + "\n")
        assert code == 1
        assert out.splitlines()[1] == f"id {key[8:20]} is not in {store}"

    def test_refused_even_with_the_key_in_the_environment(
            self, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
        key = KeyFormat().generate("test").raw
        monkeypatch.setenv("AQNT_API_KEY", key)
        code, _ = run("verify", "--store", "memory://", key, "more")
        assert code == 2
        assert key not in capsys.readouterr().err
