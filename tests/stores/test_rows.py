"""Records as rows of the key table and back, as every SQL store reads them."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import sqlite3

from aqnt_auth import KEY_COLUMNS, KeyRecord, record_from_row, row_from_record
from aqnt_auth._stores._sql_schema import Tables
from aqnt_auth._stores._sqlite import SCHEMA

UTC = dt.timezone.utc

FULL = KeyRecord(
    id="0123456789abcdef0123456789abcdef", name="full", mode="test",
    hash="$argon2id$v=19$m=8,t=1,p=1$c2FsdHNhbHQ$aGFzaGhhc2g", hint="sk_test_...wxyz",
    prefix="pk", created_at=dt.datetime(2024, 1, 2, 3, 4, 5, 6, tzinfo=UTC),
    expires_at=dt.datetime(2025, 1, 1, tzinfo=UTC), revoked_at=dt.datetime(2024, 6, 1, tzinfo=UTC),
    last_used_at=dt.datetime(2024, 5, 1, tzinfo=UTC), usage_count=7,
    scopes=("charges:read", "refunds:write"), read_only=True, allowed_paths=("/v1/charges",),
    owner="acct_1", metadata={"plan": "pro"}, rotated_from="fedcba9876543210fedcba9876543210",
)


def test_one_column_per_field() -> None:
    assert sorted(KEY_COLUMNS) == sorted(f.name for f in dataclasses.fields(KeyRecord))
    assert len(set(KEY_COLUMNS)) == len(KEY_COLUMNS)


def test_round_trip() -> None:
    """Every field survives: row_from_record, then the values in column order."""
    row = row_from_record(FULL)
    assert list(row) == list(KEY_COLUMNS)
    assert row["scopes"] == ["charges:read", "refunds:write"]
    assert row["metadata"] == {"plan": "pro"}
    assert record_from_row([row[name] for name in KEY_COLUMNS]) == FULL


def test_record_from_driver_values() -> None:
    """JSON lists become tuples; a 0/1 boolean column becomes a bool."""
    values = [getattr(FULL, name) for name in KEY_COLUMNS]
    values[KEY_COLUMNS.index("scopes")] = ["a"]
    values[KEY_COLUMNS.index("allowed_paths")] = []
    values[KEY_COLUMNS.index("read_only")] = 0
    record = record_from_row(values)
    assert record.scopes == ("a",)
    assert record.allowed_paths == ()
    assert record.read_only is False


def test_tables_hold_the_columns_in_order() -> None:
    """The SQL store's table and the SQLite schema list the columns as selected."""
    assert tuple(c.name for c in Tables().keys.columns) == KEY_COLUMNS
    with contextlib.closing(sqlite3.connect(":memory:")) as conn:
        conn.executescript(SCHEMA)
        info = conn.execute("PRAGMA table_info(aqnt_api_keys)").fetchall()
    assert tuple(column[1] for column in info) == KEY_COLUMNS
