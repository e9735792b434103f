"""Named SQL reports: one ``.sql`` file each in ``queries/``, with a header that declares them.

A header looks like this::

    -- title: Usage per project per day
    -- description: Billable and inserted rows of finished runs, per project and day.
    -- param: days int = 30 | how many days back, today included
    -- param: tz str = UTC | calendar timezone
    -- chart: bar x=day y=billable_rows series=project

Parameters are typed, validated and bound by name (``$days`` in the SQL): a value is never
pasted into the query text. ``$calendar_tz`` needs no declaration: it is the timezone the
store keeps its daily rollup in (``billing.timezone``), for ``finished_per_day``. A ``chart``
line asks the ``/reports`` page to draw the result (see :class:`ChartSpec`).
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from uuid import UUID
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import duckdb

from exporter.errors import InvalidInput, NotFound, Unavailable
from exporter.store.db import first_line, schema_version
from exporter.store.schema import MIGRATIONS
from exporter.store.totals import calendar_timezone

log = logging.getLogger(__name__)

_HEADER = re.compile(r"^--\s*(title|description|param|chart):\s*(.*)$")
_PARAM = re.compile(r"^(\w+)\s+(int|float|str|date|bool|tz)\s*=\s*([^|]*?)\s*(?:\|\s*(.*))?$")
_RELATIVE = re.compile(r"^today(?:-(\d+))?$")


class ReportError(InvalidInput):
    """A report file or a parameter that cannot be used: the user's to fix."""


class ReportFailed(Unavailable):
    """A sound report the database could not run now (out of memory, I/O): not the user's
    to fix, and worth trying again."""


# DuckDB's errors that say the database could not do it now, as opposed to a report it
# cannot bind or parse.
_RESOURCE_ERRORS = (
    duckdb.OutOfMemoryException,
    duckdb.IOException,
    duckdb.InterruptException,
    duckdb.FatalException,
    duckdb.InternalException,
    duckdb.ConnectionException,
)


@dataclass(frozen=True)
class Param:
    name: str
    type: str
    default: str
    help: str = ""

    def parse(self, raw: str, today: date) -> Any:
        """Turn text into a typed value, or say exactly what is wrong with it."""
        raw = raw.strip()
        try:
            if self.type == "int":
                return int(raw)
            if self.type == "float":
                return float(raw)
            if self.type == "bool":
                if raw.lower() not in {"true", "false", "1", "0", "yes", "no"}:
                    raise ValueError(raw)
                return raw.lower() in {"true", "1", "yes"}
            if self.type == "date":
                return _parse_date(raw, today)
            if self.type == "tz":
                ZoneInfo(raw)
                return raw
        except (ValueError, OverflowError, ZoneInfoNotFoundError):
            hint = {"date": "YYYY-MM-DD, today, today-N or month_start", "tz": "an IANA zone"}
            raise ReportError(
                f"--param {self.name}: {raw!r} is not a valid {self.type}"
                + (f" ({hint[self.type]})" if self.type in hint else "")
            ) from None
        return raw


def _parse_date(raw: str, today: date) -> date:
    if raw == "month_start":
        return today.replace(day=1)
    relative = _RELATIVE.match(raw)
    if relative:
        return today - timedelta(days=int(relative.group(1) or 0))
    return date.fromisoformat(raw)


@dataclass(frozen=True)
class ChartSpec:
    """How a report's rows become a chart: ``bar x=day y=billable_rows series=project top=8``.

    ``x`` and ``series`` may name several columns (``series=project,source``: their values
    joined with "/"); ``y`` is the one value column; ``top`` keeps the series with the largest
    totals and sums the rest as "other". Bars of several series are stacked.
    """

    kind: str
    x: tuple[str, ...]
    y: str
    series: tuple[str, ...] = ()
    top: int | None = None

    KINDS = ("bar", "line")

    @classmethod
    def parse(cls, text: str) -> ChartSpec:
        shape = "expected: KIND x=COLUMN[,COLUMN] y=COLUMN [series=COLUMN[,COLUMN]] [top=N]"
        kind, *pairs = text.split() or [""]
        if kind not in cls.KINDS:
            raise ValueError(f"chart kind {kind!r} is not one of {', '.join(cls.KINDS)}")
        options = dict(pair.partition("=")[::2] for pair in pairs)
        unknown = sorted(set(options) - {"x", "y", "series", "top"})
        top = options.get("top", "0")
        if unknown or "x" not in options or "y" not in options or not top.isdigit():
            raise ValueError(shape)
        series = tuple(filter(None, options.get("series", "").split(",")))
        return cls(kind, tuple(options["x"].split(",")), options["y"], series, int(top) or None)

    def columns(self) -> tuple[str, ...]:
        return (*self.x, self.y, *self.series)


