#!/usr/bin/env python3
"""Benchmark: the issue's targets, each next to a baseline measured in the same run.

    .venv/bin/python -m bench.run                 # full size: 1,000 sources, 1,000,000 events
    .venv/bin/python -m bench.run --quick         # a smaller shape, for a smoke test

Prints a table and writes bench/results.json. Targets (2-core machine): cold cycle <= 20 s,
warm cycle <= 3 s, store upsert >= 25,000 events/s and within 2x of a plain Arrow bulk insert,
/metrics p99 <= 150 ms at 1,000,000 events, every report <= 1 s, peak RSS of `run` <= 300 MB.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import httpx
import pyarrow as pa

from bench.common import EXE, Simulator, exporter, scenario, write_config
from bench.history_data import build
from exporter.models import parse_event_page
from exporter.reports import load_reports
from exporter.simulator import World
from exporter.store import PAGE_SCHEMA, PageIn, Store, page_table

RESULTS = Path(__file__).with_name("results.json")


def timed(cmd: list[str]) -> tuple[float, float, subprocess.CompletedProcess[str]]:
    """Wall seconds and peak RSS (MB) of a child process. Output goes to files, not pipes, so
    a chatty child never blocks on a full pipe while we wait for it."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        started = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, text=True)
        _, status, usage = os.wait4(proc.pid, 0)
        elapsed = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        done = subprocess.CompletedProcess(cmd, proc.returncode, out.read(), err.read())
    return elapsed, usage.ru_maxrss / 1024, done


def cycles(world: World, sim: Simulator, workdir: Path, results: dict[str, Any]) -> None:
    # Default settings but the small page for quiet sources. api.max_concurrency stays at its
    # default (4): on loopback more connections only add httpcore's per-connection bookkeeping.
    config, _ = write_config(world, f"{sim.url}/api", workdir, collector={"quiet_page_limit": 20})
    cmd = [EXE, "--log-level", "error", "collect", "--config", str(config)]
    cold, cold_rss, done = timed(cmd)
    assert done.returncode == 0, done.stderr[-2000:]
    sim.advance(60)
    warm, warm_rss, done = timed(cmd)
    assert done.returncode == 0, done.stderr[-2000:]
    sim.advance(60)
    steady, steady_rss, done = timed(cmd)
    assert done.returncode == 0, done.stderr[-2000:]
    events = duckdb.connect(str(workdir / "bench.duckdb"), read_only=True)
    stored = events.execute("SELECT count(*) FROM events").fetchall()[0][0]
    events.close()
    results["cycles"] = {
        "sources": len(world.sources),
        "events_stored": stored,
        "cold_seconds": round(cold, 2),
        "warm_seconds": round(warm, 2),
        "steady_seconds": round(steady, 2),
        "peak_rss_mb": round(max(cold_rss, warm_rss, steady_rss), 1),
    }


def upsert_rates(world: World, workdir: Path, results: dict[str, Any], naive_rows: int) -> None:
    """The store's write paths side by side on the same pages (the row-by-row baseline first),
    in one function so the figures compared are measured the same way."""
    pages = [
        PageIn(s.project.id, s.id, parse_event_page(json.dumps(world.page(s, 200))).events)  # type: ignore[arg-type]
        for s in world.sources.values()
    ]
    rows = sum(len(p.events) for p in pages)
    now = datetime.now(UTC)

    def rate(label: str, fn: Callable[[], int]) -> float:
        started = time.perf_counter()
        n = fn()
        per_second = n / (time.perf_counter() - started)
        print(f"  {label:<44} {per_second:>10,.0f} events/s")
        return per_second

    def store_run(batch: int) -> Callable[[], int]:
        def run() -> int:
            store = Store(workdir / f"store-{batch}.duckdb")
            for i in range(0, len(pages), batch):
                store.ingest(pages[i : i + batch], now=now, stale_after=timedelta(hours=1))
            store.close()
            return rows

        return run

    def bulk() -> int:
        table = pa.concat_tables([page_table(p.events) for p in pages])
        conn = duckdb.connect(str(workdir / "bulk.duckdb"))
        conn.execute(
            "CREATE TABLE events ("
            + ", ".join(f"{f.name} {_duck(f.type)}" for f in PAGE_SCHEMA)
            + ")"
        )
        conn.register("page", table)
        conn.execute("INSERT INTO events SELECT * FROM page")
        conn.close()
        return table.num_rows

    def naive() -> int:
        conn = duckdb.connect(str(workdir / "naive.duckdb"))
        conn.execute(
            "CREATE TABLE events ("
            + ", ".join(
                f"{f.name} {_duck(f.type)}{' PRIMARY KEY' if f.name == 'id' else ''}"
                for f in PAGE_SCHEMA
            )
            + ")"
        )
        table = pa.concat_tables([page_table(p.events) for p in pages]).slice(0, naive_rows)
        records = [tuple(r.values()) for r in table.to_pylist()]
        columns = PAGE_SCHEMA.names
        conn.executemany(
            f"INSERT INTO events VALUES ({', '.join('?' for _ in columns)}) ON CONFLICT (id) DO "
            f"UPDATE SET {', '.join(f'{c} = excluded.{c}' for c in columns if c != 'id')}",
            records,
        )
        conn.close()
        return len(records)

    print(f"store upsert, {rows:,} events in pages of 200:")
    single = rate("store, one transaction per page", store_run(1))
    batched = rate("store, IngestQueue batches of 64 pages", store_run(64))
    ceiling = rate("baseline: plain bulk INSERT from Arrow", bulk)
    slow = rate(f"baseline: row-by-row executemany ({naive_rows} rows)", naive)
    results["upsert"] = {
        "events": rows,
        "store_per_page_events_per_s": round(single),
        "store_batched_events_per_s": round(batched),
        "bulk_insert_ceiling_events_per_s": round(ceiling),
        "executemany_events_per_s": round(slow),
        "ceiling_over_batched": round(ceiling / batched, 2),
        "batched_over_executemany": round(batched / slow, 1),
    }


