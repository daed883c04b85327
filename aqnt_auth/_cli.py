"""The ``aqnt-auth`` command line: key management, verification and the demo.

Output formatting lives in the pure ``format_*`` functions so that other
front ends (``flask aqnt-keys``, ``manage.py aqnt_keys``) print exactly the
same thing.  Errors print one line on stderr and exit non-zero, never a
traceback.  Keys are never read from argv: ``verify`` takes them from the
environment or stdin, where they do not end up in shell history or ``ps``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any, Final, TextIO

from ._audit import AuditEntry, default_actor
from ._authenticator import Authenticator
from ._durations import parse_duration
from ._errors import (
    AQNTError,
    AuthError,
    ConfigurationError,
    InvalidAPIKey,
    NotAKeyId,
    StoreNotFound,
)
from ._hashers import ARGON2_PROFILES, Argon2Hasher, Hasher, HMACHasher
from ._manager import IDLE_AGE, Hygiene, IssuedKey, KeyManager
from ._outcomes import KEY_OUTCOMES, KEYLESS_OUTCOMES, VALID
from ._quota import quota_view
from ._records import KeyRecord, utcnow
from ._scan import MAX_CANDIDATES_PER_ID
from ._scan_files import (
    DEFAULT_MAX_SIZE,
    prefix_argument,
    run_scan,
    seconds_argument,
    size_argument,
)
from ._scan_rules import RULE_FORMATS, export_rules
from ._stores._open import DEFAULT_STORE_URL, open_store, store_url
from ._stores._protocol import KeyStore
from ._usage_history import UsageBucket, UsageSeries, UsageSummary

__all__ = [
    "CHANGING_ACTIONS",
    "KEYS_COMMAND",
    "add_audit_action",
    "add_key_actions",
    "add_usage_options",
    "audit_query",
    "build_parser",
    "format_age",
    "format_audit",
    "format_changed",
    "format_created",
    "format_hygiene",
    "format_policies",
    "format_record",
    "format_records",
    "format_revoked",
    "format_rotated",
    "format_usage",
    "format_usage_summary",
    "key_examples",
    "main",
    "new_key_hasher",
    "sparkline",
    "update_options",
    "usage_query",
]

STORE_ENV: Final = "AQNT_AUTH_STORE"
KEY_ENV: Final = "AQNT_API_KEY"
PROG: Final = "aqnt-auth"
#: How this front end's key commands are invoked, for the hints it prints.
KEYS_COMMAND: Final = f"{PROG} keys"
#: Exit status of a command that wrote into a pipe its reader had closed
#: (``| head``), as for a process killed by SIGPIPE.
BROKEN_PIPE_STATUS: Final = 128 + 13

#: The key actions that change a key: they take ``--actor``.
CHANGING_ACTIONS: Final = frozenset({"create", "revoke", "rotate", "disable", "enable",
                                     "update"})

_WARNING: Final = "This key will not be shown again. Store it in your secret manager now."


# -- formatting (pure; shared with the Flask and Django commands) -----------


def format_age(delta: dt.timedelta) -> str:
    """``45s``, ``12m``, ``5h``, ``3d``: the largest whole unit."""
    seconds = max(0, int(delta.total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _when(value: dt.datetime | None) -> str:
    return "-" if value is None else value.strftime("%Y-%m-%d %H:%M")


def _record_json(record: KeyRecord, now: dt.datetime) -> dict[str, Any]:
    data = record.public_dict()
    data["status"] = record.status(now)
    data["quota"] = quota_view(record.quota_remaining, record.quota_refill,
                               record.quota_refilled_at, now)
    data["age_seconds"] = int((now - record.created_at).total_seconds())
    data["due_for_rotation"] = record.due_for_rotation(now)
    return data


def format_created(issued: IssuedKey, as_json: bool = False, now: dt.datetime | None = None,
                   store: str | None = None) -> str:
    """The one and only display of a new key's plaintext, with the warning.

    *store* (every front end passes it) names where the key was written.
    """
    now = now or utcnow()
    if as_json:
        data: dict[str, Any] = {"key": issued.key, "warning": _WARNING,
                                "record": _record_json(issued.record, now)}
        if store is not None:
            data["store"] = store
        return json.dumps(data, indent=2)
    r = issued.record
    where = "" if store is None else f" in {store}"
    lines = [
        f"Created {r.mode} key {r.id} ({r.name}){where}.",
        "",
        f"    {issued.key}",
        "",
        _WARNING,
    ]
    if r.expires_at is not None:
        lines.append(f"It expires at {r.expires_at.isoformat()}.")
    return "\n".join(lines)


def format_record(record: KeyRecord, as_json: bool = False, now: dt.datetime | None = None,
                  store: str | None = None) -> str:
    """Every public field of one key, one per line (``keys show``), and the
    *store* it was read from."""
    now = now or utcnow()
    data = _record_json(record, now)
    if store is not None:
        data = {"store": store, **data}
    if as_json:
        return json.dumps(data, indent=2)
    width = max(len(k) for k in data)
    out = []
    for name, value in data.items():
        if isinstance(value, (list, dict)):
            value = json.dumps(value)
        elif value is None:
            value = "-"
        out.append(f"{name:<{width}}  {value}")
    return "\n".join(out)


_COLUMNS: Final = ("ID", "NAME", "MODE", "HINT", "CREATED", "AGE", "LAST USED", "REQUESTS",
                   "STATUS", "POLICIES")


def format_policies(record: KeyRecord) -> str:
    """The key's policies in a few words (``keys list``): rate limits, quota,
    IP allowlist; ``-`` for none."""
    parts = []
    if record.rate_limits:
        shared = " per owner" if record.rate_limit_shared else ""
        parts.append(f"{', '.join(record.rate_limits)}{shared}")
    quota = quota_view(record.quota_remaining, record.quota_refill, record.quota_refilled_at,
                       utcnow())
    if quota is not None:
        refill = f" (refill {record.quota_refill})" if record.quota_refill else ""
        if quota["moved_to_successor"]:
            parts.append(f"quota shared with its successor{refill}")
        else:
            parts.append(f"quota {quota['remaining']} left{refill}")
    if record.allowed_ips:
        count = len(record.allowed_ips)
        parts.append(f"{count} allowed IP{'s' if count > 1 else ''}")
    return "; ".join(parts) or "-"


def format_records(records: Sequence[KeyRecord], as_json: bool = False,
                   now: dt.datetime | None = None, store: str | None = None,
                   command: str = KEYS_COMMAND) -> str:
    """The ``keys list`` table; keys older than 90 days are flagged for rotation.

    With *store*, the text starts by naming it and the JSON is
    ``{"store": ..., "keys": [...]}`` rather than the bare list.  *command*
    is how the calling front end's key commands are invoked (``flask
    aqnt-keys``...), for the rotation hint.
    """
    now = now or utcnow()
    if as_json:
        listed = [_record_json(r, now) for r in records]
        if store is None:
            return json.dumps(listed, indent=2)
        return json.dumps({"store": store, "keys": listed}, indent=2)
    if not records:
        return "No keys." if store is None else f"No keys in {store}."
    rows = []
    due = False
    for r in records:
        status: str = r.status(now)
        if r.due_for_rotation(now):
            status += " *"
            due = True
        name = r.name if len(r.name) <= 30 else r.name[:29] + "…"
        rows.append((r.id, name, r.mode, r.hint, _when(r.created_at),
                     format_age(now - r.created_at), _when(r.last_used_at), str(r.usage_count),
                     status, format_policies(r)))
    widths = [max(len(c), *(len(row[i]) for row in rows)) for i, c in enumerate(_COLUMNS)]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in (_COLUMNS, *rows)
    ]
    if store is not None:
        lines.insert(0, f"Keys in {store}:")
    if due:
        lines += ["", "* older than 90 days: due for rotation "
                      f"({command} rotate ID --grace 24h)"]
    return "\n".join(lines)


def format_revoked(record: KeyRecord, as_json: bool = False) -> str:
    """The confirmation of ``keys revoke``."""
    if as_json:
        return json.dumps(_record_json(record, utcnow()), indent=2)
    assert record.revoked_at is not None
    return (f"Revoked key {record.id} ({record.name}) at {record.revoked_at.isoformat()}. "
            "Requests with it now get key_revoked.")


_CHANGED: Final = {
    "disable": "Disabled key {id} ({name}). Requests with it now get key_disabled, until "
               "it is enabled again.",
    "enable": "Enabled key {id} ({name}). Requests with it work again.",
    "update": "Updated key {id} ({name}).",
}


def format_changed(record: KeyRecord, action: str, as_json: bool = False) -> str:
    """The confirmation of ``keys disable``, ``enable`` and ``update``: a
    sentence and the key as it now is."""
    if as_json:
        return json.dumps(_record_json(record, utcnow()), indent=2)
    return (_CHANGED[action].format(id=record.id, name=record.name) + "\n\n"
            + format_record(record))


def format_rotated(old: KeyRecord, issued: IssuedKey, as_json: bool = False) -> str:
    """The new key of ``keys rotate``, and when the old one stops working."""
    if as_json:
        data = json.loads(format_created(issued, True))
        data["replaced"] = _record_json(old, utcnow())
        return json.dumps(data, indent=2)
    ends = old.expires_at.isoformat() if old.expires_at else "now"
    return (format_created(issued)
            + f"\nThe old key {old.id} keeps working until {ends}, then gets key_revoked.")


_AUDIT_COLUMNS: Final = ("WHEN", "EVENT", "KEY", "BY", "CHANGE")


def format_audit(entries: Sequence[AuditEntry], as_json: bool = False,
                 store: str | None = None) -> str:
    """The audit log (``aqnt-auth audit``), newest first: when (UTC), the
    event, the key, who, and what changed.  JSON: ``{"store": ..., "entries":
    [...]}`` (the bare list without *store*)."""
    if as_json:
        listed = [e.to_dict() for e in entries]
        if store is None:
            return json.dumps(listed, indent=2)
        return json.dumps({"store": store, "entries": listed}, indent=2)
    if not entries:
        return "No audit entries." if store is None else f"No audit entries in {store}."
    rows = [(e.at.astimezone(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S"), e.event,
             e.key_id, e.actor or "-", e.summary()) for e in entries]
    widths = [max(len(c), *(len(row[i]) for row in rows)) for i, c in enumerate(_AUDIT_COLUMNS)]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in (_AUDIT_COLUMNS, *rows)
    ]
    if store is not None:
        lines.insert(0, f"Audit log of {store}, newest first (times in UTC):")
    return "\n".join(lines)


#: Each finding's heading and the command that addresses it (``{command}``:
#: the front end's key commands).
_FINDINGS: Final = {
    "never_expire": ("Keys that never expire", "{command} rotate ID --expires-in 90d "
                     "--grace 24h"),
    "idle": (f"Keys idle for {IDLE_AGE.days} days or more (never used: since created)",
             "{command} revoke ID if nothing uses them"),
    "live_without_allowlist": ("Live keys without an IP allowlist",
                               "{command} update ID --allow-ip CIDR"),
    "due_for_rotation": ("Keys due for rotation (older than 90 days)",
                         "{command} rotate ID --grace 24h"),
}


def format_hygiene(found: Hygiene, as_json: bool = False, store: str | None = None,
                   command: str = KEYS_COMMAND) -> str:
    """The key-hygiene findings (``keys hygiene``): each finding's keys, and
    the command that addresses it."""
    now = found.checked_at
    if as_json:
        data: dict[str, Any] = {"checked_at": now.isoformat()}
        if store is not None:
            data = {"store": store, **data}
        for name, records in found.findings().items():
            data[name] = [_record_json(r, now) for r in records]
        return json.dumps(data, indent=2)
    where = "" if store is None else f" in {store}"
    if not found:
        return f"No findings{where}: every key that works expires, was used within " \
               f"{IDLE_AGE.days} days, is younger than 90 days, and live ones have an IP " \
               "allowlist."
    lines = [f"Key hygiene{where} (keys neither revoked nor expired):"]
    for name, records in found.findings().items():
        if not records:
            continue
        title, fix = _FINDINGS[name]
        lines += ["", f"{title}: {len(records)}"]
        for r in records:
            used = _when(r.last_used_at) if r.last_used_at else "never"
            label = r.name if len(r.name) <= 30 else r.name[:29] + "…"
            lines.append(f"  {r.id}  {label}  {r.mode}  created {_when(r.created_at)}, "
                         f"age {format_age(now - r.created_at)}, last used {used}")
        lines.append(f"  -> {fix.format(command=command)}")
    return "\n".join(lines)


def audit_query(key_id: str | None, since: str | None, limit: int | None,
                now: dt.datetime | None = None) -> dict[str, Any]:
    """The keywords of :meth:`KeyManager.audit` for the options of ``audit``
    (``--since 30d``: the last 30 days; shared with the Flask and Django
    commands)."""
    if limit is not None and limit < 1:
        raise ConfigurationError("--limit must be at least 1")
    return {"key_id": key_id,
            "since": None if since is None else (now or utcnow()) - parse_duration(since),
            "limit": limit}


def add_audit_action(actions: argparse._SubParsersAction[Any],
                     common: argparse.ArgumentParser, command: str) -> argparse.ArgumentParser:
    """Add ``audit`` with ``--key``, ``--since`` and ``--limit`` to *actions*
    (``aqnt-auth audit``, ``manage.py aqnt_keys audit``); *command* is how it
    is invoked, for its examples."""
    parser: argparse.ArgumentParser = actions.add_parser(
        "audit", parents=[common], formatter_class=argparse.RawDescriptionHelpFormatter,
        help="the audit log: every change to a key, when and by whom, newest first",
        epilog=_examples(command, f"{command} --key 3tHq0kR9xA2b",
                         f"{command} --since 30d --json"))
    parser.add_argument("--key", dest="key_id", metavar="ID", help="only this key's entries")
    parser.add_argument("--since", metavar="DURATION",
                        help="only the entries of the last DURATION, like 30d or 24h")
    parser.add_argument("--limit", type=int, metavar="N", help="at most N entries")
    return parser


# -- usage history (#14) ---------------------------------------------------------

#: The blocks of a terminal sparkline, lowest to highest; a zero is a space.
SPARKS: Final = "▁▂▃▄▅▆▇█"
#: Columns a sparkline takes at most: longer series are summed in groups.
SPARK_WIDTH: Final = 48


def sparkline(values: Sequence[int], width: int = SPARK_WIDTH) -> str:
    """*values* as one line of block characters (``▁▂▃▄▅▆▇█``, a space for
    zero), scaled to the largest; more than *width* values are summed in
    equal groups first."""
    values = list(values)
    if len(values) > width:
        size = -(-len(values) // width)
        values = [sum(values[i:i + size]) for i in range(0, len(values), size)]
    top = max(values, default=0)
    if top <= 0:
        return " " * len(values)
    return "".join(" " if v <= 0 else SPARKS[min(7, max(0, -(-v * 8 // top) - 1))]
                   for v in values)


def usage_query(since: str | None, by: str | None, *, summary: bool = False,
                now: dt.datetime | None = None) -> dict[str, Any]:
    """The keywords of :meth:`KeyManager.usage` / :meth:`~KeyManager.usage_summary`
    for the options ``--since DURATION`` (default 7d for a key, 24h for the
    summary) and ``--by hour|day`` (default: hour up to 7 days, else day);
    shared with the Flask and Django commands."""
    span = parse_duration(since if since is not None else ("24h" if summary else "7d"))
    if by is None:
        by = "hour" if span <= dt.timedelta(days=7) else "day"
    if by not in ("hour", "day"):
        raise ConfigurationError('--by must be "hour" or "day"')
    return {"since": (now or utcnow()) - span, "bucket": by}


def _span(buckets: Sequence[UsageBucket], bucket: str, since: dt.datetime,
          until: dt.datetime) -> str:
    form = "%Y-%m-%d %H:%M" if bucket == "hour" else "%Y-%m-%d"
    step = len(buckets) / SPARK_WIDTH
    per = f"per {bucket}" if step <= 1 else f"{-(-len(buckets) // SPARK_WIDTH)} {bucket}s per mark"
    return f"{since.strftime(form)} to {until.strftime(form)} UTC, {per}"


def _trend_rows(buckets: Sequence[UsageBucket], outcomes: Sequence[str],
                always: Sequence[str] = ()) -> list[tuple[str, str, str]]:
    rows = []
    for outcome in outcomes:
        series = [b.counts[outcome] for b in buckets]
        total = sum(series)
        if total or outcome in always:
            rows.append((outcome, str(total), sparkline(series)))
    return rows


def _table(header: tuple[str, ...], rows: Sequence[tuple[str, ...]]) -> list[str]:
    widths = [max(len(c), *(len(row[i]) for row in rows)) if rows else len(c)
              for i, c in enumerate(header)]
    return ["  " + "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
            .rstrip() for row in (header, *rows)]


def format_usage(series: UsageSeries, as_json: bool = False, store: str | None = None,
                 name: str | None = None) -> str:
    """One key's usage history (``keys usage ID``): per outcome its total and
    a sparkline over the range, then the facts of its valid requests."""
    if as_json:
        data = series.to_dict()
        if store is not None:
            data = {"store": store, **data}
        return json.dumps(data, indent=2)
    label = series.key_id if name is None else f"{series.key_id} ({name})"
    span = _span(series.buckets, series.bucket, series.since, series.until)
    lines = [f"Usage of key {label}, {span}:"]
    if not series.total:
        lines.append("  no requests in this range (counts are written every "
                     "usage_flush_interval, 10 s by default)")
        return "\n".join(lines)
    lines += _table(("outcome", "requests", "trend"),
                    _trend_rows(series.buckets, KEY_OUTCOMES, always=(VALID,)))
    lines.append("")
    lines.append(f"  distinct clients (busiest hour): {series.distinct_clients}")
    if series.last_used_at is not None:
        agent = f" ({series.last_user_agent})" if series.last_user_agent else ""
        lines.append(f"  last valid request: {_when(series.last_used_at)} from "
                     f"{series.last_client or '-'}{agent}")
    if series.top_paths:
        lines.append("  top paths: " + ", ".join(f"{p} {n}" for p, n in series.top_paths))
    return "\n".join(lines)


def format_usage_summary(summary: UsageSummary, as_json: bool = False,
                         store: str | None = None) -> str:
    """Every key's usage (``usage``): per outcome its total and a sparkline,
    the requests that named no key (unknown, malformed, missing, throttled),
    and the top keys."""
    if as_json:
        data = summary.to_dict()
        if store is not None:
            data = {"store": store, **data}
        return json.dumps(data, indent=2)
    where = "" if store is None else f" of {store}"
    span = _span(summary.buckets, summary.bucket, summary.since, summary.until)
    lines = [f"Usage{where}, {span}:"]
    if not summary.total:
        lines.append("  no requests in this range (counts are written every "
                     "usage_flush_interval, 10 s by default)")
        return "\n".join(lines)
    lines += _table(("outcome", "requests", "trend"),
                    _trend_rows(summary.buckets, KEY_OUTCOMES, always=(VALID,)))
    lines += ["", "  Requests that named no existing key:"]
    lines += _table(("outcome", "requests", "trend"),
                    _trend_rows(summary.buckets, KEYLESS_OUTCOMES, always=KEYLESS_OUTCOMES))
    if summary.top_keys:
        lines += ["", "  Top keys:"]
        lines += _table(("id", "name", "requests", "valid", "failures"), [
            (k.key_id, k.name if k.name is not None else "(deleted)", str(k.requests),
             str(k.valid), str(k.failures)) for k in summary.top_keys])
    return "\n".join(lines)


# -- the commands -----------------------------------------------------------


def new_key_hasher(name: str | None, argon2_profile: str = "owasp",
                   configured: Hasher | None = None) -> Hasher:
    """The hasher ``--hasher`` names (``argon2``, ``hmac``); without one, the
    front end's *configured* hasher, else argon2id with *argon2_profile*."""
    if name is None and configured is not None:
        return configured
    if name == "hmac":
        hasher = HMACHasher.from_env()
        if hasher is None:
            raise ConfigurationError("--hasher hmac needs the pepper in AQNT_AUTH_PEPPER")
        return hasher
    return Argon2Hasher(argon2_profile)


