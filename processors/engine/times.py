"""Event time for the engine: dates of epoch milliseconds, tenure, the future-dated guard.

Pure functions of their arguments (a few remember what they computed: the same
days and dates come up on most events). Reads no clock.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from typing import Final
from zoneinfo import ZoneInfo

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)


def future_cap(occurred_at: int, record_ms: int, skew_ms: int) -> int | None:
    """The future-dated guard (docs/design.md 3.4): an event dated more than `skew_ms`
    after the timestamp of the record that carried it may move its partition's watermark
    only as far as `record_ms + skew_ms`. That cap for `Engine.process`, or None when the
    event is within the skew (no cap needed)."""
    cap = record_ms + skew_ms
    return cap if occurred_at > cap else None


def utc_date(ms: int) -> date:
    """The UTC calendar date of an epoch-milliseconds timestamp."""
    return _day(ms // 86_400_000)


def iso_day(ms: int) -> str:
    """The UTC calendar date of an epoch-milliseconds timestamp as YYYY-MM-DD."""
    days = ms // 86_400_000
    text = ISO_DAYS.get(days)
    if text is None:
        if len(ISO_DAYS) >= 65_536:
            ISO_DAYS.clear()
        text = ISO_DAYS[days] = _day(days).isoformat()
    return text


#: day number -> YYYY-MM-DD, a plain dict because every reason with a {date} asks for it.
ISO_DAYS: Final[dict[int, str]] = {}


def day_writer(timezone: str) -> Callable[[int], str]:
    """How reasons write the date of an epoch-milliseconds time: YYYY-MM-DD in `timezone`
    (an IANA name; the business's zone, docs/design.md 11.5). UTC is `iso_day`."""
    if timezone in ("UTC", "Etc/UTC"):
        return iso_day
    zone = ZoneInfo(timezone)
    days: dict[int, str] = {}

    def zoned_day(ms: int) -> str:
        quarter = ms // 900_000  # every zone's offset changes on a quarter hour
        text = days.get(quarter)
        if text is None:
            if len(days) >= 65_536:
                days.clear()
            moment = _EPOCH + timedelta(milliseconds=quarter * 900_000)
            text = days[quarter] = moment.astimezone(zone).date().isoformat()
        return text

    return zoned_day


def iso_instant(ms: int) -> str:
    """An epoch-milliseconds time as ISO-8601 UTC, as the JSON form writes timestamps."""
    return (_EPOCH + timedelta(milliseconds=ms)).isoformat(timespec="milliseconds")


def iso_date(day: date) -> str:
    """day.isoformat(), remembered in ISO_DATES (customer_since is on most events)."""
    if len(ISO_DATES) >= 65_536:
        ISO_DATES.clear()
    text = ISO_DATES[day] = day.isoformat()
    return text


#: customer_since -> YYYY-MM-DD, a plain dict because it is on most events' path.
ISO_DATES: Final[dict[date, str]] = {}


@lru_cache(maxsize=4096)
def _day(days: int) -> date:
    return (_EPOCH + timedelta(days=days)).date()


def tenure_years(since: date, on: date) -> int:
    """Whole years between `since` and `on` (an anniversary on Feb 29 counts on Feb 28)."""
    years = on.year - since.year
    month, day = since.month, since.day
    if month == 2 and day == 29:
        day = 28
    if (on.month, on.day) < (month, day):
        years -= 1
    return max(years, 0)


@lru_cache(maxsize=65_536)
def anniversary_ms(since_iso: str, years: int) -> int:
    """Start (UTC midnight) of the day a relationship begun on `since_iso` is `years` old."""
    since = date.fromisoformat(since_iso)
    day = 28 if (since.month, since.day) == (2, 29) else since.day
    # day numbers, not aware datetimes and a timedelta division: the same milliseconds
    return (date(since.year + years, since.month, day).toordinal() - _EPOCH_DAY) * 86_400_000


_EPOCH_DAY: Final = date(1970, 1, 1).toordinal()
