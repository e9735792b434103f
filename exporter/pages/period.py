"""The period a page shows: a preset ("this month", "last 30 days") or custom dates, validated.

Days are calendar days of ``billing.timezone``; ``until`` is included. A period is capped at
:data:`MAX_DAYS` so a typo (a ten-year range) gets a message instead of a slow page.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, timedelta

PRESETS = {
    "this_month": "This month",
    "last_month": "Last month",
    "7d": "Last 7 days",
    "30d": "Last 30 days",
    "90d": "Last 90 days",
    "custom": "Custom",
}
DEFAULT = "90d"
MAX_DAYS = 366


class PageInputError(ValueError):
    """Input in a page's URL that cannot be used; the message says which and why."""


@dataclass(frozen=True)
class Period:
    preset: str
    since: date
    until: date

    @property
    def days(self) -> list[date]:
        return [self.since + timedelta(days=i) for i in range((self.until - self.since).days + 1)]

    @property
    def label(self) -> str:
        return f"{PRESETS[self.preset]}: {self.since.isoformat()} to {self.until.isoformat()}"


def parse_period(query: Mapping[str, str], today: date) -> Period:
    """``period`` (a key of :data:`PRESETS`), and ``since``/``until`` (YYYY-MM-DD) for custom."""
    preset = query.get("period") or DEFAULT
    if preset not in PRESETS:
        raise PageInputError(f"period: {preset!r} is not one of {', '.join(PRESETS)}")
    if preset == "this_month":
        return Period(preset, today.replace(day=1), today)
    if preset == "last_month":
        last = today.replace(day=1) - timedelta(days=1)
        return Period(preset, last.replace(day=1), last)
    if preset != "custom":
        return Period(preset, today - timedelta(days=int(preset[:-1]) - 1), today)
    since, until = (_day(query, key) for key in ("since", "until"))
    if until < since:
        raise PageInputError(f"until ({until}) is before since ({since})")
    length = (until - since).days + 1
    if length > MAX_DAYS:
        raise PageInputError(f"a period is at most {MAX_DAYS} days; {since} to {until} is {length}")
    return Period(preset, since, until)


def _day(query: Mapping[str, str], key: str) -> date:
    raw = query.get(key, "").strip()
    if not raw:
        raise PageInputError(f"{key}: a custom period needs both dates (YYYY-MM-DD)")
    try:
        return date.fromisoformat(raw)
    except ValueError:
        raise PageInputError(f"{key}: {raw!r} is not a date (YYYY-MM-DD)") from None
