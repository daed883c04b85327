"""``aqnt-auth keys usage ID`` and ``aqnt-auth usage`` (#14): a small table,
a sparkline per outcome, JSON; the same functions serve the Flask and
Django commands."""

from __future__ import annotations

import datetime as dt
import io
import json
from pathlib import Path

import pytest

from aqnt_auth import AQNTError, Argon2Hasher, Authenticator, KeyManager, SQLiteKeyStore
from aqnt_auth._cli import main, sparkline, usage_query

UTC = dt.timezone.utc


def run(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    code = main(list(argv), out=out)
    return code, out.getvalue()


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'keys.db'}"


def _traffic(url: str) -> tuple[str, str]:
    """Keys with requests of several outcomes, flushed; (used id, idle id)."""
    hasher = Argon2Hasher("cheapest")
    with KeyManager(url, hasher=hasher) as keys:
        used = keys.create("Billing worker")
        idle = keys.create("Idle")
    with Authenticator(SQLiteKeyStore(url[len("sqlite:///"):]), hashers=[hasher],
                       rate_limit=None) as auth:
        for _ in range(4):
            auth.authenticate(f"Bearer {used.key}", method="GET", path="/v1/charges",
                              client="198.51.100.4", user_agent="billing/2.1")
        for header in (None, None, "Bearer sk_live_nope", f"Bearer {used.key}x"):
            with pytest.raises(AQNTError):
                auth.authenticate(header)
    return used.record.id, idle.record.id


class TestSparkline:
    def test_scaled_to_the_largest(self) -> None:
        """The largest value is a full block, zero a space, the rest in between."""
        assert sparkline([0, 1, 2, 4, 8]) == " ▁▂▄█"
        assert sparkline([0, 0]) == "  "
        assert sparkline([]) == ""

    def test_long_series_are_summed_in_groups(self) -> None:
        """More values than the width: adjacent ones are summed."""
        assert sparkline([1, 1, 0, 0, 2, 2], width=3) == "▄ █"


def test_usage_query_defaults() -> None:
    """7 days for a key, 24 hours for the summary; by day beyond 7 days."""
    now = dt.datetime(2026, 3, 4, 12, tzinfo=UTC)
    assert usage_query(None, None, now=now) == {"since": now - dt.timedelta(days=7),
                                                "bucket": "hour"}
    assert usage_query(None, None, summary=True, now=now)["since"] == now - dt.timedelta(
        hours=24)
    assert usage_query("30d", None, now=now)["bucket"] == "day"
    assert usage_query("30d", "hour", now=now)["bucket"] == "hour"


def test_key_usage_table(url: str) -> None:
    """keys usage ID: the totals by outcome with their trend, then the facts."""
    used, _ = _traffic(url)
    code, out = run("keys", "usage", used, "--store", url, "--since", "24h")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].startswith(f"Usage of key {used} (Billing worker), ")
    assert lines[0].endswith("UTC, per hour:")
    valid = next(line for line in lines if line.strip().startswith("valid"))
    assert valid.split()[:2] == ["valid", "4"]
    assert valid.rstrip().endswith("█")
    assert not any(line.strip().startswith("revoked") for line in lines)  # zero: not shown
    assert "distinct clients (busiest hour): 1" in out
    assert "from 198.51.100.4 (billing/2.1)" in out
    assert "top paths: /v1/charges 4" in out


def test_key_usage_json_by_day(url: str) -> None:
    """--json --by day: the series, zero-filled, with every outcome."""
    used, idle = _traffic(url)
    code, out = run("keys", "usage", used, "--store", url, "--since", "3d", "--by", "day",
                    "--json")
    assert code == 0
    data = json.loads(out)
    assert data["bucket"] == "day"
    assert len(data["buckets"]) == 4
    assert sum(b["valid"] for b in data["buckets"]) == 4
    assert data["totals"]["valid"] == 4
    assert data["totals"]["invalid_secret"] == 0
    assert data["top_paths"] == [{"path": "/v1/charges", "count": 4}]
    code, out = run("keys", "usage", idle, "--store", url)
    assert code == 0
    assert "no requests in this range" in out


def test_unknown_id_is_an_error(url: str) -> None:
    _traffic(url)
    code, out = run("keys", "usage", "nosuchkey123", "--store", url)
    assert code == 1
    assert out == ""


def test_summary(url: str) -> None:
    """usage: every key's outcomes, the key-less counts, the top keys."""
    used, _ = _traffic(url)
    code, out = run("usage", "--store", url)
    assert code == 0
    assert "Requests that named no existing key:" in out
    keyless = out.split("Requests that named no existing key:")[1]
    counts = {line.split()[0]: line.split()[1] for line in keyless.splitlines()
              if line.strip() and line.split()[0] in ("unknown_key", "malformed", "missing")}
    assert counts == {"unknown_key": "0", "malformed": "2", "missing": "2"}
    assert f"{used}  Billing worker" in out
    code, out = run("usage", "--store", url, "--json", "--top", "1")
    data = json.loads(out)
    assert data["keyless"] == {"unknown_key": 0, "malformed": 2, "missing": 2, "throttled": 0}
    assert data["top_keys"] == [{"key_id": used, "name": "Billing worker", "requests": 4,
                                 "valid": 4, "failures": 0}]
    assert data["totals"]["valid"] == 4


def test_keys_usage_without_id_is_the_summary(url: str) -> None:
    _traffic(url)
    assert run("keys", "usage", "--store", url)[1] == run("usage", "--store", url)[1]