def _hasher(args: argparse.Namespace) -> Hasher:
    return new_key_hasher(args.hasher, args.argon2_profile)


def _open(args: argparse.Namespace, *, create: bool = False) -> KeyStore:
    """The store of ``--store``.  Only the commands that create keys or
    stores pass *create*: a mistyped path must not leave an empty store."""
    try:
        return open_store(args.store, create=create)
    except StoreNotFound:
        raise StoreNotFound(
            f"no store at {store_url(args.store)} (is --store or ${STORE_ENV} right? "
            f"only `{PROG} keys create` and `{PROG} store init` create a store)"
        ) from None


def _manager(args: argparse.Namespace, hasher: Hasher | None = None, *,
             create: bool = False) -> KeyManager:
    return KeyManager(_open(args, create=create), hasher=hasher, prefixes=args.prefix,
                      max_hash_memory_mib=getattr(args, "max_hash_memory", None),
                      actor=getattr(args, "actor", None) or default_actor())


def _cmd_create(args: argparse.Namespace, out: TextIO) -> int:
    expires_in = parse_duration(args.expires_in) if args.expires_in else None
    with _manager(args, _hasher(args), create=True) as keys:
        issued = keys.create(
            args.name,
            mode="test" if args.test else "live",
            scopes=args.scope,
            read_only=args.read_only,
            allowed_paths=args.allow_path,
            expires_in=expires_in,
            owner=args.owner,
            prefix=args.prefix[0],
            allowed_ips=args.allow_ip,
            quota=args.quota,
            quota_refill=args.refill,
            rate_limits=args.rate_limit,
            shared_limit=args.shared_limit,
        )
        shown = store_url(keys.store)
    print(format_created(issued, args.json, store=shown), file=out)
    return 0


