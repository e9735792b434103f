#!/usr/bin/env python3
"""Soak test (not a CI test): the exporter against the simulator with many sources and injected
faults for a set time, printing memory, tasks, polls and errors over time.

    .venv/bin/python bench/soak.py --sources 200 --minutes 10

Memory must stay flat: the script prints the RSS growth between the end of the warm-up (first
quarter) and the end, and exits 1 if it grew by more than --max-growth-mb.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from bench.common import by_label, exporter, scenario, scrape, simulator, total, write_config
from exporter.simulator import World

FAULTS = [
    {},
    {"faults": {"error_rate": 0.2}},
    {"rate_limit_rpm": 4},
    {"faults": {"hang_seconds": 3}},
    {"faults": {"malformed_rate": 0.3}},
    {"faults": {"invalid_event_rate": 0.05}},
    {"faults": {"latency_ms": 200}},
    {},
    {},
    {},
]


def main() -> int:
    """The whole soak in the order it runs (start, poll, sample, stop, report), as one
    function so a reader sees what is measured when."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sources", type=int, default=200)
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--interval", type=float, default=5, help="collector.interval_seconds")
    parser.add_argument("--sample-seconds", type=float, default=15)
    parser.add_argument("--max-growth-mb", type=float, default=20)
    args = parser.parse_args()

    world = World(scenario(args.sources, runs_per_hour=240, duration_seconds=30))
    for i, state in enumerate(world.sources.values()):
        fault = FAULTS[i % len(FAULTS)]
        state.source.faults = state.source.faults.model_validate(fault.get("faults", {}))
        state.source.rate_limit_rpm = fault.get("rate_limit_rpm")
    with tempfile.TemporaryDirectory() as tmp, simulator(world) as base_url:
        config, url = write_config(
            world,
            base_url,
            Path(tmp),
            api={"timeout_seconds": 2, "retry": {"attempts": 2, "max_retry_after_seconds": 5}},
            collector={"interval_seconds": args.interval, "min_interval_seconds": 1},
        )
        print(f"soak: {args.sources} sources, {args.minutes:g} min, interval {args.interval:g}s")
        print(f"{'t (s)':>6} {'RSS MB':>7} {'tasks':>6} {'polls':>7} {'errors':>7}  by reason")
        rss: list[tuple[float, float]] = []
        with exporter(config, url):
            start = time.monotonic()
            end = start + args.minutes * 60
            while True:
                m = scrape(url)
                elapsed = time.monotonic() - start
                mb = total(m, "process_resident_memory_bytes") / 2**20
                rss.append((elapsed, mb))
                reasons = {
                    k: int(v)
                    for k, v in by_label(
                        m, "synthbrew_exporter_poll_errors_total", "reason"
                    ).items()
                    if v
                }
                print(
                    f"{elapsed:6.0f} {mb:7.1f} {total(m, 'synthbrew_exporter_asyncio_tasks'):6.0f}"
                    f" {total(m, 'synthbrew_exporter_polls_total'):7.0f}"
                    f" {total(m, 'synthbrew_exporter_poll_errors_total'):7.0f}  {reasons}",
                    flush=True,
                )
                if time.monotonic() >= end:
                    break
                time.sleep(min(args.sample_seconds, max(0.0, end - time.monotonic())))
    warm = next(mb for t, mb in rss if t >= args.minutes * 60 / 4)
    growth = rss[-1][1] - warm
    peak = max(mb for _, mb in rss)
    print(
        f"RSS after warm-up {warm:.1f} MB, at end {rss[-1][1]:.1f} MB, growth {growth:+.1f} MB,"
        f" peak {peak:.1f} MB"
    )
    if growth > args.max_growth_mb:
        print(f"FAIL: memory grew by more than {args.max_growth_mb:g} MB")
        return 1
    print("OK: memory flat")
    return 0


if __name__ == "__main__":
    sys.exit(main())
