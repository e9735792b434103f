"""The running totals against the documented rule, over any sequence of pages.

A hypothesis state machine drives random batches of pages through the real store — status
changes, older copies after newer ones, one id twice in a batch, unknown statuses, runs that
finish after they went stale or moved to history, stale runs seen again — with retirements
to history and restarts in between. After every step:

- every total equals an independent model of the rule in ``exporter.store.totals``;
- the current truth (``X - X_retracted``, the gauges, daily usage) equals a recount over the
  stored runs, and when no finished run ever changed, the counters are the plain recount;
- no counter the collector exposes has gone down, across restarts too.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID, uuid5

from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule
from prometheus_client import CollectorRegistry
from prometheus_client.samples import Sample

from exporter.metrics import SourceNames, store_metrics
from exporter.models import GenerationEvent
from exporter.store import PageIn, Rollups, Store
from exporter.store import reads as store_reads
from tests.factories import FINISHED, PROJECT, SOURCE, T0, recount_runs, run

TZ = "Asia/Kolkata"  # +05:30: billing days that are not UTC days
BOUNDS = (1.0, 10.0, 60.0)
BOUNDS_MS = [int(b * 1000) for b in BOUNDS]
STALE_AFTER = timedelta(minutes=60)
# The state machine's own start, project and sources (the examples at the end use the
# factories').
MACHINE_T0 = datetime(2026, 10, 31, 20, 0, tzinfo=UTC)
MACHINE_PROJECT = UUID("00000000-0000-4000-8000-00000000000a")
MACHINE_SOURCES = [UUID(f"00000000-0000-4000-8000-00000000010{i}") for i in range(2)]
RUNS = 8
STATUSES = ["queued", "active", "success", "failed", "cancelled"]


def run_id(i: int) -> UUID:
    return uuid5(MACHINE_PROJECT, f"run-{i}")


def source_of(i: int) -> UUID:
    return MACHINE_SOURCES[i % len(MACHINE_SOURCES)]


def queued_of(i: int) -> datetime:
    """A run keeps its queuedAt for life."""
    return MACHINE_T0 + timedelta(minutes=7 * i)


@dataclass(frozen=True)
class Copy:
    """One copy of run ``run`` as the API might send it."""

    run: int
    trigger: str
    status: str
    has_finished_at: bool
    duration_ms: int | None
    billable: int
    inserted: int
    minutes: int  # updatedAt, in minutes after queuedAt

    @property
    def updated(self) -> datetime:
        return queued_of(self.run) + timedelta(minutes=self.minutes)

    @property
    def finished(self) -> bool:
        return self.status in ("success", "failed") or self.has_finished_at

    @property
    def in_flight(self) -> bool:
        return self.status in ("queued", "active") and not self.has_finished_at

    def progress(self) -> tuple[Any, ...]:
        return (
            self.status,
            self.has_finished_at,
            self.duration_ms,
            self.inserted,
            self.billable,
        )

    def event(self) -> GenerationEvent:
        queued = queued_of(self.run)
        return GenerationEvent.model_validate(
            {
                "id": str(run_id(self.run)),
                "projectId": str(MACHINE_PROJECT),
                "sourceId": str(source_of(self.run)),
                "trigger": self.trigger,
                "status": self.status,
                "queuedAt": queued.isoformat(),
                "startedAt": queued.isoformat(),
                "finishedAt": self.updated.isoformat() if self.has_finished_at else None,
                "durationMs": self.duration_ms,
                "totalInsertedRows": self.inserted,
                "billableRows": self.billable,
                "createdAt": queued.isoformat(),
                "updatedAt": self.updated.isoformat(),
            }
        )


copies = st.builds(
    Copy,
    run=st.integers(0, RUNS - 1),
    trigger=st.sampled_from(["populate", "populate", "regenerate"]),
    status=st.sampled_from(STATUSES),
    has_finished_at=st.booleans(),
    duration_ms=st.sampled_from([None, 500, 1_000, 5_000, 30_000, 90_000]),
    billable=st.integers(0, 500),
    inserted=st.integers(0, 500),
    minutes=st.integers(0, 6),
)


@dataclass
class Model:
    """The documented rule, applied copy by copy, with nothing shared with the store's code."""

    stored: dict[int, Copy] = field(default_factory=dict)
    last_seen: dict[int, datetime] = field(default_factory=dict)
    stale: set[int] = field(default_factory=set)
    runs: dict[tuple[Any, ...], list[int]] = field(
        default_factory=lambda: defaultdict(lambda: [0, 0])
    )
    rows: dict[tuple[Any, ...], list[int]] = field(
        default_factory=lambda: defaultdict(lambda: [0, 0, 0, 0])
    )
    observed: dict[tuple[Any, ...], list[int]] = field(
        default_factory=lambda: defaultdict(lambda: [0, 0, *([0] * len(BOUNDS))])
    )
    finished_run_changed: bool = False

    def apply(self, batch: list[Copy], full_windows: set[UUID], now: datetime) -> None:
        newest: dict[int, Copy] = {}
        for copy in batch:  # a batch: only the newest copy of each run counts
            best = newest.get(copy.run)
            if best is None or copy.updated > best.updated:
                newest[copy.run] = copy
        for i, copy in newest.items():
            old = self.stored.get(i)
            if (
                old is None
                or copy.updated > old.updated
                or (copy.updated == old.updated and copy.progress() != old.progress())
            ):
                self._count(old, copy)
                self.stored[i] = copy
                self.last_seen[i] = now
                self.stale.discard(i)
            elif old.in_flight:
                self.last_seen[i] = now  # seen again: what the stale check reads
                self.stale.discard(i)
        for i, copy in self.stored.items():
            if (
                source_of(i) in full_windows
                and i not in newest
                and copy.in_flight
                and i not in self.stale
                and self.last_seen[i] < now - STALE_AFTER
            ):
                self.stale.add(i)

    def _count(self, old: Copy | None, new: Copy) -> None:
        if old is not None and old.finished:
            self.finished_run_changed = True
        old_run = _run_series(old)
        new_run = _run_series(new)
        if new_run != old_run:
            if new_run:
                self.runs[new_run][0] += 1
            if old_run:
                self.runs[old_run][1] += 1
        old_observed = old_run if old is not None and old.duration_ms is not None else None
        new_observed = new_run if new.duration_ms is not None else None
        if new_observed and new_observed != old_observed:
            assert new.duration_ms is not None
            counts = self.observed[new_observed]
            counts[0] += 1
            counts[1] += new.duration_ms
            for k, bound in enumerate(BOUNDS_MS):
                counts[2 + k] += new.duration_ms <= bound
        before = _row_values(old)
        after = _row_values(new)
        for series in before.keys() | after.keys():
            values = self.rows[series]
            for k in range(2):
                change = after.get(series, (0, 0))[k] - before.get(series, (0, 0))[k]
                values[2 * k] += max(change, 0)
                values[2 * k + 1] += max(-change, 0)


