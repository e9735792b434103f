"""What the stored runs offer a reader: named reports, ad-hoc SQL, the Parquet export.

One interface with three implementations: the database file a command opens itself and a
running exporter it asks over HTTP (both in ``exporter.access``), and the running exporter's
own, served over ``/api`` (``exporter.service``, through ``web.Api``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

from exporter.export import ExportResult
from exporter.reports import ReportInfo, ReportResult


class Data(Protocol):
    def reports(self) -> Sequence[ReportInfo]: ...

    def run_report(self, name: str, params: Mapping[str, str]) -> ReportResult: ...

    def run_sql(self, sql: str) -> ReportResult: ...

    def export(self) -> ExportResult: ...
