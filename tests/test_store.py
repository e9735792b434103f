from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any
from uuid import uuid4

import duckdb
import pytest

from exporter.store import MIGRATIONS, IngestQueue, PageIn, Store, StoreError, reads
from tests.factories import PROJECT, SOURCE, T0, run


@pytest.fixture
def store(tmp_path: Path) -> Any:
    s = Store(tmp_path / "db" / "x.duckdb")
    yield s
    s.close()


def rows(store: Store, sql: str = "SELECT id, status, billable_rows FROM events") -> list[Any]:
    return store.cursor().execute(sql + " ORDER BY 1").fetchall()


def test_migrations_apply_once_and_reopen_cleanly(tmp_path: Path) -> None:
    path = tmp_path / "x.duckdb"
    Store(path).close()
    again = Store(path)
    assert again.schema_version() == len(MIGRATIONS)
    versions = again.cursor().execute("SELECT version FROM schema_migrations").fetchall()
    assert versions == [(v,) for v in range(1, len(MIGRATIONS) + 1)]
    again.close()


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "x.duckdb"
    Store(path).close()
    conn = duckdb.connect(str(path))
    conn.execute("INSERT INTO schema_migrations (version) VALUES (99)")
    conn.close()
    with pytest.raises(StoreError, match="newer than this exporter"):
        Store(path)


def test_corrupt_file_gives_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "x.duckdb"
    path.write_bytes(b"this is not a database" * 1000)
    with pytest.raises(StoreError, match=str(path)):
        Store(path)


def test_unwritable_path_gives_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(StoreError, match="cannot"):
        Store(blocker / "sub" / "x.duckdb")


def test_ingest_is_idempotent(store: Store) -> None:
    page = [run(minutes=i) for i in range(5)]
    store.ingest_page(PROJECT, SOURCE, page, now=T0)
    store.ingest_page(PROJECT, SOURCE, page, now=T0 + timedelta(minutes=1))
    assert len(rows(store)) == 5
    seen = store.cursor().execute("SELECT DISTINCT first_seen_at, last_seen_at FROM events")
    assert seen.fetchall() == [(T0, T0)], "finished runs seen again unchanged: nothing written"


def test_a_run_in_flight_is_seen_on_every_poll(store: Store) -> None:
    active = run(status="active", finishedAt=None, durationMs=None)
    store.ingest_page(PROJECT, SOURCE, [active], now=T0)
    store.ingest_page(PROJECT, SOURCE, [active], now=T0 + timedelta(minutes=1))
    seen = store.cursor().execute("SELECT first_seen_at, last_seen_at FROM events")
    assert seen.fetchall() == [(T0, T0 + timedelta(minutes=1))], "what the stale check reads"


def test_status_transition_updates_the_row(store: Store) -> None:
    run_id = uuid4()
    queued = run(
        run_id,
        status="queued",
        startedAt=None,
        finishedAt=None,
        durationMs=None,
        billableRows=0,
        updatedAt=T0.isoformat(),
    )
    store.ingest_page(PROJECT, SOURCE, [queued], now=T0)
    store.ingest_page(PROJECT, SOURCE, [run(run_id)], now=T0)
    assert rows(store) == [(run_id, "success", 8)]


def test_older_copy_never_overwrites_newer(store: Store) -> None:
    run_id = uuid4()
    store.ingest_page(PROJECT, SOURCE, [run(run_id)], now=T0)
    stale_copy = run(
        run_id,
        status="active",
        finishedAt=None,
        durationMs=None,
        billableRows=0,
        updatedAt=T0.isoformat(),
    )
    store.ingest_page(PROJECT, SOURCE, [stale_copy], now=T0 + timedelta(hours=1))
    assert rows(store) == [(run_id, "success", 8)]
    [(last_seen,)] = store.cursor().execute("SELECT last_seen_at FROM events").fetchall()
    assert last_seen == T0, "an older copy of a finished run writes nothing"


def test_duplicate_ids_in_one_page_keep_the_newest(store: Store) -> None:
    run_id = uuid4()
    older = run(run_id, status="active", finishedAt=None, updatedAt=T0.isoformat())
    store.ingest_page(PROJECT, SOURCE, [older, run(run_id), older], now=T0)
    assert rows(store) == [(run_id, "success", 8)]