def _run_series(copy: Copy | None) -> tuple[Any, ...] | None:
    if copy is None or not copy.finished:
        return None
    return (str(source_of(copy.run)), copy.trigger, copy.status)


def _row_values(copy: Copy | None) -> dict[tuple[Any, ...], tuple[int, int]]:
    if copy is None or not copy.finished:
        return {}
    return {(str(source_of(copy.run)), copy.trigger): (copy.billable, copy.inserted)}


class StoreMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="totals-"))
        self.store = self._open()
        self.model = Model()
        self.now = MACHINE_T0
        self.exposed: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}

    def _open(self) -> Store:
        return Store(
            self.dir / "x.duckdb",
            rollups=Rollups(BOUNDS, TZ),
            live_per_source=2,
            live_max_age=timedelta(minutes=30),
        )

    def teardown(self) -> None:
        self.store.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    @rule(
        batch=st.lists(copies, max_size=10),
        full=st.sets(st.sampled_from(MACHINE_SOURCES)),
        minutes=st.integers(0, 90),
    )
    def ingest(self, batch: list[Copy], full: set[UUID], minutes: int) -> None:
        # Two equally new copies of one run in one batch would leave the choice between them
        # to DuckDB; within one batch the API never sends a run twice with one updatedAt.
        distinct: dict[tuple[int, int], Copy] = {}
        for copy in batch:
            distinct.setdefault((copy.run, copy.minutes), copy)
        batch = list(distinct.values())
        self.now += timedelta(minutes=minutes)
        pages = [
            PageIn(
                MACHINE_PROJECT,
                source,
                [c.event() for c in batch if source_of(c.run) == source],
                full_window=source in full,
            )
            for source in MACHINE_SOURCES
            if source in full or any(source_of(c.run) == source for c in batch)
        ]
        if pages:
            in_history = self._in_history()
            stale_before = len(self.model.stale)
            self.store.ingest(pages, now=self.now, stale_after=STALE_AFTER)
            self.model.apply(batch, full, self.now)
            if in_history & {c.run for c in batch}:
                event("a run in history was in a page")
            if len(self.model.stale) > stale_before:
                event("a run went stale")
            if self.model.finished_run_changed:
                event("a finished run changed")

    def _in_history(self) -> set[int]:
        ids = {
            r[0] for r in self.store.cursor().execute("SELECT id FROM events_history").fetchall()
        }
        return {i for i in range(RUNS) if run_id(i) in ids}

    @rule(minutes=st.integers(0, 120))
    def retire(self, minutes: int) -> None:
        if self.store.retire(self.now + timedelta(minutes=minutes)):
            event("runs moved to history")

    @rule()
    def restart(self) -> None:
        self.store.close()
        self.store = self._open()

    @invariant()
    def totals_follow_the_rule(self) -> None:
        cur = self.store.cursor()
        runs = {(str(t.source[1]), t.trigger, t.status): t for t in store_reads.run_totals(cur)}
        assert {k: [t.runs, t.runs_retracted] for k, t in runs.items()} == {
            k: v for k, v in self.model.runs.items()
        } | {k: [0, 0] for k in runs.keys() - self.model.runs.keys()}
        observed = {
            k: [t.duration_count, round(t.duration_sum_seconds * 1000), *t.duration_buckets]
            for k, t in runs.items()
            if t.duration_count
        }
        assert observed == dict(self.model.observed)
        rows = {
            (str(r.source[1]), r.trigger): [
                r.billable_rows,
                r.billable_rows_retracted,
                r.inserted_rows,
                r.inserted_rows_retracted,
            ]
            for r in store_reads.row_totals(cur)
        }
        assert rows == dict(self.model.rows)

    @invariant()
    def current_truth_is_a_recount(self) -> None:
        cur = self.store.cursor()
        recount = {(str(k[1]), k[2], k[3]): v for k, v in recount_runs(cur).items()}
        runs = {(str(t.source[1]), t.trigger, t.status): t for t in store_reads.run_totals(cur)}
        for key, total in runs.items():
            assert total.runs - total.runs_retracted == recount.get(key, (0, 0, 0))[0]
        assert recount.keys() <= runs.keys()
        by_trigger: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])
        for (source, trigger, _), (_, billable, inserted) in recount.items():
            by_trigger[(source, trigger)][0] += billable
            by_trigger[(source, trigger)][1] += inserted
        for row in store_reads.row_totals(cur):
            truth = by_trigger.get((str(row.source[1]), row.trigger), [0, 0])
            assert row.billable_rows - row.billable_rows_retracted == truth[0]
            assert row.inserted_rows - row.inserted_rows_retracted == truth[1]
        if not self.model.finished_run_changed:
            assert all(t.runs_retracted == 0 for t in runs.values())
            assert {k: t.runs for k, t in runs.items() if t.runs} == {
                k: v[0] for k, v in recount.items()
            }

    @invariant()
    def gauges_and_rollups_are_a_recount(self) -> None:
        cur = self.store.cursor()
        daily = cur.execute(
            f"""SELECT project_id, source_id, CAST(timezone('{TZ}', finished_at) AS DATE),
                       trigger, status, count(*), sum(billable_rows), sum(total_inserted_rows)
                FROM events WHERE {FINISHED} AND finished_at IS NOT NULL
                GROUP BY ALL ORDER BY ALL"""
        ).fetchall()
        kept = cur.execute("SELECT * FROM daily_usage ORDER BY ALL").fetchall()
        assert kept == daily
        history = cur.execute(
            f"""SELECT project_id, source_id, status, count(*),
                       count(*) FILTER (WHERE stale_since IS NOT NULL),
                       max(finished_at) FILTER (WHERE {FINISHED})
                FROM events_history GROUP BY ALL ORDER BY ALL"""
        ).fetchall()
        assert cur.execute("SELECT * FROM history_stats ORDER BY ALL").fetchall() == history
        newest = cur.execute(
            f"""SELECT project_id, source_id, status, max(finished_at) FROM events
                WHERE {FINISHED} AND finished_at IS NOT NULL GROUP BY ALL"""
        ).fetchall()
        assert store_reads.last_finished(cur) == {((r[0], r[1]), r[2]): r[3] for r in newest}
        in_progress: dict[Any, int] = defaultdict(int)
        for i, copy in self.model.stored.items():
            if copy.in_flight and i not in self.model.stale:
                in_progress[((MACHINE_PROJECT, source_of(i)), copy.status)] += 1
        assert store_reads.in_progress(cur) == dict(in_progress)
        stale: dict[Any, int] = defaultdict(int)
        for i in self.model.stale:
            stale[(MACHINE_PROJECT, source_of(i))] += 1
        assert store_reads.stale_runs(cur) == dict(stale)

    @invariant()
    def each_run_is_stored_once_as_its_newest_copy(self) -> None:
        cur = self.store.cursor()
        stored = cur.execute(
            """SELECT id, status, billable_rows, updated_at, trigger FROM events ORDER BY id"""
        ).fetchall()
        assert len({r[0] for r in stored}) == len(stored), "one row per run"
        assert {r[0]: r[1:] for r in stored} == {
            run_id(i): (c.status, c.billable, c.updated, c.trigger)
            for i, c in self.model.stored.items()
        }
        overlap = cur.execute(
            "SELECT count(*) FROM events_live SEMI JOIN events_history USING (id)"
        ).fetchall()
        assert overlap == [(0,)]

    @invariant()
    def exposed_counters_never_go_down(self) -> None:
        registry = CollectorRegistry()
        names = {(MACHINE_PROJECT, s): SourceNames("p", str(s)) for s in MACHINE_SOURCES}
        registry.register(store_metrics(self.store, names, now=lambda: self.now))
        counters: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
        for family in registry.collect():
            # The exporter's own synthbrew_exporter_* counters start from zero with the
            # process, like any exporter's; the generation counters come from the store.
            if family.type not in ("counter", "histogram") or not family.name.startswith(
                "synthbrew_generation_"
            ):
                continue
            for sample in family.samples:
                counters[_key(sample)] = sample.value
        for key, before in self.exposed.items():
            assert key in counters, f"{key} disappeared"
            assert counters[key] >= before, f"{key} went down: {before} -> {counters[key]}"
        self.exposed = counters


