"""``flask aqnt-keys``: key management in the app's configured store.

The same actions, options and output as ``aqnt-auth keys`` (the output
comes from the same ``format_*`` functions), except that the store is the
app's ``AQNT_AUTH_STORE`` rather than a ``--store`` option.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar, cast

import click
from flask import current_app
from flask.cli import AppGroup

from aqnt_auth import (
    ARGON2_PROFILES,
    AQNTError,
    Hasher,
    KeyManager,
    NotAKeyId,
    parse_duration,
)
from aqnt_auth._audit import default_actor
from aqnt_auth._cli import (
    audit_query,
    format_audit,
    format_changed,
    format_created,
    format_hygiene,
    format_record,
    format_records,
    format_revoked,
    format_rotated,
    format_usage,
    format_usage_summary,
    key_examples,
    new_key_hasher,
    update_options,
    usage_query,
)
from aqnt_auth._stores._open import store_url

__all__ = ["COMMAND", "keys_group"]

#: How these commands are invoked, for the hints they print.
COMMAND = "flask aqnt-keys"

F = TypeVar("F", bound=Callable[..., Any])
# "\b" keeps click from rewrapping the example lines.
_EXAMPLES = {name: "\b\n" + text for name, text in key_examples(COMMAND).items()}

keys_group = AppGroup(
    "aqnt-keys",
    help="Create, list, show, revoke, rotate, disable, enable and update API keys in the "
         "app's store; read its audit log, key-hygiene findings and usage history."
)


def _manager(hasher: Hasher | None = None, actor: str | None = None) -> KeyManager:
    from aqnt_auth.adapters.flask import EXTENSION_KEY  # import cycle: flask.py imports this module

    extension = current_app.extensions.get(EXTENSION_KEY)
    if extension is None:
        raise click.ClickException("AQNTAuth is not registered on this app (call init_app)")
    authenticator = extension.get_authenticator()
    # The manager shares the app's store object, so it must not close it.
    return KeyManager(authenticator.store, hasher=hasher, prefixes=authenticator.format.prefixes,
                      max_hash_memory_mib=authenticator.max_hash_memory_mib,
                      actor=actor or default_actor())


def _hasher(name: str | None, profile: str) -> Hasher:
    return new_key_hasher(name, profile, current_app.config.get("AQNT_AUTH_HASHER"))


class _UsageError(click.ClickException):
    """One line and exit status 2, as the core CLI answers a usage error."""

    exit_code = 2


def _reporting_errors(command: F) -> F:
    # One line on stderr and exit status 1, never a traceback, as the core CLI.
    @functools.wraps(command)
    def run(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except AQNTError as exc:
            if isinstance(exc, NotAKeyId):
                raise _UsageError(str(exc)) from None
            raise click.ClickException(str(exc)) from None

    return cast("F", run)


_json = click.option("--json", "as_json", is_flag=True, help="Print JSON.")
_actor = click.option("--actor", default=None, metavar="WHO",
                      help="Who makes the change, for the audit log (default: your OS "
                           "user@host).")
_hasher_option = click.option(
    "--hasher", type=click.Choice(["argon2", "hmac"]), default=None,
    help="Hash for new keys (hmac needs AQNT_AUTH_PEPPER; default: AQNT_AUTH_HASHER or argon2).",
)
_profile_option = click.option(
    "--argon2-profile", type=click.Choice(sorted(ARGON2_PROFILES)), default="owasp",
    show_default=True, help="argon2id parameters for new keys.",
)


@keys_group.command("create", epilog=_EXAMPLES["create"])
@click.option("--name", required=True, help="What the key is for.")
@click.option("--test", is_flag=True, help="A test-mode key (sk_test_...).")
@click.option("--scope", "scopes", multiple=True, metavar="S",
              help="A scope the key carries (repeatable).")
@click.option("--read-only", is_flag=True, help="Only GET, HEAD and OPTIONS.")
@click.option("--allow-path", "allow_paths", multiple=True, metavar="P",
              help="A path prefix the key is limited to (repeatable).")
@click.option("--expires-in", metavar="DURATION", help="Like 90d, 24h, 30m.")
@click.option("--owner", help="Account or tenant id.")
@click.option("--allow-ip", "allow_ips", multiple=True, metavar="IP",
              help="An IPv4/IPv6 address or CIDR network the key may be used from (repeatable).")
@click.option("--quota", type=int, metavar="N",
              help="Requests the key may make; past them: 429 quota_exceeded.")
@click.option("--refill", metavar="COUNT/PERIOD",
              help="Set the quota back to COUNT every PERIOD (minute, hour, day, week, "
                   "month = 30 days), like 1000/day; alone, the quota is COUNT.")
@click.option("--rate-limit", "rate_limits", multiple=True, metavar="LIMIT",
              help="A rate limit such as 100/minute or 5000/hour (repeatable; at most 10).")
@click.option("--shared-limit", is_flag=True,
              help="Count the rate limits per --owner (the owner's keys share one budget).")
@click.option("--prefix", default=None, help="Key prefix (default: the first configured).")
@_hasher_option
@_profile_option
@_actor
@_json
@_reporting_errors
def create(name: str, test: bool, scopes: tuple[str, ...], read_only: bool,
           allow_paths: tuple[str, ...], expires_in: str | None, owner: str | None,
           allow_ips: tuple[str, ...], quota: int | None, refill: str | None,
           rate_limits: tuple[str, ...], shared_limit: bool,
           prefix: str | None, hasher: str | None, argon2_profile: str, actor: str | None,
           as_json: bool) -> None:
    """Issue a new key; its plaintext is shown this once."""
    keys = _manager(_hasher(hasher, argon2_profile), actor)
    issued = keys.create(
        name,
        mode="test" if test else "live",
        scopes=scopes,
        read_only=read_only,
        allowed_paths=allow_paths,
        expires_in=parse_duration(expires_in) if expires_in else None,
        owner=owner,
        prefix=prefix,
        allowed_ips=allow_ips,
        quota=quota,
        quota_refill=refill,
        rate_limits=rate_limits,
        shared_limit=shared_limit,
    )
    click.echo(format_created(issued, as_json, store=store_url(keys.store)))


@keys_group.command("list", epilog=_EXAMPLES["list"])
@click.option("--all", "include_inactive", is_flag=True,
              help="Include revoked and expired keys.")
@click.option("--owner", help="Only keys of this owner.")
@_json
@_reporting_errors
def list_keys(include_inactive: bool, owner: str | None, as_json: bool) -> None:
    """List keys, oldest first; keys due for rotation are flagged."""
    keys = _manager()
    records = keys.list(include_inactive=include_inactive, owner=owner)
    click.echo(format_records(records, as_json, store=store_url(keys.store), command=COMMAND))


@keys_group.command("show", epilog=_EXAMPLES["show"])
@click.argument("key_id", metavar="ID")
@_json
@_reporting_errors
def show(key_id: str, as_json: bool) -> None:
    """Show every public field of one key."""
    keys = _manager()
    click.echo(format_record(keys.get(key_id), as_json, store=store_url(keys.store)))


@keys_group.command("revoke", epilog=_EXAMPLES["revoke"])
@click.argument("key_id", metavar="ID")
@_actor
@_json
@_reporting_errors
def revoke(key_id: str, actor: str | None, as_json: bool) -> None:
    """Revoke a key, at once and for good."""
    click.echo(format_revoked(_manager(actor=actor).revoke(key_id), as_json))


@keys_group.command("rotate", epilog=_EXAMPLES["rotate"])
@click.argument("key_id", metavar="ID")
@click.option("--grace", default="0", metavar="DURATION",
              help="How long the old key keeps working (default 0: not at all).")
@click.option("--expires-in", metavar="DURATION",
              help="The new key's lifetime (default: what remains of the old key's).")
@click.option("--force", is_flag=True,
              help="Rotate a key already rotated, cutting its grace to --grace.")
@_hasher_option
@_profile_option
@_actor
@_json
@_reporting_errors
def rotate(key_id: str, grace: str, expires_in: str | None, force: bool, hasher: str | None,
           argon2_profile: str, actor: str | None, as_json: bool) -> None:
    """Issue a replacement; the old key expires after --grace."""
    keys = _manager(_hasher(hasher, argon2_profile), actor)
    issued = keys.rotate(key_id, grace=parse_duration(grace),
                         expires_in=parse_duration(expires_in) if expires_in else None,
                         force=force)
    click.echo(format_rotated(keys.get(key_id), issued, as_json))


@keys_group.command("disable", epilog=_EXAMPLES["disable"])
@click.argument("key_id", metavar="ID")
@_actor
@_json
@_reporting_errors
def disable(key_id: str, actor: str | None, as_json: bool) -> None:
    """Disable a key (reversible: see enable)."""
    click.echo(format_changed(_manager(actor=actor).disable(key_id), "disable", as_json))


@keys_group.command("enable", epilog=_EXAMPLES["enable"])
@click.argument("key_id", metavar="ID")
@_actor
@_json
@_reporting_errors
def enable(key_id: str, actor: str | None, as_json: bool) -> None:
    """Enable a disabled key."""
    click.echo(format_changed(_manager(actor=actor).enable(key_id), "enable", as_json))


@keys_group.command("update", epilog=_EXAMPLES["update"])
@click.argument("key_id", metavar="ID")
@click.option("--name", help="The key's new name.")
@click.option("--scope", "scopes", multiple=True, metavar="S",
              help="The key's scopes, replacing the current ones (repeatable).")
@click.option("--clear-scopes", is_flag=True, help="Remove every scope.")
@click.option("--allow-ip", "allow_ips", multiple=True, metavar="IP",
              help="The key's IP allowlist, replacing the current one (repeatable).")
@click.option("--clear-allow-ips", is_flag=True, help="Remove the IP allowlist.")
@click.option("--quota", type=int, metavar="N",
              help="Requests the key may still make (whatever it used); the refill period "
                   "starts now.")
@click.option("--refill", metavar="COUNT/PERIOD",
              help="The quota's refill, like 1000/day (the period starts now).")
@click.option("--clear-quota", is_flag=True, help="Remove the quota and its refill.")
@_actor
@click.option("--rate-limit", "rate_limits", multiple=True, metavar="LIMIT",
              help="The key's rate limits, replacing the current ones (repeatable).")
@click.option("--clear-rate-limits", is_flag=True, help="Remove the rate limits.")
@click.option("--shared-limit/--per-key-limit", "shared_limit", default=None,
              help="Count the rate limits per owner, or per key.")
@_json
@_reporting_errors
def update(key_id: str, name: str | None, scopes: tuple[str, ...], clear_scopes: bool,
           allow_ips: tuple[str, ...], clear_allow_ips: bool, quota: int | None,
           refill: str | None, clear_quota: bool, rate_limits: tuple[str, ...],
           clear_rate_limits: bool, shared_limit: bool | None, actor: str | None,
           as_json: bool) -> None:
    """Change a key's name, scopes, IP allowlist, rate limits or quota (never its secret)."""
    changes = update_options(name, scopes, clear_scopes, allow_ips, clear_allow_ips,
                             quota=quota, refill=refill, clear_quota=clear_quota,
                             rate_limits=rate_limits, clear_rate_limits=clear_rate_limits,
                             shared_limit=shared_limit)
    click.echo(format_changed(_manager(actor=actor).update(key_id, **changes), "update",
                              as_json))


