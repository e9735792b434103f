#!/usr/bin/env python3
"""Spend the API's requests where they matter: fixed-interval polling against the adaptive rule.

    .venv/bin/python -m bench.api_budget                  # about ten minutes
    .venv/bin/python -m bench.api_budget --minutes 3      # a quicker look

A fleet of ``--sources`` sources (70 % idle for hours, 25 % one run an hour, 5 % bursty enough
to overflow a 200-event window) on one API key, every rate and duration of it ``--scale`` times
faster than real life, and the exporter's intervals as much shorter: ``--minutes`` of wall clock
are ``--minutes`` x ``--scale`` minutes of the workload (the default, an hour). Each mode is an
exporter against its own simulator with the same runs:

- ``fixed``: every source polled at its interval (60 s), the overflow rule only;
- ``adaptive``: runs in flight polled every 30 s, idle sources up to every 15 minutes;
- ``adaptive, key limited``: the same, the key limited by the simulator to 40 % of what the
  fixed schedule needs, with no budget configured: the exporter learns it from 429s.

Fixed polling runs first, alone (it needs the most CPU: starved, it would look worse than it
is), then the two adaptive modes together.

Per mode: requests made, 429s (all, and after the first minute), events missed (runs the
simulator queued while the exporter ran that were never stored), and the median and p99 delay
from a run finishing (the simulator's truth) to the first page that showed it finished, in the
workload's seconds. Targets: >= 70 % fewer requests than fixed; zero events missed; p99 delay no
worse than fixed's; limited key: zero 429s after the first minute.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb

from bench.common import exporter, simulator, write_config
from exporter.simulator import Scenario, World

RESULTS = Path(__file__).with_name("api_budget.json")
INTERVAL = 60.0  # the workload's polling interval, seconds
KEY = "sb_api_fleet"
# The limited key's share of what the fixed schedule needs (one request per source a minute):
# less than the adaptive rule's first minute, in which every source is polled once.
LIMITED_SHARE = 0.4


def fleet(sources: int, scale: float, limit_rpm: int | None) -> Scenario:
    def source(i: int) -> dict[str, Any]:
        if i % 20 == 0:  # 5 %: bursty, 100 runs a minute (a window lasts two minutes)
            return {"name": f"burst{i}", "runs_per_hour": 6000 * scale, "duration_seconds": 20}
        if i % 4 == 0:  # 25 %: one run an hour, five minutes long
            return {"name": f"hourly{i}", "runs_per_hour": 1 * scale, "duration_seconds": 300}
        return {"name": f"idle{i}", "runs_per_hour": 0.02 * scale}  # 70 %: one in 50 hours

    def scaled(spec: dict[str, Any]) -> dict[str, Any]:
        spec["duration_seconds"] = spec.get("duration_seconds", 60) / scale
        spec["queue_wait_seconds"] = 5 / scale
        return spec

    return Scenario.model_validate(
        {
            "seed": 5,
            "history_hours": 24 / scale,
            "projects": [
                {
                    "name": "fleet",
                    "api_key": KEY,
                    "rate_limit_rpm": limit_rpm,
                    "sources": [scaled(source(i)) for i in range(sources)],
                }
            ],
        }
    )


@dataclass
class Mode:
    name: str
    collector: dict[str, float]
    limited: bool = False


def modes(scale: float) -> list[Mode]:
    base = {"interval_seconds": INTERVAL / scale, "min_interval_seconds": 5 / scale}
    adaptive = {
        **base,
        "in_flight_interval_seconds": 30 / scale,
        "max_interval_seconds": 900 / scale,
    }
    return [
        Mode("fixed", base),
        Mode("adaptive", adaptive),
        Mode("adaptive, key limited", adaptive, limited=True),
    ]


@dataclass
class Result:
    mode: str
    requests: int = 0
    requests_per_hour: float = 0.0  # of the workload's time
    too_many: int = 0
    too_many_after_first_minute: int = 0
    runs_due: int = 0
    missed: int = 0
    finished_due: int = 0
    never_seen_finished: int = 0
    delay_median_seconds: float = 0.0
    delay_p99_seconds: float = 0.0
    hourly_delay_p99_seconds: float = 0.0  # the runs of the one-an-hour sources alone
    limit_per_minute: int | None = None
    delays: list[float] = field(default_factory=list, repr=False)
    hourly_delays: list[float] = field(default_factory=list, repr=False)


def run(mode: Mode, args: argparse.Namespace, workdir: Path, out: dict[str, Result]) -> None:
    scale = args.scale
    limit = int(args.sources * scale * LIMITED_SHARE) if mode.limited else None  # a real minute
    world = World(fleet(args.sources, scale, limit))
    world.first_served_finished = {}
    result = Result(mode.name, limit_per_minute=limit)
    with simulator(world) as base_url:
        config, url = write_config(
            world,
            base_url,
            workdir,
            api={"api_key": KEY, "max_concurrency": 8, "retry": {"max_retry_after_seconds": 120}},
            collector={**mode.collector, "stale_after_seconds": 3600 / scale},
            database={"path": str(workdir / "bench.duckdb")},
        )
        with exporter(config, url):
            started_real, started = time.monotonic(), world.clock.now()
            time.sleep(args.minutes * 60)
            ended_real, ended = time.monotonic(), world.clock.now()
    log = [(t, status) for t, status in world.requests["fleet"] if t >= started_real]
    result.requests = sum(1 for t, _ in log if t <= ended_real)
    result.requests_per_hour = round(result.requests / (args.minutes * scale / 60))
    result.too_many = sum(1 for _, status in log if status == 429)
    result.too_many_after_first_minute = sum(
        1 for t, status in log if status == 429 and t > started_real + 60
    )
    # Judged on runs with time to be seen: queued after start, and a maximum interval before
    # the end (a run queued in the last seconds may rightly not be polled yet).
    margin = timedelta(seconds=900 / scale + 60 / scale)
    stored = _stored_ids(workdir / "bench.duckdb")
    served = world.first_served_finished
    hours = (ended - started).total_seconds() / 3600
    for state in world.sources.values():
        # Only the runs since start: a limit spares generating the whole history.
        since_start = int(state.source.runs_per_hour * hours * 1.2) + 10
        for spec in world.runs(state, ended, since_start):
            if spec.queued_at < started:
                break
            if spec.queued_at > ended - margin:
                continue
            result.runs_due += 1
            result.missed += spec.id not in stored
            if spec.finished_at > ended - margin:
                continue
            result.finished_due += 1
            seen = served.get(spec.id)
            if seen is None:
                result.never_seen_finished += 1
            else:
                delay = (seen - spec.finished_at).total_seconds() * scale
                result.delays.append(delay)
                if state.source.name.startswith("hourly"):
                    result.hourly_delays.append(delay)
    if result.delays:
        result.delay_median_seconds = round(statistics.median(result.delays), 1)
        result.delay_p99_seconds = round(_percentile(result.delays, 0.99), 1)
    if result.hourly_delays:
        result.hourly_delay_p99_seconds = round(_percentile(result.hourly_delays, 0.99), 1)
    out[mode.name] = result


def _stored_ids(db: Path) -> set[Any]:
    conn = duckdb.connect(str(db), read_only=True)
    try:
        return {row[0] for row in conn.execute("SELECT id FROM events").fetchall()}
    finally:
        conn.close()


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def table(results: list[Result]) -> str:
    fixed = results[0]
    lines = [
        f"{'mode':<24} {'requests':>9} {'per hour':>9} {'vs fixed':>9} {'429s':>6}"
        f" {'429s after 1st min':>19} {'runs due':>9} {'missed':>7} {'delay p50 s':>12}"
        f" {'delay p99 s':>12} {'hourly p99 s':>13}"
    ]
    for r in results:
        saved = "" if r is fixed else f"{1 - r.requests / fixed.requests:+.0%}".replace("+", "-")
        lines.append(
            f"{r.mode:<24} {r.requests:>9,} {r.requests_per_hour:>9,.0f} {saved:>9}"
            f" {r.too_many:>6} {r.too_many_after_first_minute:>19} {r.runs_due:>9,}"
            f" {r.missed:>7} {r.delay_median_seconds:>12} {r.delay_p99_seconds:>12}"
            f" {r.hourly_delay_p99_seconds:>13}"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sources", type=int, default=100)
    parser.add_argument("--scale", type=float, default=10.0, help="workload speed-up")
    parser.add_argument("--minutes", type=float, default=6.0, help="wall clock per mode")
    args = parser.parse_args()
    out: dict[str, Result] = {}
    print(
        f"{args.sources} sources, {args.minutes} min at {args.scale:g}x"
        f" = {args.minutes * args.scale / 60:.1f} h of workload per mode ...",
        flush=True,
    )
    with tempfile.TemporaryDirectory() as tmp:
        fixed, *adaptive = modes(args.scale)
        for group in ([fixed], adaptive):
            threads = []
            for mode in group:
                workdir = Path(tmp) / mode.name.replace(" ", "_").replace(",", "")
                workdir.mkdir()
                thread = threading.Thread(target=run, args=(mode, args, workdir, out))
                thread.start()
                threads.append(thread)
            for thread in threads:
                thread.join()
    results = [out[m.name] for m in modes(args.scale)]
    print(table(results))
    limited = results[2]
    print(f"\nkey limit in the limited mode: {limited.limit_per_minute} requests a minute")
    print(f"finished runs never seen finished: {[r.never_seen_finished for r in results]}")
    RESULTS.write_text(
        json.dumps(
            {
                "when": datetime.now(UTC).isoformat(timespec="seconds"),
                "args": vars(args),
                "results": [
                    {k: v for k, v in asdict(r).items() if not k.endswith("delays")}
                    for r in results
                ],
            },
            indent=2,
        )
        + "\n"
    )
    print(f"wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
