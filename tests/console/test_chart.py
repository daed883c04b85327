"""The server-drawn usage chart: stacked bars by outcome, escaped, no style."""

from __future__ import annotations

import datetime as dt
import re

from aqnt_auth._usage_history import UsageBucket
from aqnt_auth.console._chart import bar_chart, outcomes_of

START = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)


def _bars(*counts: dict[str, int]) -> list[UsageBucket]:
    return [UsageBucket(START + dt.timedelta(hours=i), c) for i, c in enumerate(counts)]


def _heights(svg: str, outcome: str) -> list[float]:
    return [float(h) for h in re.findall(
        rf'<rect class="o-{outcome}" x="[\d.]+" y="[\d.]+" width="[\d.]+" height="([\d.]+)"',
        svg)]


def test_stacked_in_proportion() -> None:
    bars = _bars({"valid": 10, "invalid_secret": 0}, {"valid": 5, "invalid_secret": 5},
                 {"valid": 0, "invalid_secret": 0})
    svg = bar_chart(bars, title="t", chart_id="c", hourly=True)
    valid, invalid = _heights(svg, "valid"), _heights(svg, "invalid_secret")
    assert len(valid) == 2  # nothing drawn for a zero
    assert len(invalid) == 1
    assert valid[0] == 2 * valid[1]
    assert invalid[0] == valid[1]
    assert svg.count('<g class="bar">') == 3
    assert "10 requests: valid 10" in svg
    assert ">10</text>" in svg  # the top of the scale


def test_order_and_unknown_outcomes() -> None:
    bars = _bars({"zzz": 1, "malformed": 1, "valid": 1})
    assert outcomes_of(bars) == ["valid", "malformed", "zzz"]


def test_empty_and_escaped() -> None:
    svg = bar_chart([], title='<script>"x"</script>', chart_id='a"b', hourly=False)
    assert "<script>" not in svg
    assert 'id="a&quot;b-title"' in svg
    assert "style=" not in svg


def test_scale_rounds_up() -> None:
    svg = bar_chart(_bars({"valid": 137}), title="t", chart_id="c", hourly=False)
    assert ">200</text>" in svg