@keys_group.command("hygiene", epilog=_EXAMPLES["hygiene"])
@_json
@_reporting_errors
def hygiene(as_json: bool) -> None:
    """Key-hygiene findings: keys that never expire, idle keys, live keys
    without an IP allowlist, keys due for rotation."""
    keys = _manager()
    click.echo(format_hygiene(keys.hygiene(), as_json, store=store_url(keys.store),
                              command=COMMAND))


@keys_group.command("audit", epilog=f"\b\nexamples:\n  {COMMAND} audit\n"
                                    f"  {COMMAND} audit --key 3tHq0kR9xA2b --since 30d --json")
@click.option("--key", "key_id", metavar="ID", help="Only this key's entries.")
@click.option("--since", metavar="DURATION",
              help="Only the entries of the last DURATION, like 30d or 24h.")
@click.option("--limit", type=int, metavar="N", help="At most N entries.")
@_json
@_reporting_errors
def audit(key_id: str | None, since: str | None, limit: int | None, as_json: bool) -> None:
    """The audit log: every change to a key, when and by whom, newest first."""
    keys = _manager()
    entries = keys.audit(**audit_query(key_id, since, limit))
    click.echo(format_audit(entries, as_json, store=store_url(keys.store)))


@keys_group.command("usage", epilog=_EXAMPLES["usage"])
@click.argument("key_id", metavar="[ID]", required=False)
@click.option("--since", metavar="DURATION",
              help="The last DURATION, like 7d or 24h (default: 7d for a key, 24h for every "
                   "key).")
@click.option("--by", type=click.Choice(["hour", "day"]), default=None,
              help="One count per UTC hour or day (default: hour up to 7 days).")
@click.option("--top", type=int, default=10, metavar="N",
              help="Keys listed in the summary (default 10).")
@_json
@_reporting_errors
def usage(key_id: str | None, since: str | None, by: str | None, top: int,
          as_json: bool) -> None:
    """A key's usage history by outcome; without ID, every key's, the top keys
    and the requests that named no existing key."""
    keys = _manager()
    query = usage_query(since, by, summary=key_id is None)
    if key_id is None:
        click.echo(format_usage_summary(keys.usage_summary(**query, top=top), as_json,
                                        store=store_url(keys.store)))
        return
    record = keys.store.get(key_id)
    click.echo(format_usage(keys.usage(key_id, **query), as_json, store=store_url(keys.store),
                            name=None if record is None else record.name))
