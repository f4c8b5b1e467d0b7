"""Limit periods (`10s 1m 1h 1d 1w 1M 1y`) and the time window a limit applies to at a moment.

Calendar windows are aligned in UTC: minutes and hours to the clock, days to midnight, weeks
to ISO weeks (Monday 00:00), months to the 1st, years to 1 January. A rolling window of the
same period sums fixed buckets (1/60 of the span) over the last span instead.
"""

from __future__ import annotations

import calendar
import dataclasses
import datetime as dt
import math
import re

PERIOD_PATTERN = re.compile(r"^([1-9][0-9]*)([smhdwMy])$")
UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400, "M": 30 * 86400, "y": 365 * 86400}
UNIT_NAMES = {"s": "second", "m": "minute", "h": "hour", "d": "day", "w": "week", "M": "month", "y": "year"}
_EPOCH_MONDAY = 4 * 86400  # 1970-01-05 00:00 UTC was a Monday
ROLLING_BUCKETS = 60


@dataclasses.dataclass(frozen=True)
class Window:
    bucket_start: float
    bucket_seconds: float
    span_seconds: float
    resets_at: float


def parse_period(period: str) -> tuple[int, str]:
    match = PERIOD_PATTERN.match(period)
    if not match:
        raise ValueError(f"period {period!r} must be a count and a unit: s m h d w M y (e.g. 10s, 1m, 1d, 1M)")
    return int(match.group(1)), match.group(2)


def describe_period(period: str) -> str:
    count, unit = parse_period(period)
    name = UNIT_NAMES[unit]
    return f"{name}" if count == 1 else f"{count} {name}s"


def _add_months(year: int, month: int, months: int) -> tuple[int, int]:
    index = year * 12 + (month - 1) + months
    return index // 12, index % 12 + 1


def calendar_window(period: str, now: float) -> Window:
    count, unit = parse_period(period)
    if unit in ("s", "m", "h", "d"):
        length = count * UNIT_SECONDS[unit]
        start = math.floor(now / length) * length
        return Window(start, length, length, start + length)
    if unit == "w":
        length = count * UNIT_SECONDS["w"]
        start = math.floor((now - _EPOCH_MONDAY) / length) * length + _EPOCH_MONDAY
        return Window(start, length, length, start + length)
    moment = dt.datetime.fromtimestamp(now, dt.UTC)
    months = count if unit == "M" else 12 * count
    index = moment.year * 12 + moment.month - 1
    first = index - index % months
    year, month = first // 12, first % 12 + 1
    end_year, end_month = _add_months(year, month, months)
    start = calendar.timegm((year, month, 1, 0, 0, 0))
    end = calendar.timegm((end_year, end_month, 1, 0, 0, 0))
    return Window(float(start), float(end - start), float(end - start), float(end))


def rolling_window(period: str, now: float) -> Window:
    count, unit = parse_period(period)
    span = count * UNIT_SECONDS[unit]
    bucket = max(1, span // ROLLING_BUCKETS)
    start = math.floor(now / bucket) * bucket
    # Room frees up bucket by bucket; the next boundary is the earliest moment anything can.
    return Window(start, bucket, span, start + bucket)


def window(period: str, now: float, rolling: bool = False) -> Window:
    return rolling_window(period, now) if rolling else calendar_window(period, now)


def format_reset(timestamp: float) -> str:
    return dt.datetime.fromtimestamp(timestamp, dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
