"""``aqnt-auth scan``: files, directories, stdin, and the command around them.

Files are read as bytes in 1 MiB chunks, so memory stays bounded and no
decoding can fail.  Binary files are scanned too: a key is plain ASCII
wherever it is stored (a ``.pyc``, an uncompressed archive, a database),
and the checksum keeps random bytes from passing for one.  Files with a
UTF-16 byte-order mark are decoded first, since their keys have a NUL
between every character.  Directories are walked in sorted order without
following symlinks and without entering ``.git``, ``.hg`` or ``.svn``.
"""

from __future__ import annotations

import argparse
import codecs
import dataclasses
import fnmatch
import json
import os
import re
import stat
import time
from collections.abc import Iterator, Sequence
from typing import IO, Any, Final, TextIO

from ._durations import parse_duration
from ._errors import AQNTError, ConfigurationError
from ._format import validate_prefix
from ._scan import (
    DEFAULT_REVOKE_TIME,
    MAX_CANDIDATES_PER_ID,
    LeakFinding,
    LeakRevocation,
    ScanError,
    ScanSkip,
    display_path,
    find_keys,
    format_finding,
    format_revocation,
    revoke_leaked,
)
from ._scan_git import git_dir, scan_history
from ._stores._open import open_store

__all__ = [
    "DEFAULT_MAX_SIZE",
    "ScanReport",
    "parse_size",
    "prefix_argument",
    "run_scan",
    "scan_paths",
    "seconds_argument",
    "size_argument",
]

DEFAULT_MAX_SIZE: Final = 10 * 1024 * 1024
STDIN: Final = "-"
STDIN_NAME: Final = "<stdin>"
_CHUNK: Final = 1 << 20
_SKIP_DIRS: Final = frozenset({".git", ".hg", ".svn"})
_UTF16_BOMS: Final = (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)
_SIZE: Final = re.compile(r"(\d+)\s*([KMG]?)(?:i?B)?", re.IGNORECASE)
_UNITS: Final = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}


def parse_size(text: str) -> int:
    """``4096``, ``512K``, ``10MiB``, ``1G`` (binary units) as bytes; ``0`` is no limit."""
    match = _SIZE.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"not a size: {text!r} (like 4096, 512K, 10MiB, 1G)")
    return int(match[1]) * _UNITS[match[2].upper()]


def size_argument(text: str) -> int:
    """:func:`parse_size` for argparse: a bad size is a usage error."""
    try:
        return parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def seconds_argument(text: str) -> float:
    """A duration for argparse (``90s``, ``5m``, ``0``), in seconds: a bad one is a
    usage error."""
    try:
        return parse_duration(text).total_seconds()
    except ConfigurationError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def prefix_argument(text: str) -> str:
    """A key prefix for argparse: a bad prefix is a usage error."""
    try:
        return validate_prefix(text)
    except ConfigurationError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


class _Excluded:
    """Whether a path is excluded: a glob matching its name or its whole path."""

    def __init__(self, patterns: Sequence[str]) -> None:
        self._patterns = tuple(patterns)

    def __call__(self, path: str) -> bool:
        if not self._patterns:
            return False
        path = path.replace(os.sep, "/")
        name = path.rsplit("/", 1)[-1]
        return any(fnmatch.fnmatchcase(name, p) or fnmatch.fnmatchcase(path, p)
                   for p in self._patterns)


@dataclasses.dataclass(slots=True)
class ScanReport:
    """What a scan found, and what it could not read."""

    findings: list[LeakFinding] = dataclasses.field(default_factory=list)
    skipped: list[ScanSkip] = dataclasses.field(default_factory=list)


def _walk(top: str, excluded: _Excluded, skipped: list[ScanSkip]) -> Iterator[str]:
    def failed(exc: OSError) -> None:
        skipped.append(ScanSkip(display_path(exc.filename or top), _why(exc)))

    for root, dirs, files in os.walk(top, onerror=failed):
        dirs[:] = sorted(d for d in dirs
                         if d not in _SKIP_DIRS
                         and not excluded(os.path.normpath(os.path.join(root, d))))
        for name in sorted(files):
            path = os.path.normpath(os.path.join(root, name))
            if excluded(path):
                continue
            try:
                mode = os.lstat(path).st_mode
            except OSError as exc:
                failed(exc)
                continue
            # Symlinks would scan a file twice or leave the tree; FIFOs and
            # devices would block or never end.
            if stat.S_ISREG(mode):
                yield path


def _why(exc: OSError) -> str:
    return f"unreadable ({exc.strerror or type(exc).__name__})"


def _chunks(stream: IO[Any], first: bytes = b"") -> Iterator[bytes | str]:
    if first:
        yield first
    while chunk := stream.read(_CHUNK):
        yield chunk


def _scan_file(path: str, name: str, max_size: int, prefixes: Sequence[str] | None,
               keep_keys: bool, report: ScanReport) -> None:
    try:
        with open(path, "rb") as file:
            info = os.fstat(file.fileno())
            if max_size and stat.S_ISREG(info.st_mode) and info.st_size > max_size:
                report.skipped.append(
                    ScanSkip(name, f"{info.st_size} bytes, over --max-size {max_size}"))
                return
            head = file.read(_CHUNK)
            content: Iterator[bytes | str] | str = _chunks(file, head)
            if head.startswith(_UTF16_BOMS):
                content = (head + file.read()).decode("utf-16", "replace")
            report.findings += find_keys(content, name, prefixes=prefixes, keep_keys=keep_keys)
    except OSError as exc:
        report.skipped.append(ScanSkip(name, _why(exc)))


