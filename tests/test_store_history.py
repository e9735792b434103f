"""Moving runs that can no longer change to history, and back when they change after all."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest

from exporter.store import PageIn, Rollups, Store
from tests.factories import PROJECT, SOURCE, T0, run

DAY = timedelta(days=1)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(tmp_path / "x.duckdb", live_per_source=3)
    yield s
    s.close()


def where(store: Store) -> dict[Any, str]:
    cur = store.cursor()
    live = {r[0]: "live" for r in cur.execute("SELECT id FROM events_live").fetchall()}
    kept = {r[0]: "history" for r in cur.execute("SELECT id FROM events_history").fetchall()}
    assert not live.keys() & kept.keys(), "a run is in one table only"
    return live | kept


def test_a_sources_newest_runs_and_runs_in_flight_stay_live(store: Store) -> None:
    done = [run(minutes=i) for i in range(5)]
    active = run(minutes=-60, status="active", finishedAt=None, durationMs=None)
    store.ingest_page(PROJECT, SOURCE, [*done, active], now=T0)
    moved = store.retire(T0 + timedelta(minutes=10))
    assert moved == 2
    place = where(store)
    assert [place[r.id] for r in done] == ["history", "history", "live", "live", "live"]
    assert place[active.id] == "live", "in flight: it can still change"


def test_finished_runs_older_than_a_day_go_to_history(store: Store) -> None:
    old, young = run(minutes=0), run(minutes=60)
    store.ingest_page(PROJECT, SOURCE, [old, young], now=T0)
    assert store.retire(T0 + DAY) == 0, "both are younger than a day"
    assert store.retire(T0 + DAY + timedelta(minutes=30)) == 1
    assert where(store) == {old.id: "history", young.id: "live"}


def test_stale_runs_go_to_history_and_stay_counted_as_stale(store: Store) -> None:
    stuck = run(status="queued", startedAt=None, finishedAt=None, durationMs=None)
    store.ingest_page(PROJECT, SOURCE, [stuck], now=T0)
    later = T0 + timedelta(hours=2)
    assert store.ingest_page(PROJECT, SOURCE, [], now=later, stale_after=timedelta(hours=1)) == 1
    store.retire(later + DAY)
    assert where(store) == {stuck.id: "history"}
    assert store.cursor().execute("SELECT stale_runs FROM history_stats").fetchall() == [(1,)]


def test_history_is_appended_in_queued_order(store: Store) -> None:
    now = T0
    for hour in range(6):
        page = [run(minutes=hour * 60 + i) for i in range(4)]
        now = T0 + timedelta(hours=hour, minutes=5)
        store.ingest([PageIn(PROJECT, SOURCE, page)], now=now, stale_after=DAY)
        store.retire(now)
    store.retire(now + 2 * DAY)
    order = store.cursor().execute("SELECT queued_at FROM events_history ORDER BY rowid")
    queued = [r[0] for r in order.fetchall()]
    assert len(queued) == 24
    assert queued == sorted(queued), "what DuckDB's zone maps on queued_at rely on"


def test_a_changed_run_comes_back_from_history(store: Store) -> None:
    failed = run(status="failed", billableRows=500, errorMessage="boom")
    store.ingest_page(PROJECT, SOURCE, [failed], now=T0)
    store.retire(T0 + 2 * DAY)
    assert where(store) == {failed.id: "history"}
    retried_at = (T0 + 3 * DAY).isoformat()
    retried = run(failed.id, status="success", billableRows=100, updatedAt=retried_at)
    store.ingest_page(PROJECT, SOURCE, [retried], now=T0 + 3 * DAY)
    assert where(store) == {failed.id: "live"}
    cur = store.cursor()
    assert cur.execute("SELECT status, billable_rows, first_seen_at FROM events").fetchall() == [
        ("success", 100, T0)
    ], "the newer copy, first seen when it was first seen"
    assert cur.execute("SELECT count(*) FROM history_stats").fetchall() == [(0,)]
    totals = cur.execute(
        "SELECT status, runs, runs_retracted FROM run_totals ORDER BY status"
    ).fetchall()
    assert totals == [("failed", 1, 1), ("success", 1, 0)]


@pytest.mark.parametrize("timezone", ["UTC", "Pacific/Kiritimati", "Etc/GMT+12"])
@pytest.mark.parametrize("older_days", [1, 30, 31, 32, 400])
def test_a_revived_run_leaves_the_newest_finish_of_what_stays_in_history(
    tmp_path: Path, older_days: int, timezone: str
) -> None:
    """The key's newest finished run in history is found again when the newest leaves it, also
    when it finished days before the newest day with runs of that status (a live run today),
    and not in the day band first tried, whatever day the billing calendar puts it on."""
    store = Store(tmp_path / "x.duckdb", live_per_source=3, rollups=Rollups(timezone=timezone))
    try:
        day = 24 * 60
        older = run(minutes=0, status="failed")
        newest = run(minutes=older_days * day, status="failed")
        store.ingest_page(PROJECT, SOURCE, [older, newest], now=T0)
        store.retire(T0 + (older_days + 2) * DAY)
        today = T0 + (older_days + 5) * DAY
        live = run(minutes=(older_days + 5) * day - 60, status="failed")
        store.ingest_page(PROJECT, SOURCE, [live], now=today)
        assert where(store) == {older.id: "history", newest.id: "history", live.id: "live"}
        retried = run(
            newest.id, minutes=older_days * day, status="success", updatedAt=today.isoformat()
        )
        store.ingest_page(PROJECT, SOURCE, [retried], now=today)
        cur = store.cursor()
        recount = cur.execute(
            """SELECT status, max(finished_at) FROM events_history GROUP BY ALL ORDER BY ALL"""
        ).fetchall()
        kept = cur.execute(
            "SELECT status, last_finished_at FROM history_stats ORDER BY ALL"
        ).fetchall()
        assert kept == recount == [("failed", older.finished_at)]
    finally:
        store.close()


def test_an_unchanged_run_seen_again_stays_in_history(store: Store) -> None:
    done = run()
    store.ingest_page(PROJECT, SOURCE, [done], now=T0)
    store.retire(T0 + 2 * DAY)
    store.ingest_page(PROJECT, SOURCE, [done], now=T0 + 3 * DAY)
    assert where(store) == {done.id: "history"}


def test_a_stale_run_seen_again_comes_back_live_and_in_progress(store: Store) -> None:
    stuck = run(status="active", finishedAt=None, durationMs=None)
    store.ingest_page(PROJECT, SOURCE, [stuck], now=T0)
    later = T0 + timedelta(hours=2)
    store.ingest_page(PROJECT, SOURCE, [], now=later, stale_after=timedelta(hours=1))
    store.retire(later + DAY)
    store.ingest_page(PROJECT, SOURCE, [stuck], now=later + 2 * DAY)
    assert where(store) == {stuck.id: "live"}
    row = store.cursor().execute("SELECT status, stale_since, last_seen_at FROM events")
    assert row.fetchall() == [("active", None, later + 2 * DAY)]


def test_a_restarted_collector_knows_a_quiet_sources_window_from_history(
    tmp_path: Path,
) -> None:
    path = tmp_path / "x.duckdb"
    quiet = [run(minutes=i * 24 * 60) for i in range(5)]  # one run a day
    store = Store(path)
    page = PageIn(PROJECT, SOURCE, quiet, full_window=True)
    store.ingest([page], now=T0 + 5 * DAY, stale_after=DAY)
    store.close()
    store = Store(path)  # opening retires what is now older than a day: all of it
    try:
        assert set(where(store).values()) == {"history"}
        window = store.windows(200)[(PROJECT, SOURCE)]
        assert all(window.unchanged(r.id, r.fingerprint) for r in quiet)
    finally:
        store.close()


def test_only_a_run_as_old_as_history_makes_a_batch_read_it(store: Store) -> None:
    """Runs queued after the newest in history cannot be there: the usual batch of new and
    live runs never reads it, however long it is."""
    old = [run(minutes=i) for i in range(5)]
    store.ingest_page(PROJECT, SOURCE, old, now=T0)
    store.retire(T0 + 2 * DAY)
    other = uuid4()
    fresh = run(sourceId=str(other), minutes=3 * 24 * 60)
    store.ingest_page(PROJECT, other, [fresh], now=T0 + 3 * DAY)
    assert (store.stats.history_lookups, store.stats.revived) == (0, 0)
    store.ingest_page(PROJECT, SOURCE, [old[0]], now=T0 + 3 * DAY)
    assert (store.stats.history_lookups, store.stats.revived) == (1, 0), "read, unchanged"
    assert where(store)[fresh.id] == "live"
    assert store.event_counts() == {(PROJECT, SOURCE): 5, (PROJECT, other): 1}