def test_unknown_fields_and_metadata_are_kept(store: Store) -> None:
    event = run(metadata={"mode": "queue"}, region="eu", attempt=2)
    store.ingest_page(PROJECT, SOURCE, [event], now=T0)
    [(meta, extra)] = store.cursor().execute("SELECT metadata, extra FROM events").fetchall()
    assert json.loads(meta) == {"mode": "queue"}
    assert json.loads(extra) == {"region": "eu", "attempt": 2}


def test_in_progress_run_that_left_the_window_goes_stale(store: Store) -> None:
    stuck = run(status="active", finishedAt=None, durationMs=None, minutes=-10)
    store.ingest_page(PROJECT, SOURCE, [stuck], now=T0)
    assert in_flight(store) == 1
    window = timedelta(hours=1)
    later = [run(minutes=i) for i in range(3)]
    soon = store.ingest_page(
        PROJECT, SOURCE, later, now=T0 + timedelta(minutes=30), stale_after=window
    )
    assert soon == 0, "not yet: it may still come back"
    late = store.ingest_page(
        PROJECT, SOURCE, later, now=T0 + timedelta(hours=2), stale_after=window
    )
    assert late == 1
    assert in_flight(store) == 0
    small = store.ingest_page(PROJECT, SOURCE, later, now=T0 + timedelta(hours=3))
    assert small == 0


def test_stale_flag_clears_when_the_run_is_seen_again(store: Store) -> None:
    run_id = uuid4()
    store.ingest_page(PROJECT, SOURCE, [run(run_id, status="queued", finishedAt=None)], now=T0)
    store.ingest_page(
        PROJECT, SOURCE, [], now=T0 + timedelta(hours=2), stale_after=timedelta(hours=1)
    )
    store.ingest_page(PROJECT, SOURCE, [run(run_id)], now=T0 + timedelta(hours=3))
    assert rows(store, "SELECT id, stale_since FROM events") == [(run_id, None)]


def in_flight(store: Store) -> int:
    rows = store.cursor().execute(
        "SELECT count(*) FROM events WHERE stale_since IS NULL AND finished_at IS NULL"
    )
    return int(rows.fetchall()[0][0])


def test_poll_state_round_trip(store: Store) -> None:
    newest = run(minutes=5)
    page = PageIn(PROJECT, SOURCE, [run(minutes=1), newest], next_limit=20, next_interval=30)
    store.ingest([page], now=T0, stale_after=timedelta(hours=1))
    ok = store.poll_states()[(PROJECT, SOURCE)]
    assert (ok.last_outcome, ok.last_success_at, ok.successful_polls) == ("success", T0, 1)
    assert (ok.page_limit, ok.interval_seconds) == (20, 30)
    later = T0 + timedelta(minutes=1)
    store.record_failure(PROJECT, SOURCE, now=later, reason="timeout", message="timed out")
    state = store.poll_states()[(PROJECT, SOURCE)]
    assert state.last_outcome == "error"
    assert state.last_error_reason == "timeout"
    assert state.last_success_at == T0, "the last success is kept"
    assert state.last_poll_at == later
    assert (state.page_limit, state.interval_seconds, state.successful_polls) == (20, 30, 1)
    [(newest_id,)] = store.cursor().execute("SELECT newest_event_id FROM poll_state").fetchall()
    assert newest_id == newest.id


