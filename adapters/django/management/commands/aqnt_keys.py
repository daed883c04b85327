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
    Argon2Hasher,
    ConfigurationError,
    Hasher,
    HMACHasher,
    KeyManager,
    parse_duration,
)
from aqnt_auth._cli import (
    format_created,
    format_record,
    format_records,
    format_revoked,
    format_rotated,
)
from aqnt_auth.adapters.django.settings import get_settings, runtime


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--prefix", action="append", default=None,
                        help="key prefix to issue (default: the first of AQNT_AUTH['PREFIXES'])")
    parser.add_argument("--json", action="store_true", help="print JSON")


def _hashing(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--hasher", choices=("argon2", "hmac"), default=None,
                        help="hash for new keys (hmac needs AQNT_AUTH_PEPPER; "
                             "default: AQNT_AUTH['HASHER'] or argon2)")
    parser.add_argument("--argon2-profile", choices=sorted(ARGON2_PROFILES), default="owasp",
                        help="argon2id parameters for new keys (default: owasp)")


class Command(BaseCommand):
    help = "Create, list, show, revoke and rotate API keys in the project's database."

    def add_arguments(self, parser: CommandParser) -> None:
        actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")

        create = actions.add_parser("create", help="issue a new key")
        _common(create)
        _hashing(create)
        create.add_argument("--name", required=True, help="what the key is for")
        create.add_argument("--test", action="store_true", help="a test-mode key (sk_test_...)")
        create.add_argument("--scope", action="append", default=[], metavar="S",
                            help="a scope the key carries (repeatable)")
        create.add_argument("--read-only", action="store_true",
                            help="only GET, HEAD and OPTIONS")
        create.add_argument("--allow-path", action="append", default=[], metavar="P",
                            help="a path prefix the key is limited to (repeatable)")
        create.add_argument("--expires-in", metavar="DURATION", help="like 90d, 24h, 30m")
        create.add_argument("--owner", help="account or tenant id")

        listing = actions.add_parser("list", help="list keys")
        _common(listing)
        listing.add_argument("--all", action="store_true",
                             help="include revoked and expired keys")
        listing.add_argument("--owner", help="only keys of this owner")

        show = actions.add_parser("show", help="show one key")
        _common(show)
        show.add_argument("key_id", metavar="ID")

        revoke = actions.add_parser("revoke", help="revoke a key, for good")
        _common(revoke)
        revoke.add_argument("key_id", metavar="ID")

        rotate = actions.add_parser(
            "rotate", help="issue a replacement; the old key expires after --grace"
        )
        _common(rotate)
        _hashing(rotate)
        rotate.add_argument("key_id", metavar="ID")
        rotate.add_argument("--grace", default="0", metavar="DURATION",
                            help="how long the old key keeps working (default 0: not at all)")

    def handle(self, *args: Any, **options: Any) -> None:
        action = options["action"]
        try:
            text = getattr(self, f"_{action}")(options)
        except AQNTError as exc:
            # One line, no traceback, as the aqnt-auth CLI.
            raise CommandError(str(exc)) from None
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
        return KeyManager(runtime().authenticator.store, hasher=hasher, prefixes=accepted)

    def _hasher(self, options: dict[str, Any]) -> Hasher:
        name = options["hasher"]
        if name is None:
            configured: Hasher | None = get_settings().hasher
            if configured is not None:
                return configured
        if name == "hmac":
            hasher = HMACHasher.from_env()
            if hasher is None:
                raise ConfigurationError("--hasher hmac needs the pepper in AQNT_AUTH_PEPPER")
            return hasher
        return Argon2Hasher(options["argon2_profile"])

    def _create(self, options: dict[str, Any]) -> str:
        expires_in = parse_duration(options["expires_in"]) if options["expires_in"] else None
        issued = self._manager(options, self._hasher(options)).create(
            options["name"],
            mode="test" if options["test"] else "live",
            scopes=options["scope"],
            read_only=options["read_only"],
            allowed_paths=options["allow_path"],
            expires_in=expires_in,
            owner=options["owner"],
            prefix=(options["prefix"] or [None])[0],
        )
        return format_created(issued, options["json"])

    def _list(self, options: dict[str, Any]) -> str:
        records = self._manager(options).list(include_inactive=options["all"],
                                              owner=options["owner"])
        return format_records(records, options["json"])

    def _show(self, options: dict[str, Any]) -> str:
        return format_record(self._manager(options).get(options["key_id"]), options["json"])

    def _revoke(self, options: dict[str, Any]) -> str:
        return format_revoked(self._manager(options).revoke(options["key_id"]), options["json"])

    def _rotate(self, options: dict[str, Any]) -> str:
        grace = parse_duration(options["grace"])
        keys = self._manager(options, self._hasher(options))
        issued = keys.rotate(options["key_id"], grace=grace)
        return format_rotated(keys.get(options["key_id"]), issued, options["json"])
