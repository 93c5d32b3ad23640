"""Business hours: a destination's working time, as service desks count SLAs (docs/design.md 12).

`parse_hours` reads what a pack writes (`"Mon-Fri 08:00-18:00"`, holidays as dates) into
a `BusinessHours`; `business_deadline` adds a duration counting only those hours, in the
engine's time zone, so a 24 h follow-up raised on Friday at 17:00 is due on Wednesday at
11:00. Pure and deterministic: no clock, the zone's rules only.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, Final
from zoneinfo import ZoneInfo

from processors.engine.rule_model import BusinessHours
from schemas.validation import TS_MAX

__all__ = [
    "DAY_NAMES",
    "business_deadline",
    "deadline_writer",
    "parse_holidays",
    "parse_hours",
]

DAY_NAMES: Final = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_HOURS: Final = re.compile(r"^\s*([A-Za-z, -]+?)\s+(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*$")
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
#: How far ahead a deadline is searched: ten years of days (a pack's longest duration).
_MAX_DAYS: Final = 3660


def _days(text: str) -> frozenset[int]:
    days: set[int] = set()
    for part in text.replace(" ", "").lower().split(","):
        first, dash, last = part.partition("-")
        if first not in DAY_NAMES or (dash and last not in DAY_NAMES):
            raise ValueError(f"unknown day {part!r}: use Mon, Tue, Wed, Thu, Fri, Sat, Sun")
        a = DAY_NAMES.index(first)
        b = DAY_NAMES.index(last) if dash else a
        if b < a:
            raise ValueError(f"the days {part!r} run backwards")
        days.update(range(a, b + 1))
    return frozenset(days)


def parse_hours(hours: Any, holidays: Any = None) -> BusinessHours:
    """`"Mon-Fri 08:00-18:00"` (days: names, ranges, comma-separated; times HH:MM, the end
    after the start, 24:00 at most) and a list of holiday dates (`parse_holidays`) -> the
    hours. Raises ValueError saying what is wrong."""
    if not isinstance(hours, str):
        raise ValueError("expected working hours such as 'Mon-Fri 08:00-18:00'")
    match = _HOURS.match(hours)
    if match is None:
        raise ValueError(f"expected working hours such as 'Mon-Fri 08:00-18:00', got {hours!r}")
    days = _days(match[1])
    start = int(match[2]) * 60 + int(match[3])
    end = int(match[4]) * 60 + int(match[5])
    if int(match[3]) > 59 or int(match[5]) > 59 or start > 24 * 60 or end > 24 * 60:
        raise ValueError(f"not a time of day in {hours!r}")
    if end <= start:
        raise ValueError(f"the hours {hours!r} end before they start")
    return BusinessHours(days=days, start=start, end=end, holidays=parse_holidays(holidays))


def parse_holidays(holidays: Any) -> frozenset[date]:
    """A list of dates (YAML dates or YYYY-MM-DD text; None: none). Raises ValueError."""
    if holidays is None:
        return frozenset()
    if not isinstance(holidays, list):
        raise ValueError("expected a list of dates YYYY-MM-DD")
    off: set[date] = set()
    for day in holidays:
        if isinstance(day, date) and not isinstance(day, datetime):
            off.add(day)
            continue
        try:
            off.add(date.fromisoformat(str(day)))
        except ValueError:
            raise ValueError(f"{day!r} is not a date YYYY-MM-DD") from None
    return frozenset(off)


def _ms(moment: datetime) -> int:
    return (moment - _EPOCH) // timedelta(milliseconds=1)


def business_deadline(start_ms: int, duration_ms: int, hours: BusinessHours, zone: str) -> int:
    """`start_ms` + `duration_ms` counting only the working hours of `hours` in `zone` (an
    IANA name): the time left runs within each working day's hours, from the next one when
    `start_ms` lies outside them."""
    tz = ZoneInfo(zone) if zone not in ("UTC", "Etc/UTC") else UTC
    local = (_EPOCH + timedelta(milliseconds=start_ms)).astimezone(tz)
    day = local.date()
    left = duration_ms
    opening, closing = (
        time(hours.start // 60, hours.start % 60),
        (time(hours.end // 60, hours.end % 60) if hours.end < 24 * 60 else None),
    )
    for _ in range(_MAX_DAYS):
        if day.weekday() in hours.days and day not in hours.holidays:
            begin = _ms(datetime.combine(day, opening, tz))
            end = _ms(
                datetime.combine(day, closing, tz)
                if closing is not None
                else datetime.combine(day + timedelta(days=1), time(0), tz)
            )
            begin = max(begin, start_ms)
            if begin < end:
                if left <= end - begin:
                    return begin + left
                left -= end - begin
        day += timedelta(days=1)
    return start_ms + duration_ms  # no working day within ten years: continuous time


def deadline_writer(
    destinations: tuple[tuple[str, BusinessHours], ...], zone: str
) -> Callable[[str, int, int], int]:
    """(destination, start, duration) -> the deadline: continuous time, or the destination's
    working hours where the pack gives them."""
    by_destination = dict(destinations)
    if not by_destination:
        return _continuous

    def deadline(destination: str, start_ms: int, duration_ms: int) -> int:
        hours = by_destination.get(destination)
        if hours is None or start_ms + duration_ms >= TS_MAX:
            return _continuous(destination, start_ms, duration_ms)
        try:
            return min(business_deadline(start_ms, duration_ms, hours, zone), TS_MAX)
        except (OverflowError, ValueError):  # beyond the calendar's last day
            return TS_MAX

    return deadline


def _continuous(destination: str, start_ms: int, duration_ms: int) -> int:
    """START + DURATION, at most the last time a record can carry (an event dated in
    year 9999 gets a due_by the schema can still write)."""
    return min(start_ms + duration_ms, TS_MAX)
