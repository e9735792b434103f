#!/usr/bin/env python3
"""History at scale: the real ``run`` polling into a database that already holds N runs.

    .venv/bin/python -m bench.history --runs 1e6,1e7,1e8      # about 1 h, ~15 GB of disk
    .venv/bin/python -m bench.history --runs 1e6 --minutes 3  # a quicker look

For each size, a database in the current schema is built once a day (``bench/.cache``, reused
the same day) with 1,000 sources' worth of runs over the year up to yesterday
(``bench.history_data``), copied, and opened by ``synthbrew-exporter run`` with default settings
— every source polled every 60 s — against the simulator in its own process, for ``--minutes``
after ``/readyz``. The same is done first on an empty database, in the same invocation: that is
the baseline each size is judged against. Prints one row per size; writes
``bench/history.json``. The upsert rate is the store alone writing new runs; the backfill rate
the same for never-seen runs older than history's newest (a first poll after a long outage),
which must be looked for in history first. Last, every report that takes a start is asked for
all of history (from 2000-01-01) through ``/api/reports``, beside polling: each must answer
inside the default ``database.memory_limit``; their latency and the peak after them are printed
apart from the targets' figures.

Targets at 100,000,000 runs: no failed polls; peak RSS <= 300 MB and within 15 % of the empty
database's; store seconds per /metrics refresh <= 2x the empty database's; upsert rate >= 80 %
of it; /readyz within two intervals (120 s); every named report <= 10 s (<= 2 s at 10,000,000);
every page of :data:`PAGES` <= 1 s at 10,000,000.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import uuid4

import httpx

from bench.common import EXE, Simulator, scrape, total, write_config
from bench.history_data import build
from exporter.models import parse_event_page
from exporter.reports import load_reports
from exporter.simulator import Scenario, World
from exporter.store import PageIn, Store

CACHE = Path(__file__).with_name(".cache")
RESULTS = Path(__file__).with_name("history.json")
INTERVAL = 60.0


def fleet(sources: int) -> Scenario:
    """The simulator's sources: 70 % quiet (one run an hour), 25 % steady (six an hour), 5 %
    busy (a run a minute, enough to keep a full window moving); some failed runs are retried
    and some billable rows corrected, as a real fleet's are."""

    def source(i: int) -> dict[str, Any]:
        rate = 60 if i % 20 == 0 else 6 if i % 4 == 0 else 1
        return {
            "name": f"s{i}",
            "runs_per_hour": rate,
            "duration_seconds": 60,
            "failure_rate": 0.06,
            "retry_rate": 0.3,
            "correction_rate": 0.02,
        }

    return Scenario.model_validate(
        {
            "seed": 1,
            "history_hours": 24,
            "projects": [
                {"name": f"p{p}", "sources": [source(i) for i in range(p, sources, 10)]}
                for p in range(10)
            ],
        }
    )


@dataclass
class Measured:
    runs: int
    ready_seconds: float = 0.0
    peak_rss_mb: float = 0.0
    peak_rss_polling_mb: float = 0.0  # before the reports: what polling alone reached
    peak_rss_with_pages_mb: float = 0.0
    store_refresh_seconds: float = 0.0
    store_refresh_max_seconds: float = 0.0
    polls_ok: int = 0
    polls_failed: int = 0
    upsert_events_per_second: float = 0.0
    backfill_events_per_second: float = 0.0
    # upsert_events_per_second over a new empty store's, written in the same rounds
    upsert_vs_new_store: float = 0.0
    write_seconds_per_minute: float = 0.0
    cpu_seconds_per_minute: float = 0.0
    rss_mb: float = 0.0
    file_mb: float = 0.0
    bytes_per_run: float = 0.0
    live_runs: int = 0
    history_lookups: int = 0
    reports_ms: dict[str, float] = field(default_factory=dict)
    pages_ms: dict[str, float] = field(default_factory=dict)
    # Each report that takes a start, from 2000-01-01: all of history, after the pages.
    reports_all_history_ms: dict[str, float] = field(default_factory=dict)
    peak_rss_all_history_mb: float = 0.0


# The pages as a user opens them: the usage page's default (90 days), its longest period, a
# filter, and a report page with a chart. Each is timed three times; the slowest counts.
PAGES = {
    "usage (90 days)": "/usage",
    "usage (366 days)": "/usage?period=custom&since={year_ago}&until={today}",
    "usage (one project, this month)": "/usage?period=this_month&project=p0",
    "reports/usage_daily": "/reports/usage_daily",
    "reports/source_health": "/reports/source_health",
}