def _key(sample: Sample) -> tuple[str, frozenset[tuple[str, str]]]:
    return sample.name, frozenset(sample.labels.items())


StoreMachine.TestCase.settings = settings(
    max_examples=int(os.environ.get("TOTALS_EXAMPLES", "40")),
    stateful_step_count=15,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_totals_follow_the_rule_over_any_page_sequence = StoreMachine.TestCase


# --- the rule's cases, by example ---------------------------------------------------------------


DAY = timedelta(days=1)


def _exposed(store: Store) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    registry = CollectorRegistry()
    registry.register(store_metrics(store, {(PROJECT, SOURCE): SourceNames("shop", "orders")}))
    return {_key(s): s.value for f in registry.collect() for s in f.samples}


def _value(found: dict[Any, float], name: str, **labels: str) -> float | None:
    return found.get((name, frozenset({"project": "shop", "source": "orders", **labels}.items())))


def test_a_failed_run_retried_to_success_with_fewer_rows(tmp_path: Path) -> None:
    """The issue's case: no counter goes down, and X - X_retracted is the truth."""
    store = Store(tmp_path / "x.duckdb", rollups=Rollups(BOUNDS))
    try:
        failed = run(status="failed", billableRows=500, totalInsertedRows=500, durationMs=5_000)
        store.ingest_page(PROJECT, SOURCE, [failed], now=T0)
        before = _exposed(store)
        retried = run(
            failed.id,
            billableRows=100,
            totalInsertedRows=600,
            durationMs=40_000,
            updatedAt=(T0 + timedelta(hours=1)).isoformat(),
        )
        store.ingest_page(PROJECT, SOURCE, [retried], now=T0 + timedelta(hours=1))
        after = _exposed(store)
    finally:
        store.close()
    populate = {"trigger": "populate"}
    assert _value(before, "synthbrew_generation_failures_total", **populate) == 1
    expected = {
        ("synthbrew_generation_runs_total", "failed"): 1,
        ("synthbrew_generation_runs_retracted_total", "failed"): 1,
        ("synthbrew_generation_runs_total", "success"): 1,
        ("synthbrew_generation_runs_retracted_total", "success"): 0,
    }
    for (name, status), count in expected.items():
        assert _value(after, name, status=status, **populate) == count, (name, status)
    assert _value(after, "synthbrew_generation_failures_total", **populate) == 1
    assert _value(after, "synthbrew_generation_failures_retracted_total", **populate) == 1
    assert _value(after, "synthbrew_generation_billable_rows_total", **populate) == 500
    assert _value(after, "synthbrew_generation_billable_rows_retracted_total", **populate) == 400
    assert _value(after, "synthbrew_generation_inserted_rows_total", **populate) == 600
    assert _value(after, "synthbrew_generation_inserted_rows_retracted_total", **populate) == 0
    histogram = "synthbrew_generation_duration_seconds"
    assert _value(after, f"{histogram}_count", status="failed", **populate) == 1, "kept"
    assert _value(after, f"{histogram}_count", status="success", **populate) == 1
    assert _value(after, f"{histogram}_bucket", le="10.0", status="failed", **populate) == 1
    assert _value(after, f"{histogram}_bucket", le="10.0", status="success", **populate) == 0
    for key, value in before.items():
        if key[0].startswith("synthbrew_generation_") and key[0].endswith(("_total", "_bucket")):
            assert after[key] >= value, key


def test_a_corrected_duration_is_not_observed_twice(tmp_path: Path) -> None:
    store = Store(tmp_path / "x.duckdb", rollups=Rollups(BOUNDS))
    try:
        done = run(durationMs=500)
        store.ingest_page(PROJECT, SOURCE, [done], now=T0)
        fixed = run(done.id, durationMs=50_000, updatedAt=(T0 + timedelta(hours=1)).isoformat())
        store.ingest_page(PROJECT, SOURCE, [fixed], now=T0 + timedelta(hours=1))
        found = _exposed(store)
    finally:
        store.close()
    labels = {"trigger": "populate", "status": "success"}
    name = "synthbrew_generation_duration_seconds"
    assert _value(found, f"{name}_count", **labels) == 1
    assert _value(found, f"{name}_bucket", le="1.0", **labels) == 1, "as first observed"


def test_new_histogram_bounds_keep_every_count_from_going_down(tmp_path: Path) -> None:
    path = tmp_path / "x.duckdb"
    store = Store(path, rollups=Rollups(BOUNDS))
    runs = [run(durationMs=ms, minutes=i) for i, ms in enumerate([500, 5_000, 30_000, 90_000])]
    shrunk = run(durationMs=90_000, minutes=9)
    store.ingest_page(PROJECT, SOURCE, [*runs, shrunk], now=T0)
    fixed = run(shrunk.id, minutes=9, durationMs=800, updatedAt=(T0 + DAY).isoformat())
    store.ingest_page(PROJECT, SOURCE, [fixed], now=T0)
    before = _exposed(store)
    store.close()
    store = Store(path, rollups=Rollups((0.5, 1.0, 60.0, 120.0)))
    try:
        after = _exposed(store)
    finally:
        store.close()
    labels = {"trigger": "populate", "status": "success"}
    bucket = "synthbrew_generation_duration_seconds_bucket"
    # 1.0 and 60.0 were there: at least as before (the corrected run stays where it was seen)
    assert _value(before, bucket, le="1.0", **labels) == 1
    assert _value(after, bucket, le="1.0", **labels) == 2, "max(old, recount)"
    assert _value(before, bucket, le="60.0", **labels) == 3
    assert _value(after, bucket, le="60.0", **labels) == 4, "the corrected run now counts too"
    assert _value(after, bucket, le="0.5", **labels) == 1, "new: from the stored runs"
    assert _value(after, bucket, le="120.0", **labels) == 5
    assert _value(after, bucket, le="10.0", **labels) is None, "gone with the old bounds"
    counts = [_value(after, bucket, le=le, **labels) or 0 for le in ("0.5", "1.0", "60.0", "120.0")]
    assert counts == sorted(counts), "cumulative"


def test_a_new_billing_timezone_redays_the_usage(tmp_path: Path) -> None:
    path = tmp_path / "x.duckdb"
    store = Store(path)
    late = T0.replace(hour=23, minute=0)
    store.ingest_page(PROJECT, SOURCE, [run(finishedAt=late.isoformat())], now=T0)
    store.close()
    store = Store(path, rollups=Rollups(timezone="Asia/Tokyo"))
    try:
        days = store.cursor().execute("SELECT day FROM daily_usage").fetchall()
    finally:
        store.close()
    assert [d[0].isoformat() for d in days] == ["2026-11-02"], "23:00 UTC is the next day there"
