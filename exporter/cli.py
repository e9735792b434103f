"""The ``synthbrew-exporter`` command line.

The cli only parses arguments, turns known failures into exit codes and messages, and hands over
to the modules that do the work. Exit codes: 0 ok, 1 the work failed, 2 bad usage or config.
It is longer than the other modules only because it declares every subcommand's arguments and
messages in one place, which is where a user's view of the command line is read. "Try the
file, else ask the running exporter" is still written once per command (report, export,
regenerate, sql); one data interface with two implementations is what splits this module
(issue 19).
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any, NoReturn, TextIO
from uuid import UUID

import click
import yaml
from rich.console import Console
from rich.progress import Progress

from exporter import __version__, service
from exporter.access import Data, FileOrExporter, open_data
from exporter.client import SynthbrewClient, UpstreamError
from exporter.config import (
    DEFAULT_PORT,
    Config,
    ServerConfig,
    load_config,
)
from exporter.demo import run_demo
from exporter.errors import ExporterError
from exporter.logs import mask, setup_logging
from exporter.models import GenerationEvent, RegenerateRequest
from exporter.regenerate import Followed, regenerate, summary
from exporter.reports import FORMATS, SQL_FORMATS, describe, render, write_parquet
from exporter.sharding import Shard
from exporter.simulator import Scenario, SimulatorApp, World, demo_scenario
from exporter.simulator.serve import serve_simulator
from exporter.sql_shell import shell
from exporter.supervision import TaskDied
from exporter.targets import Target, targets

CONFIG_HELP = "Config file (default: $SYNTHBREW_EXPORTER_CONFIG)."


def fail(message: str, code: int = 2) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


@contextmanager
def handled() -> Iterator[None]:
    """An error the exporter raises on purpose (``exporter.errors``: bad config or input, a
    database or port that cannot be used) becomes one line and its exit code; an OS refusal
    (a port in use) exit 1; never a traceback."""
    try:
        yield
    except ExporterError as exc:
        fail(mask(str(exc)), exc.exit_code)
    except OSError as exc:
        fail(f"{exc.strerror or exc}", code=1)


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


def shard_option(func: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--shard",
        metavar="INDEX/COUNT",
        help="Poll only this replica's share of the sources (overrides collector.shard).",
    )(func)


def with_shard(config: Config, shard: str | None) -> Config:
    if shard is None:
        return config
    try:
        Shard.parse(shard)
    except ValueError as exc:
        fail(f"--shard: {exc}")
    collector = config.collector.model_copy(update={"shard": shard})
    return config.model_copy(update={"collector": collector})


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

        with handled():
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
    given = dict(_split_param(p) for p in params)
    with handled():
        data = open_data(config_path, database=database, url=url)
        if name is None:
            click.echo(describe(data.reports()), nl=False)
            return
        result = data.run_report(name, given)
        title = next((r.title for r in data.reports() if r.name == name), name)
    _emit(render(result, fmt, title), output)


@main.command()
@click.argument("query", required=False)
@click.option(
    "--file", "query_file", type=click.File("r"), help="Read the query from this file ('-': stdin)."
)
@config_option
@click.option("--database", type=click.Path(dir_okay=False, path_type=Path), help="DuckDB file.")
@click.option("--url", help="A running exporter, e.g. http://127.0.0.1:9794.")
@click.option("--format", "fmt", type=click.Choice(SQL_FORMATS), default="table", show_default=True)
@click.option("--output", type=click.Path(dir_okay=False, path_type=Path), help="Write here.")
def sql(
    query: str | None,
    query_file: TextIO | None,
    config_path: Path | None,
    database: Path | None,
    url: str | None,
    fmt: str,
    output: Path | None,
) -> None:
    """Run one read-only SELECT over the store: QUERY, --file, or stdin; at a terminal with
    no query, a prompt with history.

    Reads the tables and views documented in docs/sql.md and nothing else (no files, no other
    databases, no writes, no settings). Works while `run` holds the database, through its
    POST /api/sql, bounded by reports.sql_timeout_seconds and reports.sql_max_rows.
    """
    if fmt == "parquet" and output is None:
        fail("--format parquet needs --output FILE")
    with handled():
        data = open_data(config_path, database=database, url=url)
    if query is None and query_file is None and sys.stdin.isatty():
        shell(lambda text: _answer(data, text))
        return
    if query is None:
        query = (query_file or sys.stdin).read()
    with handled():
        result = data.run_sql(query)
    if result.truncated:
        click.echo(
            f"note: only the first {len(result.rows):,} rows (reports.sql_max_rows)", err=True
        )
    if fmt == "parquet":
        assert output is not None  # checked above, before any work
        write_parquet(result, output)
        click.echo(f"wrote {output}", err=True)
        return
    _emit(render(result, fmt), output)


def _answer(data: Data, text: str) -> str:
    """One query of the interactive shell: its table, or why there is none."""
    try:
        result = data.run_sql(text)
    except ExporterError as exc:
        return f"error: {exc}"
    note = f"(first {len(result.rows):,} rows only)\n" if result.truncated else ""
    return render(result, "table") + note


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
    with handled():
        data = open_data(config_path, export_to=output)
        result = data.export()
    click.echo(
        f"{result.root}: {result.files_written} file(s) written ({result.rows_written} rows),"
        f" {result.files_unchanged} unchanged"
    )


def _resolve_target(config: Config, project: str, source: str) -> Target:
    """A configured source by name or id; a usage error (exit 2) naming what was not found."""
    for target in targets(config, every_shard=True):
        if project in (target.project.name, str(target.project.id)) and source in (
            target.source.name,
            str(target.source.id),
        ):
            return target
    known = ", ".join(t.name for t in targets(config, every_shard=True))
    fail(f"--project {project} --source {source}: no such configured source (known: {known})")


def _regenerate_request(
    seed: str | None,
    clear_seed: bool,
    schema_version_id: str | None,
    generator_config: str | None,
) -> RegenerateRequest:
    if seed is not None and clear_seed:
        fail("--seed and --clear-seed exclude each other")
    fields: dict[str, Any] = {}
    if seed is not None or clear_seed:
        fields["seed"] = seed
    if schema_version_id is not None:
        try:
            fields["schema_version_id"] = UUID(schema_version_id)
        except ValueError:
            fail(f"--schema-version-id: {schema_version_id!r} is not a UUID")
    if generator_config is not None:
        text = generator_config
        if text.startswith("@"):
            try:
                text = Path(text[1:]).read_text(encoding="utf-8")
            except OSError as exc:
                fail(f"--generator-config {generator_config}: {exc.strerror}")
        try:
            parsed = json.loads(text)
        except ValueError as exc:
            fail(f"--generator-config: not valid JSON: {exc}")
        if not isinstance(parsed, dict):
            fail("--generator-config: expected a JSON object")
        fields["generator_config"] = parsed
    return RegenerateRequest(**fields)


@main.command("regenerate")
@config_option
@click.option("--project", required=True, help="Project name or id (from the config).")
@click.option("--source", required=True, help="Source name or id (from the config).")
@click.option("--seed", help="Seed for this run.")
@click.option("--clear-seed", is_flag=True, help="Send seed: null (clears the stored seed).")
@click.option("--schema-version-id", help="Schema version to use (UUID).")
@click.option("--generator-config", help="JSON object, or @FILE holding one.")
@click.option("--wait", is_flag=True, help="Follow the new run until it finishes.")
@click.option("--timeout", type=click.FloatRange(min=1), default=3600.0, show_default=True)
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text")
def regenerate_cmd(
    config_path: Path | None,
    project: str,
    source: str,
    seed: str | None,
    clear_seed: bool,
    schema_version_id: str | None,
    generator_config: str | None,
    wait: bool,
    timeout: float,
    fmt: str,
) -> None:
    """Trigger a regeneration of a source; with --wait, follow the run to its end.

    Exit 0 when the run succeeded (or was started, without --wait), 1 when it failed or the API
    refused, 3 when --timeout passed first, 2 for usage or config errors.
    """
    with handled():
        config = load_config(config_path)
    target = _resolve_target(config, project, source)
    request = _regenerate_request(seed, clear_seed, schema_version_id, generator_config)
    try:
        with live_status(wait and fmt == "text") as update:
            followed = asyncio.run(_regenerate(config, target, request, wait, timeout, update))
    except UpstreamError as exc:
        fail(f"{target.name}: the API refused or failed ({exc.reason}): {exc}", code=1)
    if fmt == "json":
        click.echo(json.dumps(summary(followed), indent=2))
    else:
        click.echo(describe_regeneration(followed))
    if followed.run is not None:
        click.echo(_store_run(config_path, target, followed.run), err=True)
    if followed.timed_out:
        click.echo(f"error: the run did not finish within {timeout:g}s", err=True)
        sys.exit(3)
    sys.exit(1 if followed.failed else 0)


async def _regenerate(
    config: Config,
    target: Target,
    request: RegenerateRequest,
    wait: bool,
    give_up_after: float,
    update: Callable[[GenerationEvent | None, float], object],
) -> Followed:
    async with SynthbrewClient(config.api, budgets=config.budgets()) as client:
        return await regenerate(
            client,
            *target.key,
            target.api_key,
            request,
            wait=wait,
            give_up_after=give_up_after,
            on_update=update,
        )


def describe_regeneration(followed: Followed) -> str:
    response = followed.response
    src = response.source
    lines = [
        f"source:     {src.name or src.id} ({src.id}) kind={src.kind}"
        f" seed={src.seed!r} schemaVersionId={src.schema_version_id}"
    ]
    job = response.generation_job
    if job is not None:
        lines.append(
            f"queued job: {job.id} status={job.status} queue={job.queue_name}"
            f" attempts={job.attempts_made}"
        )
    elif response.generation is not None:
        lines.append(f"inline generation: {json.dumps(response.generation, default=str)[:300]}")
    run = followed.run
    if run is not None:
        duration = f"{run.duration_ms / 1000:.3f}s" if run.duration_ms is not None else "-"
        lines += [
            f"run:        {run.id}",
            f"status:     {run.status}",
            f"duration:   {duration}",
            f"inserted:   {run.total_inserted_rows} rows",
            f"billable:   {run.billable_rows} rows",
        ]
        if run.error_message:
            lines.append(f"error:      {run.error_message}")
    return "\n".join(lines)


def _store_run(config_path: Path | None, target: Target, run: GenerationEvent) -> str:
    """Store the run now so metrics and reports see it; via the running exporter if it holds
    the database. Not storing it is a warning: the next poll stores it anyway."""
    try:
        data = open_data(config_path)
        assert isinstance(data, FileOrExporter)  # a config, no --url: always the file first
        return data.store_run(target, run)
    except ExporterError as exc:
        return f"warning: the run was not stored now ({exc}); the next poll will store it"


@contextmanager
def live_status(enabled: bool) -> Iterator[Callable[[GenerationEvent | None, float], None]]:
    """A one-line live status on a terminal while --wait follows the run."""
    if not enabled or not sys.stderr.isatty():
        yield lambda *_: None
        return
    console = Console(stderr=True)
    with console.status("waiting for the run to appear") as status:

        def update(run: GenerationEvent | None, elapsed: float) -> None:
            state = run.status if run else "not listed yet"
            status.update(f"run {run.id if run else ''} {state}  ({elapsed:.0f}s)")

        yield update


@contextmanager
def progress(total: int) -> Iterator[Callable[[], None]]:
    """A progress bar on a terminal; nothing when output is piped or in CI."""
    if not sys.stderr.isatty():
        yield lambda: None
        return
    with Progress(transient=True, console=Console(stderr=True)) as bar:
        task = bar.add_task("polling", total=total)
        yield lambda: bar.advance(task)
