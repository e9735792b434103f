"""Commands that read the stored runs: report, sql, export, through ``exporter.access`` (the
file, or the running exporter that holds it).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TextIO

import click

from exporter.access import open_data
from exporter.cli.common import config_option, fail, handled, main
from exporter.data import Data
from exporter.errors import ExporterError
from exporter.report_output import FORMATS, SQL_FORMATS, describe, render, write_parquet


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
        # The table's title; the other formats carry none, so they need not ask for it.
        titles = {r.name: r.title for r in data.reports()} if fmt == "table" else {}
        title = titles.get(name, name)
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
        # Imported only here: prompt_toolkit is 7 MB that every other command, the
        # long-running `run` among them, would carry for nothing.
        from exporter.sql_shell import shell

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
    root = result.root or "export.path"
    click.echo(
        f"{root}: {result.files_written} file(s) written ({result.rows_written} rows),"
        f" {result.files_unchanged} unchanged"
    )
