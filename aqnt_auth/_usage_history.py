"""Usage history: the rows stores keep per key and hour, and the series read from them.

A :class:`UsageRow` is one key's hour (UTC): counts by outcome, and for its
valid requests the number of distinct client addresses, the last client and
user agent, and the most requested paths.  Key-less outcomes (unknown key,
malformed, missing, throttled) are kept in rows whose key id is
:data:`~aqnt_auth._outcomes.NO_KEY` (``""``).

Stores add rows up (``count = count + new``, so flushes from many processes
add up exactly), keep the larger client count, the later last client, and
merge the paths (:func:`merge_paths`).  :class:`UsageSeries` and
:class:`UsageSummary` are what :meth:`KeyManager.usage
<aqnt_auth.KeyManager.usage>` and :meth:`KeyManager.usage_summary
<aqnt_auth.KeyManager.usage_summary>` build of them, zero-filled per bucket.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final, Literal

from ._errors import ConfigurationError
from ._outcomes import FAILURE_OUTCOMES, KEY_OUTCOMES, KEYLESS_OUTCOMES, NO_KEY, OUTCOMES, VALID

__all__ = [
    "MAX_CLIENTS",
    "MAX_PATHS",
    "TOP_PATHS",
    "Bucket",
    "KeyUsage",
    "UsageBucket",
    "UsageRow",
    "UsageSeries",
    "UsageSummary",
    "hour_of",
    "merge_paths",
    "merge_rows",
]

UTC: Final = dt.timezone.utc
HOUR: Final = 3600
DAY: Final = 86_400

#: Distinct client addresses counted per key and hour, per process; past it
#: the count stays at this value ("1000 or more").
MAX_CLIENTS: Final = 1000
#: Paths a usage row keeps (the most requested ones).
TOP_PATHS: Final = 10
#: Distinct paths a process counts per key and hour between two flushes;
#: requests to further paths still count, but not by path.
MAX_PATHS: Final = 32
#: Longest path and user agent kept, in characters.
MAX_TEXT: Final = 256

Bucket = Literal["hour", "day"]


def hour_of(unix: float) -> int:
    """The start of the UTC hour holding Unix time *unix*, in Unix seconds."""
    return int(unix // HOUR) * HOUR


@dataclasses.dataclass(frozen=True, slots=True)
class UsageRow:
    """One key's hour, as a store holds it, or a flush's delta for it.

    Never holds a key, a secret, a hash or an ``Authorization`` value.
    """

    #: The key id, or ``""`` for the key-less outcomes.
    key_id: str
    #: Start of the hour, Unix seconds (UTC).
    hour: int
    #: Requests by outcome (missing outcomes: 0).
    counts: Mapping[str, int] = dataclasses.field(default_factory=dict)
    #: Distinct client addresses of the valid requests (at most MAX_CLIENTS).
    clients: int = 0
    #: Unix microseconds of the last valid request.
    last_at: int | None = None
    last_client: str | None = None
    last_user_agent: str | None = None
    #: The most requested paths of the valid requests, with their counts.
    paths: Mapping[str, int] = dataclasses.field(default_factory=dict)

    def count(self, outcome: str) -> int:
        return self.counts.get(outcome, 0)

    def paths_json(self) -> str:
        """:attr:`paths` as stores keep it (a JSON object)."""
        return json.dumps(dict(self.paths), sort_keys=True, separators=(",", ":"))


def paths_of_json(text: str | None) -> dict[str, int]:
    """The paths a store kept with :meth:`UsageRow.paths_json`."""
    if not text or text == "{}":
        return {}
    loaded = json.loads(text)
    return {str(k): int(v) for k, v in loaded.items()} if isinstance(loaded, dict) else {}


def merge_paths(stored: Mapping[str, int], added: Mapping[str, int],
                keep: int = TOP_PATHS) -> dict[str, int]:
    """*stored* plus *added*, the *keep* largest (ties by path, for stable output).

    Approximate "top paths": a path's count is exact while it stays among
    the kept ones; a path that drops out starts again from zero if it returns.
    """
    merged = dict(stored)
    for path, n in added.items():
        merged[path] = merged.get(path, 0) + n
    if len(merged) <= keep:
        return merged
    return dict(sorted(merged.items(), key=lambda item: (-item[1], item[0]))[:keep])


def merge_rows(old: UsageRow, new: UsageRow, keep_paths: int = MAX_PATHS) -> UsageRow:
    """Two deltas of the same key and hour as one (counts add, the later last
    client wins, the larger client count stays)."""
    counts = dict(old.counts)
    for outcome, n in new.counts.items():
        counts[outcome] = counts.get(outcome, 0) + n
    later = new if (new.last_at or -1) >= (old.last_at or -1) else old
    return UsageRow(old.key_id, old.hour, counts, max(old.clients, new.clients),
                    later.last_at, later.last_client, later.last_user_agent,
                    merge_paths(old.paths, new.paths, keep_paths))


def _start(at: dt.datetime, bucket: Bucket) -> dt.datetime:
    at = at.astimezone(UTC)
    if bucket == "day":
        return at.replace(hour=0, minute=0, second=0, microsecond=0)
    return at.replace(minute=0, second=0, microsecond=0)


def _aware(value: dt.datetime, what: str) -> dt.datetime:
    if value.tzinfo is None:
        raise ConfigurationError(f"{what} must be a timezone-aware datetime")
    return value.astimezone(UTC)


def window(since: dt.datetime | None, until: dt.datetime | None, bucket: Bucket,
           now: dt.datetime) -> tuple[dt.datetime, dt.datetime, list[dt.datetime]]:
    """The first bucket's start, the end (exclusive) and every bucket start
    for a range; *since* defaults to 24 hours (hour buckets) or 30 days (day
    buckets) before *until*, which defaults to *now*."""
    if bucket not in ("hour", "day"):
        raise ConfigurationError(f'bucket must be "hour" or "day", not {bucket!r}')
    end = _aware(until, "until") if until is not None else now
    begin = (_aware(since, "since") if since is not None
             else end - (dt.timedelta(hours=24) if bucket == "hour" else dt.timedelta(days=30)))
    if begin > end:
        raise ConfigurationError("since must not be after until")
    step = dt.timedelta(hours=1) if bucket == "hour" else dt.timedelta(days=1)
    first = _start(begin, bucket)
    starts: list[dt.datetime] = []
    at = first
    while at <= end:
        if len(starts) > 24 * 400:
            raise ConfigurationError("too many buckets: ask for a shorter range or by day")
        starts.append(at)
        at += step
    # Rows are per hour: the range read is whole buckets.
    return first, starts[-1] + step, starts


@dataclasses.dataclass(frozen=True, slots=True)
class UsageBucket:
    """One bucket of a series: when it starts (UTC) and its counts by outcome."""

    start: dt.datetime
    #: Every outcome of the series, zero where nothing happened.
    counts: Mapping[str, int]

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def to_dict(self) -> dict[str, Any]:
        return {"start": self.start.isoformat(), **self.counts}


def _buckets(rows: Iterable[UsageRow], starts: Sequence[dt.datetime], bucket: Bucket,
             outcomes: Sequence[str]) -> tuple[UsageBucket, ...]:
    table = {start: dict.fromkeys(outcomes, 0) for start in starts}
    for row in rows:
        start = _start(dt.datetime.fromtimestamp(row.hour, UTC), bucket)
        counts = table.get(start)
        if counts is None:
            continue
        for outcome in outcomes:
            counts[outcome] += row.count(outcome)
    return tuple(UsageBucket(start, counts) for start, counts in table.items())


def _totals(buckets: Iterable[UsageBucket], outcomes: Sequence[str]) -> dict[str, int]:
    totals = dict.fromkeys(outcomes, 0)
    for b in buckets:
        for outcome in outcomes:
            totals[outcome] += b.counts[outcome]
    return totals


def _when(unix_us: int | None) -> dt.datetime | None:
    if unix_us is None:
        return None
    return dt.datetime(1970, 1, 1, tzinfo=UTC) + dt.timedelta(microseconds=unix_us)


@dataclasses.dataclass(frozen=True, slots=True)
class UsageSeries:
    """One key's usage over a range, per hour or per day (UTC), zero-filled."""

    key_id: str
    bucket: Bucket
    #: Start of the first bucket and end of the last (exclusive).
    since: dt.datetime
    until: dt.datetime
    buckets: tuple[UsageBucket, ...]
    #: Requests by outcome over the range (every key outcome, zeros included).
    totals: Mapping[str, int]
    #: The most distinct client addresses of valid requests seen in one hour
    #: of the range (per process; at most MAX_CLIENTS, see the README).
    distinct_clients: int
    #: The client address and user agent of the last valid request in range.
    last_client: str | None
    last_user_agent: str | None
    last_used_at: dt.datetime | None
    #: The most requested paths (valid requests), most first.
    top_paths: tuple[tuple[str, int], ...]

    @property
    def total(self) -> int:
        return sum(self.totals.values())

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {
            "key_id": self.key_id,
            "bucket": self.bucket,
            "since": self.since.isoformat(),
            "until": self.until.isoformat(),
            "totals": dict(self.totals),
            "distinct_clients": self.distinct_clients,
            "last_client": self.last_client,
            "last_user_agent": self.last_user_agent,
            "last_used_at": None if self.last_used_at is None else self.last_used_at.isoformat(),
            "top_paths": [{"path": p, "count": n} for p, n in self.top_paths],
            "buckets": [b.to_dict() for b in self.buckets],
        }