def pristine(runs: int, world: World) -> Path:
    """The database of ``runs`` runs up to a day ago, built once a day and kept in the cache.

    Once a day because the reports' default periods (the last 7 or 30 days) must find a whole
    history behind them, as a user's would: a database built last week would leave them half
    empty and their figures flattering. The older copy of the same size is deleted first (8 GB
    at 100 million runs)."""
    CACHE.mkdir(exist_ok=True)
    today = datetime.now(UTC).date()
    path = CACHE / f"history-{runs}-{today}.duckdb"
    if not path.exists():
        for older in CACHE.glob(f"history-{runs}[-.]*"):
            older.unlink()
        started = time.perf_counter()
        print(f"building {runs:,} runs ...", flush=True)
        sources = [(p.id, s.id, p.name, s.name) for p in world.scenario.projects for s in p.sources]
        partial = path.with_suffix(".partial")
        build(partial, runs, sources, end=datetime.now(UTC) - timedelta(days=1))  # type: ignore[arg-type]
        partial.rename(path)
        print(f"  built in {time.perf_counter() - started:.0f} s", flush=True)
    return path


def measure(runs: int, world: World, workdir: Path, minutes: float) -> Measured:
    """One size, start to finish: copy the database, start ``run``, wait for /readyz, poll for
    ``minutes`` while sampling RSS and refresh cost, then the reports and the store alone.
    Kept as one function so the steps read in the order they are timed."""
    db = workdir / "synthbrew.duckdb"
    for leftover in (db, db.with_suffix(".duckdb.wal")):
        leftover.unlink(missing_ok=True)
    if runs:
        shutil.copyfile(pristine(runs, world), db)
    sim = Simulator(world, workdir)
    config, url = write_config(world, f"{sim.url}/api", workdir, database={"path": str(db)})
    out = Measured(runs=runs)
    log = (workdir / f"exporter-{runs}.log").open("w")
    started = time.monotonic()
    proc = subprocess.Popen(
        [EXE, "--log-level", "warning", "run", "--config", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=log,
    )
    try:
        out.ready_seconds = _until_ready(url, proc, started)
        ready_cpu = _cpu_seconds(proc.pid)
        writing = total(scrape(url), "synthbrew_exporter_store_write_seconds_total")
        refreshes: list[float] = []
        deadline = time.monotonic() + minutes * 60
        while time.monotonic() < deadline:
            time.sleep(5)
            refreshes.append(total(scrape(url), "synthbrew_exporter_store_scrape_duration_seconds"))
        steady = minutes * 60
        out.cpu_seconds_per_minute = round((_cpu_seconds(proc.pid) - ready_cpu) / steady * 60, 1)
        written = total(scrape(url), "synthbrew_exporter_store_write_seconds_total") - writing
        out.write_seconds_per_minute = round(written / steady * 60, 2)
        out.rss_mb = round(_status_mb(proc.pid, "VmRSS"), 1)
        out.peak_rss_polling_mb = round(_status_mb(proc.pid, "VmHWM"), 1)
        reports = load_reports()
        for name in reports:
            out.reports_ms[name] = _report_ms(url, name, {})
        # The peak of polling and the reports, as measured before the pages existed; the pages'
        # own (1,000 sources in a table) is reported apart.
        out.peak_rss_mb = round(_status_mb(proc.pid, "VmHWM"), 1)
        today = datetime.now(UTC).date()
        for name, path in PAGES.items():
            target = path.format(year_ago=today - timedelta(days=365), today=today)
            times = []
            for _ in range(3):
                began = time.perf_counter()
                answer = httpx.get(f"{url}{target}", timeout=300)
                times.append((time.perf_counter() - began) * 1000)
                if answer.status_code != 200:
                    print(f"  page {target}: HTTP {answer.status_code}: {answer.text[:300]}")
                    times = [float("nan")]
                    break
            out.pages_ms[name] = round(max(times), 1)
        for name, report in reports.items():
            if any(p.name == "since" for p in report.params):
                out.reports_all_history_ms[name] = _report_ms(url, name, {"since": "2000-01-01"})
        out.peak_rss_all_history_mb = round(_status_mb(proc.pid, "VmHWM"), 1)
        final = scrape(url)
        out.polls_ok = int(total(final, "synthbrew_exporter_polls_total", outcome="success"))
        out.polls_failed = int(total(final, "synthbrew_exporter_polls_total", outcome="error"))
        out.live_runs = int(total(final, "synthbrew_exporter_store_runs", table="live"))
        out.history_lookups = int(total(final, "synthbrew_exporter_store_history_lookups_total"))
        out.store_refresh_seconds = round(statistics.median(refreshes), 4)
        out.store_refresh_max_seconds = round(max(refreshes), 4)
        out.peak_rss_with_pages_mb = round(_status_mb(proc.pid, "VmHWM"), 1)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=300)
        sim.stop()
        log.close()
    out.file_mb = round(db.stat().st_size / 1e6, 1)
    stored = runs + out.live_runs
    out.bytes_per_run = round(db.stat().st_size / stored, 1) if stored else 0.0
    (
        out.upsert_events_per_second,
        out.backfill_events_per_second,
        out.upsert_vs_new_store,
    ) = upsert_rates(db, world, workdir / "new-store.duckdb")
    db.unlink()
    return out


