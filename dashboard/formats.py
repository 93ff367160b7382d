"""How the pages write numbers: thousands separators, h:mm:ss, percentages, UTC times."""

from __future__ import annotations

import math
from datetime import UTC, datetime

EN_DASH = "\u2013"  # between the ends of a range, and for no value
TIMES = "\u00d7"
NONE = EN_DASH


def num(value: float | None) -> str:
    """1234567 -> '1,234,567' (rounded to a whole number)."""
    if value is None:
        return NONE
    return f"{value:,.0f}"


def clock(seconds: float | None) -> str:
    """A point or a length of time: 'm:ss' under an hour, else 'h:mm:ss' (hours unbounded)."""
    if seconds is None or not math.isfinite(seconds):
        return NONE
    total = round(max(seconds, 0.0))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours:,}:{minutes:02d}:{secs:02d}"
    return f"{minutes}:{secs:02d}"


def span(start_s: float, end_s: float) -> str:
    """A stretch of a video: '2:10' en dash '2:20'."""
    return f"{clock(start_s)}{EN_DASH}{clock(end_s)}"


def pct(value: float | None, digits: int = 1) -> str:
    """62.456 -> '62.5%'."""
    if value is None:
        return NONE
    return f"{value:,.{digits}f}%"


def times(value: float | None) -> str:
    """A rewatch ratio: 1.25 -> '1.25' and the multiplication sign."""
    if value is None:
        return NONE
    return f"{value:,.2f}{TIMES}"


def hours(seconds: float | None) -> str:
    """Watch time in hours: 5400 -> '1.5 h'."""
    if seconds is None:
        return NONE
    value = seconds / 3600
    return f"{value:,.1f} h" if value >= 10 or value == 0 else f"{value:,.2f} h"


def when(iso: str | None) -> str:
    """An ISO 8601 timestamp as 'YYYY-MM-DD HH:MM' UTC."""
    if not iso:
        return NONE
    try:
        moment = datetime.fromisoformat(iso)
    except ValueError:
        return iso
    if moment.utcoffset() is not None:
        moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%d %H:%M")


FILTERS = {
    "num": num,
    "duration": clock,
    "pct": pct,
    "times": times,
    "hours": hours,
    "when": when,
}