def scan_paths(
    paths: Sequence[str],
    *,
    git: bool = False,
    max_size: int = DEFAULT_MAX_SIZE,
    prefixes: Sequence[str] | None = None,
    exclude: Sequence[str] = (),
    keep_keys: bool = False,
    stdin: IO[Any] | None = None,
) -> ScanReport:
    """Scan files, directories (recursively) and stdin (``-``); with *git*, history too.

    Raises :class:`ScanError` before reading anything if a path does not
    exist, or (with *git*) is not inside a git repository.  Files over
    *max_size* bytes (0: no limit) are skipped and listed in the report.
    """
    excluded = _Excluded(exclude)
    missing = [p for p in paths if p != STDIN and not os.path.exists(p)]
    if missing:
        raise ScanError(f"no such file or directory: {display_path(missing[0])}")
    repositories: dict[str, None] = {}
    if git:
        for path in paths:
            if path != STDIN:
                repositories[git_dir(path)] = None
        if not repositories:
            raise ScanError("--git needs a PATH inside a git repository")
    report = ScanReport()
    for path in paths:
        if path == STDIN:
            if stdin is not None:
                report.findings += find_keys(_chunks(stdin), STDIN_NAME, prefixes=prefixes,
                                             keep_keys=keep_keys)
        elif os.path.isdir(path):
            for file in _walk(path, excluded, report.skipped):
                _scan_file(file, display_path(file), max_size, prefixes, keep_keys, report)
        elif not excluded(os.path.normpath(path)):
            _scan_file(path, display_path(path), max_size, prefixes, keep_keys, report)
    for directory in repositories:
        findings, skipped = scan_history(directory, max_size=max_size, prefixes=prefixes,
                                         keep_keys=keep_keys, excluded=excluded)
        report.findings += findings
        report.skipped += skipped
    return report


# -- the command --------------------------------------------------------------


def _summary(findings: Sequence[LeakFinding], revoking: bool) -> str:
    keys = len({(f.prefix, f.mode, f.key_id, f.hint) for f in findings})
    text = (f"found {keys} key{'s' if keys != 1 else ''} with a valid checksum "
            f"in {len(findings)} place{'s' if len(findings) != 1 else ''}: treat "
            f"{'them' if keys != 1 else 'it'} as leaked")
    if not revoking:
        text += " (revoke with --revoke, or keys revoke ID; then rotate)"
    return text


def _revocation_summary(revocations: Sequence[LeakRevocation], elapsed: float,
                        limit: float) -> str:
    text = f"revocation took {elapsed:.1f} s"
    skipped = [r for r in revocations if r.outcome == "skipped"]
    if skipped:
        bound = f"{limit:g} s in all" if limit else "no time limit"
        ids = len({r.key_id for r in skipped})
        text += (f"; {len(skipped)} key{'s' if len(skipped) != 1 else ''} for {ids} "
                 f"id{'s' if ids != 1 else ''} not verified (at most {MAX_CANDIDATES_PER_ID} "
                 f"per key id, {bound}): if one is yours, revoke it with keys revoke ID")
    return text


def run_scan(
    paths: Sequence[str],
    out: TextIO,
    err: TextIO,
    *,
    prog: str = "aqnt-auth",
    revoke_store: str | None = None,
    revoke_time: float = DEFAULT_REVOKE_TIME,
    as_json: bool = False,
    actor: str | None = None,
    **options: Any,
) -> int:
    """The ``aqnt-auth scan`` command: print findings; 0 none, 1 found, 2 cannot scan.

    *options* go to :func:`scan_paths`.  With *revoke_store* (a store URL),
    the keys found are revoked there (see :func:`revoke_leaked`), verifying
    for at most *revoke_time* seconds (0: no limit); the time it took is
    printed.  The exit status is still 1, since a leaked key's users need a
    new one.  The audit log names *actor* as the revoker.
    """
    try:
        report = scan_paths(paths, keep_keys=revoke_store is not None, **options)
    except ScanError as exc:
        print(f"{prog}: error: {exc}", file=err)
        return 2
    findings = report.findings
    if not as_json:
        for finding in findings:
            print(format_finding(finding), file=out)
    for skip in report.skipped:
        print(f"{prog}: {skip}", file=err)
    revocations: list[LeakRevocation] | None = None
    failure: str | None = None
    started = time.monotonic()
    if revoke_store is not None and findings:
        try:
            store = open_store(revoke_store, create=False)
            try:
                revocations = revoke_leaked(store, findings, time_limit=revoke_time,
                                            actor=actor)
            finally:
                store.close()
        except AQNTError as exc:
            failure = f"revocation failed: {exc}"
    elapsed = time.monotonic() - started
    if as_json:
        data: dict[str, Any] = {
            "findings": [f.to_dict() for f in findings],
            "skipped": [s.to_dict() for s in report.skipped],
        }
        if revoke_store is not None:
            data["revocations"] = [r.to_dict() for r in revocations or ()]
            data["revocation_error"] = failure
            data["revocation_seconds"] = round(elapsed, 3)
        print(json.dumps(data, indent=2), file=out)
    else:
        for revocation in revocations or ():
            print(format_revocation(revocation), file=out)
    if failure is not None:
        print(f"{prog}: error: {failure}", file=err)
    if revocations:
        print(f"{prog}: {_revocation_summary(revocations, elapsed, revoke_time)}", file=err)
    if findings:
        print(f"{prog}: {_summary(findings, revoke_store is not None)}", file=err)
        return 1
    return 0