def build_series(key_id: str, rows: Sequence[UsageRow], bucket: Bucket,
                 first: dt.datetime, end: dt.datetime, starts: Sequence[dt.datetime],
                 top: int = TOP_PATHS) -> UsageSeries:
    """The series of one key's *rows* (already limited to the range)."""
    buckets = _buckets(rows, starts, bucket, KEY_OUTCOMES)
    paths: dict[str, int] = {}
    last: UsageRow | None = None
    for row in rows:
        for path, n in row.paths.items():
            paths[path] = paths.get(path, 0) + n
        if row.last_at is not None and (last is None or row.last_at > (last.last_at or -1)):
            last = row
    ranked = sorted(paths.items(), key=lambda item: (-item[1], item[0]))[:top]
    return UsageSeries(
        key_id=key_id, bucket=bucket, since=first, until=end, buckets=buckets,
        totals=_totals(buckets, KEY_OUTCOMES),
        distinct_clients=max((row.clients for row in rows), default=0),
        last_client=last.last_client if last else None,
        last_user_agent=last.last_user_agent if last else None,
        last_used_at=_when(last.last_at) if last else None,
        top_paths=tuple(ranked),
    )


@dataclasses.dataclass(frozen=True, slots=True)
class KeyUsage:
    """One key's share of a summary."""

    key_id: str
    #: The key's name, ``None`` if it has been deleted since.
    name: str | None
    #: Requests, every outcome.
    requests: int
    valid: int
    #: Requests with any other outcome.
    failures: int

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True, slots=True)
class UsageSummary:
    """Every key's usage over a range, by outcome, plus the key-less counts."""

    bucket: Bucket
    since: dt.datetime
    until: dt.datetime
    #: Counts by outcome per bucket over all keys, key-less outcomes included.
    buckets: tuple[UsageBucket, ...]
    #: Requests by outcome over the range, key-less outcomes included.
    totals: Mapping[str, int]
    #: The keys with the most requests, most first.
    top_keys: tuple[KeyUsage, ...]
    #: Failed requests of keys, by outcome (everything but ``valid``).
    failures: Mapping[str, int]
    #: Requests that named no existing key: unknown_key, malformed, missing, throttled.
    keyless: Mapping[str, int]

    @property
    def total(self) -> int:
        return sum(self.totals.values())

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {
            "bucket": self.bucket,
            "since": self.since.isoformat(),
            "until": self.until.isoformat(),
            "totals": dict(self.totals),
            "failures": dict(self.failures),
            "keyless": dict(self.keyless),
            "top_keys": [k.to_dict() for k in self.top_keys],
            "buckets": [b.to_dict() for b in self.buckets],
        }


def build_summary(rows: Sequence[UsageRow], names: Mapping[str, str], bucket: Bucket,
                  first: dt.datetime, end: dt.datetime, starts: Sequence[dt.datetime],
                  top: int) -> UsageSummary:
    """The summary of every row in the range; *names* maps key ids to names."""
    buckets = _buckets(rows, starts, bucket, OUTCOMES)
    totals = _totals(buckets, OUTCOMES)
    per_key: dict[str, list[int]] = {}
    for row in rows:
        if row.key_id == NO_KEY:
            continue
        entry = per_key.setdefault(row.key_id, [0, 0])
        entry[0] += sum(row.count(o) for o in KEY_OUTCOMES)
        entry[1] += row.count(VALID)
    ranked = sorted(per_key.items(), key=lambda item: (-item[1][0], item[0]))[:max(0, top)]
    return UsageSummary(
        bucket=bucket, since=first, until=end, buckets=buckets, totals=totals,
        top_keys=tuple(KeyUsage(key_id, names.get(key_id), n, valid, n - valid)
                       for key_id, (n, valid) in ranked),
        failures={o: totals[o] for o in FAILURE_OUTCOMES},
        keyless={o: totals[o] for o in KEYLESS_OUTCOMES},
    )