@dataclass(frozen=True)
class ReportInfo:
    """What a report is and takes, without its SQL: what a listing shows, locally or over
    HTTP."""

    name: str
    title: str
    description: str
    params: tuple[Param, ...] = ()

    def to_json(self) -> dict[str, Any]:
        """This listing's fields only, also of a :class:`Report`: its SQL stays on the server."""
        return {
            "name": self.name,
            "title": self.title,
            "description": self.description,
            "params": [asdict(p) for p in self.params],
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ReportInfo:
        params = tuple(Param(**p) for p in data.get("params", ()))
        return cls(data["name"], data["title"], data.get("description", ""), params)


@dataclass(frozen=True)
class Report(ReportInfo):
    sql: str = ""
    chart: ChartSpec | None = None

    @property
    def info(self) -> ReportInfo:
        return ReportInfo(self.name, self.title, self.description, self.params)

    def bind(self, given: Mapping[str, str], today: date | None = None) -> dict[str, Any]:
        today = today or datetime.now(UTC).date()
        known = {p.name: p for p in self.params}
        unknown = sorted(set(given) - set(known))
        if unknown:
            allowed = ", ".join(known) or "none"
            raise ReportError(
                f"--param {unknown[0]}: report {self.name!r} has no such parameter"
                f" (parameters: {allowed})"
            )
        return {name: p.parse(given.get(name, p.default), today) for name, p in known.items()}


@dataclass
class ReportResult:
    columns: list[str]
    rows: list[tuple[Any, ...]] = field(default_factory=list)
    truncated: bool = False  # more rows than were kept (ad-hoc SQL's reports.sql_max_rows)

    def records(self) -> list[dict[str, Any]]:
        return [
            {c: plain_value(v) for c, v in zip(self.columns, row, strict=True)} for row in self.rows
        ]

    def to_json(self) -> dict[str, Any]:
        rows = [[plain_value(v) for v in r] for r in self.rows]
        return {"columns": self.columns, "rows": rows, "truncated": self.truncated}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ReportResult:
        rows = [tuple(r) for r in data["rows"]]
        return cls(list(data["columns"]), rows, bool(data.get("truncated", False)))

    def plain(self) -> ReportResult:
        """The same values as JSON carries them (text times, float decimals): what a result
        read over HTTP holds, so both ways render alike."""
        rows = [tuple(plain_value(v) for v in r) for r in self.rows]
        return ReportResult(self.columns, rows, self.truncated)


def parse_report(path: Path) -> Report:
    text = path.read_text(encoding="utf-8")
    meta: dict[str, str] = {}
    params: list[Param] = []
    chart: ChartSpec | None = None
    for line in text.splitlines():
        header = _HEADER.match(line.strip())
        if not line.startswith("--"):
            break
        if header is None:
            continue
        key, value = header.groups()
        if key == "param":
            spec = _PARAM.match(value)
            if spec is None:
                raise ReportError(f"{path}: cannot read parameter declaration {value!r}")
            name, kind, default, help_text = spec.groups()
            params.append(Param(name, kind, default, help_text or ""))
        elif key == "chart":
            try:
                chart = ChartSpec.parse(value)
            except ValueError as exc:
                raise ReportError(
                    f"{path}: cannot read chart declaration {value!r}: {exc}"
                ) from None
        else:
            meta[key] = value
    if "title" not in meta:
        raise ReportError(f"{path}: the header has no '-- title:' line")
    return Report(
        name=path.stem,
        title=meta["title"],
        description=meta.get("description", ""),
        sql=text,
        params=tuple(params),
        chart=chart,
    )


def default_queries_dir() -> Path:
    """``exporter/queries`` in an installed wheel; the repository's ``queries/`` otherwise."""
    packaged = Path(__file__).parent / "queries"
    return packaged if packaged.is_dir() else Path(__file__).parent.parent / "queries"


def find_report(reports: Mapping[str, Report], name: str) -> Report:
    if name not in reports:
        known = ", ".join(sorted(reports))
        raise NotFound(f"no report named {name!r} (known: {known}); `report` lists them")
    return reports[name]


def load_reports(directory: Path | None = None) -> dict[str, Report]:
    directory = directory or default_queries_dir()
    if not directory.is_dir():
        raise ReportError(f"{directory}: no such reports directory")
    return {r.name: r for r in map(parse_report, sorted(directory.glob("*.sql")))}


# Provided by the exporter, not the user: what the store knows about itself.
CONTEXT = ("calendar_tz",)
_CONTEXT = re.compile(r"\$calendar_tz\b")


# Pauses before a report that ran out of memory runs again: the pool is shared with the polls'
# writes, and beside a batch `duration_percentiles` over all of 100 million stored runs (about
# half of the 48MB pool) can find too little. What a report cannot get after these is a 503.
RETRY_SECONDS = (1.0, 2.0)


def run_report(
    cur: duckdb.DuckDBPyConnection,
    report: Report,
    params: Mapping[str, Any],
    *,
    retry_seconds: Sequence[float] = RETRY_SECONDS,
) -> ReportResult:
    bound = dict(params)
    if _CONTEXT.search(report.sql):
        bound["calendar_tz"] = calendar_timezone(cur)
    for pause in retry_seconds:
        try:
            return _execute(cur, report, bound, retrying=True)
        except duckdb.OutOfMemoryException as exc:
            log.warning(
                "report %r ran out of memory (%s); trying again in %g s",
                report.name,
                first_line(exc),
                pause,
            )
            time.sleep(pause)
    return _execute(cur, report, bound)


def _execute(
    cur: duckdb.DuckDBPyConnection, report: Report, bound: dict[str, Any], retrying: bool = False
) -> ReportResult:
    """One try; ``retrying`` leaves running out of memory to the caller, to try again."""
    try:
        result = cur.execute(report.sql, bound)
        return ReportResult(
            columns=[d[0] for d in result.description or []], rows=result.fetchall()
        )
    except _RESOURCE_ERRORS as exc:
        if retrying and isinstance(exc, duckdb.OutOfMemoryException):
            raise
        raise ReportFailed(f"report {report.name!r} failed: {first_line(exc)}") from None
    except duckdb.Error as exc:
        hint = ""
        if isinstance(exc, duckdb.CatalogException) and schema_version(cur) < len(MIGRATIONS):
            hint = " (the database is from an older release: `run` or `collect` upgrades it)"
        raise ReportError(
            f"report {report.name!r} failed: {str(exc).splitlines()[0]}{hint}"
        ) from None


def plain_value(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, UUID):
        return str(value)
    if isinstance(value, timedelta):
        return value.total_seconds()
    return value