def _duck(arrow_type: pa.DataType) -> str:
    if pa.types.is_timestamp(arrow_type):
        return "TIMESTAMPTZ"
    if pa.types.is_integer(arrow_type):
        return "BIGINT"
    return "VARCHAR"


def fill_million(world: World, db: Path, total: int) -> None:
    """``total`` finished runs over the last year, spread over every source."""
    sources = [(p.id, s.id, p.name, s.name) for p in world.scenario.projects for s in p.sources]
    build(db, total, sources, end=datetime.now(UTC) - timedelta(days=1))  # type: ignore[arg-type]


def scrape_and_reports(
    world: World, sim: Simulator, workdir: Path, results: dict[str, Any], scrapes: int
) -> None:
    db = workdir / "million.duckdb"
    config, url = write_config(
        world,
        f"{sim.url}/api",
        workdir,
        database={"path": str(db)},
        collector={"interval_seconds": 3600},
        billing={"price_per_1000_rows": 0.1, "included_rows": {"p0": 1_000_000}},
    )
    with exporter(config, url) as proc:
        httpx.get(f"{url}/metrics", timeout=60)
        latencies = []
        for _ in range(scrapes):
            started = time.perf_counter()
            response = httpx.get(f"{url}/metrics", timeout=60)
            latencies.append((time.perf_counter() - started) * 1000)
            assert response.status_code == 200
        latencies.sort()
        reports = {}
        for name, report in load_reports().items():
            params = {p.name: "2000-01-01" for p in report.params if p.type == "date"}
            started = time.perf_counter()
            answer = httpx.get(f"{url}/api/reports/{name}", params=params, timeout=60)
            reports[name] = round((time.perf_counter() - started) * 1000, 1)
            assert answer.status_code == 200, answer.text
        peak = _peak_rss_mb(proc.pid)
    results["scrape"] = {
        "stored_events": _count(db),
        "scrapes": scrapes,
        "p50_ms": round(statistics.median(latencies), 1),
        "p99_ms": round(latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))], 1),
        "bytes": len(response.content),
    }
    results["reports_ms"] = reports
    results["run_peak_rss_mb"] = round(peak, 1)


def _count(db: Path) -> int:
    conn = duckdb.connect(str(db), read_only=True)
    try:
        return int(conn.execute("SELECT count(*) FROM events").fetchall()[0][0])
    finally:
        conn.close()


def _peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def report(results: dict[str, Any]) -> None:
    c, u, s = results["cycles"], results["upsert"], results["scrape"]
    rows = [
        (
            "cold cycle",
            f"{c['cold_seconds']} s",
            "<= 20 s",
            f"{c['sources']} sources, {c['events_stored']:,} events",
        ),
        (
            "warm cycle",
            f"{c['warm_seconds']} s",
            "<= 3 s",
            f"steady state after it: {c['steady_seconds']} s",
        ),
        (
            "store upsert",
            f"{u['store_batched_events_per_s']:,} ev/s",
            ">= 25,000 ev/s",
            f"{u['store_per_page_events_per_s']:,} ev/s one page per transaction",
        ),
        (
            "  vs bulk INSERT",
            f"{u['ceiling_over_batched']}x slower",
            "<= 2x",
            f"ceiling {u['bulk_insert_ceiling_events_per_s']:,} ev/s",
        ),
        (
            "  vs executemany",
            f"{u['batched_over_executemany']}x faster",
            "",
            f"naive {u['executemany_events_per_s']:,} ev/s",
        ),
        (
            "/metrics p50 / p99",
            f"{s['p50_ms']} / {s['p99_ms']} ms",
            "p99 <= 150 ms",
            f"{s['stored_events']:,} events, {s['bytes']:,} bytes",
        ),
        (
            "slowest report",
            f"{max(results['reports_ms'].values())} ms",
            "<= 1000 ms",
            max(results["reports_ms"], key=results["reports_ms"].get),
        ),
        (
            "peak RSS of run",
            f"{results['run_peak_rss_mb']} MB",
            "<= 300 MB",
            f"collect passes peaked at {c['peak_rss_mb']} MB",
        ),
    ]
    width = max(len(r[0]) for r in rows)
    print()
    for name, value, target, note in rows:
        print(f"{name:<{width}}  {value:>22}  {target:>15}  {note}")
    print("reports (ms):", json.dumps(results["reports_ms"]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="100 sources, 100,000 events")
    args = parser.parse_args()
    sources, events, scrapes, naive_rows = (
        (100, 100_000, 20, 500) if args.quick else (1000, 1_000_000, 100, 2000)
    )
    world = World(scenario(sources, runs_per_hour=120, duration_seconds=60))
    frozen = datetime.now(UTC).replace(microsecond=0)
    results: dict[str, Any] = {"machine": {"cpus": os.cpu_count()}, "started": frozen.isoformat()}
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        sim = Simulator(world, workdir)
        try:
            sim.freeze(frozen)
            world.clock.set(frozen)
            print(f"warming the simulator's cache for {sources} sources ...", flush=True)
            sim.warm_up(world)
            print("cycles ...", flush=True)
            cycles(world, sim, workdir, results)
            upsert_rates(world, workdir, results, naive_rows)
            print(f"filling {events:,} events ...", flush=True)
            fill_million(world, workdir / "million.duckdb", events)
            print("scrapes and reports ...", flush=True)
            scrape_and_reports(world, sim, workdir, results, scrapes)
        finally:
            sim.stop()
    report(results)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