def test_windows_hold_each_sources_newest_runs_with_fingerprints(store: Store) -> None:
    other = uuid4()
    mine = [run(minutes=i) for i in range(5)]
    theirs = [run(sourceId=str(other), minutes=i) for i in range(2)]
    store.ingest_page(PROJECT, SOURCE, mine, now=T0)
    store.ingest_page(PROJECT, other, theirs, now=T0)
    windows = store.windows(3)
    assert set(windows) == {(PROJECT, SOURCE), (PROJECT, other)}
    window = windows[(PROJECT, SOURCE)]
    assert len(window) == 3
    assert [window.has(e.id) for e in mine] == [False, False, True, True, True], "3 newest"
    assert all(window.unchanged(e.id, e.fingerprint) for e in mine[2:]), "read back exactly"
    assert all(windows[(PROJECT, other)].unchanged(e.id, e.fingerprint) for e in theirs)
    one_by_one = reads.windows(store.cursor(), 3, sources_per_query=1)
    assert {k: len(w) for k, w in one_by_one.items()} == {(PROJECT, SOURCE): 3, (PROJECT, other): 2}
    assert all(one_by_one[(PROJECT, SOURCE)].unchanged(e.id, e.fingerprint) for e in mine[2:])


def test_windows_shrink_to_the_page_the_next_poll_asks_for(store: Store) -> None:
    page = [run(minutes=i) for i in range(5)]
    store.ingest([PageIn(PROJECT, SOURCE, page, next_limit=2)], now=T0, stale_after=timedelta())
    window = store.windows(200)[(PROJECT, SOURCE)]
    assert [window.has(e.id) for e in page] == [False, False, False, True, True]


def test_a_fingerprint_read_back_matches_the_parsed_run() -> None:
    """Fingerprints compare runs parsed from the API with runs read from DuckDB (pytz UTC
    datetimes, plain ints); a mismatch would only cost writes, so check it is exact."""
    parsed = run(status="failed", errorMessage="boom", updatedAt=None)
    same = run(parsed.id, status="failed", errorMessage="boom", updatedAt=None)
    assert parsed.fingerprint == same.fingerprint
    assert parsed.fingerprint != run(parsed.id, status="failed", errorMessage="other").fingerprint


def test_unchanged_runs_are_not_rewritten(store: Store) -> None:
    kept, corrected = run(minutes=2), run(minutes=1)
    store.ingest_page(PROJECT, SOURCE, [kept, corrected], now=T0)
    later = T0 + timedelta(minutes=5)
    fixed = run(corrected.id, minutes=1, billableRows=99, updatedAt=later.isoformat())
    page = PageIn(PROJECT, SOURCE, [kept, fixed], unchanged=frozenset({kept.id}))
    store.ingest([page], now=later, stale_after=timedelta(hours=1))
    seen = dict(rows(store, "SELECT id, last_seen_at FROM events"))
    assert seen == {kept.id: T0, corrected.id: later}
    assert dict(rows(store, "SELECT id, billable_rows FROM events"))[corrected.id] == 99
    [(newest_id,)] = store.cursor().execute("SELECT newest_event_id FROM poll_state").fetchall()
    assert newest_id == kept.id, "the page's newest run, even when it was not rewritten"


async def test_writes_run_off_the_event_loop(store: Store) -> None:
    import threading

    loop_thread = threading.get_ident()
    thread = await store.call(threading.get_ident)
    assert thread != loop_thread
    await store.call(store.ingest_page, PROJECT, SOURCE, [run()], now=T0)
    assert len(rows(store)) == 1


