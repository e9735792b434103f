"""The command group and what every command shares: options, and turning the exporter's
errors into one line and an exit code (0 ok, 1 the work failed, 2 bad usage or config).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn

import click

from exporter import __version__
from exporter.config import (
    Config,
)
from exporter.errors import ExporterError
from exporter.logs import mask, setup_logging
from exporter.sharding import Shard

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
