"""Durations as people type them: ``90d``, ``24h``, ``30m``, ``45s``, ``2w``."""

from __future__ import annotations

import datetime as dt
from typing import Final

from ._errors import ConfigurationError

__all__ = ["parse_duration"]

_UNITS: Final = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_MAX: Final = dt.timedelta(days=36500)


def parse_duration(text: str) -> dt.timedelta:
    """Parse ``<digits><unit>`` (``s``, ``m``, ``h``, ``d``, ``w``); a bare ``0`` is zero."""
    value = text.strip().lower()
    if value == "0":
        return dt.timedelta(0)
    number, unit = value[:-1], value[-1:]
    if unit not in _UNITS or not number.isdigit() or not number.isascii() or len(number) > 9:
        raise ConfigurationError(
            f"bad duration {text!r}: use a number and a unit, like 90d, 24h, 30m, 45s or 2w"
        )
    duration = dt.timedelta(seconds=int(number) * _UNITS[unit])
    if duration > _MAX:
        raise ConfigurationError(f"duration {text!r} is longer than 100 years")
    return duration
