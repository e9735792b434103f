"""A figure is a chart and the table of its numbers, built from a report's rows.

The chart is drawn in the browser by the vendored Chart.js from :meth:`Chart.to_json`; the
table below it and its CSV download come from the same values, so what is drawn is what is
listed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from exporter.report_output import to_csv
from exporter.reports import ChartSpec, ReportResult

OTHER = "other"
Cell = str | int | float | None


@dataclass(frozen=True)
class Table:
    columns: list[str]
    rows: list[list[Cell]]

    def csv(self) -> str:
        return to_csv(self.columns, self.rows)


@dataclass(frozen=True)
class Dataset:
    label: str
    data: list[float | None]  # None: no value (no bar), not zero


@dataclass(frozen=True)
class Chart:
    kind: str
    labels: list[str]
    datasets: list[Dataset]
    x_title: str
    y_title: str
    stacked: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "labels": self.labels,
            "datasets": [{"label": d.label, "data": d.data} for d in self.datasets],
            "xTitle": self.x_title,
            "yTitle": self.y_title,
            "stacked": self.stacked,
        }

    def table(self) -> Table:
        """One row per x value, one column per series (and their total when stacked)."""
        columns = [self.x_title, *(d.label for d in self.datasets)]
        total = self.stacked and len(self.datasets) > 1
        rows: list[list[Cell]] = []
        for i, label in enumerate(self.labels):
            values = [d.data[i] for d in self.datasets]
            rows.append([label, *values, *([sum(v or 0 for v in values)] if total else [])])
        return Table([*columns, *(["total"] if total else [])], rows)


@dataclass(frozen=True)
class Figure:
    id: str
    title: str
    chart: Chart
    table: Table
    note: str = ""


def chart_from(
    spec: ChartSpec,
    result: ReportResult,
    *,
    x_values: Sequence[str] | None = None,
    x_title: str | None = None,
    y_title: str | None = None,
) -> Chart:
    """Sum ``spec.y`` per x value and series; ``x_values`` fixes the axis (every day of a
    period, so a day with nothing shows as zero instead of vanishing)."""
    index = {c: i for i, c in enumerate(result.columns)}
    missing = [c for c in spec.columns() if c not in index]
    if missing:
        raise ValueError(f"chart column {missing[0]!r} is not in the result")
    sums: dict[str, dict[str, float]] = {}
    order: list[str] = list(x_values or [])
    for row in result.rows:
        x = "/".join(str(row[index[c]]) for c in spec.x)
        series = "/".join(str(row[index[c]]) for c in spec.series) or spec.y
        if x_values is None and x not in order:
            order.append(x)
        value = row[index[spec.y]]
        by_x = sums.setdefault(series, {})
        by_x[x] = by_x.get(x, 0.0) + (float(value) if value is not None else 0.0)
    # Largest first, "other" (from the report or made here) always last.
    ranked = sorted(sums, key=lambda s: (s == OTHER, -sum(sums[s].values())))
    if spec.top is not None and len(ranked) > spec.top:
        other = sums.setdefault(OTHER, {})
        for series in ranked[spec.top :]:
            if series != OTHER:
                for x, v in sums[series].items():
                    other[x] = other.get(x, 0.0) + v
        ranked = [*ranked[: spec.top], OTHER]
    datasets = [Dataset(s, [_number(sums[s].get(x, 0.0)) for x in order]) for s in ranked]
    return Chart(
        kind=spec.kind,
        labels=order,
        datasets=datasets,
        x_title=x_title or "/".join(spec.x),
        y_title=y_title or spec.y.replace("_", " "),
        stacked=spec.kind == "bar" and bool(spec.series),
    )


def _number(value: float) -> float:
    """Whole numbers as ints, so tables and CSV say 12 and not 12.0."""
    return int(value) if value.is_integer() else round(value, 6)
