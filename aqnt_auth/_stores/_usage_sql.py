"""The usage-history table in SQL, shared by the SQLite and SQLAlchemy stores.

One row per key id and hour (``key_id = ''`` for the key-less outcomes),
one count column per outcome.  A flush is one transaction: an
``INSERT ... ON CONFLICT (key_id, hour) DO UPDATE`` adding the counts
(``valid = u.valid + excluded.valid``, so flushes from many processes add
up exactly), then, for rows whose paths changed, a read of the row (locked
by the upsert until commit) and a write of the merged paths, then the
retention delete.  Statements use ``:name`` parameters (sqlite3 and
SQLAlchemy's ``text()`` both take them).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Final

from .._outcomes import OUTCOMES
from .._usage_history import UsageRow, merge_paths, paths_of_json

__all__ = ["USAGE_COLUMNS", "read_usage_rows", "write_usage_rows"]

#: The columns of the usage table, in the order reads return them.
USAGE_COLUMNS: Final = ("key_id", "hour", *OUTCOMES, "clients", "last_at", "last_client",
                        "last_user_agent", "paths")

#: Runs one statement with named parameters; returns the rows it produced.
Run = Callable[[str, dict[str, Any]], Sequence[Sequence[Any]]]
#: Runs one statement once per parameter set.
RunMany = Callable[[str, list[dict[str, Any]]], None]


def _upsert(table: str, greatest: str) -> str:
    columns = ("key_id", "hour", *OUTCOMES, "clients", "last_at", "last_client",
               "last_user_agent")
    later = "excluded.last_at > COALESCE(u.last_at, -1)"
    sets = [f"{o} = u.{o} + excluded.{o}" for o in OUTCOMES]
    sets.append(f"clients = {greatest}(u.clients, excluded.clients)")
    # Every SET expression reads the row as it was: last_at is set last for clarity only.
    for column in ("last_client", "last_user_agent", "last_at"):
        sets.append(f"{column} = CASE WHEN {later} THEN excluded.{column} ELSE u.{column} END")
    return (f"INSERT INTO {table} AS u ({', '.join(columns)}) "  # noqa: S608 - identifiers checked
            f"VALUES ({', '.join(':' + c for c in columns)}) "
            f"ON CONFLICT (key_id, hour) DO UPDATE SET {', '.join(sets)}")


def write_usage_rows(run: Run, run_many: RunMany, table: str, rows: Sequence[UsageRow],
                     prune_before: int | None, *, postgres: bool) -> None:
    """Add *rows* to *table* and prune it: call inside one transaction.

    Rows are written in (key id, hour) order, so concurrent flushes take
    PostgreSQL's row locks in one order and queue instead of deadlocking.
    """
    ordered = sorted(rows, key=lambda row: (row.key_id, row.hour))
    if ordered:
        run_many(_upsert(table, "GREATEST" if postgres else "MAX"), [
            {"key_id": row.key_id, "hour": row.hour,
             **{o: row.counts.get(o, 0) for o in OUTCOMES},
             "clients": row.clients, "last_at": row.last_at, "last_client": row.last_client,
             "last_user_agent": row.last_user_agent}
            for row in ordered
        ])
    select = f"SELECT paths FROM {table} WHERE key_id = :key_id AND hour = :hour"  # noqa: S608
    update = (f"UPDATE {table} SET paths = :paths "  # noqa: S608
              "WHERE key_id = :key_id AND hour = :hour")
    for row in ordered:
        if not row.paths:
            continue
        where = {"key_id": row.key_id, "hour": row.hour}
        found = run(select, where)
        stored = paths_of_json(found[0][0] if found else None)
        merged = UsageRow(row.key_id, row.hour, paths=merge_paths(stored, row.paths))
        run(update, {**where, "paths": merged.paths_json()})
    if prune_before is not None:
        run(f"DELETE FROM {table} WHERE hour < :before", {"before": prune_before})  # noqa: S608


def read_usage_rows(run: Run, table: str, key_id: str | None, since: int, until: int
                    ) -> list[UsageRow]:
    """The rows of *table* in ``[since, until)``, of *key_id* or all, oldest first."""
    sql = (f"SELECT {', '.join(USAGE_COLUMNS)} FROM {table} "  # noqa: S608
           "WHERE hour >= :since AND hour < :until")
    params: dict[str, Any] = {"since": since, "until": until}
    if key_id is not None:
        sql += " AND key_id = :key_id"
        params["key_id"] = key_id
    return [row_of(values) for values in run(sql + " ORDER BY hour, key_id", params)]


def row_of(values: Sequence[Any]) -> UsageRow:
    """A :class:`UsageRow` of the values of :data:`USAGE_COLUMNS`."""
    n = len(OUTCOMES)
    counts = {o: int(v) for o, v in zip(OUTCOMES, values[2:2 + n], strict=True) if v}
    clients, last_at, last_client, last_user_agent, paths = values[2 + n:]
    return UsageRow(str(values[0]), int(values[1]), counts, int(clients or 0),
                    None if last_at is None else int(last_at), last_client, last_user_agent,
                    paths_of_json(paths))
