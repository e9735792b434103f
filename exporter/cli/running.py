"""Commands that run the exporter or its simulator: check-config, simulate, collect, run."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

import click
import yaml
from rich.console import Console
from rich.progress import Progress

from exporter import service
from exporter.cli.common import (
    config_option,
    fail,
    handled,
    main,
    shard_option,
    with_shard,
)
from exporter.config import (
    DEFAULT_PORT,
    Config,
    ServerConfig,
    load_config,
)
from exporter.demo import run_demo
from exporter.logs import mask
from exporter.simulator import Scenario, SimulatorApp, World, demo_scenario
from exporter.simulator.serve import serve_simulator
from exporter.supervision import TaskDied
from exporter.targets import targets


@main.command("check-config")
@config_option
def check_config(config_path: Path | None) -> None:
    """Validate the config and print it, effective values filled in, secrets redacted."""
    with handled():
        config = load_config(config_path)
    click.echo(yaml.safe_dump(config.redacted(), sort_keys=False), nl=False)
    click.echo(
        f"# ok: {len(config.projects)} project(s), "
        f"{sum(len(p.sources) for p in config.projects)} source(s)",
        err=True,
    )


@main.command()
@click.option("--listen", default="127.0.0.1:9795", show_default=True, help="HOST:PORT")
@click.option(
    "--scenario",
    "scenario_path",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="YAML scenario (projects, sources, faults); default: the demo scenario.",
)
@click.option("--seed", type=int, default=None, help="Override the scenario's seed.")
@click.option(
    "--frozen-at",
    type=click.DateTime(["%Y-%m-%dT%H:%M:%S%z"]),
    default=None,
    help="Start with the clock stopped at this time (e.g. 2026-11-01T14:00:00+0000); it then"
    " moves only through POST /_sim/clock.",
)
def simulate(
    listen: str, scenario_path: Path | None, seed: int | None, frozen_at: datetime | None
) -> None:
    """Serve a fake Synthbrew API (both endpoints) for demos and tests."""
    try:
        scenario = Scenario.load(scenario_path) if scenario_path else demo_scenario()
    except (ValueError, OSError, yaml.YAMLError) as exc:
        fail(f"{scenario_path}: invalid scenario: {exc}")
    if seed is not None:
        scenario = Scenario.model_validate({**scenario.model_dump(), "seed": seed})
    world = World(scenario)
    if frozen_at is not None:
        world.clock.set(frozen_at)
    try:
        asyncio.run(serve_simulator(SimulatorApp(world), listen, announce=click.echo))
    except OSError as exc:
        fail(f"--listen {listen}: {exc.strerror or exc}")
    except KeyboardInterrupt:
        pass


@main.command()
@config_option
@shard_option
def collect(config_path: Path | None, shard: str | None) -> None:
    """Poll every configured source once, then exit: 0 if all were polled, 1 if any failed."""
    with handled():
        config = with_shard(load_config(config_path), shard)
    count = len(targets(config))
    with handled(), progress(count) as advance:
        results = asyncio.run(service.collect(config, lambda _: advance()))
    failed = [r for r in results if not r.ok]
    # One write per stream: a line at a time cost 0.1 s for 1,000 sources.
    ok_lines = [
        f"ok      {r.target.name}: {r.received} event(s), {r.new} new, {r.invalid} invalid"
        + ("  POSSIBLE MISSED EVENTS" if r.possible_gap else "")
        for r in results
        if r.ok
    ]
    if ok_lines:
        click.echo("\n".join(ok_lines))
    for r in failed:
        click.echo(f"FAILED  {r.target.name}: {r.reason}: {r.message}", err=True)
    click.echo(f"{len(results) - len(failed)}/{len(results)} source(s) polled", err=True)
    sys.exit(1 if failed else 0)


@main.command()
@config_option
@click.option("--demo", is_flag=True, help="Start the built-in simulator and export from it.")
@click.option("--listen", default=None, help="HOST:PORT for the exporter (default: config).")
@click.option("--simulator-listen", default="127.0.0.1:9795", show_default=True)
@click.option(
    "--prometheus-listen",
    default="127.0.0.1:9796",
    show_default=True,
    help="With --demo: where Debian's prometheus (when installed) serves.",
)
@click.option(
    "--database",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("synthbrew-demo.duckdb"),
    show_default=True,
    help="With --demo: the database file.",
)
@shard_option
def run(
    config_path: Path | None,
    demo: bool,
    listen: str | None,
    simulator_listen: str,
    prometheus_listen: str,
    database: Path,
    shard: str | None,
) -> None:
    """Poll every source on a schedule and serve metrics (long-running)."""
    with handled():
        if demo:
            asyncio.run(
                run_demo(
                    listen=listen or f"127.0.0.1:{DEFAULT_PORT}",
                    simulator_listen=simulator_listen,
                    prometheus_listen=prometheus_listen,
                    db_path=database,
                    command=_how_called(),
                    announce=click.echo,
                )
            )
            return

        def configured() -> Config:
            config = with_shard(load_config(config_path), shard)
            if listen:
                config = config.model_copy(
                    update={"server": ServerConfig(listen=listen)}, deep=True
                )
            return config

        config = configured()
        try:
            asyncio.run(service.run(config, announce=click.echo, reload=configured))
        except TaskDied as exc:
            fail(mask(str(exc)), code=1)


def _how_called() -> str:
    """The command as the user typed it, relative to here when it is below here (so the
    demo's printed commands read as the README's)."""
    exe = Path(sys.argv[0])
    try:
        return str(exe.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(exe) if exe.is_absolute() or "/" in str(exe) else exe.name


@contextmanager
def progress(total: int) -> Iterator[Callable[[], None]]:
    """A progress bar on a terminal; nothing when output is piped or in CI."""
    if not sys.stderr.isatty():
        yield lambda: None
        return
    with Progress(transient=True, console=Console(stderr=True)) as bar:
        task = bar.add_task("polling", total=total)
        yield lambda: bar.advance(task)