def test_a_second_writer_process_is_refused_clearly(tmp_path: Path) -> None:
    import subprocess
    import sys

    path = tmp_path / "x.duckdb"
    holder = Store(path)
    try:
        probe = subprocess.run(
            [sys.executable, "-c", f"from exporter.store import Store; Store({str(path)!r})"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    finally:
        holder.close()
    assert probe.returncode != 0
    assert "DatabaseLocked" in probe.stderr
    assert "locked by another process" in probe.stderr


def test_a_batch_of_pages_is_one_transaction(store: Store) -> None:
    other_source = uuid4()
    mine = [run(minutes=i) for i in range(3)]
    theirs = [run(sourceId=str(other_source), minutes=i) for i in range(2)]
    shared = run(minutes=9)
    marked = store.ingest(
        [
            PageIn(PROJECT, SOURCE, [*mine, shared]),
            PageIn(PROJECT, other_source, theirs),
            PageIn(PROJECT, SOURCE, [shared]),
        ],
        now=T0,
        stale_after=timedelta(hours=1),
    )
    assert marked == {(PROJECT, SOURCE): 0, (PROJECT, other_source): 0}
    assert len(rows(store)) == 6, "the repeated event is stored once"


async def test_ingest_queue_batches_concurrent_pages(store: Store) -> None:
    import asyncio

    writer = IngestQueue(store, timedelta(hours=1))
    pages = [PageIn(PROJECT, SOURCE, [run(minutes=i)]) for i in range(20)]
    try:
        results = await asyncio.gather(*(writer.put(p) for p in pages))
    finally:
        await writer.aclose()
    assert results == [0] * 20
    assert len(rows(store)) == 20
    assert writer.batches < 20, "pages that arrived together were written together"


async def test_ingest_queue_reports_store_errors_to_every_waiter(tmp_path: Path) -> None:
    import asyncio

    s = Store(tmp_path / "x.duckdb")
    writer = IngestQueue(s, timedelta(hours=1))
    s.close()
    try:
        outcomes = await asyncio.gather(
            writer.put(PageIn(PROJECT, SOURCE, [run()])),
            writer.put(PageIn(PROJECT, SOURCE, [run()])),
            return_exceptions=True,
        )
    finally:
        await writer.aclose()
    assert all(isinstance(o, Exception) for o in outcomes), outcomes
    assert len(outcomes) == 2


async def test_a_batch_that_ran_out_of_memory_is_written_again(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    """As a report holding most of the shared pool would make it: the write fails for lack of
    memory until the pool has room again, and the poll never sees the failure."""
    import asyncio

    store.set_memory_limit("8MB")  # too little for a page of 200 runs
    writer = IngestQueue(store, timedelta(hours=1), retry_seconds=(0.5,) * 10)
    page = PageIn(PROJECT, SOURCE, [run(minutes=i) for i in range(200)])
    try:
        put = asyncio.ensure_future(writer.put(page))
        while store.health.errors == 0:
            assert not put.done(), put
            await asyncio.sleep(0.01)
        await store.call(store.set_memory_limit, "48MB")  # the report ended
        assert await put == 0
    finally:
        await writer.aclose()
    assert len(rows(store)) == 200
    assert store.health.failing_since is None, "the committed batch says the store is writable"
    assert "Out of Memory" in caplog.text
    assert "trying again in 0.5 s" in caplog.text


async def test_a_batch_still_out_of_memory_after_its_retries_fails_its_polls(
    store: Store,
) -> None:
    store.set_memory_limit("8MB")
    writer = IngestQueue(store, timedelta(hours=1), retry_seconds=(0.01, 0.01))
    try:
        with pytest.raises(StoreError, match="Out of Memory"):
            await writer.put(PageIn(PROJECT, SOURCE, [run(minutes=i) for i in range(200)]))
    finally:
        await writer.aclose()
    assert store.health.errors == 3, "the first try and two retries, each counted"
    store.set_memory_limit("48MB")
    assert rows(store) == [], "every try was rolled back"


def test_a_failed_batch_keeps_its_cause_and_the_next_one_commits(store: Store) -> None:
    store.ingest_page(PROJECT, SOURCE, [run()], now=T0)
    # A table the batch must write disappears (as a full disk or a lack of memory would make
    # the write fail), then comes back.
    store.cursor().execute("ALTER TABLE daily_usage RENAME TO daily_usage_away")
    lost = run()
    with pytest.raises(StoreError, match="database write failed: Catalog Error"):
        store.ingest_page(PROJECT, SOURCE, [lost], now=T0)
    health = store.health
    assert health.failing_since is not None
    assert health.errors == 1
    assert "daily_usage" in (health.last_error or "")
    # a small write that still works does not make the store look writable
    store.record_failure(PROJECT, SOURCE, now=T0, reason="store", message="x")
    assert store.health.failing_since is not None
    assert store.event_counts()[(PROJECT, SOURCE)] == 1, "the failed batch was rolled back"
    store.cursor().execute("ALTER TABLE daily_usage_away RENAME TO daily_usage")
    store.ingest_page(PROJECT, SOURCE, [lost], now=T0)
    assert store.health.failing_since is None
    assert store.event_counts()[(PROJECT, SOURCE)] == 2