_TIMES = ("queued_at", "started_at", "finished_at", "created_at", "updated_at")


def upsert_rates(
    db: Path, world: World, new_db: Path, sources: int = 200, rounds: int = 9
) -> tuple[float, float, float]:
    """Events per second of the store alone writing runs it has never seen, 64 pages of 200 per
    transaction as the exporter's ingest queue batches a burst: ``new`` runs, queued after
    everything stored (what polling writes), and ``backfill``: the same pages at their own times,
    days back for a quiet source, so older than the newest run in history, where each batch must
    look for its runs in history first. The median of ``rounds`` rounds, each of fresh run ids:
    one round of a few seconds on a shared 2-core machine varies by a third.

    Third, the ``new`` rate over that of a new empty store at ``new_db`` given the same pages
    (under other ids) in the same rounds, each right after the other: the rows of one
    invocation are measured half an hour apart, and this ratio is not moved by what the
    machine did in between."""
    pages = [
        PageIn(
            state.project.id,  # type: ignore[arg-type]
            state.id,
            parse_event_page(json.dumps(world.page(state, 200))).events,
        )
        for state in list(world.sources.values())[:sources]
    ]
    store, new_store = Store(db), Store(new_db)
    new_rates, backfill_rates, new_store_rates = [], [], []
    try:
        for _ in range(rounds):
            at = datetime.now(UTC)
            backfill, new = _renamed(pages), []
            for page in pages:
                shift = at - max(e.queued_at for e in page.events)
                fresh = [
                    e.model_copy(
                        update={"id": uuid4()}
                        | {t: getattr(e, t) + shift for t in _TIMES if getattr(e, t) is not None}
                    )
                    for e in page.events
                ]
                new.append(PageIn(page.project_id, page.source_id, fresh))
            new_rates.append(_write_rate(store, new))
            new_store_rates.append(_write_rate(new_store, _renamed(new)))
            backfill_rates.append(_write_rate(store, backfill))
    finally:
        store.close()
        new_store.close()
        for path in (new_db, new_db.with_name(new_db.name + ".wal")):
            path.unlink(missing_ok=True)
    new_rate = statistics.median(new_rates)
    return (
        new_rate,
        statistics.median(backfill_rates),
        round(new_rate / statistics.median(new_store_rates), 2),
    )


def _renamed(pages: list[PageIn]) -> list[PageIn]:
    """The same pages under fresh run ids."""
    return [
        PageIn(p.project_id, p.source_id, [e.model_copy(update={"id": uuid4()}) for e in p.events])
        for p in pages
    ]


def _write_rate(store: Store, pages: list[PageIn]) -> float:
    started = time.perf_counter()
    for i in range(0, len(pages), 64):
        store.ingest(pages[i : i + 64], now=datetime.now(UTC), stale_after=timedelta(hours=1))
    return round(sum(len(p.events) for p in pages) / (time.perf_counter() - started))


def _report_ms(url: str, name: str, params: dict[str, str]) -> float:
    """How long the running exporter took to answer a named report; NaN when it failed."""
    began = time.perf_counter()
    answer = httpx.get(f"{url}/api/reports/{name}", params=params, timeout=600)
    if answer.status_code != 200:
        print(f"  report {name} {params}: HTTP {answer.status_code}: {answer.text[:300]}")
        return float("nan")
    return round((time.perf_counter() - began) * 1000, 1)


