"""Forged unknown ids: what a key with a valid checksum and an id no store
holds costs, per store.

Run: ``python benchmarks/bench_forged.py [--repeats N] [--no-postgres] [--no-django]``.

Anyone can compute a valid checksum for a random id, so such a key passes
the offline checks and costs a store lookup that misses.  Measured through
``Authenticator.authenticate_async`` (what the ASGI middleware awaits), in
µs per refused request, medians of interleaved rounds, for each store:

* *replayed*: 1,000 forged ids sent again and again (a soak, a scanner);
  the record caches of the SQLite and PostgreSQL stores remember absent
  ids, so these cost no lookup after the first round;
* *fresh*: a new forged id every request (each one misses every cache).

The memory store is the floor.  PostgreSQL (127.0.0.1:5432, database
``test``, a private schema dropped at the end) is skipped when absent.
``DjangoKeyStore`` is measured on an SQLite file and, when PostgreSQL is
there, on a database of its own (created, migrated and dropped), unless
``--no-django``.
Only the public API is used, so the same script measures an older checkout
(run it with that checkout's interpreter).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import secrets
import sys
import tempfile
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import quote

from aqnt_auth import (
    Argon2Hasher,
    Authenticator,
    InvalidAPIKey,
    KeyManager,
    KeyStore,
    MemoryKeyStore,
    SQLiteKeyStore,
)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _util import interleaved_medians, print_table

REPLAYED = 1000


def forged_keys(count: int) -> list[str]:
    """Well-formed keys (valid checksum) whose ids no benchmarked store holds."""
    manager = KeyManager(MemoryKeyStore(), hasher=Argon2Hasher("cheapest"))
    return [manager.create("forged").key for _ in range(count)]


def _batch(loop: asyncio.AbstractEventLoop, auth: Authenticator, headers: Iterator[str],
           batch: int) -> Callable[[], object]:
    async def run() -> None:
        for _ in range(batch):
            try:
                await auth.authenticate_async(next(headers), method="GET", path="/")
            except InvalidAPIKey:
                pass
            else:  # pragma: no cover - a forged key never passes
                raise SystemExit("a forged key was accepted")

    return lambda: loop.run_until_complete(run())


def _postgres_url(schema: str) -> str | None:
    try:
        import psycopg
    except ImportError:
        return None
    for user in ("postgres", "root"):
        try:
            with psycopg.connect(f"host=127.0.0.1 port=5432 dbname=test user={user} "
                                 "connect_timeout=3", autocommit=True) as conn:
                conn.execute(f"CREATE SCHEMA {schema}".encode())
        except psycopg.Error:
            continue
        options = quote(f"-csearch_path={schema}", safe="")
        return f"postgresql+psycopg://{user}@127.0.0.1:5432/test?options={options}"
    return None


def _drop_schema(url: str, schema: str) -> None:
    import psycopg

    conninfo = url.replace("postgresql+psycopg://", "postgresql://").split("?")[0]
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA {schema} CASCADE".encode())


def _django_stores(tmp: str, pg_database: str | None) -> dict[str, Any]:
    """DjangoKeyStore on an SQLite file and (with *pg_database*) on PostgreSQL,
    migrated; Django configured for this process."""
    import django
    from django.conf import settings

    databases: dict[str, Any] = {
        "default": {"ENGINE": "django.db.backends.sqlite3",
                    "NAME": os.path.join(tmp, "django.sqlite3")}}
    if pg_database is not None:
        databases["postgres"] = {"ENGINE": "django.db.backends.postgresql",
                                 "HOST": "127.0.0.1", "PORT": 5432, "NAME": pg_database,
                                 "USER": _PG_USER}
    settings.configure(DATABASES=databases, USE_TZ=True, INSTALLED_APPS=[
        "django.contrib.contenttypes", "django.contrib.auth", "aqnt_auth.adapters.django"])
    django.setup()
    from django.core.management import call_command

    from aqnt_auth.adapters.django.store import DjangoKeyStore

    stores = {}
    for alias, name in (("default", "Django, SQLite"), ("postgres", "Django, PostgreSQL")):
        if alias in databases:
            call_command("migrate", database=alias, verbosity=0)
            stores[name] = DjangoKeyStore(using=alias)
    return stores


_PG_USER = "postgres"


def _pg_database() -> str | None:
    """A fresh PostgreSQL database for the Django store, or None."""
    global _PG_USER
    try:
        import psycopg
    except ImportError:
        return None
    name = f"aqnt_bench_{secrets.token_hex(4)}"
    for user in ("postgres", "root"):
        try:
            with psycopg.connect(f"host=127.0.0.1 port=5432 dbname=test user={user} "
                                 "connect_timeout=3", autocommit=True) as conn:
                conn.execute(f"CREATE DATABASE {name}".encode())
        except psycopg.Error:
            continue
        _PG_USER = user
        return name
    return None


def _drop_database(name: str) -> None:
    import psycopg
    from django.db import connections

    connections.close_all()
    with psycopg.connect(f"host=127.0.0.1 port=5432 dbname=test user={_PG_USER}",
                         autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)".encode())


def run(stores: dict[str, KeyStore], repeats: int, batch: int) -> None:
    hasher = Argon2Hasher("cheapest")
    for store in stores.values():  # one real key each, so the tables are not empty
        KeyManager(store, hasher=hasher).create("real")
    replayed = [f"Bearer {key}" for key in forged_keys(REPLAYED)]
    fresh_pool = [f"Bearer {key}" for key in forged_keys(batch * (repeats + 2) * len(stores))]
    loop = asyncio.new_event_loop()
    variants: list[tuple[str, Callable[[], object], int]] = []
    auths = []
    for name, store in stores.items():
        auth = Authenticator(store, hashers=[hasher], track_usage=False, rate_limit=None)
        auths.append(auth)
        cycle = itertools.cycle(replayed)
        warm = _batch(loop, auth, cycle, REPLAYED)
        for _ in range(3):  # every replayed id seen (the caches' watchers are up by then)
            warm()
        variants.append((f"{name}: replayed ids", _batch(loop, auth, cycle, batch), 1))
        # Each store takes fresh ids from its own slice of the pool: never a repeat.
        own = iter(fresh_pool[len(auths) - 1::len(stores)])
        variants.append((f"{name}: fresh ids", _batch(loop, auth, own, batch), 1))
    medians = interleaved_medians(variants, repeats)
    floor = medians["memory: replayed ids"]
    rows = [("store: forged ids", "µs per refused request", "ratio to memory (replayed)")]
    rows += [(name, f"{value / batch:.1f}", f"{value / floor:.1f}x")
             for name, value in medians.items()]
    print_table(f"authenticate_async on forged unknown ids (valid checksum), median of "
                f"{repeats} interleaved rounds of {batch} requests", rows)
    for auth in auths:
        loop.run_until_complete(auth.aclose())
    loop.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--batch", type=int, default=200, help="requests per timing")
    parser.add_argument("--no-postgres", action="store_true")
    parser.add_argument("--no-django", action="store_true")
    args = parser.parse_args()
    schema = f"aqnt_bench_{secrets.token_hex(4)}"
    url = None if args.no_postgres else _postgres_url(schema)
    database = None if args.no_postgres or args.no_django else _pg_database()
    with tempfile.TemporaryDirectory() as tmp:
        stores: dict[str, Any] = {
            "memory": MemoryKeyStore(),
            "SQLite": SQLiteKeyStore(os.path.join(tmp, "keys.db")),
        }
        if url is not None:
            from aqnt_auth._stores._sqlalchemy import SQLAlchemyKeyStore

            stores["PostgreSQL"] = SQLAlchemyKeyStore(url)
        else:
            print("PostgreSQL not reachable (or --no-postgres): skipped")
        try:
            if not args.no_django:
                stores.update(_django_stores(tmp, database))
            run(stores, args.repeats, args.batch)
        finally:
            if url is not None:
                _drop_schema(url, schema)
            if database is not None:
                _drop_database(database)


if __name__ == "__main__":
    main()
