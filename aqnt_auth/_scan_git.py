"""The history half of ``aqnt-auth scan --git``.

Every blob reachable from any ref (branches, tags, the stash) is scanned
once, however many commits carry it: ``git rev-list --all --objects`` lists
them, ``git cat-file --batch-check`` gives their sizes and ``git cat-file
--batch`` streams their contents.  Unlike reading ``git log -p``, this never
diffs anything, reports a key once rather than once per line that moves
around it, and sees content that appeared in a merge.  Only for the blobs
that hold a key, one ``git log --raw`` pass finds the commit, and the path,
that first introduced them.

git runs with list arguments (never a shell), replace refs disabled and its
stderr kept apart, to be quoted if it fails.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator, Sequence
from typing import IO, Final

from ._scan import LeakFinding, ScanError, ScanSkip, display_path, find_keys

__all__ = ["git_dir", "scan_history"]

_CHUNK: Final = 1 << 20
_BLOB_CHECK: Final = "--batch-check=%(objecttype) %(objectname) %(objectsize) %(rest)"
_BLOB_READ: Final = "--batch=%(objectname) %(objectsize) %(rest)"


def _git() -> str:
    git = shutil.which("git")
    if git is None:
        raise ScanError("--git needs the git command on PATH")
    return git


def git_dir(path: str) -> str:
    """The absolute git directory of the repository holding *path*."""
    directory = path if os.path.isdir(path) else (os.path.dirname(path) or ".")
    # List arguments, an absolute git from PATH, no shell: nothing to inject into.
    result = subprocess.run(  # noqa: S603
        [_git(), "-C", directory, "rev-parse", "--absolute-git-dir"],
        capture_output=True, check=False,
    )
    if result.returncode != 0:
        raise ScanError(f"{display_path(path)} is not inside a git repository")
    return os.fsdecode(result.stdout.rstrip(b"\n"))


class _Git:
    """Runs git commands against one repository, stderr to a temporary file."""

    def __init__(self, directory: str, errors: IO[bytes]) -> None:
        # A user's log.showSignature would mix gpg output into what is parsed.
        self._base = [_git(), "--no-replace-objects", "-c", "log.showSignature=false",
                      "--git-dir", directory]
        self._errors = errors

    @contextlib.contextmanager
    def output(self, *args: str, stdin: IO[bytes] | None = None) -> Iterator[IO[bytes]]:
        """The stdout of ``git *args``; raises :class:`ScanError` if git fails."""
        proc = subprocess.Popen(  # noqa: S603 (list arguments, no shell)
            [*self._base, *args], stdin=stdin, stdout=subprocess.PIPE, stderr=self._errors)
        assert proc.stdout is not None
        try:
            with proc.stdout:
                yield proc.stdout
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        if proc.wait() != 0:
            self._errors.seek(0)
            lines = self._errors.read().decode("utf-8", "replace").strip().splitlines()
            detail = lines[-1] if lines else f"exit status {proc.returncode}"
            raise ScanError(f"git {args[0]} failed: {detail}")


def _list_blobs(git: _Git, wanted: IO[bytes], max_size: int,
                excluded: Callable[[str], bool]) -> list[ScanSkip]:
    """Write ``<sha> <path>`` of every blob to scan into *wanted*; return the skipped."""
    skipped: list[ScanSkip] = []
    with git.output("rev-list", "--all", "--objects") as listing, \
            git.output("cat-file", _BLOB_CHECK, stdin=listing) as sizes:
        listing.close()  # cat-file holds its own copy of the pipe
        for line in sizes:
            fields = line.rstrip(b"\n").split(b" ", 3)
            # "<name> missing": a path with a newline, cut by rev-list.
            if len(fields) != 4 or fields[0] != b"blob":
                continue
            _, sha, size, name = fields
            path = os.fsdecode(name)
            if path and excluded(path):
                continue
            if max_size and int(size) > max_size:
                skipped.append(ScanSkip(_blob_name(sha, path),
                                        f"{int(size)} bytes, over --max-size {max_size}",
                                        blob=sha.decode("ascii")))
            else:
                wanted.write(b"%s %s\n" % (sha, name))
    return skipped


def _blob_name(sha: bytes, path: str) -> str:
    return display_path(path) if path else f"<blob {sha[:12].decode()}>"


def _exactly(stream: IO[bytes], size: int) -> Iterator[bytes]:
    while size > 0:
        chunk = stream.read(min(size, _CHUNK))
        if not chunk:
            raise ScanError("git cat-file ended in the middle of an object")
        size -= len(chunk)
        yield chunk


def _scan_blobs(git: _Git, wanted: IO[bytes], prefixes: Sequence[str] | None,
                keep_keys: bool) -> dict[bytes, list[LeakFinding]]:
    found: dict[bytes, list[LeakFinding]] = {}
    with git.output("cat-file", _BLOB_READ, stdin=wanted) as out:
        while header := out.readline():
            fields = header.rstrip(b"\n").split(b" ", 2)
            if len(fields) != 3:  # "<sha> missing": gone since it was listed
                continue
            sha, size, name = fields
            findings = list(find_keys(_exactly(out, int(size)),
                                      _blob_name(sha, os.fsdecode(name)),
                                      prefixes=prefixes, keep_keys=keep_keys))
            out.read(1)  # the newline after each object
            if findings:
                found[sha] = findings
    return found


def _nul_fields(stream: IO[bytes]) -> Iterator[bytes]:
    rest = b""
    while chunk := stream.read(_CHUNK):
        *fields, rest = (rest + chunk).split(b"\0")
        yield from fields
    if rest:
        yield rest


def _introductions(git: _Git, blobs: set[bytes]) -> dict[bytes, tuple[str, str]]:
    """Blob -> (commit, path) of the earliest commit that added it."""
    first: dict[bytes, tuple[str, str]] = {}
    # Topological order lists every commit before its parents, so the last
    # addition seen is the earliest; -m shows what a merge itself added.
    commit = ""
    added: bytes | None = None  # the new blob of a raw line whose path comes next
    with git.output("log", "--all", "--topo-order", "-m", "--root", "--raw", "--no-abbrev",
                    "--no-renames", "--no-color", "-z", "--format=commit %H") as out:
        for field in _nul_fields(out):
            if added is not None:
                if added in blobs:
                    first[added] = (commit, os.fsdecode(field))
                added = None
                continue
            field = field.lstrip(b"\n")
            if field.startswith(b"commit "):
                commit = field[len(b"commit "):].decode("ascii")
            elif field.startswith(b":"):
                # ":<mode> <mode> <old blob> <new blob> <status>"
                parts = field.split(b" ")
                added = parts[3] if len(parts) >= 5 else None
    return first


def scan_history(
    directory: str,
    *,
    max_size: int,
    prefixes: Sequence[str] | None = None,
    keep_keys: bool = False,
    excluded: Callable[[str], bool] = lambda path: False,
) -> tuple[list[LeakFinding], list[ScanSkip]]:
    """Scan every blob reachable from any ref of the repository at *directory*.

    *directory* is a git directory (see :func:`git_dir`).  Findings carry the
    commit that introduced the blob and its path there; a blob no commit
    added (one a tag points at directly) is named ``<blob SHA>``.  Blobs
    over *max_size* bytes (0: no limit) are skipped, and returned.
    """
    with tempfile.TemporaryFile() as errors, tempfile.TemporaryFile() as wanted:
        git = _Git(directory, errors)
        skipped = _list_blobs(git, wanted, max_size, excluded)
        wanted.seek(0)
        found = _scan_blobs(git, wanted, prefixes, keep_keys)
        first = _introductions(git, set(found)) if found else {}
    findings: list[LeakFinding] = []
    for sha, blob_findings in found.items():
        if sha in first:
            commit, name = first[sha]
            blob_findings = [dataclasses.replace(f, commit=commit, path=display_path(name))
                             for f in blob_findings]
        findings += blob_findings
    return findings, skipped
