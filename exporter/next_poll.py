"""When a source's next poll comes and how large a page it asks for.

The upstream has no cursor, only the newest ``limit`` events, so each poll decides how the next
one should look: sooner when the window overflows, a small page when the source is quiet and
nothing in flight needs the full window. Pure functions of what the poll saw, so each case is
tested on its own.
"""

from __future__ import annotations

from dataclasses import dataclass

from exporter.config import PollingConfig


@dataclass(frozen=True)
class Plan:
    """How the next poll of a source should look."""

    limit: int
    interval_seconds: float


IDLE_DIVISOR = 10.0


def poll_interval(
    cfg: PollingConfig,
    base: float,
    current: float,
    *,
    overflowing: bool,
    in_flight: bool,
    idle_seconds: float | None,
) -> float:
    """Seconds until a source's next poll: the rule documented in docs/operations.md under
    "Adaptive polling", case by case.

    1. Overflowing: half the current interval, not below ``min_interval_seconds``. Half a window
       or more arrived since the last poll, and without a cursor what falls out is lost.
    2. A run in flight: at most ``in_flight_interval_seconds`` (default: the interval), so its
       end is stored soon after it happens.
    3. Idle (nothing in flight, the newest change ``idle_seconds`` ago): a tenth of the idle
       time, from the interval up to ``max_interval_seconds`` (unset: the interval, so this
       case is off). A source quiet for an hour is polled every six minutes, one that ran a
       minute ago every minute.
    4. Otherwise the interval, reached by doubling after an overflow shortened it.
    """
    if overflowing:
        return max(cfg.min_interval_seconds, current / 2)
    calm = min(base, current * 2)
    if in_flight:
        return min(calm, cfg.in_flight_interval_seconds or base)
    ceiling = cfg.max_interval_seconds or base
    if idle_seconds is not None and ceiling > base:
        return max(calm, min(ceiling, idle_seconds / IDLE_DIVISOR))
    return calm


def plan_next(
    cfg: PollingConfig,
    base_interval: float,
    current: Plan,
    *,
    requested: int,
    received: int,
    new: int,
    deepest_in_flight: int | None,
    first: bool = False,
    idle_seconds: float | None = None,
) -> Plan:
    """The next poll's page size and interval (:func:`poll_interval`).

    - Overflowing: a full window where at least half the events are new, i.e. more than half a
      window arrived since the last poll. A source's first poll finds everything new and says
      nothing about its rate, so it never counts as overflowing.
    - Quiet (fewer new events than half the small page, and every run in flight among the
      newest half of it, where the next small page will still see it): ask for
      ``quiet_page_limit`` events next time (only when configured); anything else gets the
      full ``page_limit``.
      ``deepest_in_flight`` is the position (0 = newest) of the oldest unfinished run in the
      page, or None when every run in it has finished.
    """
    full = cfg.page_limit
    overflowing = not first and requested == full and received >= full and new * 2 >= full
    interval = poll_interval(
        cfg,
        base_interval,
        current.interval_seconds,
        overflowing=overflowing,
        in_flight=deepest_in_flight is not None,
        idle_seconds=idle_seconds,
    )
    if cfg.quiet_page_limit is None:
        return Plan(limit=full, interval_seconds=interval)
    small = min(cfg.quiet_page_limit, full)
    in_flight_visible = deepest_in_flight is None or deepest_in_flight * 2 < small
    quiet = in_flight_visible and new * 2 < small
    return Plan(limit=small if quiet else full, interval_seconds=interval)