def _until_ready(url: str, proc: subprocess.Popen[bytes], started: float) -> float:
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"the exporter exited with {proc.returncode}")
        try:
            if httpx.get(f"{url}/readyz", timeout=5).status_code == 200:
                return round(time.monotonic() - started, 1)
        except httpx.TransportError:
            pass
        if time.monotonic() - started > 900:
            raise RuntimeError("not ready after 15 minutes")
        time.sleep(0.5)


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _status_mb(pid: int, field: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def table(rows: list[Measured]) -> str:
    base = rows[0]
    header = (
        f"{'stored runs':>13} {'ready s':>8} {'peak RSS MB':>12} {'store s/refresh':>16}"
        f" {'polls ok/failed':>16} {'upsert ev/s':>12} {'backfill ev/s':>14} {'CPU s/min':>10}"
        f" {'file MB':>9}"
        f" {'B/run':>6} {'slowest report':>30}"
    )
    lines = [header]
    for m in rows:
        slowest = max(m.reports_ms, key=lambda n: m.reports_ms[n])
        vs = (
            ""
            if m is base
            else (
                f"  (RSS {m.peak_rss_mb / base.peak_rss_mb - 1:+.0%},"
                f" refresh {m.store_refresh_seconds / base.store_refresh_seconds:.2f}x,"
                f" upsert {m.upsert_events_per_second / base.upsert_events_per_second:.0%},"
                f" {m.upsert_vs_new_store:.0%} of a new store's in the same rounds)"
            )
        )
        lines.append(
            f"{m.runs:>13,} {m.ready_seconds:>8} {m.peak_rss_mb:>12} {m.store_refresh_seconds:>16}"
            f" {f'{m.polls_ok}/{m.polls_failed}':>16} {m.upsert_events_per_second:>12,.0f}"
            f" {m.backfill_events_per_second:>14,.0f} {m.cpu_seconds_per_minute:>10.1f}"
            f" {m.file_mb:>9} {m.bytes_per_run:>6}"
            f" {f'{slowest} {m.reports_ms[slowest]:.0f} ms':>30}{vs}"
        )
    lines.append("")
    lines.append("report latency (ms): " + " | ".join(f"{m.runs:,}" for m in rows))
    for name in base.reports_ms:
        lines.append(f"  {name:<22} " + " | ".join(f"{m.reports_ms[name]:>9}" for m in rows))
    lines.append("")
    lines.append(
        "report latency over all of history (ms): " + " | ".join(f"{m.runs:,}" for m in rows)
    )
    for name in base.reports_all_history_ms:
        cells = " | ".join(f"{m.reports_all_history_ms[name]:>9}" for m in rows)
        lines.append(f"  {name:<22} {cells}")
    peaks = " | ".join(f"{m.peak_rss_all_history_mb:>9}" for m in rows)
    lines.append(f"  {'peak RSS after them (MB)':<22} {peaks}")
    lines.append("")
    lines.append("page latency, slowest of 3 (ms): " + " | ".join(f"{m.runs:,}" for m in rows))
    polling = " | ".join(f"{m.peak_rss_polling_mb:>9}" for m in rows)
    lines.append(f"  {'peak RSS polling only (MB)':<32} {polling}")
    peaks = " | ".join(f"{m.peak_rss_with_pages_mb:>9}" for m in rows)
    lines.append(f"  {'peak RSS with the pages (MB)':<32} {peaks}")
    for name in base.pages_ms:
        lines.append(f"  {name:<32} " + " | ".join(f"{m.pages_ms[name]:>9}" for m in rows))
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", default="1e6,1e7,1e8", help="comma-separated history sizes")
    parser.add_argument("--minutes", type=float, default=5.0, help="polling after /readyz")
    parser.add_argument("--sources", type=int, default=1000)
    args = parser.parse_args()
    sizes = [0, *(int(float(x)) for x in args.runs.split(","))]
    world = World(fleet(args.sources))
    rows: list[Measured] = []
    with tempfile.TemporaryDirectory(dir=CACHE.parent) as tmp:
        for runs in sizes:
            if runs:
                pristine(runs, world)
            print(f"{runs:,} stored runs: polling for {args.minutes} min ...", flush=True)
            rows.append(measure(runs, world, Path(tmp), args.minutes))
            print(json.dumps(asdict(rows[-1])), flush=True)
    print()
    print(table(rows))
    RESULTS.write_text(json.dumps([asdict(r) for r in rows], indent=2) + "\n")
    print(f"\nwrote {RESULTS}")
    answered = all(
        not math.isnan(ms)
        for r in rows
        for ms in (*r.reports_ms.values(), *r.reports_all_history_ms.values())
    )
    return 0 if answered and all(r.polls_failed == 0 for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
