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
from exporter.access import (
    RemoteError,
    local_export,
    local_report,
    remote_export,
    remote_report,
    remote_reports,
)
from exporter.config import DEFAULT_PORT, ConfigError, ServerConfig, load_config, split_listen
from exporter.demo import run_demo
from exporter.logs import setup_logging
from exporter.reports import FORMATS, ReportError, describe, load_reports, render
from exporter.simulator import Scenario, SimulatorApp, World, demo_scenario
from exporter.simulator.serve import serve_simulator
from exporter.store import DatabaseLocked, StoreError

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


def _report_source(
    config_path: Path | None, database: Path | None, url: str | None
) -> tuple[Path | None, str | None, Path | None]:
    """Where reports come from: (database file, running exporter URL, queries dir)."""
    if url:
        return None, url.rstrip("/"), None
    if database is not None:
        return database, None, None
    with config_errors():
        config = load_config(config_path)
    host, port = split_listen(config.server.listen)
    return config.database.path, f"http://{host}:{port}", config.reports.queries_dir


@main.command()
@click.argument("name", required=False)
@config_option
@click.option("--database", type=click.Path(dir_okay=False, path_type=Path), help="DuckDB file.")
@click.option("--url", help="A running exporter, e.g. http://127.0.0.1:9794.")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="table", show_default=True)
@click.option("--param", "params", multiple=True, metavar="KEY=VALUE", help="Report parameter.")
@click.option("--output", type=click.Path(dir_okay=False, path_type=Path), help="Write here.")
def report(
    name: str | None,
    config_path: Path | None,
    database: Path | None,
    url: str | None,
    fmt: str,
    params: tuple[str, ...],
    output: Path | None,
) -> None:
    """Run a named SQL report from queries/; without NAME, list them.

    Works while `run` holds the database: the file is locked then, so the report is asked of the
    running exporter over HTTP instead.
    """
    db, remote, queries = _report_source(config_path, database, url)
    given = dict(_split_param(p) for p in params)
    try:
        if db is None and remote is not None:
            _remote_report(remote, name, given, fmt, output)
            return
        reports = load_reports(queries)
        if name is None:
            click.echo(describe(list(reports.values())), nl=False)
            return
        if name not in reports:
            fail(f"no report named {name!r}; `report` without a name lists them")
        chosen = reports[name]
        bound = chosen.bind(given)
        assert db is not None
        try:
            result = local_report(db, chosen, bound)
        except DatabaseLocked:
            if remote is None:
                fail(f"{db} is locked by a running exporter: pass --url or --config", code=1)
            result = remote_report(remote, name, given)
    except ReportError as exc:
        fail(str(exc))
    except (RemoteError, StoreError) as exc:
        fail(str(exc), code=1)
    _emit(render(result, fmt, chosen.title), output)


def _remote_report(
    url: str, name: str | None, given: dict[str, str], fmt: str, output: Path | None
) -> None:
    try:
        if name is None:
            for r in remote_reports(url):
                click.echo(f"{r['name']:<22} {r['title']}")
            return
        result = remote_report(url, name, given)
    except RemoteError as exc:
        fail(str(exc), code=1)
    _emit(render(result, fmt, name), output)


def _emit(text: str, output: Path | None) -> None:
    if output is None:
        click.echo(text, nl=False)
    else:
        output.write_text(text, encoding="utf-8")
        click.echo(f"wrote {output}", err=True)


def _split_param(raw: str) -> tuple[str, str]:
    key, sep, value = raw.partition("=")
    if not sep or not key:
        fail(f"--param {raw!r}: expected KEY=VALUE")
    return key.strip(), value


@main.command("export")
@config_option
@click.option(
    "--output",
    type=click.Path(file_okay=False, path_type=Path),
    help="Dataset directory (default: export.path from the config).",
)
def export_cmd(config_path: Path | None, output: Path | None) -> None:
    """Write the events as a Parquet dataset partitioned by project and month (incremental)."""
    with config_errors():
        config = load_config(config_path)
    root = output or config.export.path
    if root is None:
        fail("no export directory: pass --output DIR or set export.path")
    try:
        result = local_export(config.database.path, root)
    except DatabaseLocked:
        host, port = split_listen(config.server.listen)
        if output is not None and output != config.export.path:
            fail(
                "the database is locked by a running exporter, which exports only to"
                " export.path; drop --output or stop it",
                code=1,
            )
        try:
            result = remote_export(f"http://{host}:{port}")
        except RemoteError as exc:
            fail(str(exc), code=1)
    except StoreError as exc:
        fail(str(exc), code=1)
    click.echo(
        f"{root}: {result.files_written} file(s) written ({result.rows_written} rows),"
        f" {result.files_unchanged} unchanged"
    )


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