def _cmd_list(args: argparse.Namespace, out: TextIO) -> int:
    with _manager(args) as keys:
        records = keys.list(include_inactive=args.all, owner=args.owner)
        shown = store_url(keys.store)
    print(format_records(records, args.json, store=shown), file=out)
    return 0


def _cmd_show(args: argparse.Namespace, out: TextIO) -> int:
    with _manager(args) as keys:
        record = keys.get(args.key_id)
        shown = store_url(keys.store)
    print(format_record(record, args.json, store=shown), file=out)
    return 0


def _cmd_revoke(args: argparse.Namespace, out: TextIO) -> int:
    with _manager(args) as keys:
        record = keys.revoke(args.key_id)
    print(format_revoked(record, args.json), file=out)
    return 0


def update_options(name: str | None, scopes: Sequence[str], clear_scopes: bool,
                   allowed_ips: Sequence[str] = (), clear_allowed_ips: bool = False, *,
                   quota: int | None = None, refill: str | None = None,
                   clear_quota: bool = False, rate_limits: Sequence[str] = (),
                   clear_rate_limits: bool = False, shared_limit: bool | None = None
                   ) -> dict[str, Any]:
    """The keywords of :meth:`KeyManager.update` for the options of ``keys
    update`` (shared with the Flask and Django commands)."""
    if scopes and clear_scopes:
        raise ConfigurationError("give --scope or --clear-scopes, not both")
    if allowed_ips and clear_allowed_ips:
        raise ConfigurationError("give --allow-ip or --clear-allow-ips, not both")
    if clear_quota and (quota is not None or refill is not None):
        raise ConfigurationError("give --quota/--refill or --clear-quota, not both")
    if rate_limits and clear_rate_limits:
        raise ConfigurationError("give --rate-limit or --clear-rate-limits, not both")
    changes: dict[str, Any] = {}
    if rate_limits or clear_rate_limits:
        changes["rate_limits"] = list(rate_limits)
    if shared_limit is not None:
        changes["shared_limit"] = shared_limit
    if name is not None:
        changes["name"] = name
    if scopes or clear_scopes:
        changes["scopes"] = list(scopes)
    if allowed_ips or clear_allowed_ips:
        changes["allowed_ips"] = list(allowed_ips)
    if quota is not None:
        changes["quota"] = quota
    if refill is not None:
        changes["quota_refill"] = refill
    if clear_quota:
        changes["clear_quota"] = True
    if not changes:
        raise ConfigurationError("nothing to update: give --name, --scope, --clear-scopes, "
                                 "--allow-ip, --clear-allow-ips, --quota, --refill, "
                                 "--clear-quota, --rate-limit, --clear-rate-limits, "
                                 "--shared-limit or --per-key-limit")
    return changes


