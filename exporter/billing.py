"""Month-to-date usage and its projection: the billing questions Prometheus answers badly.

``increase()`` over a calendar month in a chosen timezone is awkward in PromQL and wrong across
restarts of Prometheus itself; the store has every run, so the exporter computes it exactly.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo


@dataclass(frozen=True)
class Month:
    start: datetime
    end: datetime

    def elapsed_fraction(self, now: datetime) -> float:
        return min(1.0, max(0.0, (now - self.start) / (self.end - self.start)))


def current_month(now: datetime, timezone: str) -> Month:
    """The calendar month containing ``now`` in ``timezone``, as aware datetimes."""
    local = now.astimezone(ZoneInfo(timezone))
    start = local.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    following = (start + timedelta(days=32)).replace(day=1)
    # In UTC, so durations across a DST change are real elapsed time, not wall-clock time.
    return Month(start=start.astimezone(UTC), end=following.astimezone(UTC))


def project_linear(month_to_date: float, month: Month, now: datetime) -> float:
    """Month-end total if the rest of the month runs at the average rate so far."""
    fraction = month.elapsed_fraction(now)
    return month_to_date / fraction if fraction > 0 else 0.0


def cost(billable_rows: float, included_rows: float, price_per_1000: float) -> float:
    """Rows beyond the included allowance, priced per thousand."""
    return max(0.0, billable_rows - included_rows) * price_per_1000 / 1000
