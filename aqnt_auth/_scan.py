"""Finding leaked keys in text or bytes: the pure half of ``aqnt-auth scan``.

A key is recognised by its shape and proven by its checksum.  The pattern
looks for ``_live_`` or ``_test_`` followed by exactly 50 base62 characters
and no further letter or digit; the prefix is then read backwards, at most
8 lower-case letters or digits, and each candidate prefix is tried, longest
first, through :meth:`KeyFormat.is_key`.  A CRC32 that matches by chance
has odds of about one in four billion, so what passes is a key someone
issued, and what fails (typos, placeholders, ``sk_live_xxxx...``) is
ignored.

Only the right-hand edge must be a boundary.  The left one is not, on
purpose: escapes and URL-encoding glue letters and digits to the front of a
key (``\\nsk_live_...``, ``Bearer%20sk_live_...``), and the checksum, which
covers the prefix, decides which tail of those characters is the key.

The pattern starts with a literal, so the regex engine skips ahead without
trying every position, runs in time linear in the input and never
backtracks more than a key's length.  Scanning works on bytes, so input
needs no decoding and invalid UTF-8 cannot stop it, and on a stream of
chunks, so memory stays bounded whatever the input's size.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import re
import time
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, Final, Literal

from ._audit import AuditEvent
from ._errors import ConfigurationError, InvalidStoredHash
from ._format import (
    _DIGITS,
    BODY_LENGTH,
    CHECKSUM_LENGTH,
    MAX_PREFIX_LENGTH,
    KeyFormat,
    Mode,
    ParsedKey,
    validate_prefix,
)
from ._hashers import Hasher, default_hashers
from ._records import KeyRecord, utcnow
from ._stores._protocol import KeyStore

__all__ = [
    "DEFAULT_REVOKE_TIME",
    "MAX_CANDIDATES_PER_ID",
    "LeakFinding",
    "LeakRevocation",
    "RevocationOutcome",
    "ScanError",
    "ScanSkip",
    "display_path",
    "find_keys",
    "format_finding",
    "format_revocation",
    "revoke_leaked",
]

# Group 1 is the mode; the match starts at the underscore before it.
_CANDIDATE: Final = re.compile(rb"_(live|test)_[0-9A-Za-z]{%d}(?![0-9A-Za-z])" % BODY_LENGTH)
_MATCH_LENGTH: Final = len("_live_") + BODY_LENGTH
# A match starting this close to the end of a chunk may continue into the
# next one (or be followed by a letter there): it waits for more input.
_UNSETTLED: Final = _MATCH_LENGTH + 1
_PREFIX_CHARS: Final = frozenset(b"abcdefghijklmnopqrstuvwxyz0123456789")
_LETTERS: Final = frozenset(b"abcdefghijklmnopqrstuvwxyz")


class ScanError(ConfigurationError):
    """The scan cannot run as asked: a missing path, no git repository, git failing."""


def display_path(path: str) -> str:
    """*path* as printed: escaped if it holds control characters or undecodable bytes.

    A newline in a file name must not break the one-finding-per-line output.
    """
    return path if path.isprintable() else ascii(path)[1:-1]


@functools.lru_cache(maxsize=64)
def _format_for(prefix: str) -> KeyFormat:
    return KeyFormat((prefix,))


@dataclasses.dataclass(frozen=True, slots=True)
class LeakFinding:
    """A key with a valid checksum, found at *path*, *line* (and *commit*).

    Holds what is safe to show: the hint, the id and the mode.  The key
    itself is in :attr:`key` only when the scan was asked to keep it (for
    revocation); it is left out of ``repr``, comparisons and
    :meth:`to_dict`.
    """

    path: str
    line: int
    hint: str
    key_id: str
    mode: Mode
    prefix: str
    #: The commit that introduced the content, for a finding in git history.
    commit: str | None = None
    key: ParsedKey | None = dataclasses.field(default=None, repr=False, compare=False)

    @property
    def location(self) -> str:
        """``path:line``, or ``commit:path:line`` (abbreviated commit) in history."""
        where = f"{self.path}:{self.line}"
        return where if self.commit is None else f"{self.commit[:12]}:{where}"

    def to_dict(self) -> dict[str, Any]:
        """Every public field, JSON-ready; never the key."""
        return {
            "path": self.path,
            "line": self.line,
            "commit": self.commit,
            "hint": self.hint,
            "key_id": self.key_id,
            "mode": self.mode,
            "prefix": self.prefix,
        }


@dataclasses.dataclass(frozen=True, slots=True)
class ScanSkip:
    """An input the scan did not read, and why (too big, unreadable...)."""

    path: str
    reason: str
    #: The blob's id, for content skipped in git history.
    blob: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def __str__(self) -> str:
        where = self.path if self.blob is None else f"{self.path} (blob {self.blob[:12]})"
        return f"skipped {where}: {self.reason}"


def format_finding(finding: LeakFinding) -> str:
    """``path:line: sk_live_...abcd (id XXXXXXXXXXXX, live)``."""
    return f"{finding.location}: {finding.hint} (id {finding.key_id}, {finding.mode})"


class _Resolver:
    """Turns a candidate match into a checked key, for a fixed set of prefixes.

    Each prefix a match might have is first tested with one CRC32 over the
    buffer, without building a string; :meth:`KeyFormat.is_key` then has the
    last word on the one that passes.  A file made of nothing but
    near-misses costs a few microseconds per candidate.
    """

    __slots__ = ("_format", "_prefixes")

    def __init__(self, prefixes: Sequence[str] | None) -> None:
        if prefixes:
            checked = tuple(dict.fromkeys(validate_prefix(p) for p in prefixes))
            self._format: KeyFormat | None = KeyFormat(checked)
            self._prefixes = [p.encode() for p in checked]
        else:
            self._format = None
            self._prefixes = []

    def _starts(self, buf: bytes, start: int) -> list[int]:
        """Where the key may begin: longest prefix first."""
        if self._format is not None:
            return sorted(start - len(p) for p in self._prefixes
                           if start >= len(p) and buf.startswith(p, start - len(p), start))
        first = start
        floor = max(start - MAX_PREFIX_LENGTH, 0)
        while first > floor and buf[first - 1] in _PREFIX_CHARS:
            first -= 1
        return [i for i in range(first, start) if buf[i] in _LETTERS]

    def resolve(self, buf: bytes, start: int, end: int) -> ParsedKey | None:
        c = buf[end - CHECKSUM_LENGTH:end].translate(_DIGITS)
        presented = (((((c[0] * 62 + c[1]) * 62 + c[2]) * 62 + c[3]) * 62 + c[4]) * 62) + c[5]
        view = memoryview(buf)
        for i in self._starts(buf, start):
            if zlib.crc32(view[i:end - CHECKSUM_LENGTH]) != presented:
                continue
            token = buf[i:end].decode("ascii")
            fmt = self._format or _format_for(token[: start - i])
            if fmt.is_key(token):
                return fmt.split(token)
        return None


def find_keys(
    chunks: Iterable[bytes | str] | bytes | bytearray | str,
    path: str = "-",
    *,
    commit: str | None = None,
    prefixes: Sequence[str] | None = None,
    keep_keys: bool = False,
) -> Iterator[LeakFinding]:
    """Yield every key with a valid checksum in *chunks*, in order.

    :param chunks: the content, whole (``bytes`` or ``str``) or as an
        iterable of consecutive pieces of any size; a key split across
        pieces is still found.
    :param path: the name findings carry (``"-"`` for stdin).
    :param commit: the commit findings carry, for history scans.
    :param prefixes: only keys with one of these prefixes; by default any
        valid prefix (``sk``, ``rk``...).
    :param keep_keys: keep each key in :attr:`LeakFinding.key`, for
        :func:`revoke_leaked`.  Off by default, so a finding holds no secret.

    Lines are counted by ``\\n``; in a binary file the line is the number of
    newline bytes before the key, plus one.
    """
    pieces: Iterator[bytes | bytearray | str] = (
        iter((chunks,)) if isinstance(chunks, (bytes, bytearray, str)) else iter(chunks)
    )
    resolver = _Resolver(prefixes)
    buf = b""
    done = 0  # matches starting before this index were already handled
    counted = 0  # the newlines before this index are counted in `line`
    line = 1
    final = False
    while not final:
        piece = next(pieces, None)
        if piece is None:
            final = True
        else:
            if isinstance(piece, str):
                # Lone surrogates from a lenient decode must not stop the scan.
                piece = piece.encode("utf-8", "surrogatepass")
            if not piece:
                continue
            # Keep only what a later match can still need: the unsettled
            # tail and, before it, the longest prefix a match may look back on.
            cut = max(done - MAX_PREFIX_LENGTH, 0)
            if cut:
                if counted < cut:
                    line += buf.count(b"\n", counted, cut)
                    counted = cut
                buf, done, counted = buf[cut:], done - cut, counted - cut
            buf += piece
        limit = len(buf) if final else len(buf) - _UNSETTLED
        if limit <= done:
            continue
        for match in _CANDIDATE.finditer(buf, done):
            start = match.start()
            if start >= limit:
                break
            parsed = resolver.resolve(buf, start, match.end())
            if parsed is None:
                continue
            line += buf.count(b"\n", counted, start)
            counted = start
            yield LeakFinding(
                path=path,
                line=line,
                hint=parsed.hint,
                key_id=parsed.key_id,
                mode=parsed.mode,
                prefix=parsed.prefix,
                commit=commit,
                key=parsed if keep_keys else None,
            )
        done = limit


# -- revocation ---------------------------------------------------------------

RevocationOutcome = Literal["revoked", "already_revoked", "not_in_store", "mismatch",
                            "unverified", "skipped"]

#: Candidates verified (one argon2 verification each) per key id and scan, at
#: most.  An id names one key, so several distinct candidates for one id are
#: look-alikes but one; anyone can forge them (CRC32 is linear), and without a
#: bound a planted file of thousands would keep ``--revoke`` hashing for hours.
MAX_CANDIDATES_PER_ID: Final = 3
#: Seconds ``--revoke`` spends verifying, at most, by default.
DEFAULT_REVOKE_TIME: Final = 60.0

_OUTCOME_TEXT: Final[dict[str, str]] = {
    "revoked": "revoked",
    "already_revoked": "already revoked",
    "not_in_store": "not in this store",
    "mismatch": "not revoked: the id is in this store, but the key found is not its key",
    "unverified": "not revoked: cannot verify the key against its stored hash",
    "skipped": "not revoked: not verified",
}


@dataclasses.dataclass(frozen=True, slots=True)
class LeakRevocation:
    """What :func:`revoke_leaked` did about one distinct leaked key."""

    key_id: str
    hint: str
    outcome: RevocationOutcome
    #: Why a key could not be verified; empty otherwise.
    detail: str = ""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def format_revocation(revocation: LeakRevocation) -> str:
    """``key XXXXXXXXXXXX (sk_live_...abcd): revoked``."""
    text = _OUTCOME_TEXT[revocation.outcome]
    if revocation.detail:
        text += f" ({revocation.detail})"
    return f"key {revocation.key_id} ({revocation.hint}): {text}"


def _hasher_for(stored: str, hashers: Sequence[Hasher]) -> Hasher | None:
    for hasher in hashers:
        if stored.startswith(hasher.identifier):
            return hasher
    return None


class _Budget:
    """What verifying may still cost: candidates per id, and time in all."""

    def __init__(self, max_per_id: int, time_limit: float, clock: Callable[[], float]) -> None:
        self.max_per_id = max_per_id
        self.time_limit = time_limit
        self.clock = clock
        self.start = clock()
        self.tried: dict[str, int] = {}

    def refusal(self, key_id: str) -> str | None:
        """Why the next candidate for *key_id* may not be verified, if it may not."""
        if self.tried.get(key_id, 0) >= self.max_per_id:
            return (f"{self.max_per_id} other keys with this id were verified; at most "
                    f"{self.max_per_id} are, per id and scan")
        if self.time_limit and self.clock() - self.start >= self.time_limit:
            return f"the {self.time_limit:g} s allowed for verifying were spent"
        self.tried[key_id] = self.tried.get(key_id, 0) + 1
        return None


def _revoke_one(store: KeyStore, key: ParsedKey, record: KeyRecord | None,
                hashers: Sequence[Hasher], now: dt.datetime, budget: _Budget,
                proven: set[str], actor: str | None) -> LeakRevocation:
    def outcome(result: RevocationOutcome, detail: str = "") -> LeakRevocation:
        return LeakRevocation(key.key_id, key.hint, result, detail)

    if record is None:
        return outcome("not_in_store")
    # Ids are not secret, so anyone can write a look-alike with a valid
    # checksum that names one of ours: revoke only on proof that the leaked
    # text is the key itself, or a planted string could revoke a stranger's key.
    if (record.prefix, record.mode, record.hint) != (key.prefix, key.mode, key.hint):
        return outcome("mismatch")
    if record.revoked_at is not None:
        # Nothing left to do, whether or not this text is the key: no hash.
        return outcome("already_revoked")
    if record.id in proven:
        # Another text already proved to be this id's key: this one is not.
        return outcome("mismatch")
    hasher = _hasher_for(record.hash, hashers)
    if hasher is None:
        return outcome("unverified", "its stored hash needs a hasher not configured here; "
                                     "HMAC keys need AQNT_AUTH_PEPPER")
    refusal = budget.refusal(record.id)
    if refusal is not None:
        return outcome("skipped", refusal)
    try:
        if not hasher.verify(record.hash, key.secret):
            return outcome("mismatch")
    except InvalidStoredHash as exc:
        return outcome("unverified", str(exc))
    proven.add(record.id)
    # Audited as the scanner's: the entry says the key was found leaked.
    audit = AuditEvent(actor=actor, at=now, event="scanner_revoked")
    if store.revoke(record.id, now, audit=audit) is None:  # deleted meanwhile
        return outcome("not_in_store")
    return outcome("revoked")


def revoke_leaked(
    store: KeyStore,
    findings: Iterable[LeakFinding],
    *,
    hashers: Sequence[Hasher] | None = None,
    now: dt.datetime | None = None,
    max_per_id: int = MAX_CANDIDATES_PER_ID,
    time_limit: float = DEFAULT_REVOKE_TIME,
    clock: Callable[[], float] = time.monotonic,
    actor: str | None = None,
) -> list[LeakRevocation]:
    """Revoke, in *store*, every distinct key of *findings* that is one of its keys.

    A key is revoked only when the store holds its id *and* its secret
    verifies against the stored hash; a key whose id the store does not
    know is ``not_in_store``, one that names a stored id without being that
    key is ``mismatch``.  *findings* must come from a scan with
    ``keep_keys=True``.  *hashers* default to argon2id, plus HMAC when
    ``AQNT_AUTH_PEPPER`` is set.

    Verifying costs one hash each, and look-alikes are free to forge, so it
    is bounded: at most *max_per_id* candidates per key id, and none once
    *time_limit* seconds (by *clock*; 0: no limit) have been spent.  The
    others are ``skipped``, with the reason in their ``detail``.

    Each revocation is written to the audit log as ``scanner_revoked`` by
    *actor* (who ran the scan).
    """
    if max_per_id < 1:
        raise ConfigurationError("max_per_id must be at least 1")
    if time_limit < 0:
        raise ConfigurationError("time_limit must not be negative")
    keys: dict[str, ParsedKey] = {}
    for finding in findings:
        if finding.key is None:
            raise ConfigurationError("revoking needs findings scanned with keep_keys=True")
        keys.setdefault(finding.key.raw, finding.key)
    if not keys:
        return []
    hashers = default_hashers() if hashers is None else tuple(hashers)
    now = now or utcnow()
    budget = _Budget(max_per_id, time_limit, clock)
    records: dict[str, KeyRecord | None] = {}
    proven: set[str] = set()
    results = []
    for key in keys.values():
        if key.key_id not in records:  # one read per id, however many look-alikes
            records[key.key_id] = store.get(key.key_id)
        results.append(_revoke_one(store, key, records[key.key_id], hashers, now, budget,
                                   proven, actor))
    return results