def _cmd_disable(args: argparse.Namespace, out: TextIO) -> int:
    with _manager(args) as keys:
        record = keys.disable(args.key_id)
    print(format_changed(record, "disable", args.json), file=out)
    return 0


def _cmd_enable(args: argparse.Namespace, out: TextIO) -> int:
    with _manager(args) as keys:
        record = keys.enable(args.key_id)
    print(format_changed(record, "enable", args.json), file=out)
    return 0


def _cmd_update(args: argparse.Namespace, out: TextIO) -> int:
    changes = update_options(args.name, args.scope, args.clear_scopes, args.allow_ip,
                             args.clear_allow_ips, quota=args.quota, refill=args.refill,
                             clear_quota=args.clear_quota, rate_limits=args.rate_limit,
                             clear_rate_limits=args.clear_rate_limits,
                             shared_limit=args.shared_limit)
    with _manager(args) as keys:
        record = keys.update(args.key_id, **changes)
    print(format_changed(record, "update", args.json), file=out)
    return 0


def _cmd_rotate(args: argparse.Namespace, out: TextIO) -> int:
    grace = parse_duration(args.grace)
    expires_in = parse_duration(args.expires_in) if args.expires_in else None
    with _manager(args, _hasher(args)) as keys:
        issued = keys.rotate(args.key_id, grace=grace, expires_in=expires_in, force=args.force)
        old = keys.get(args.key_id)
    print(format_rotated(old, issued, args.json), file=out)
    return 0


