"""Usage charts drawn on the server: stacked bars by outcome, as inline SVG.

No script and no inline style (the Content-Security-Policy allows neither):
colours come from the stylesheet through one class per outcome, and every
bar has a ``<title>`` (its time and counts) for a pointer or a screen reader.
The pages put a table of the same numbers beside each chart.
"""

from __future__ import annotations

import datetime as dt
import html
from collections.abc import Mapping, Sequence
from typing import Final, Protocol

from .._outcomes import OUTCOMES

__all__ = ["Bar", "bar_chart", "outcomes_of"]


_WIDTH: Final = 720
_HEIGHT: Final = 200
_LEFT: Final = 44  # room for the y-axis labels
_BOTTOM: Final = 22  # room for the x-axis labels
_TOP: Final = 8


class Bar(Protocol):
    """One bucket (a :class:`~aqnt_auth.UsageBucket`): when it starts and
    its count per outcome."""

    @property
    def start(self) -> dt.datetime: ...

    @property
    def counts(self) -> Mapping[str, int]: ...


def outcomes_of(bars: Sequence[Bar]) -> list[str]:
    """The outcomes that occur in *bars*, in stacking order (successes at
    the bottom; the core's order, then any other, sorted)."""
    seen = {o for bar in bars for o, n in bar.counts.items() if n}
    return [o for o in OUTCOMES if o in seen] + sorted(seen - set(OUTCOMES))


def _label(when: dt.datetime, hourly: bool) -> str:
    return when.strftime("%d %b %H:%M" if hourly else "%d %b")


def _nice_max(value: int) -> int:
    if value <= 5:
        return max(value, 1)
    magnitude: int = 10 ** (len(str(value)) - 1)
    return next(step * magnitude for step in (1, 2, 5, 10) if value <= step * magnitude)


def bar_chart(bars: Sequence[Bar], *, title: str, chart_id: str, hourly: bool) -> str:
    """An SVG (markup, every text escaped) of *bars* stacked by outcome."""
    esc = html.escape
    outcomes = outcomes_of(bars)
    top = _nice_max(max((sum(bar.counts.values()) for bar in bars), default=0))
    plot_w = _WIDTH - _LEFT - 4
    plot_h = _HEIGHT - _TOP - _BOTTOM
    slot = plot_w / max(len(bars), 1)
    gap = min(2.0, slot * 0.2)
    parts = [
        f'<svg class="chart" viewBox="0 0 {_WIDTH} {_HEIGHT}" role="img" '
        f'aria-labelledby="{esc(chart_id)}-title" preserveAspectRatio="none">',
        f'<title id="{esc(chart_id)}-title">{esc(title)}</title>',
        f'<line class="axis" x1="{_LEFT}" y1="{_TOP + plot_h}" x2="{_WIDTH - 4}" '
        f'y2="{_TOP + plot_h}"/>',
        f'<line class="grid" x1="{_LEFT}" y1="{_TOP}" x2="{_WIDTH - 4}" y2="{_TOP}"/>',
        f'<text class="tick" x="{_LEFT - 6}" y="{_TOP + 4}" text-anchor="end">{top}</text>',
        f'<text class="tick" x="{_LEFT - 6}" y="{_TOP + plot_h}" text-anchor="end">0</text>',
    ]
    for index, bar in enumerate(bars):
        x = _LEFT + index * slot + gap / 2
        width = max(slot - gap, 0.5)
        y = float(_TOP + plot_h)
        counts = ", ".join(f"{o} {bar.counts[o]}" for o in outcomes if bar.counts.get(o))
        total = sum(bar.counts.values())
        parts.append(f'<g class="bar"><title>{esc(_label(bar.start, hourly))}: '
                     f'{total} requests{": " + esc(counts) if counts else ""}</title>')
        for outcome in outcomes:
            count = bar.counts.get(outcome, 0)
            if not count:
                continue
            height = plot_h * count / top
            y -= height
            parts.append(f'<rect class="o-{esc(outcome)}" x="{x:.2f}" y="{y:.2f}" '
                         f'width="{width:.2f}" height="{height:.2f}"/>')
        parts.append("</g>")
    if bars:
        parts.append(f'<text class="tick" x="{_LEFT}" y="{_HEIGHT - 6}">'
                     f'{esc(_label(bars[0].start, hourly))}</text>')
        parts.append(f'<text class="tick" x="{_WIDTH - 4}" y="{_HEIGHT - 6}" '
                     f'text-anchor="end">{esc(_label(bars[-1].start, hourly))}</text>')
    parts.append("</svg>")
    return "".join(parts)
