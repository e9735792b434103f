"""``regenerate``: trigger a run of a source and, with --wait, follow it to its end."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from uuid import UUID

import click
from rich.console import Console

from exporter.access import configured_data
from exporter.cli.common import config_option, fail, handled, main
from exporter.client import SynthbrewClient, UpstreamError
from exporter.config import (
    Config,
    load_config,
)
from exporter.errors import ExporterError
from exporter.models import GenerationEvent, RegenerateRequest
from exporter.regenerate import Followed, regenerate, summary
from exporter.targets import Target, find_target, targets


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
        target = find_target(targets(config, every_shard=True), project, source)
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
        return configured_data(config_path).store_run(target, run)
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
