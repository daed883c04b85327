"""``manage.py aqnt_keys create|list|show|revoke|rotate``.

The same actions, options and output as ``aqnt-auth keys`` (the output comes
from the CLI's own ``format_*`` functions), except that the store is the
project's database rather than a ``--store`` option, and the accepted
prefixes come from ``AQNT_AUTH["PREFIXES"]``.
"""

from __future__ import annotations

import argparse
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from aqnt_auth import (
    ARGON2_PROFILES,
    AQNTError,
    ConfigurationError,
    Hasher,
    KeyManager,
    KeyStore,
    NotAKeyId,
    parse_duration,
)
from aqnt_auth._audit import default_actor
from aqnt_auth._cli import (
    add_audit_action,
    add_key_actions,
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
    new_key_hasher,
    update_options,
    usage_query,
)
from aqnt_auth._stores._open import store_url
from aqnt_auth.adapters.django.settings import get_settings, runtime

#: How these commands are invoked, for the hints and examples they print.
COMMAND = "python manage.py aqnt_keys"


def _where(store: KeyStore) -> str:
    """The store named in the output: the database alias of the project's store."""
    alias = getattr(store, "write_alias", None)
    return store_url(store) if alias is None else f"Django database {alias!r}"


class Command(BaseCommand):
    help = ("Create, list, show, revoke, rotate, disable, enable and update API keys in the "
            "project's database; read its audit log, key-hygiene findings and usage "
            "history.")

    def add_arguments(self, parser: CommandParser) -> None:
        common = argparse.ArgumentParser(add_help=False)
        common.add_argument("--prefix", action="append", default=None,
                            help="key prefix to issue "
                                 "(default: the first of AQNT_AUTH['PREFIXES'])")
        common.add_argument("--json", action="store_true", help="print JSON")
        hashing = argparse.ArgumentParser(add_help=False)
        hashing.add_argument("--hasher", choices=("argon2", "hmac"), default=None,
                             help="hash for new keys (hmac needs AQNT_AUTH_PEPPER; "
                                  "default: AQNT_AUTH['HASHER'] or argon2)")
        hashing.add_argument("--argon2-profile", choices=sorted(ARGON2_PROFILES),
                             default="owasp",
                             help="argon2id parameters for new keys (default: owasp)")
        hashing.add_argument("--max-hash-memory", type=int, default=None, metavar="MIB",
                             help="the servers' argon2 memory budget (default: "
                                  "AQNT_AUTH['MAX_HASH_MEMORY_MIB']); a profile needing "
                                  "more per hash is refused")
        actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
        add_key_actions(actions, common, hashing, command=COMMAND)
        add_audit_action(actions, common, f"{COMMAND} audit")

    def handle(self, *args: Any, **options: Any) -> None:
        action = options["action"]
        try:
            text = getattr(self, f"_{action}")(options)
        except AQNTError as exc:
            # One line, no traceback, as the aqnt-auth CLI.
            raise CommandError(str(exc),
                               returncode=2 if isinstance(exc, NotAKeyId) else 1) from None
        self.stdout.write(text)

    # -- the actions --------------------------------------------------------------

    def _manager(self, options: dict[str, Any], hasher: Hasher | None = None) -> KeyManager:
        accepted = get_settings().prefixes
        for prefix in options.get("prefix") or ():
            if prefix not in accepted:
                raise ConfigurationError(
                    f"prefix {prefix!r} is not in AQNT_AUTH['PREFIXES'] {list(accepted)!r}"
                )
        # The shared store: the same database alias the middleware reads.
        authenticator = runtime().authenticator
        budget = options.get("max_hash_memory") or authenticator.max_hash_memory_mib
        return KeyManager(authenticator.store, hasher=hasher, prefixes=accepted,
                          max_hash_memory_mib=budget,
                          actor=options.get("actor") or default_actor())

    def _hasher(self, options: dict[str, Any]) -> Hasher:
        name = options["hasher"]
        # The settings are read only when no --hasher is given, as before it.
        configured = get_settings().hasher if name is None else None
        return new_key_hasher(name, options["argon2_profile"], configured)

    def _create(self, options: dict[str, Any]) -> str:
        expires_in = parse_duration(options["expires_in"]) if options["expires_in"] else None
        keys = self._manager(options, self._hasher(options))
        issued = keys.create(
            options["name"],
            mode="test" if options["test"] else "live",
            scopes=options["scope"],
            read_only=options["read_only"],
            allowed_paths=options["allow_path"],
            expires_in=expires_in,
            owner=options["owner"],
            prefix=(options["prefix"] or [None])[0],
            allowed_ips=options["allow_ip"],
            quota=options["quota"],
            quota_refill=options["refill"],
            rate_limits=options["rate_limit"],
            shared_limit=options["shared_limit"],
        )
        return format_created(issued, options["json"], store=_where(keys.store))

    def _list(self, options: dict[str, Any]) -> str:
        keys = self._manager(options)
        records = keys.list(include_inactive=options["all"], owner=options["owner"])
        return format_records(records, options["json"], store=_where(keys.store),
                              command=COMMAND)

    def _show(self, options: dict[str, Any]) -> str:
        keys = self._manager(options)
        return format_record(keys.get(options["key_id"]), options["json"],
                             store=_where(keys.store))

    def _revoke(self, options: dict[str, Any]) -> str:
        return format_revoked(self._manager(options).revoke(options["key_id"]), options["json"])

    def _rotate(self, options: dict[str, Any]) -> str:
        grace = parse_duration(options["grace"])
        expires_in = parse_duration(options["expires_in"]) if options["expires_in"] else None
        keys = self._manager(options, self._hasher(options))
        issued = keys.rotate(options["key_id"], grace=grace, expires_in=expires_in,
                             force=options["force"])
        return format_rotated(keys.get(options["key_id"]), issued, options["json"])

    def _disable(self, options: dict[str, Any]) -> str:
        record = self._manager(options).disable(options["key_id"])
        return format_changed(record, "disable", options["json"])

    def _enable(self, options: dict[str, Any]) -> str:
        record = self._manager(options).enable(options["key_id"])
        return format_changed(record, "enable", options["json"])

    def _update(self, options: dict[str, Any]) -> str:
        changes = update_options(options["name"], options["scope"], options["clear_scopes"],
                                 options["allow_ip"], options["clear_allow_ips"],
                                 quota=options["quota"], refill=options["refill"],
                                 clear_quota=options["clear_quota"],
                                 rate_limits=options["rate_limit"],
                                 clear_rate_limits=options["clear_rate_limits"],
                                 shared_limit=options["shared_limit"])
        record = self._manager(options).update(options["key_id"], **changes)
        return format_changed(record, "update", options["json"])

    def _hygiene(self, options: dict[str, Any]) -> str:
        keys = self._manager(options)
        return format_hygiene(keys.hygiene(), options["json"], store=_where(keys.store),
                              command=COMMAND)

    def _audit(self, options: dict[str, Any]) -> str:
        keys = self._manager(options)
        query = audit_query(options["key_id"], options["since"], options["limit"])
        return format_audit(keys.audit(**query), options["json"], store=_where(keys.store))

    def _usage(self, options: dict[str, Any]) -> str:
        keys = self._manager(options)
        key_id = options["key_id"]
        query = usage_query(options["since"], options["by"], summary=key_id is None)
        if key_id is None:
            return format_usage_summary(keys.usage_summary(**query, top=options["top"]),
                                        options["json"], store=_where(keys.store))
        record = keys.store.get(key_id)
        return format_usage(keys.usage(key_id, **query), options["json"],
                            store=_where(keys.store),
                            name=None if record is None else record.name)
