"""The ``synthbrew-exporter`` command line.

The cli only parses arguments, turns known failures into exit codes and messages, and hands over
to the modules that do the work. Exit codes: 0 ok, 1 the work failed, 2 bad usage or config.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn

import click
import yaml
from rich.console import Console
from rich.progress import Progress

from exporter import __version__, service
from exporter.config import DEFAULT_PORT, ConfigError, ServerConfig, load_config
from exporter.demo import run_demo
from exporter.logs import setup_logging
from exporter.simulator import Scenario, SimulatorApp, World, demo_scenario
from exporter.simulator.serve import serve_simulator
from exporter.store import StoreError

CONFIG_HELP = "Config file (default: $SYNTHBREW_EXPORTER_CONFIG)."


def fail(message: str, code: int = 2) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


@contextmanager
def config_errors() -> Iterator[None]:
    """Known operator mistakes become one message and exit 2, never a traceback."""
    try:
        yield
    except ConfigError as exc:
        fail(str(exc))


def config_option(func: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--config",
        "config_path",
        type=click.Path(dir_okay=False, path_type=Path),
        help=CONFIG_HELP,
    )(func)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="synthbrew-exporter")
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"], case_sensitive=False),
    default="info",
    show_default=True,
)
def main(log_level: str) -> None:
    """Export Synthbrew generation usage and health to Prometheus, DuckDB and SQL reports."""
    setup_logging(log_level)


@main.command("check-config")
@config_option
def check_config(config_path: Path | None) -> None:
    """Validate the config and print it, effective values filled in, secrets redacted."""
    with config_errors():
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
def simulate(listen: str, scenario_path: Path | None, seed: int | None) -> None:
    """Serve a fake Synthbrew API (both endpoints) for demos and tests."""
    try:
        scenario = Scenario.load(scenario_path) if scenario_path else demo_scenario()
    except (ValueError, OSError, yaml.YAMLError) as exc:
        fail(f"{scenario_path}: invalid scenario: {exc}")
    if seed is not None:
        scenario = Scenario.model_validate({**scenario.model_dump(), "seed": seed})
    world = World(scenario)
    try:
        asyncio.run(serve_simulator(SimulatorApp(world), listen, announce=click.echo))
    except OSError as exc:
        fail(f"--listen {listen}: {exc.strerror or exc}")
    except KeyboardInterrupt:
        pass


@main.command()
@config_option
def collect(config_path: Path | None) -> None:
    """Poll every configured source once, then exit: 0 if all were polled, 1 if any failed."""
    with config_errors():
        config = load_config(config_path)
    count = sum(len(p.sources) for p in config.projects)
    with store_errors(), progress(count) as advance:
        results = asyncio.run(service.collect(config, lambda _: advance()))
    failed = [r for r in results if not r.ok]
    for r in results:
        if r.ok:
            gap = "  POSSIBLE MISSED EVENTS" if r.possible_gap else ""
            click.echo(
                f"ok      {r.target.name}: {r.received} event(s), {r.new} new,"
                f" {r.invalid} invalid{gap}"
            )
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
    "--database",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("synthbrew-demo.duckdb"),
    show_default=True,
    help="With --demo: the database file.",
)
def run(
    config_path: Path | None,
    demo: bool,
    listen: str | None,
    simulator_listen: str,
    database: Path,
) -> None:
    """Poll every source on a schedule and serve metrics (long-running)."""
    with store_errors():
        if demo:
            asyncio.run(
                run_demo(
                    listen=listen or f"127.0.0.1:{DEFAULT_PORT}",
                    simulator_listen=simulator_listen,
                    db_path=database,
                    announce=click.echo,
                )
            )
            return
        with config_errors():
            config = load_config(config_path)
            if listen:
                config = config.model_copy(
                    update={"server": ServerConfig(listen=listen)}, deep=True
                )
        asyncio.run(service.run(config, announce=click.echo))


@contextmanager
def store_errors() -> Iterator[None]:
    """The database or a port cannot be used: a clear message and exit 1, not a traceback."""
    try:
        yield
    except StoreError as exc:
        fail(str(exc), code=1)
    except OSError as exc:
        fail(f"{exc.strerror or exc}", code=1)


@contextmanager
def progress(total: int) -> Iterator[Callable[[], None]]:
    """A progress bar on a terminal; nothing when output is piped or in CI."""
    if not sys.stderr.isatty():
        yield lambda: None
        return
    with Progress(transient=True, console=Console(stderr=True)) as bar:
        task = bar.add_task("polling", total=total)
        yield lambda: bar.advance(task)