def _cmd_hygiene(args: argparse.Namespace, out: TextIO) -> int:
    with _manager(args) as keys:
        found = keys.hygiene()
        shown = store_url(keys.store)
    print(format_hygiene(found, args.json, store=shown), file=out)
    return 0


def _cmd_usage(args: argparse.Namespace, out: TextIO) -> int:
    key_id = getattr(args, "key_id", None)
    query = usage_query(args.since, args.by, summary=key_id is None)
    with _manager(args) as keys:
        shown = store_url(keys.store)
        if key_id is None:
            text = format_usage_summary(keys.usage_summary(**query, top=args.top), args.json,
                                        store=shown)
        else:
            record = keys.store.get(key_id)
            text = format_usage(keys.usage(key_id, **query), args.json, store=shown,
                                name=None if record is None else record.name)
    print(text, file=out)
    return 0


def add_usage_options(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """``--since``, ``--by`` and ``--top`` of the usage commands."""
    parser.add_argument("--since", metavar="DURATION",
                        help="the last DURATION, like 7d or 24h (default: 7d for a key, "
                             "24h for every key)")
    parser.add_argument("--by", choices=("hour", "day"), default=None,
                        help="one count per UTC hour or day (default: hour up to 7 days)")
    parser.add_argument("--top", type=int, default=10, metavar="N",
                        help="keys listed in the summary (default 10)")
    return parser


def _cmd_audit(args: argparse.Namespace, out: TextIO) -> int:
    query = audit_query(args.key_id, args.since, args.limit)
    with _manager(args) as keys:
        entries = keys.audit(**query)
        shown = store_url(keys.store)
    print(format_audit(entries, args.json, store=shown), file=out)
    return 0


def _read_key(stdin: TextIO, use_env: bool = True) -> str:
    key = os.environ.get(KEY_ENV) if use_env else None
    if key is None:
        if stdin.isatty():
            print(f"Paste the key and press Enter (or set {KEY_ENV}):", file=sys.stderr)
        key = stdin.readline()
    key = key.strip()
    if not key:
        raise ConfigurationError(f"no key given: set {KEY_ENV} or pipe the key on stdin")
    return key


def _unknown_id(auth: Authenticator, key: str, shown: str) -> str | None:
    """``id X is not in <store>`` when an invalid key is well formed but its
    id is absent: the likeliest reason is a key checked against the wrong store."""
    try:
        parsed = auth.format.parse(key)
    except InvalidAPIKey:
        return None
    if auth.store.get(parsed.key_id) is not None:
        return None
    return f"id {parsed.key_id} is not in {shown}"


def _cmd_verify(args: argparse.Namespace, out: TextIO) -> int:
    stdin_only = args.argv_key == ["-"]  # `verify -`: the key is on stdin, as usual
    if args.argv_key and not stdin_only:
        # Never echo it: a key in argv is already in the shell history and
        # visible to other users through ps; say where keys go instead.
        print(f"{PROG}: error: verify takes no key on the command line (it would stay in "
              f"your shell history and show in ps): set {KEY_ENV} or pipe the key on stdin, "
              f"e.g. {PROG} verify < key.txt", file=sys.stderr)
        return 2
    key = _read_key(sys.stdin, use_env=not stdin_only)
    store = _open(args)
    shown = store_url(store)
    with Authenticator(store, prefixes=args.prefix, track_usage=False) as auth:
        try:
            principal = auth.authenticate(f"Bearer {key}")
        except AuthError as exc:
            detail = _unknown_id(auth, key, shown) if isinstance(exc, InvalidAPIKey) else None
            if args.json:
                print(json.dumps({"valid": False, "store": shown, **exc.to_dict(),
                                  "detail": detail}, indent=2), file=out)
            else:
                print(f"invalid: {exc.code} ({exc.message})", file=out)
                if detail is not None:
                    print(detail, file=out)
            return 1
    if args.json:
        print(json.dumps({"valid": True, "store": shown, "key": principal.to_dict()}, indent=2),
              file=out)
        return 0
    print(f"valid: {principal.mode} key {principal.id} ({principal.name}) in {shown}",
          file=out)
    data = principal.to_dict()
    width = max(map(len, data))
    for name, value in data.items():
        if isinstance(value, (list, dict)):
            value = json.dumps(value)
        print(f"  {name:<{width}}  {'-' if value is None else value}", file=out)
    return 0


def _cmd_demo(args: argparse.Namespace, out: TextIO) -> int:
    try:
        from aqnt_auth.adapters import _demo
    except ImportError as exc:
        raise ConfigurationError(
            f"the demo needs its extra: pip install 'aqnt-auth[demo]' ({exc})"
        ) from None
    _demo.run(host=args.host, port=args.port, store_url=args.demo_store)
    return 0


def _cmd_console(args: argparse.Namespace, out: TextIO) -> int:
    from .console._serve import check_host, serve

    check_host(args.host, args.allow_remote)  # before the store is opened
    serve(_open(args), host=args.host, port=args.port, allow_remote=args.allow_remote,
          hasher=_hasher(args), prefixes=tuple(args.prefix), out=out, server=args.server)
    return 0


def _cmd_store_init(args: argparse.Namespace, out: TextIO) -> int:
    from ._stores._sql_ddl import SCHEMA

    if args.sql:
        print(SCHEMA, end="", file=out)
        return 0
    store = open_store(args.store)
    try:
        # Stores that manage a schema (the SQL store) create and check it
        # here; the embedded ones already did when they opened.
        init = getattr(store, "init_schema", None)
        version = init() if init is not None else None
    finally:
        store.close()
    if args.json:
        print(json.dumps({"store": repr(store), "schema_version": version}, indent=2), file=out)
    elif version is None:
        print(f"Store {store!r} is ready.", file=out)
    else:
        print(f"Store {store!r} is ready: schema version {version}.", file=out)
    return 0


def _cmd_scan(args: argparse.Namespace, out: TextIO) -> int:
    if args.export_rules is not None:
        print(export_rules(args.export_rules, args.scan_prefix or ["sk"], as_json=args.json),
              end="", file=out)
        return 0
    return run_scan(
        args.paths or ["."], out, sys.stderr, prog=PROG,
        revoke_store=args.store if args.revoke else None, revoke_time=args.max_revoke_time,
        as_json=args.json, actor=args.actor or default_actor(),
        git=args.git, max_size=args.max_size, prefixes=args.scan_prefix, exclude=args.exclude,
        stdin=getattr(sys.stdin, "buffer", sys.stdin),
    )


# -- the parser -------------------------------------------------------------


def _examples(*lines: str) -> str:
    return "examples:\n" + "\n".join(f"  {line}" for line in lines)


def key_examples(command: str) -> dict[str, str]:
    """The ``--help`` examples of each key action, for a front end whose key
    commands are invoked as *command* (``aqnt-auth keys``, ``python
    manage.py aqnt_keys``)."""
    return {
        "create": _examples(f'{command} create --name "Production Server" --scope charges:write',
                            f"{command} create --name ci --test --expires-in 90d --json"),
        "list": _examples(f"{command} list", f"{command} list --all --owner acct_1 --json"),
        "show": _examples(f"{command} show 3tHq0kR9xA2b"),
        "revoke": _examples(f"{command} revoke 3tHq0kR9xA2b"),
        "rotate": _examples(f"{command} rotate 3tHq0kR9xA2b --grace 24h"),
        "disable": _examples(f"{command} disable 3tHq0kR9xA2b"),
        "enable": _examples(f"{command} enable 3tHq0kR9xA2b"),
        "hygiene": _examples(f"{command} hygiene", f"{command} hygiene --json"),
        "usage": _examples(f"{command} usage 3tHq0kR9xA2b",
                           f"{command} usage 3tHq0kR9xA2b --since 30d --by day --json",
                           f"{command} usage --since 24h"),
        "update": _examples(f'{command} update 3tHq0kR9xA2b --name "Billing worker"',
                            f"{command} update 3tHq0kR9xA2b --scope charges:read",
                            f"{command} update 3tHq0kR9xA2b --quota 1000 --refill 1000/day"),
    }


def add_key_actions(actions: argparse._SubParsersAction[Any], common: argparse.ArgumentParser,
                    hashing: argparse.ArgumentParser, command: str = KEYS_COMMAND
                    ) -> dict[str, argparse.ArgumentParser]:
    """Add the ``create``, ``list``, ``show``, ``revoke``, ``rotate``,
    ``disable``, ``enable``, ``update``, ``hygiene`` and ``usage`` actions,
    with their own arguments, to *actions*; return them by name.

    Every key-management front end (``aqnt-auth keys``, ``manage.py
    aqnt_keys``) takes these; each brings its own *common* options (and
    *hashing* ones, for the actions that issue a key) as parent parsers, and
    the *command* its examples name.
    """
    examples = key_examples(command)
    # Who makes the change, for the audit log: the OS user and host unless told.
    auditing = argparse.ArgumentParser(add_help=False)
    auditing.add_argument("--actor", default=None, metavar="WHO",
                          help="who makes the change, for the audit log "
                               "(default: your OS user@host)")

    def add(name: str, parents: list[argparse.ArgumentParser], help: str
            ) -> argparse.ArgumentParser:
        if name in CHANGING_ACTIONS:
            parents = [*parents, auditing]
        parser: argparse.ArgumentParser = actions.add_parser(
            name, parents=parents, help=help, epilog=examples[name],
            formatter_class=argparse.RawDescriptionHelpFormatter)
        return parser

    create = add("create", [common, hashing], "issue a new key")
    create.add_argument("--name", required=True, help="what the key is for")
    create.add_argument("--test", action="store_true", help="a test-mode key (sk_test_...)")
    create.add_argument("--scope", action="append", default=[], metavar="S",
                        help="a scope the key carries (repeatable)")
    create.add_argument("--read-only", action="store_true", help="only GET, HEAD and OPTIONS")
    create.add_argument("--allow-path", action="append", default=[], metavar="P",
                        help="a path prefix the key is limited to (repeatable)")
    create.add_argument("--expires-in", metavar="DURATION", help="like 90d, 24h, 30m")
    create.add_argument("--owner", help="account or tenant id")
    create.add_argument("--allow-ip", action="append", default=[], metavar="IP",
                        help="an IPv4/IPv6 address or CIDR network the key may be used from "
                             "(repeatable; at most 100)")
    create.add_argument("--quota", type=int, metavar="N",
                        help="requests the key may make; past them: 429 quota_exceeded")
    create.add_argument("--refill", metavar="COUNT/PERIOD",
                        help="set the quota back to COUNT every PERIOD (minute, hour, day, "
                             "week, month = 30 days), like 1000/day; alone, the quota is COUNT")
    create.add_argument("--rate-limit", action="append", default=[], metavar="LIMIT",
                        help="a rate limit such as 100/minute or 5000/hour (repeatable; "
                             "at most 10)")
    create.add_argument("--shared-limit", action="store_true",
                        help="count the rate limits per --owner: the owner's keys that "
                             "share theirs draw on one budget")

    listing = add("list", [common], "list keys")
    listing.add_argument("--all", action="store_true", help="include revoked and expired keys")
    listing.add_argument("--owner", help="only keys of this owner")

    show = add("show", [common], "show one key")
    show.add_argument("key_id", metavar="ID")

    revoke = add("revoke", [common], "revoke a key, for good")
    revoke.add_argument("key_id", metavar="ID")

    rotate = add("rotate", [common, hashing],
                 "issue a replacement; the old key expires after --grace")
    rotate.add_argument("key_id", metavar="ID")
    rotate.add_argument("--grace", default="0", metavar="DURATION",
                        help="how long the old key keeps working (default 0: not at all)")
    rotate.add_argument("--expires-in", metavar="DURATION",
                        help="the new key's lifetime (default: what remains of the old key's)")
    rotate.add_argument("--force", action="store_true",
                        help="rotate a key already rotated, cutting its grace to --grace")
    disable = add("disable", [common], "disable a key (reversible: see enable)")
    disable.add_argument("key_id", metavar="ID")

    enable = add("enable", [common], "enable a disabled key")
    enable.add_argument("key_id", metavar="ID")

    update = add("update", [common],
                 "change a key's name, scopes, IP allowlist, rate limits or quota "
                 "(never its secret)")
    update.add_argument("key_id", metavar="ID")
    update.add_argument("--name", help="the key's new name")
    update.add_argument("--scope", action="append", default=[], metavar="S",
                        help="the key's scopes, replacing the current ones (repeatable)")
    update.add_argument("--clear-scopes", action="store_true", help="remove every scope")
    update.add_argument("--allow-ip", action="append", default=[], metavar="IP",
                        help="the key's IP allowlist, replacing the current one (repeatable)")
    update.add_argument("--clear-allow-ips", action="store_true",
                        help="remove the IP allowlist")
    update.add_argument("--quota", type=int, metavar="N",
                        help="requests the key may still make (whatever it used); the refill "
                             "period starts now")
    update.add_argument("--refill", metavar="COUNT/PERIOD",
                        help="the quota's refill, like 1000/day (the period starts now)")
    update.add_argument("--clear-quota", action="store_true",
                        help="remove the quota and its refill")
    update.add_argument("--rate-limit", action="append", default=[], metavar="LIMIT",
                        help="the key's rate limits, replacing the current ones (repeatable)")
    update.add_argument("--clear-rate-limits", action="store_true",
                        help="remove the rate limits")
    sharing = update.add_mutually_exclusive_group()
    sharing.add_argument("--shared-limit", dest="shared_limit", action="store_true",
                         default=None, help="count the rate limits per owner")
    sharing.add_argument("--per-key-limit", dest="shared_limit", action="store_false",
                         help="count the rate limits per key")
    hygiene = add("hygiene", [common],
                  "key-hygiene findings: keys that never expire, idle keys, live keys "
                  "without an IP allowlist, keys due for rotation")
    usage = add("usage", [common],
                "a key's usage history by outcome (without ID: every key's, and the "
                "requests that named no key)")
    usage.add_argument("key_id", metavar="ID", nargs="?",
                       help="the key (default: a summary of every key)")
    add_usage_options(usage)
    return {"create": create, "list": listing, "show": show, "revoke": revoke,
            "rotate": rotate, "disable": disable, "enable": enable, "update": update,
            "hygiene": hygiene, "usage": usage}


_RAW: Final = argparse.RawDescriptionHelpFormatter


def build_parser() -> argparse.ArgumentParser:
    """The full ``aqnt-auth`` argument parser."""
    from . import __version__  # here: the package imports nothing of the CLI

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--store",
        default=os.environ.get(STORE_ENV, DEFAULT_STORE_URL),
        help=f"store URL (default: ${STORE_ENV} or {DEFAULT_STORE_URL})",
    )
    common.add_argument("--prefix", action="append", default=None,
                        help="key prefix to accept or issue (default: sk)")
    common.add_argument("--json", action="store_true", help="print JSON")

    hashing = argparse.ArgumentParser(add_help=False)
    hashing.add_argument("--hasher", choices=("argon2", "hmac"), default="argon2",
                         help="hash for new keys (hmac needs AQNT_AUTH_PEPPER)")
    hashing.add_argument("--argon2-profile", choices=sorted(ARGON2_PROFILES), default="owasp",
                         help="argon2id parameters for new keys (default: owasp)")
    hashing.add_argument("--max-hash-memory", type=int, default=None, metavar="MIB",
                         help="the servers' argon2 memory budget (max_hash_memory_mib); "
                              "a profile needing more per hash is refused")

    parser = argparse.ArgumentParser(
        prog=PROG, description="API keys for any Python web app.", formatter_class=_RAW,
        epilog=_examples(f'{KEYS_COMMAND} create --name "Production Server"',
                         f"{KEYS_COMMAND} list", f"{PROG} verify < key.txt",
                         f"{PROG} scan --git", f"{PROG} demo"),
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    examples = key_examples(KEYS_COMMAND)
    keys = commands.add_parser(
        "keys", help="create, list, show, revoke, rotate, disable, enable and update keys; "
                     "hygiene findings; a key's usage",
        formatter_class=_RAW,
        epilog="examples:\n" + "\n".join(e.split("\n")[1] for e in examples.values()),
    )
    key_commands = keys.add_subparsers(dest="keys_command", metavar="ACTION")
    actions = add_key_actions(key_commands, common, hashing)
    for name, func in (("create", _cmd_create), ("list", _cmd_list), ("show", _cmd_show),
                       ("revoke", _cmd_revoke), ("rotate", _cmd_rotate),
                       ("disable", _cmd_disable), ("enable", _cmd_enable),
                       ("update", _cmd_update), ("hygiene", _cmd_hygiene),
                       ("usage", _cmd_usage)):
        actions[name].set_defaults(func=func)

    add_audit_action(commands, common, f"{PROG} audit").set_defaults(func=_cmd_audit)

    usage = commands.add_parser(
        "usage", parents=[common], formatter_class=_RAW,
        help="every key's usage by outcome, the top keys, and the requests that named no "
             "existing key (unknown, malformed, missing)",
        epilog=_examples(f"{PROG} usage", f"{PROG} usage --since 7d --by day --json",
                         f"{KEYS_COMMAND} usage 3tHq0kR9xA2b"))
    add_usage_options(usage).set_defaults(func=_cmd_usage)

    verify = commands.add_parser(
        "verify", parents=[common], formatter_class=_RAW,
        help=f"check a key read from ${KEY_ENV} or stdin (never from the command line)",
        description=f"Check a key against the store. The key is read from ${KEY_ENV} or "
                    "stdin, never from the command line.",
        epilog=_examples(f"{PROG} verify < key.txt",
                         f'{KEY_ENV}="$KEY" {PROG} verify --json --store sqlite:///app.db'),
    )
    # Caught only to be refused without echoing it (see _read_key).
    verify.add_argument("argv_key", nargs="*", help=argparse.SUPPRESS)
    verify.set_defaults(func=_cmd_verify)

    demo = commands.add_parser(
        "demo", help="serve a small protected API on 127.0.0.1:8000", formatter_class=_RAW,
        epilog=_examples(f"{PROG} demo", f"{PROG} demo --port 8080 --store memory://"),
    )
    demo.add_argument("--host", default="127.0.0.1")
    demo.add_argument("--port", type=int, default=8000)
    demo.add_argument("--store", dest="demo_store",
                      default=os.environ.get(STORE_ENV, DEFAULT_STORE_URL),
                      help=f"store URL (default: ${STORE_ENV} or {DEFAULT_STORE_URL})")
    demo.set_defaults(func=_cmd_demo)

    console = commands.add_parser(
        "console", parents=[common, hashing], formatter_class=_RAW,
        help="serve the key console (pages and JSON API) alone on 127.0.0.1:8400",
        description="Serve the key console for a store, alone, on a loopback address. "
                    "Sign in with a key carrying the aqnt:admin (or aqnt:read) scope. "
                    "Sessions are signed with $AQNT_AUTH_CONSOLE_SECRET_KEY (a random key "
                    "per run if unset).",
        epilog=_examples(f"{PROG} keys create --name Admin --scope aqnt:admin",
                         f"{PROG} console --store sqlite:///aqnt_keys.db",
                         f"{PROG} console --port 9000 --allow-remote --host 0.0.0.0"),
    )
    console.add_argument("--host", default="127.0.0.1",
                         help="address to bind (default 127.0.0.1; others need --allow-remote)")
    console.add_argument("--port", type=int, default=8400, help="port (default 8400)")
    console.add_argument("--allow-remote", action="store_true",
                         help="allow a non-loopback --host (put a TLS proxy in front)")
    console.add_argument("--server", choices=("uvicorn", "wsgiref"), default=None,
                         help="HTTP server (default: uvicorn if installed, else wsgiref)")
    console.set_defaults(func=_cmd_console)

    scan = commands.add_parser(
        "scan", help="find leaked keys (valid checksum) in files, stdin (-) or git history; "
                     "exit 1 if any", formatter_class=_RAW,
        epilog=_examples(f"{PROG} scan", f"{PROG} scan --git --revoke",
                         f"git diff --cached | {PROG} scan -",
                         f"{PROG} scan --export-rules gitleaks > .gitleaks.toml"),
    )
    scan.add_argument("paths", nargs="*", metavar="PATH",
                      help="files and directories to scan (default: .); - reads stdin")
    scan.add_argument("--git", action="store_true",
                      help="also scan the history (every ref) of each PATH's repository")
    scan.add_argument("--prefix", dest="scan_prefix", action="append", type=prefix_argument,
                      metavar="PREFIX",
                      help="only keys with this prefix (repeatable; default: any prefix)")
    scan.add_argument("--max-size", type=size_argument, default=DEFAULT_MAX_SIZE,
                      metavar="SIZE", help="skip, and report, bigger files and blobs "
                                           "(default: 10MiB; 0: no limit)")
    scan.add_argument("--exclude", action="append", default=[], metavar="GLOB",
                      help="skip files and directories whose name or path matches (repeatable)")
    scan.add_argument("--revoke", action="store_true",
                      help="revoke the keys found in --store (exit status stays 1)")
    scan.add_argument("--max-revoke-time", type=seconds_argument, default="60s",
                      metavar="DURATION",
                      help="with --revoke, stop verifying keys against the store after this "
                           "long (default: 60s; 0: no limit); each key id gets at most "
                           f"{MAX_CANDIDATES_PER_ID} candidates verified; the rest are "
                           "reported as not verified")
    scan.add_argument("--store", default=os.environ.get(STORE_ENV, DEFAULT_STORE_URL),
                      help=f"store URL for --revoke (default: ${STORE_ENV} or {DEFAULT_STORE_URL})")
    scan.add_argument("--actor", default=None, metavar="WHO",
                      help="who revokes, for the audit log (default: your OS user@host)")
    scan.add_argument("--json", action="store_true", help="print JSON")
    scan.add_argument("--export-rules", choices=RULE_FORMATS, metavar="FORMAT",
                      help="print rules that find our keys for another scanner "
                           f"({', '.join(RULE_FORMATS)}; --prefix picks the prefixes, "
                           "default sk) and scan nothing")
    scan.set_defaults(func=_cmd_scan)

    init_examples = _examples(f"{PROG} store init",
                              f"{PROG} store init --store postgresql+psycopg://app@db/app",
                              f"{PROG} store init --sql > aqnt_auth.sql")
    store = commands.add_parser("store", help="prepare the key store", formatter_class=_RAW,
                                epilog=init_examples)
    store_commands = store.add_subparsers(dest="store_command", metavar="ACTION")
    init = store_commands.add_parser(
        "init", parents=[common], formatter_class=_RAW, epilog=init_examples,
        help="create the store's tables if missing and check their schema version",
    )
    init.add_argument("--sql", action="store_true",
                      help="print the PostgreSQL DDL instead, for your own migrations")
    init.set_defaults(func=_cmd_store_init)
    return parser


Command = Callable[[argparse.Namespace, TextIO], int]


def _help_parser(parser: argparse.ArgumentParser, args: argparse.Namespace
                 ) -> argparse.ArgumentParser:
    # The parser of the deepest command given: `aqnt-auth keys` prints the
    # help of keys, `aqnt-auth` that of aqnt-auth.
    names = [name for name in (args.command, getattr(args, "keys_command", None),
                               getattr(args, "store_command", None)) if name]
    for name in names:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                parser = action.choices[name]
                break
    return parser


def _silence_stdout() -> None:
    # The reader of our stdout has gone: point the descriptor at /dev/null so
    # that the interpreter's final flush cannot fail (and print) a second time.
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # stdout replaced by a non-file object
        pass
    finally:
        os.close(devnull)


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    """Run the CLI; return the exit status (0 success, 1 failure, 2 usage or
    no store, 141 when the reader of stdout went away, as with ``| head``)."""
    # Store errors are reported on stderr as one line below; without this,
    # logging's last-resort handler would print them a second time.
    logging.getLogger("aqnt_auth").addHandler(logging.NullHandler())
    stream = out or sys.stdout
    try:
        status = _run(argv, stream)
        stream.flush()
    except BrokenPipeError:
        _silence_stdout()
        return BROKEN_PIPE_STATUS
    return status


def _run(argv: Sequence[str] | None, out: TextIO) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        # `aqnt-auth` or `aqnt-auth keys` alone: the help, as gh does.
        _help_parser(parser, args).print_help(out)
        return 0
    if getattr(args, "prefix", None) is None:
        args.prefix = ["sk"]
    command: Command = args.func
    try:
        return command(args, out)
    except (StoreNotFound, NotAKeyId) as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    except AQNTError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        raise
    except Exception as exc:  # the promise is one line and no traceback
        print(f"{PROG}: error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
