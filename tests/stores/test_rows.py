"""Records as rows of the key table and back, as every SQL store reads them."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import math
import sqlite3

import pytest

from aqnt_auth import KEY_COLUMNS, KeyRecord, record_from_row, row_from_record
from aqnt_auth._stores._rows import update_columns
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
    disabled_at=dt.datetime(2024, 5, 2, tzinfo=UTC), rate_limits=("100/minute", "5000/hour"),
    rate_limit_shared=True, quota_remaining=42, quota_refill="1000/day",
    quota_refilled_at=dt.datetime(2024, 5, 3, tzinfo=UTC), allowed_ips=("10.0.0.0/8", "::1"),
    lineage_id="0123456789abcdef0123456789abcdef",
)


def test_one_column_per_field() -> None:
    """One column per stored field; derived fields (``halted``) are not stored."""
    stored = [f.name for f in dataclasses.fields(KeyRecord) if f.init]
    assert sorted(KEY_COLUMNS) == sorted(stored)
    assert "halted" not in KEY_COLUMNS
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
    values[KEY_COLUMNS.index("rate_limits")] = ["1/second"]
    values[KEY_COLUMNS.index("allowed_ips")] = []
    values[KEY_COLUMNS.index("rate_limit_shared")] = 1
    record = record_from_row(values)
    assert record.rate_limits == ("1/second",)
    assert record.allowed_ips == ()
    assert record.rate_limit_shared is True
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


def test_update_columns_refuse_the_secret_and_history() -> None:
    """update() may change name, scopes and policies, never the hash, id or times of use."""
    assert update_columns({"name": "n", "scopes": ("a",), "allowed_ips": ("::1",)}) == {
        "name": "n", "scopes": ["a"], "allowed_ips": ["::1"]}
    for column in ("hash", "id", "revoked_at", "usage_count", "created_at", "rotated_from"):
        with pytest.raises(ValueError, match=column):
            update_columns({column: None})


def test_halted_is_derived_from_revoked_and_disabled() -> None:
    """The warm path's one test covers both states, also after dataclasses.replace()."""
    active = dataclasses.replace(FULL, revoked_at=None, disabled_at=None)
    assert active.halted is False
    assert dataclasses.replace(active, disabled_at=FULL.disabled_at).halted is True
    assert dataclasses.replace(active, revoked_at=FULL.revoked_at).halted is True
    assert "halted" not in active.public_dict()


def test_ends_at_and_plain_are_derived() -> None:
    """The expiry as Unix time (infinity: never) and whether a key has
    nothing but its expiry to check once accepted; neither is stored or
    shown, and both follow dataclasses.replace()."""
    plain = dataclasses.replace(FULL, revoked_at=None, disabled_at=None, expires_at=None,
                                read_only=False, allowed_paths=(), allowed_ips=(),
                                rate_limits=(), quota_remaining=None)
    assert plain.ends_at == math.inf
    assert plain.plain is True
    at = dt.datetime(2030, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc)
    assert dataclasses.replace(plain, expires_at=at).ends_at == at.timestamp()
    assert dataclasses.replace(plain, expires_at=at).plain is True  # the expiry is checked
    for change in ({"revoked_at": at}, {"disabled_at": at}, {"read_only": True},
                   {"allowed_paths": ("/v1",)}, {"allowed_ips": ("::1",)},
                   {"rate_limits": ("1/second",)}, {"quota_remaining": 5}):
        assert dataclasses.replace(plain, **change).plain is False, change
    for derived in ("ends_at", "plain"):
        assert derived not in plain.public_dict()
        assert derived not in KEY_COLUMNS
