"""Report results as text and files: a table for the terminal, CSV, JSON and Parquet, and the
listing of the named reports (see :mod:`exporter.reports` for what a report is and runs)."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from exporter.reports import ReportInfo, ReportResult, plain_value

FORMATS = ("table", "csv", "json")
SQL_FORMATS = (*FORMATS, "parquet")


def render(result: ReportResult, fmt: str, title: str = "") -> str:
    if fmt == "json":
        return json.dumps(result.records(), indent=2) + "\n"
    if fmt == "csv":
        return to_csv(result.columns, ([plain_value(v) for v in row] for row in result.rows))
    return _table(result, title)


_FORMULA = ("=", "+", "-", "@", "\t", "\r")


def to_csv(columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """CSV for people who open it in a spreadsheet: a text cell that a spreadsheet would run as
    a formula (an upstream error message starting with "=") gets a leading apostrophe (OWASP's
    advice on CSV injection). Numbers are written as they are."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow(
            "'" + v if isinstance(v, str) and v.startswith(_FORMULA) else v for v in row
        )
    return out.getvalue()


def write_parquet(result: ReportResult, path: Path) -> None:
    """The result as a Parquet file, columns typed from their values."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    arrays = [pa.array([row[i] for row in result.rows]) for i in range(len(result.columns))]
    pq.write_table(pa.Table.from_arrays(arrays, names=result.columns), path)


def _table(result: ReportResult, title: str) -> str:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title or None)
    for column in result.columns:
        table.add_column(column)
    for row in result.rows:
        table.add_row(*("" if v is None else str(plain_value(v)) for v in row))
    console = Console(file=io.StringIO(), width=200, record=True)
    console.print(table)
    return console.export_text()


def describe(reports: Sequence[ReportInfo]) -> str:
    lines = []
    for r in reports:
        lines.append(f"{r.name:<22} {r.title}")
        if r.description:
            lines.append(f"{'':<22} {r.description}")
        for p in r.params:
            lines.append(f"{'':<22}   --param {p.name}={p.default}  ({p.type}) {p.help}".rstrip())
    return "\n".join(lines) + "\n"
